"""The research loop: a scheduler that keeps every worker training.

One engine runs per workspace (a lock file). The journal is its memory: every step is
recorded before the next begins, so an engine killed at any moment (kill -9 included) picks
up the same run where it stopped. Nothing is decided twice, no result is lost, and a training
that was cut short is recorded as interrupted and run again.

    baseline (experiment 0: the best script unchanged)
    loop: commands -> every free worker takes the oldest experiment waiting to train
          (committed as refs/cockpit/<tag>/<n>; supervised: once approved), in its own
          worktree and on its own device -> each training that ends is decided against the
          best at that moment (keep: the branch advances; discard: it does not; a gain on a
          best that has moved since: re-applied onto the new best and trained there)
          -> results.tsv; proposals are drafted on a thread meanwhile, ahead of need when
          there are several workers

Deciding is `decide.decide`, a pure function; a training in flight is a `flight.Flight`;
drafting proposals is `proposing.Drafting`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.proposal import Proposer, script_hash
from cockpit.config import Settings
from cockpit.engine import programs, worktrees
from cockpit.engine.agents import AgentRecorder, AgentSetup
from cockpit.engine.drafts import DraftDesk
from cockpit.engine.fingerprint import describe_fingerprint_change, fingerprint_fixed_parts
from cockpit.engine.flight import Flight, early_abort_watch, record_result
from cockpit.engine.jobs import RunFiles, build_job
from cockpit.engine.judging import Judge
from cockpit.engine.kinds import references_needed, wanted_kind
from cockpit.engine.monitor import GpuSource, Monitor, default_gpu_source
from cockpit.engine.notify import EngineNotices, Notifier
from cockpit.engine.proposing import Drafting
from cockpit.engine.results_tsv import export_results_tsv
from cockpit.engine.runner import Executor, LocalExecutor, RunResult, is_training_process, kill_tree
from cockpit.engine.workers import (
    Worker,
    WorkerError,
    cluster_workers,
    plan_workers,
    visible_gpus,
)
from cockpit.engine.workspace import Workspace, default_tag, lines_of_code
from cockpit.engine.workspace_error import WorkspaceError
from cockpit.errors import EngineError
from cockpit.store.journal import Experiment, Journal, Run
from cockpit.store.lock import engine_lock
from cockpit.store.paths import WorkspacePaths
from cockpit.store.samples import MonitorSample
from cockpit.store.state import PendingStop
from cockpit.store.steering import AUTONOMOUS, SUPERVISED, Kind, Steer
from cockpit.store.trials import trial_kind
from trainer.outcomes import Outcome

HEARTBEAT_SECONDS = 1.0
TICK_SECONDS = 0.05  # how often the loop looks at its trainings, commands and drafts
STOP_WAIT_SECONDS = 30.0  # how long trainings stopped with the engine get to end
# With several workers, proposals are drafted ahead of need (a worker that frees takes one at
# once), up to this many at a time (the model server answers them side by side as far as its
# OLLAMA_NUM_PARALLEL lets it; beyond, they wait their turn there).
MAX_DRAFTING = 4

# What confines a script-mode training: nothing of the harness's (see trainer.confine).
SCRIPT_MODE_CONFINEMENT = {
    "network": None,
    "enforced": False,
    "reason": "script mode runs the workspace's own command as it is, outside the harness",
}
# Trainer settings that a run's results depend on: a run resumes only with the ones it was
# recorded with.
COMPARABILITY_SETTINGS = (
    "budget_seconds",
    "corpus",
    "seq_len",
    "eval_tokens",
    "device",
    "command",
    "metric",
)


def journal_path(workspace: Workspace) -> Path:
    return workspace.paths.journal


@dataclass
class EngineOptions:
    """What `cockpit run` asked for (the rest comes from the settings)."""

    tag: str | None = None
    experiments: int | None = None  # None: the settings' engine.experiments
    adopt: bool = False


@dataclass
class _Control:
    """What commands have asked of the engine."""

    paused: bool = False
    stop_engine: bool = False
    stop_now: bool = False


class Engine:
    """Drives one research run of a workspace over its workers."""

    def __init__(
        self,
        workspace: Workspace,
        settings: Settings,
        proposer: Proposer,
        *,
        gpu_source: GpuSource | None = None,
        executor: Executor | None = None,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
        agent: AgentSetup | None = None,
        notifier: Notifier | None = None,
        workers: list[Worker] | None = None,
    ) -> None:
        self.workspace = workspace
        self.paths: WorkspacePaths = workspace.paths
        self.settings = settings
        self.proposer = proposer
        # What the proposer reports goes into the journal; the LLM's server is freed of its
        # model before a GPU training.
        self.agent = agent if agent is not None else AgentSetup(proposer, AgentRecorder())
        self._gpu_seen = False
        self.gpu_source = gpu_source
        self.executor = executor or LocalExecutor()
        self.out = out
        self.clock = clock
        self.control = _Control()
        self.mode = settings.engine.mode
        self.journal: Journal | None = None
        self.run_record: Run | None = None
        # None: planned from `[engine] workers` and the machine when the run starts.
        self._given_workers = workers
        self.workers: list[Worker] = []
        self.notices = EngineNotices(
            notifier or Notifier(settings.notify, echo=self.say), metric=settings.trainer.metric
        )
        self._flights: dict[int, Flight] = {}  # worker index -> its training
        self._draft_desk: DraftDesk | None = None
        self._judge: Judge | None = None
        self._last_heartbeat = 0.0
        self._published: Any = None
        self._agent_state: str | None = None
        self._monitor = Monitor(None, None)
        # (what, perf_counter[, worker or experiment]) marks of the loop's own steps, for
        # `cockpit bench loop`.
        self.marks: list[tuple[Any, ...]] = []

    # --- output --------------------------------------------------------------------------

    def say(self, message: str) -> None:
        if self.out is not None:
            self.out.write(message + "\n")
            self.out.flush()

    # --- entry point ---------------------------------------------------------------------

    def run(self, options: EngineOptions) -> int:
        """Run (or resume) a run until its experiments are done or it is stopped."""
        with engine_lock(self.workspace.cockpit_dir):
            journal = Journal.open(journal_path(self.workspace))
            self.journal = journal
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            try:
                return self._run(options)
            finally:
                signal.signal(signal.SIGTERM, previous)
                self._abandon_flights()
                self.executor.close()  # a cluster engine started for this run stops with it
                journal.set_state(
                    phase="stopped", pid=None, train_pid=None, train_pids=[], time_left=None,
                    workers=[], **PendingStop.cleared(),
                )  # fmt: skip
                self.notices.close()
                journal.close()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.control.stop_engine = self.control.stop_now = True
        for flight in list(self._flights.values()):
            flight.stop()

    def _run(self, options: EngineOptions) -> int:
        journal = self._journal()
        self._draft_desk = None  # drafts belong to one run of the engine
        run = self._open_run(options)
        self.run_record = run
        self.mode = run.mode
        self.notices.tag = run.tag
        self.workers = self._plan_workers()
        journal.set_state(
            pid=os.getpid(), run=run.tag, phase="starting", heartbeat=self.clock(),
            **PendingStop.cleared(),  # an engine killed while stopping left its stop behind
        )  # fmt: skip
        journal.add_event("engine", f"engine started (pid {os.getpid()})", run_id=run.id)
        self.agent.attach(journal, run.id)
        self.agent.recorder.echo = self.say
        self.agent.start()
        journal.set_state(**self.agent.state())
        self.say(f"run {run.tag} on branch {run.branch} in {self.workspace.path}")
        if len(self.workers) > 1:
            devices = ", ".join(worker.label for worker in self.workers)
            self.say(f"{len(self.workers)} workers: {devices}")
        self._recover(run)
        target = options.experiments if options.experiments is not None else run.target
        monitor = Monitor(
            self.gpu_source or default_gpu_source(),
            self._on_sample,
            interval=self.settings.engine.sample_seconds,
        )
        monitor.start(None)
        self._monitor = monitor
        reason = "engine stopped"
        try:
            self._loop(run, target or 0)
        except EngineError as exc:
            self.control.stop_engine = True
            reason = f"engine stopped: {exc}"
            raise
        finally:
            monitor.close()
            self.drafts.close()
            self._abandon_flights()
            self._export()
            stopped = self.control.stop_engine
            best = self._run_record().best_val_bpb
            self.notices.engine_stopped(
                run.tag, reason if stopped or reason != "engine stopped" else "run finished", best
            )
        journal.update_run(run.id, status="stopped" if stopped else "finished")
        journal.add_event("engine", "engine stopped" if stopped else "run finished", run_id=run.id)
        self.say(
            f"{'stopped' if stopped else 'finished'}: best val_bpb {best:.6f}"
            if best
            else "stopped"
        )
        if best and not stopped and self.settings.engine.test_split_summary:
            cache = self.settings.paths.cache_dir
            found = programs.generalisation(
                self.paths.runs(run.tag), journal.experiments(run.id), cache
            )
            self.say(programs.summary_line(found))
        return 0

    @property
    def drafts(self) -> DraftDesk:
        """The proposals being drafted for the run, and their commits."""
        if self._draft_desk is None:
            self._draft_desk = DraftDesk(
                self._journal(),
                self.workspace,
                Drafting(
                    self._journal(),
                    self.settings,
                    self.agent,
                    self.workspace.path / "program.md",
                    self.say,
                    self.marks,
                ),
                self.say,
                self.marks,
                max_drafting=MAX_DRAFTING,
            )
        return self._draft_desk

    @property
    def judge(self) -> Judge:
        """Decides the run's trained experiments: made once, and again only if the journal or
        the kinds of device it compares within have changed."""
        journal, kinds = self._journal(), self._kinds()
        if self._judge is None or self._judge.journal is not journal or self._judge.kinds != kinds:
            self._judge = Judge(
                journal,
                self.workspace,
                self.settings,
                self.notices,
                self._run_record,
                self._export,
                self.say,
                kinds=kinds,
            )
        return self._judge

    def _journal(self) -> Journal:
        assert self.journal is not None
        return self.journal

    def _run_record(self) -> Run:
        assert self.run_record is not None
        run = self._journal().run(self.run_record.id)
        assert run is not None
        self.run_record = run
        return run

    def _plan_workers(self) -> list[Worker]:
        """The workers of this engine, from `[engine] workers` and the machine."""
        if self._given_workers is not None:
            return list(self._given_workers)
        trainer = self.settings.trainer
        where = self.executor.name
        if where != "local":
            try:
                return cluster_workers(
                    self.settings.engine.workers,
                    trainer.device,
                    where,
                    threads=max(1, self.settings.executor.cpus_per_job),
                )
            except WorkerError as exc:
                raise EngineError(str(exc)) from None
        gpus: list[str] = []
        if trainer.device != "cpu" and not trainer.command:
            source = self.gpu_source or default_gpu_source()
            snapshot = source.read(())
            gpus = visible_gpus(len(snapshot.gpus) if snapshot.available else 0)
        names: dict[str, str] = {}
        if gpus:  # each GPU's model, by the names CUDA_VISIBLE_DEVICES may give it
            for reading in snapshot.gpus:
                names[str(reading.index)] = reading.name
                if reading.uuid:
                    names[reading.uuid] = reading.name
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        try:
            return plan_workers(
                self.settings.engine.workers,
                trainer.device,
                gpus,
                cores,
                reserved=self.settings.agent.reserved_gpus,
                names=names,
            )
        except WorkerError as exc:
            raise EngineError(str(exc)) from None

    # --- the run -------------------------------------------------------------------------

    def _open_run(self, options: EngineOptions) -> Run:
        journal = self._journal()
        workspace = self.workspace
        existing = journal.run_by_tag(options.tag) if options.tag else journal.latest_run()
        if existing is not None and (options.tag or existing.status == "active"):
            self._require_comparable(existing)
            if existing.status != "active":
                journal.update_run(existing.id, status="active")
            self._checkout(existing.tag)
            self.say(f"resuming run {existing.tag}")
            return existing
        if options.adopt:
            workspace.adopt_script()
        else:
            workspace.require_clean_script()
        base = options.tag or default_tag()
        tag = journal.unique_tag(workspace.unique_tag(base))
        branch = workspace.start_run(tag)
        self._checkout(tag)
        target = (
            options.experiments
            if options.experiments is not None
            else self.settings.engine.experiments
        )
        return journal.create_run(
            tag=tag,
            branch=branch,
            base_commit=workspace.best_commit(tag),
            mode=self.settings.engine.mode,
            proposer=self.proposer.name,
            config={**self.settings.model_dump(), "fixed_parts": fixed_parts_fingerprint()},
            corpus_fingerprint="",
            target=target,
        )

    def _require_comparable(self, run: Run) -> None:
        """Refuse to resume a run with trainer settings that make its results incomparable
        with those recorded (a longer budget trains further, other data scores otherwise)."""
        recorded = run.config.get("trainer") if isinstance(run.config, dict) else None
        if not isinstance(recorded, dict):
            return
        current = self.settings.trainer.model_dump()
        changed = [
            f"{key} {recorded[key]!r} -> {current[key]!r}"
            for key in COMPARABILITY_SETTINGS
            if key in recorded and recorded[key] != current[key]
        ]
        if changed:
            raise EngineError(
                f"run {run.tag} was recorded with other trainer settings than these "
                f"({', '.join(changed)}): its results could not be compared with new ones. "
                f"Resume it with the settings it was recorded with (no --budget, or "
                f"--budget {recorded.get('budget_seconds')}), or start a new run with "
                "`--tag NEW`."
            )

    def _checkout(self, tag: str) -> None:
        try:
            self.workspace.checkout_run(tag)
        except WorkspaceError as exc:
            raise EngineError(str(exc)) from exc

    def _recover(self, run: Run) -> None:
        """Make the journal, the branch and the processes agree after an engine that died."""
        journal = self._journal()
        orphans = list(journal.get_state("train_pids") or [])
        orphans.append(journal.get_state("train_pid"))
        for orphan in {pid for pid in orphans if isinstance(pid, int)}:
            if is_training_process(orphan):
                kill_tree(orphan)
                journal.add_event(
                    "engine", f"stopped an orphaned training process (pid {orphan})", run_id=run.id
                )
        journal.set_state(train_pid=None, train_pids=[], workers=[])
        for experiment in journal.unfinished_experiments(run.id):
            if experiment.status == "training":
                self._requeue(experiment, "while training")
        self._export()

    def _requeue(self, experiment: Experiment, when: str) -> None:
        """Record a training that was cut short as interrupted; it runs again, as a new attempt."""
        journal = self._journal()
        journal.update_experiment(experiment.id, status="committed", attempt=experiment.attempt + 1)
        journal.add_event(
            "interrupted",
            f"experiment {experiment.number} was interrupted {when}; it runs again",
            run_id=experiment.run_id,
            experiment_id=experiment.id,
        )

    def _loop(self, run: Run, target: int) -> None:
        while True:
            self._handle_commands()
            self._tick_flights()
            control = self.control
            if control.stop_now:
                for flight in self._flights.values():
                    if not flight.stop_requested:
                        flight.stop()
            self._decide_waiting()
            if not control.stop_engine and not control.paused:
                self.drafts.collect(self._run_record(), self.mode)
                self._fill_workers()
                self._order_drafts(target)
            elif control.stop_engine:
                # A ready draft is still committed, to wait for the next engine; one the model
                # is still writing is not waited for (`close` cancels its request).
                self.drafts.collect(self._run_record(), self.mode)
            drafting = bool(self.drafts.pending) and not control.stop_engine
            if (
                not self._flights
                and not drafting
                and (control.stop_engine or self._finished(target))
            ):
                return
            self._publish()
            time.sleep(TICK_SECONDS)

    def _planned(self) -> int:
        """Experiments of the run beyond the baseline that train or will (vetoes do not)."""
        return self._journal().count_planned(self._run_record().id)

    def _finished(self, target: int) -> bool:
        """Whether the run is done: nothing waits, and the target is met or nothing is left."""
        run = self._run_record()
        journal = self._journal()
        if journal.unfinished_experiments(run.id) or journal.experiment(run.id, 0) is None:
            return False
        return self.drafts.exhausted or bool(target and self._planned() >= target)

    # --- proposing -----------------------------------------------------------------------

    def _baseline(self, run: Run) -> Experiment:
        workspace = self.workspace
        best = workspace.best_commit(run.tag)
        script = workspace.script_at(best)
        refname = workspace.experiment_refname(run.tag, 0)
        if refname not in workspace.repo.references:
            workspace.repo.references.create(refname, best)
        return self._journal().add_experiment(
            run.id,
            0,
            parent_commit=best,
            commit_sha=best,
            ref=refname,
            proposer="baseline",
            description="baseline",
            hypothesis="the unmodified script, to measure against",
            diff="",
            script_hash=script_hash(script),
            status="committed",
            lines_of_code=lines_of_code(script),
        )

    def _waiting(self) -> list[Experiment]:
        """Experiments not in flight that wait for a worker or for approval, oldest first."""
        in_flight = {flight.experiment.id for flight in self._flights.values()}
        return [
            e
            for e in self._journal().unfinished_experiments(self._run_record().id)
            if e.id not in in_flight and e.status in ("proposed", "awaiting_approval", "committed")
        ]

    def _order_drafts(self, target: int) -> None:
        """Draft proposals so that a worker that frees finds one ready: one per free worker,
        and with several workers a few ahead, drafted side by side."""
        run = self._run_record()
        journal = self._journal()
        if journal.experiment(run.id, 0) is None:
            self._baseline(run)
            return
        desk = self.drafts
        # Workers that started together finish together: a spare for each but the one that
        # takes the proposal drafted as it frees (none with one worker: it proposes on the
        # latest result, and the model is unloaded while it trains).
        ahead = len(self.workers) - 1
        limit = min(MAX_DRAFTING, len(self.workers))
        free = len(self.workers) - len(self._flights)
        while not desk.exhausted and len(desk.pending) < limit:
            if len(self._waiting()) + len(desk.pending) >= free + ahead:
                return
            if target and self._planned() + len(desk.pending) >= target:
                return
            if desk.adopt_orphan(run, self.mode):
                continue
            if not self._flights:
                self._set_phase("proposing", experiment=journal.next_number(run.id))
            desk.order(run, self.mode)

    # --- training ------------------------------------------------------------------------

    def _verify_fixed_parts(self, run: Run) -> None:
        """Stop the run when the harness or the evaluator changed since it started."""
        recorded = run.config.get("fixed_parts")
        if not recorded:
            return  # a run from before fingerprints were recorded
        current = fixed_parts_fingerprint()
        if current != recorded:
            self._stop_for_integrity(run, describe_fingerprint_change(str(recorded), current))

    def _stop_for_integrity(self, run: Run, message: str) -> None:
        self._journal().add_event("integrity", message, run_id=run.id)
        raise EngineError(message)

    def _fill_workers(self) -> None:
        """Give every free worker the oldest experiment that waits to train (on its kind of
        device, when it has trained on one), and with devices of several kinds, train the best
        on a kind where an experiment waits to be compared with it."""
        journal = self._journal()
        for experiment in self._waiting():
            free = [w for w in self.workers if w.index not in self._flights]
            if not free:
                return
            wanted = wanted_kind(experiment, self._kinds(), self.settings.engine.noise_runs)
            worker = next((w for w in free if wanted is None or w.kind == wanted), None)
            if worker is None:
                continue
            if experiment.status == "proposed":  # journaled, never asked about (a restart)
                status = "awaiting_approval" if self.mode == SUPERVISED else "committed"
                journal.update_experiment(experiment.id, status=status)
                if status != "committed":
                    continue
            elif experiment.status != "committed":
                continue
            self._start(worker, experiment)
        run = self._run_record()
        best = self.judge.best_experiment(run) if len(self._kinds()) > 1 else None
        under_way = {f.worker.kind for f in self._flights.values() if f.reference}
        unfinished = journal.unfinished_experiments(run.id) if best is not None else []
        for kind in references_needed(best, unfinished, self._kinds(), under_way):
            assert best is not None
            worker = next(
                (w for w in self.workers if w.index not in self._flights and w.kind == kind),
                None,
            )
            if worker is not None:
                self._start(worker, best, reference=True)

    def _kinds(self) -> tuple[str, ...]:
        return tuple(sorted({worker.kind for worker in self.workers}))

    def _start(self, worker: Worker, experiment: Experiment, reference: bool = False) -> None:
        journal = self._journal()
        run = self._run_record()
        self._verify_fixed_parts(run)
        details = dict(experiment.details or {})
        # Each training of one script (noise runs, confirmations) on one kind of device gets
        # the next seed.
        base_seed = self.settings.trainer.seed
        here = [t for t in details.get("trials", []) if trial_kind(t) == worker.kind]
        seed = base_seed + len(here)
        directory = self.paths.training(
            run.tag,
            experiment.number,
            attempt=experiment.attempt,
            seed=None if seed == base_seed else seed,
            rebase=int(details.get("rebases", 0)),
            kind=worker.kind,
        )
        trainer = {"seed": seed}
        if worker.threads and not self.settings.trainer.threads:
            trainer["threads"] = worker.threads
        settings = self.settings.model_copy(
            update={"trainer": self.settings.trainer.model_copy(update=trainer)}
        )
        files = RunFiles.under(directory)
        assert experiment.commit_sha is not None
        worktree = worktrees.checkout(
            self.workspace.repo, self.paths, worker.index, experiment.commit_sha
        )
        # Step plans are remembered per run and device: every script of the run is planned
        # under the conditions it trains in, never by a plan made elsewhere.
        pacing = self.paths.pacing(run.tag, worker.index)
        placement: dict[str, Any] = {"device": worker.device, "cpus": worker.cpus, "cwd": worktree}
        command = self.settings.trainer.command
        if command:
            # Script mode: the command runs the worktree's own file, the experiment's version.
            journal.set_state(confinement=SCRIPT_MODE_CONFINEMENT)
            job = dataclasses.replace(
                build_job(
                    settings,
                    worktree / self.workspace.script_name,
                    files,
                    self.workspace.path,
                    pacing=pacing,
                    **placement,
                ),
                command_line=["/bin/sh", "-c", command],
                metrics_path=None,
                summary_path=None,
            )
        else:
            script = directory / self.workspace.script_name
            script.write_text(self.workspace.script_at(experiment.commit_sha))
            job = build_job(
                settings, script, files, self.workspace.path, pacing=pacing, **placement
            )
        # Early abort: the best run's curve to compare with, unless this is the baseline, a
        # repeated run of a script (noise floor, confirmation) or a script-mode command.
        watch = (
            None
            if command or details.get("trials") or reference
            else early_abort_watch(
                self._journal(), self.settings.engine, run, experiment, worker.kind
            )
        )
        if not reference:  # a reference training leaves its (decided) experiment as it is
            experiment = journal.update_experiment(
                experiment.id,
                status="training",
                started_at=experiment.started_at or self.clock(),
                log_path=str(files.log),
                details={**details, "seed": seed, "training_kind": worker.kind},
            )
        where = f" on {worker.label}" if len(self.workers) > 1 else ""
        what = f"the best, #{experiment.number}, measured" if reference else f"#{experiment.number}"
        self.say(f"{what} training for {job.budget_seconds:g} s{where}")
        if len(self.workers) == 1:
            # One worker: the model is unloaded before each training. With more it stays where
            # the researcher put it ([agent] settings), as trainings never pause for it.
            self.agent.before_training(uses_gpu=settings.trainer.device != "cpu" and self._gpu_seen)
        handle = self.executor.start(job)
        self.marks.append(("train_start", time.perf_counter(), worker.index, experiment.number))
        flight = Flight(
            experiment=experiment,
            worker=worker,
            handle=handle,
            job=job,
            files=files,
            seed=seed,
            watch=watch,
            on_phase=lambda _: self._publish(force=True),
            journal=journal,
            reference=reference,
        )
        self._flights[worker.index] = flight
        self._publish(force=True)

    def _tick_flights(self) -> None:
        for index, flight in list(self._flights.items()):
            result = flight.tick()
            if result is None:
                continue
            del self._flights[index]
            self.marks.append(("train_end", time.perf_counter(), index, flight.number))
            self._publish(force=True)
            self._finish(flight, result)

    def _abandon_flights(self) -> None:
        """Stop the trainings still in flight (the engine is leaving); each runs again when it
        starts next."""
        if not self._flights or self.journal is None:
            return
        for flight in self._flights.values():
            flight.stop()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for flight in list(self._flights.values()):
            while flight.tick() is None and time.monotonic() < deadline:
                time.sleep(TICK_SECONDS)
            current = self._journal().experiment_by_id(flight.experiment.id)
            if current is not None and current.status == "training":
                self._requeue(current, "by the engine stopping")
        self._flights.clear()

    def _finish(self, flight: Flight, result: RunResult) -> None:
        journal = self._journal()
        run = self._run_record()
        if flight.reference:
            if result.outcome is Outcome.INTERRUPTED:
                return  # asked for again while an experiment waits for it
            reason = result.reason or result.outcome.status
            self.judge.record_reference(
                flight.experiment.id, result.val_bpb, flight.seed, flight.worker.kind, reason
            )
            return
        experiment = journal.experiment_by_id(flight.experiment.id)
        assert experiment is not None
        if result.outcome is Outcome.INTERRUPTED and self.control.stop_now:
            # The engine is stopping at once: the training runs again when it starts next.
            self._requeue(experiment, "by the engine stopping")
            return
        verdict = None if flight.watch is None else flight.watch.verdict
        if verdict is not None and result.outcome is Outcome.INTERRUPTED:
            record_result(journal, self.settings, experiment, result, flight.files, self.clock())
            self.judge.discard_early(experiment, verdict)
            return
        check = result.summary.get("device_check")
        if isinstance(check, dict) and check.get("usable") is False:
            # The device was refused (the probe, or torch cannot use it): every training there
            # would be refused too.
            self._requeue(experiment, "because its device was refused")
            label = flight.worker.label
            why = str(check.get("message")).removeprefix(f"{label}: ")
            self._stop_for_integrity(run, f"the device check refused {label}: {why}")
        corpus = str(result.summary.get("corpus_fingerprint") or "")
        if run.corpus_fingerprint and corpus and corpus != run.corpus_fingerprint:
            # Measured on other data: not comparable. Nothing is decided; it trains again
            # once the corpus is back.
            self._requeue(experiment, "because the corpus changed")
            self._stop_for_integrity(
                run,
                f"the corpus changed since this run started (fingerprint "
                f"{run.corpus_fingerprint[:12]} -> {corpus[:12]}): results on it would not be "
                "comparable. Restore the corpus, or start a new run with `cockpit run --tag NEW`.",
            )
        record_result(journal, self.settings, experiment, result, flight.files, self.clock())
        refreshed = journal.experiment_by_id(experiment.id)
        assert refreshed is not None
        if refreshed.number == 0 or run.best_val_bpb is not None:
            self.judge.decide(refreshed)

    # --- deciding ------------------------------------------------------------------------

    def _decide_waiting(self) -> None:
        """Decide the trained experiments that waited for the baseline's decision, for the
        best's result on their kind of device (or for a restart)."""
        run = self._run_record()
        in_flight = {
            flight.experiment.id for flight in self._flights.values() if not flight.reference
        }
        measuring = {flight.worker.kind for flight in self._flights.values() if flight.reference}
        for experiment in self._journal().unfinished_experiments(run.id):
            if experiment.status != "evaluating" or experiment.id in in_flight:
                continue
            if str((experiment.details or {}).get("training_kind") or "") in measuring:
                continue  # the best is being measured on its kind right now
            if experiment.number == 0 or run.best_val_bpb is not None:
                self.judge.decide(experiment)
                run = self._run_record()

    # --- commands ------------------------------------------------------------------------

    def _handle_commands(self) -> None:
        journal = self._journal()
        for command in journal.pending_commands():
            try:
                result = self._apply(Steer.parse(command.kind, command.payload))
            except (WorkspaceError, ValueError, KeyError) as exc:
                journal.finish_command(command.id, "failed", str(exc))
                continue
            journal.finish_command(command.id, "done", result)

    def _apply(self, steer: Steer) -> str:
        journal = self._journal()
        run = self._run_record()
        control = self.control
        kind = steer.kind
        if kind is Kind.PAUSE:
            control.paused = True
            return "paused: nothing new starts; what trains goes on"
        if kind is Kind.RESUME:
            control.paused = False
            return "resumed"
        if kind is Kind.STOP_RUN:
            flights = [
                f
                for f in self._flights.values()
                if steer.experiment is None or f.number == steer.experiment
            ]
            if not flights:
                raise ValueError(
                    "no training is running"
                    if steer.experiment is None
                    else f"#{steer.experiment} is not training"
                )
            for flight in flights:
                flight.stop()
            return "stopping " + ", ".join(f"#{f.number}" for f in flights)
        if kind is Kind.STOP_ENGINE:
            control.stop_engine = True
            control.stop_now = steer.now
            stop = PendingStop(now=steer.now, asked_at=self.clock())
            journal.set_state(**stop.to_state())  # `cockpit status` and the cockpit show it
            return stop.message
        if kind is Kind.SET_MODE:
            self.mode = steer.mode
            journal.update_run(run.id, mode=steer.mode)
            if steer.mode == AUTONOMOUS:
                for waiting in self._waiting():
                    if waiting.status == "awaiting_approval":
                        journal.update_experiment(waiting.id, status="committed")
            return f"mode {steer.mode}"
        if kind is Kind.NOTE:
            journal.add_event("note", steer.text, run_id=run.id)
            return "noted"
        if kind in (Kind.APPROVE, Kind.VETO):
            return self._approve_or_veto(steer)
        assert steer.experiment is not None
        return self.judge.override(run, kind is Kind.OVERRIDE_KEEP, steer.experiment)

    def _approve_or_veto(self, steer: Steer) -> str:
        journal = self._journal()
        waiting = [e for e in self._waiting() if e.status == "awaiting_approval"]
        if steer.experiment is None and not waiting:
            raise ValueError("no proposal is waiting for approval")
        number = waiting[0].number if steer.experiment is None else steer.experiment
        experiment = next((e for e in waiting if e.number == number), None)
        if experiment is None:
            raise ValueError(f"#{number} is not waiting for approval")
        if steer.kind is Kind.APPROVE:
            journal.update_experiment(experiment.id, status="committed")
            return f"approved #{number}"
        reason = steer.reason or "vetoed by the researcher"
        # Its reason, which the model reads, in the same transaction as the decision.
        veto = ("veto", f"#{number} {experiment.description}: {reason}")
        self.judge.record_decision(experiment, "veto", reason, events=[veto])
        self.say(f"#{number} vetoed: {reason}")
        return f"vetoed #{number}"

    # --- state ---------------------------------------------------------------------------

    def _set_phase(self, phase: str, **values: Any) -> None:
        self._journal().set_state(phase=phase, heartbeat=self.clock(), **values)

    def _publish(self, force: bool = False) -> None:
        """Say what the workers do (state `workers`, and the phase, experiment and time left
        of the latest training, as a single worker has always said them)."""
        workers = [
            self._flights[worker.index].state()
            if worker.index in self._flights
            else {"worker": worker.index, "device": worker.label, "experiment": None,
                  "phase": "idle", "started_at": None, "budget_seconds": None, "pid": None}
            for worker in self.workers
        ]  # fmt: skip
        lead = self._lead()
        waiting = [] if lead is not None or self.control.paused else self._waiting()
        if lead is not None:
            phase, number = lead.phase, lead.number
        elif self.control.paused:
            phase, number = "paused", None
        elif waiting and all(e.status == "awaiting_approval" for e in waiting):
            phase, number = "awaiting_approval", waiting[0].number
        else:
            phase, number = None, None
        published = (phase, number, workers)
        journal = self._journal()
        if force or published != self._published:
            self._published = published
            values: dict[str, Any] = {
                "workers": workers,
                "train_pids": [w["pid"] for w in workers if w["pid"] is not None],
                "train_pid": lead.handle.pid if lead is not None else None,
            }
            if phase is not None:
                values.update(phase=phase, experiment=number)
            if lead is not None:
                # A new training's countdown starts with it, not at the next heartbeat.
                values.update(time_left=round(lead.time_left(), 1))
            journal.set_state(**values)
        self._monitor.set_root(lead.handle.pid if lead is not None else None)
        self._heartbeat(lead)

    def _lead(self) -> Flight | None:
        """The training started last: the one the status line and the monitor follow."""
        # A copy first: the monitor's thread asks while the loop may change the flights.
        return max(list(self._flights.values()), key=lambda f: f.handle.started_at, default=None)

    def _heartbeat(self, lead: Flight | None) -> None:
        """Once a second at most: the engine is alive, and the time left of the training it
        follows. The countdown rides on the heartbeat so that it moves as often as the
        heartbeat does, and the journal takes one write a second for both."""
        now = self.clock()
        if now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        values: dict[str, Any] = {"heartbeat": now, "pid": os.getpid()}
        if lead is not None:
            values.update(time_left=round(lead.time_left(), 1))
        self._journal().set_state(**values)
        self._watch_agent()

    def _watch_agent(self) -> None:
        health = getattr(self.proposer, "health", None)
        if health is None:
            return
        state = str(health.state.value)
        if state != self._agent_state:
            self._agent_state = state
            self.notices.agent_state(state, str(health.message))

    def _on_sample(self, sample: MonitorSample) -> None:
        run = self.run_record
        if run is None or self.journal is None:
            return
        self._gpu_seen = self._gpu_seen or sample.gpu.available
        lead = self._lead()
        self.journal.add_sample(
            run.id, sample.to_dict(), experiment_id=lead.experiment.id if lead else None
        )

    def _export(self) -> None:
        """After a decision: rewrite results.tsv, and prune what the decided runs left."""
        if self.run_record is not None:
            journal = self._journal()
            export_results_tsv(journal, self.run_record.id, self.workspace.path / "results.tsv")
            programs.prune(
                self.paths.runs(self.run_record.tag), journal.experiments(self.run_record.id)
            )


def fixed_parts_fingerprint() -> str:
    """The fingerprint of the installed harness and evaluator (the trainer modules but the
    research script), found without importing them."""
    spec = importlib.util.find_spec("trainer")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the trainer package is not installed; reinstall research-cockpit")
    return fingerprint_fixed_parts(Path(next(iter(spec.submodule_search_locations))), "")
