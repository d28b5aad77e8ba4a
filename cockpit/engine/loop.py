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

The engine schedules; its collaborators do the rest: opening, resuming and closing the run
(`runs`), the researcher's commands (`helm.Helm`), starting a training (`launch.Launcher`),
following the trainings in flight (`flight.Flights`), what becomes of one that ended
(`landing`), deciding (`judging.Judge` over `decide.decide`, a pure function), drafting
proposals (`drafts.DraftDesk`), and saying in the journal what it does
(`publishing.Publisher`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.proposal import Proposer
from cockpit.config import Settings
from cockpit.engine.agents import AgentRecorder, AgentSetup
from cockpit.engine.drafts import DraftDesk
from cockpit.engine.flight import Flights
from cockpit.engine.helm import Control, Helm
from cockpit.engine.judging import Judge
from cockpit.engine.kinds import references_needed, wanted_kind
from cockpit.engine.landing import decide_waiting, land
from cockpit.engine.launch import Launcher
from cockpit.engine.monitor import GpuSource, default_gpu_source
from cockpit.engine.notify import EngineNotices, Notifier
from cockpit.engine.proposing import Drafting
from cockpit.engine.publishing import Publisher
from cockpit.engine.runner import Executor, LocalExecutor
from cockpit.engine.runs import (
    add_baseline,
    close_run,
    export_run,
    open_run,
    recover,
    verify_fixed_parts,
)
from cockpit.engine.verification import verifies_at_end, verify_at_end
from cockpit.engine.worker_plan import plan_engine_workers
from cockpit.engine.workers import Worker
from cockpit.engine.workspace import Workspace
from cockpit.errors import EngineError
from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock
from cockpit.store.records import Experiment, Run
from cockpit.store.steering import SUPERVISED, Steer

TICK_SECONDS = 0.05  # how often the loop looks at its trainings, commands and drafts
# With several workers, proposals are drafted ahead of need (a worker that frees takes one at
# once), up to this many at a time (the model server answers them side by side as far as its
# OLLAMA_NUM_PARALLEL lets it; beyond, they wait their turn there).
MAX_DRAFTING = 4


def journal_path(workspace: Workspace) -> Path:
    return workspace.paths.journal


@dataclass
class EngineOptions:
    """What `cockpit run` asked for (the rest comes from the settings)."""

    tag: str | None = None
    experiments: int | None = None  # None: the settings' engine.experiments
    adopt: bool = False


class Engine:
    """Drives one research run of a workspace over its workers: hands each free worker the
    next experiment, and each training that ends to be decided."""

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
        self.settings = settings
        self.proposer = proposer
        # What the proposer reports goes into the journal; the LLM's server is freed of its
        # model before a GPU training.
        self.agent = agent if agent is not None else AgentSetup(proposer, AgentRecorder())
        self.gpu_source = gpu_source
        self.executor: Executor = executor or LocalExecutor()
        self.out = out
        self.clock = clock
        self.journal: Journal | None = None
        self.run_record: Run | None = None
        # None: planned from `[engine] workers` and the machine when the run starts.
        self._given_workers = workers
        self.workers: list[Worker] = []
        self.notices = EngineNotices(
            notifier or Notifier(settings.notify, echo=self.say), metric=settings.trainer.metric
        )
        # (what, perf_counter[, worker or experiment]) marks of the loop's own steps, for
        # `cockpit bench loop`.
        self.marks: list[tuple[Any, ...]] = []
        self.control = Control(mode=settings.engine.mode)
        self.flights = Flights()
        self.helm = Helm(
            self._journal,
            self._run_record,
            lambda: self.judge,
            self.control,
            self.flights,
            clock,
            self.say,
        )
        self.launcher = Launcher(
            workspace, settings, self.executor, self.agent, clock, self.say, self.marks
        )
        self.publisher = Publisher(self._journal, self.flights, clock, proposer, self.notices)
        self._draft_desk: DraftDesk | None = None
        self._judge: Judge | None = None

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
                self.publisher.stopped()
                self.notices.close()
                journal.close()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.control.stop_engine = self.control.stop_now = True
        for flight in self.flights:
            flight.stop()

    def _run(self, options: EngineOptions) -> int:
        run = self._open(options)
        self.workers = self._plan_workers()
        self._announce(run)
        recover(self._journal(), run)
        self._export()
        target = options.experiments if options.experiments is not None else run.target
        self.publisher.start_monitor(
            self.gpu_source or default_gpu_source(), run.id, self.settings.engine.sample_seconds
        )
        stopped = self._drive(target or 0)
        journal, run = self._journal(), self._run_record()
        close_run(journal, run, self.workspace, self.settings, stopped=stopped, say=self.say)
        if not stopped and verifies_at_end(self.settings, run):
            verified = self._verify(run)
            self.notices.engine_stopped(run.tag, "run finished", run.best_val_bpb, verified)
        return 0

    def _verify(self, run: Run) -> str | None:
        """Verify the finished run's best (`verify_at_end`); a stop asked meanwhile ends it."""

        def should_stop() -> bool:
            self.helm.handle_pending()
            return self.control.stop_engine

        best = self.judge.best_experiment(run)
        return verify_at_end(
            self.workspace, self._journal(), run, self.settings, best, self.say, should_stop
        )

    def _open(self, options: EngineOptions) -> Run:
        """Open the run (or resume it): it becomes the one the engine and its notices follow,
        in the mode it was left in."""
        self._draft_desk = None  # drafts belong to one run of the engine
        run = open_run(
            self._journal(),
            self.workspace,
            self.settings,
            self.proposer.name,
            tag=options.tag,
            experiments=options.experiments,
            adopt=options.adopt,
            say=self.say,
        )
        self.run_record = run
        self.control.mode = run.mode
        self.notices.tag = run.tag
        return run

    def _plan_workers(self) -> list[Worker]:
        """The workers of this engine: those it was given, else from `[engine] workers`, the
        executor and the machine."""
        if self._given_workers is not None:
            return list(self._given_workers)
        return plan_engine_workers(self.settings, self.executor, self.gpu_source)

    def _announce(self, run: Run) -> None:
        """Say that the engine runs (in the journal and on its output), and start the agent."""
        journal = self._journal()
        self.publisher.starting(run)
        self.agent.attach(journal, run.id)
        self.agent.recorder.echo = self.say
        self.agent.start()
        journal.set_state(**self.agent.state())
        self.say(f"run {run.tag} on branch {run.branch} in {self.workspace.path}")
        if len(self.workers) > 1:
            devices = ", ".join(worker.label for worker in self.workers)
            self.say(f"{len(self.workers)} workers: {devices}")

    def _drive(self, target: int) -> bool:
        """Loop until the run is done or the engine is stopped, then leave what the loop
        started: the monitor, the drafts, the trainings in flight. Whether it was stopped."""
        reason = "engine stopped"
        try:
            self._loop(target)
        except EngineError as exc:
            self.control.stop_engine = True
            reason = f"engine stopped: {exc}"
            raise
        finally:
            self.publisher.close_monitor()
            self.drafts.close()
            self._abandon_flights()
            self._export()
            stopped = self.control.stop_engine
            run = self._run_record()
            finished = not stopped and reason == "engine stopped"
            if not (finished and verifies_at_end(self.settings, run)):  # else: once verified
                self.notices.engine_stopped(
                    run.tag, "run finished" if finished else reason, run.best_val_bpb
                )
        return stopped

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

    def _kinds(self) -> tuple[str, ...]:
        return tuple(sorted({worker.kind for worker in self.workers}))

    # --- the loop ------------------------------------------------------------------------

    def _loop(self, target: int) -> None:
        control = self.control
        while True:
            self.helm.handle_pending()
            self._tick_flights()
            if control.stop_now:
                for flight in self.flights:
                    if not flight.stop_requested:
                        flight.stop()
            decide_waiting(self._journal(), self._run_record, self.judge, self.flights)
            if not control.stop_engine and not control.paused:
                self.drafts.collect(self._run_record(), control.mode)
                self._fill_workers()
                self._order_drafts(target)
            elif control.stop_engine:
                # A ready draft is still committed, to wait for the next engine; one the model
                # is still writing is not waited for (`close` cancels its request).
                self.drafts.collect(self._run_record(), control.mode)
            drafting = bool(self.drafts.pending) and not control.stop_engine
            if (
                not self.flights
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

    def _waiting(self) -> list[Experiment]:
        """Experiments not in flight that wait for a worker or for approval, oldest first."""
        in_flight = self.flights.experiment_ids()
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
            add_baseline(journal, self.workspace, run)
            return
        desk = self.drafts
        # Workers that started together finish together: a spare for each but the one that
        # takes the proposal drafted as it frees (none with one worker: it proposes on the
        # latest result, and the model is unloaded while it trains).
        ahead = len(self.workers) - 1
        limit = min(MAX_DRAFTING, len(self.workers))
        free = len(self.workers) - len(self.flights)
        while not desk.exhausted and len(desk.pending) < limit:
            if len(self._waiting()) + len(desk.pending) >= free + ahead:
                return
            if target and self._planned() + len(desk.pending) >= target:
                return
            if desk.adopt_orphan(run, self.control.mode):
                continue
            if not self.flights:
                self.publisher.set_phase("proposing", experiment=journal.next_number(run.id))
            desk.order(run, self.control.mode)

    # --- training ------------------------------------------------------------------------

    def _fill_workers(self) -> None:
        """Give every free worker the oldest experiment that waits to train (on its kind of
        device, when it has trained on one), and with devices of several kinds, train the best
        on a kind where an experiment waits to be compared with it."""
        journal = self._journal()
        for experiment in self._waiting():
            free = [w for w in self.workers if not self.flights.busy(w)]
            if not free:
                return
            wanted = wanted_kind(experiment, self._kinds(), self.settings.engine.noise_runs)
            worker = next((w for w in free if wanted is None or w.kind == wanted), None)
            if worker is None:
                continue
            if experiment.status == "proposed":  # journaled, never asked about (a restart)
                status = "awaiting_approval" if self.control.mode == SUPERVISED else "committed"
                journal.update_experiment(experiment.id, status=status)
                if status != "committed":
                    continue
            elif experiment.status != "committed":
                continue
            self._start(worker, experiment)
        run = self._run_record()
        best = self.judge.best_experiment(run) if len(self._kinds()) > 1 else None
        unfinished = journal.unfinished_experiments(run.id) if best is not None else []
        for kind in references_needed(best, unfinished, self._kinds(), self.flights.measuring()):
            assert best is not None
            worker = next(
                (w for w in self.workers if not self.flights.busy(w) and w.kind == kind), None
            )
            if worker is not None:
                self._start(worker, best, reference=True)

    def _start(self, worker: Worker, experiment: Experiment, reference: bool = False) -> None:
        """Start a training on a free worker, once the run's fixed parts are what it started
        with."""
        journal, run = self._journal(), self._run_record()
        verify_fixed_parts(journal, run)
        flight = self.launcher.launch(
            journal,
            run,
            worker,
            experiment,
            reference=reference,
            workers=len(self.workers),
            gpu_seen=self.publisher.gpu_seen,
            on_phase=lambda _: self._publish(force=True),
        )
        self.flights.add(flight)
        self._publish(force=True)

    def _tick_flights(self) -> None:
        for flight, result in self.flights.landed():
            self.marks.append(
                ("train_end", time.perf_counter(), flight.worker.index, flight.number)
            )
            self._publish(force=True)
            land(
                flight,
                result,
                self._journal(),
                self._run_record(),
                self.settings,
                self.judge,
                stopping_now=self.control.stop_now,
                clock=self.clock,
            )

    def _abandon_flights(self) -> None:
        """Stop the trainings still in flight (the engine is leaving); each runs again when it
        starts next."""
        if self.journal is not None:
            self.flights.abandon(self.journal)

    # --- commands and state --------------------------------------------------------------

    def _apply(self, steer: Steer) -> str:
        """Carry out one of the researcher's commands (see `Helm.apply`)."""
        return self.helm.apply(steer)

    def _publish(self, force: bool = False) -> None:
        self.publisher.publish(self.workers, self._waiting, paused=self.control.paused, force=force)

    def _export(self) -> None:
        """After a decision: rewrite results.tsv, and prune what the decided runs left."""
        if self.run_record is not None:
            export_run(self._journal(), self.run_record, self.workspace)
