"""The research loop: propose, commit, train, evaluate, decide, again.

One engine runs per workspace (a lock file). The journal is its memory: every step is
recorded before the next begins, so an engine killed at any moment (kill -9 included) picks
up the same run where it stopped. Nothing is decided twice, no result is lost, and a training
that was cut short is recorded as interrupted and run again.

    baseline (experiment 0: the best script unchanged)
    loop: commands -> propose -> commit (ref refs/cockpit/<tag>/<n>) -> [supervised: wait]
          -> train (own process tree, live metrics and readings into the journal)
          -> decide (keep: the branch advances; discard: it does not) -> results.tsv
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib.util
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pygit2

from agent.proposal import (
    CrashReport,
    LedgerEntry,
    NoProposal,
    Proposal,
    ProposalContext,
    Proposer,
    script_hash,
)
from cockpit.config import Settings
from cockpit.engine import programs
from cockpit.engine.agents import AgentRecorder, AgentSetup
from cockpit.engine.early_abort import Verdict, Watch, calibrate
from cockpit.engine.failpoints import failpoint
from cockpit.engine.fingerprint import describe_fingerprint_change, fingerprint_fixed_parts
from cockpit.engine.integrity import SEED_ONLY, Flag, describe_flags, inspect_script
from cockpit.engine.jobs import RunFiles, build_job
from cockpit.engine.journal import Experiment, Journal, Run
from cockpit.engine.monitor import GpuSource, Monitor, MonitorSample, default_gpu_source
from cockpit.engine.noise import NoiseFloor, compare, needs_confirmation, noise_floor
from cockpit.engine.paths import WorkspacePaths
from cockpit.engine.readmodel import paired_trace, trial_results
from cockpit.engine.results_tsv import export_results_tsv
from cockpit.engine.runner import (
    Executor,
    LocalExecutor,
    RunResult,
    TrainingProcess,
    is_training_process,
    kill_tree,
    log_tail,
)
from cockpit.engine.workspace import Workspace, WorkspaceError, default_tag, lines_of_code
from trainer.outcomes import Outcome
from trainer.summary import parse_summary

HEARTBEAT_SECONDS = 1.0
METRICS_FLUSH_SECONDS = 0.5
COMMAND_POLL_SECONDS = 0.2
CRASH_TAIL_LINES = 40
PROPOSAL_ATTEMPTS = 5
EARLY_ABORT_CHECK_SECONDS = 0.5  # how often a training's loss is held against the best run's
REFUSALS_SHOWN = 10  # the latest integrity refusals the proposer is told of


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


class EngineError(Exception):
    """The engine cannot go on; the message says why and what to do."""


@contextlib.contextmanager
def engine_lock(cockpit_dir: Path) -> Iterator[None]:
    """One engine per workspace: an exclusive lock that dies with the process holding it."""
    path = WorkspacePaths(cockpit_dir.parent).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise EngineError(
                f"an engine is already running for this workspace (pid {holder}); "
                "see it with `cockpit status`, stop it with `cockpit stop`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    stop_current: bool = False
    approved: set[int] = field(default_factory=set)
    vetoed: dict[int, str] = field(default_factory=dict)


class Engine:
    """Drives one research run of a workspace."""

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
    ) -> None:
        self.workspace = workspace
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
        self._last_heartbeat = 0.0
        self._process: TrainingProcess | None = None
        self._current: Experiment | None = None
        self._monitor = Monitor(None, None)
        # (what, perf_counter) marks of the loop's own steps, for `cockpit bench loop`.
        self.marks: list[tuple[str, float]] = []

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
                journal.set_state(phase="stopped", pid=None, train_pid=None, time_left=None)
                journal.close()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.control.stop_engine = self.control.stop_now = True
        if self._process is not None:
            self._process.stop()

    def _run(self, options: EngineOptions) -> int:
        journal = self._journal()
        run = self._open_run(options)
        self.run_record = run
        self.mode = run.mode
        journal.set_state(pid=os.getpid(), run=run.tag, phase="starting", heartbeat=self.clock())
        journal.add_event("engine", f"engine started (pid {os.getpid()})", run_id=run.id)
        self.agent.recorder.attach(journal, run.id)
        self.agent.recorder.echo = self.say
        self.agent.start()
        journal.set_state(**self.agent.state())
        self.say(f"run {run.tag} on branch {run.branch} in {self.workspace.path}")
        self._recover(run)
        target = options.experiments if options.experiments is not None else run.target
        monitor = Monitor(
            self.gpu_source or default_gpu_source(),
            self._on_sample,
            interval=self.settings.engine.sample_seconds,
        )
        monitor.start(None)
        self._monitor = monitor
        try:
            self._loop(run, target or 0)
        finally:
            monitor.close()
            self._export()
        stopped = self.control.stop_engine
        journal.update_run(run.id, status="stopped" if stopped else "finished")
        journal.add_event("engine", "engine stopped" if stopped else "run finished", run_id=run.id)
        best = self._run_record().best_val_bpb
        self.say(
            f"{'stopped' if stopped else 'finished'}: best val_bpb {best:.6f}"
            if best
            else "stopped"
        )
        if best and not stopped and self.settings.engine.test_split_summary:
            cache, runs = self.settings.paths.cache_dir, self.workspace.cockpit_dir / "runs"
            found = programs.generalisation(runs / run.tag, journal.experiments(run.id), cache)
            self.say(programs.summary_line(found))
        return 0

    def _journal(self) -> Journal:
        assert self.journal is not None
        return self.journal

    def _run_record(self) -> Run:
        assert self.run_record is not None
        run = self._journal().run(self.run_record.id)
        assert run is not None
        self.run_record = run
        return run

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
        orphan = journal.get_state("train_pid")
        if isinstance(orphan, int) and is_training_process(orphan):
            kill_tree(orphan)
            journal.add_event(
                "engine", f"stopped an orphaned training process (pid {orphan})", run_id=run.id
            )
        journal.set_state(train_pid=None)
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
            if self.control.stop_engine:
                return
            if self.control.paused:
                self._set_phase("paused")
                time.sleep(COMMAND_POLL_SECONDS)
                continue
            experiment = self._next_experiment(run, target)
            if experiment is None:
                return
            self._advance(experiment)

    def _decided_count(self, run: Run) -> int:
        return sum(
            1
            for e in self._journal().experiments(run.id)
            if e.number > 0 and e.decision in ("keep", "discard", "crash")
        )

    def _next_experiment(self, run: Run, target: int) -> Experiment | None:
        """The unfinished experiment to carry on with, or a new proposal (None: done)."""
        journal = self._journal()
        pending = journal.unfinished_experiments(run.id)
        if pending:
            return pending[0]
        if journal.experiment(run.id, 0) is None:
            return self._baseline(run)
        if target and self._decided_count(run) >= target:
            return None
        return self._propose(run)

    def _advance(self, experiment: Experiment) -> None:
        """Take an experiment one step further."""
        if experiment.status in ("proposed", "awaiting_approval"):
            self._await_approval(experiment)
        elif experiment.status in ("committed", "training"):
            self._train(experiment)
        elif experiment.status == "evaluating":
            self._decide(experiment)

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

    def _context(self, run: Run, script: str, fix: CrashReport | None = None) -> ProposalContext:
        journal = self._journal()
        experiments = journal.experiments(run.id)
        ledger: list[LedgerEntry] = []
        best: float | None = None
        for e in experiments:
            if not e.is_final:
                continue
            delta = None if e.val_bpb is None or best is None else e.val_bpb - best
            ledger.append(LedgerEntry(e.number, e.description or "", e.status, e.val_bpb, delta))
            if e.decision == "keep" and e.val_bpb is not None:
                best = e.val_bpb
        events = journal.events(run.id, kinds=["note", "veto"], limit=50, latest=True)
        events.sort(key=lambda event: event.id)  # oldest first, as the proposer reads them
        refusals = [
            event
            for event in journal.events(run.id, kinds=["agent"], limit=200, latest=True)
            if (event.data or {}).get("type") == "refused"
        ]
        refusals.sort(key=lambda event: event.id)
        device = str(self.settings.trainer.device)
        program = self.workspace.path / "program.md"
        return ProposalContext(
            best_script=script,
            device="cuda" if device.startswith("cuda") else "cpu",
            tried_hashes=frozenset(e.script_hash for e in experiments if e.script_hash),
            ledger=ledger,
            notes=[event.message for event in events if event.kind == "note"],
            vetoes=[event.message for event in events if event.kind == "veto"],
            refused=[event.message for event in refusals[-REFUSALS_SHOWN:]],
            program=program.read_text(errors="replace") if program.is_file() else "",
            fix=fix,
        )

    def _crash_to_fix(self, run: Run) -> tuple[CrashReport, int] | None:
        """The failed experiment the proposer should fix now, and the one it descends from.

        Only the latest experiment, and only while its chain of fixes is shorter than
        `engine.fix_attempts`. Derived from the journal, so a restart asks for the same fix.
        """
        limit = self.settings.engine.fix_attempts
        experiments = self._journal().experiments(run.id)
        if not limit or not experiments:
            return None
        last = experiments[-1]
        if last.number == 0 or last.status not in ("crash", "timeout") or not last.commit_sha:
            return None
        origin = int((last.details or {}).get("fix_of", last.number))
        fixes = sum(1 for e in experiments if (e.details or {}).get("fix_of") == origin)
        if fixes >= limit:
            return None
        report = CrashReport(
            number=last.number,
            description=last.description,
            script=self.workspace.script_at(last.commit_sha),
            outcome=str(last.outcome),
            log_tail=last.crash_tail or last.decision_reason or "",
        )
        return report, origin

    def _propose(self, run: Run) -> Experiment | None:
        journal = self._journal()
        workspace = self.workspace
        number = journal.next_number(run.id)
        best = workspace.best_commit(run.tag)
        orphan = workspace.experiment_ref(run.tag, number)
        self._set_phase("proposing", experiment=number)
        proposal: Proposal | None
        details: dict[str, Any] | None = None  # what the engine knows of it beyond the proposal
        if orphan is not None:
            # Committed to git but never journaled (the engine died in between): adopt it.
            lines = workspace.repo[orphan].peel(pygit2.Commit).message.strip().splitlines()
            proposal = Proposal(
                lines[0] if lines else f"experiment {number}",
                "",
                workspace.script_at(orphan),
                "recovered",
            )
        else:
            best_script = workspace.script_at(best)
            proposal, flags = None, []
            fix = self._fix_proposal(run, best_script)
            if fix is not None:
                proposal, details = fix
                flags = inspect_script(best_script, proposal.script)
                if flags and self.mode != "supervised":
                    self._refuse(run, proposal, flags)
                    proposal, details = None, None
            if proposal is None:
                fresh = self._fresh_proposal(run, best_script)
                if fresh is None:
                    return None
                proposal, flags = fresh
            if flags:  # supervised mode: the researcher decides, with the flags in sight
                details = {
                    **(details or {}),
                    "flags": [
                        {"kind": flag.kind, "line": flag.line, "message": flag.message}
                        for flag in flags
                    ],
                }
        sha, ref = workspace.commit_experiment(
            run.tag, number, proposal.script, f"{proposal.description}\n\n{proposal.hypothesis}\n"
        )
        failpoint("committed")
        experiment = journal.add_experiment(
            run.id,
            number,
            parent_commit=best,
            commit_sha=sha,
            ref=ref,
            proposer=proposal.proposer,
            model=proposal.model,
            description=proposal.description,
            hypothesis=proposal.hypothesis,
            diff=workspace.diff(sha),
            script_hash=proposal.script_hash,
            lines_of_code=lines_of_code(proposal.script),
            status="awaiting_approval" if self.mode == "supervised" else "committed",
            details=details,
        )
        self.say(f"#{number} {proposal.description} ({proposal.proposer})")
        return experiment

    def _fix_proposal(self, run: Run, best_script: str) -> tuple[Proposal, dict[str, Any]] | None:
        """A fix of the experiment that just failed, when the proposer can make one, with the
        experiment details that tie it to the failure."""
        wanted = self._crash_to_fix(run)
        if wanted is None:
            return None
        report, origin = wanted
        journal = self._journal()
        try:
            proposal = self._ask(self._context(run, best_script, fix=report))
        except NoProposal as exc:
            journal.add_event(
                "agent",
                f"#{report.number} is recorded as {report.outcome}, not fixed: {exc}",
                run_id=run.id,
                data={"type": "no_fix", "experiment": report.number},
            )
            return None
        if journal.has_script_hash(run.id, proposal.script_hash):
            return None
        journal.add_event(
            "agent",
            f"fix of #{report.number} ({report.outcome}): {proposal.description}",
            run_id=run.id,
            data={"type": "fix", "experiment": report.number},
        )
        return proposal, {"fix_of": origin, "fixes": report.number}

    def _ask(
        self, context: ProposalContext, instead: Callable[[ProposalContext], Proposal] | None = None
    ) -> Proposal:
        """One proposal of the proposer (or of `instead`), its stream and state recorded as it
        goes."""
        self.agent.recorder.start_reply()
        self.marks.append(("propose_start", time.perf_counter()))
        try:
            return (instead or self.proposer.propose)(context)
        finally:
            self.marks.append(("propose_end", time.perf_counter()))
            self.agent.recorder.flush()
            self._journal().set_state(**self.agent.state())

    def _refuse(self, run: Run, proposal: Proposal, flags: list[Flag]) -> None:
        """Record a proposal the integrity checks refused; the proposer hears why next time."""
        reason = describe_flags(flags).replace("\n", "; ")
        self._journal().add_event(
            "agent",
            f"{proposal.description}: {reason}",
            run_id=run.id,
            data={
                "type": "refused",
                "reason": reason,
                "flags": [flag.kind for flag in flags],
                "proposer": proposal.proposer,
            },
        )
        self.say(f"  refused before training ({proposal.description}): {reason}")

    def _fresh_proposal(self, run: Run, best_script: str) -> tuple[Proposal, list[Flag]] | None:
        """A proposal whose script was never trained in this run, with its integrity flags
        (None: nothing left).

        In autonomous mode a proposal the integrity checks flag is refused before it is
        committed, and the reason goes back to the proposer with the next request; in
        supervised mode it waits for the researcher with its flags shown. When the proposer
        keeps proposing what is turned down, its stand-in (if it has one) gets as many tries."""
        journal = self._journal()
        turned_down = "the proposer keeps repeating scripts that were already trained or refused"
        propose_instead = getattr(self.proposer, "propose_instead", None)  # a stand-in's
        for attempt in range(PROPOSAL_ATTEMPTS * (1 if propose_instead is None else 2)):
            instead = None
            if propose_instead is not None and attempt >= PROPOSAL_ATTEMPTS:
                instead = functools.partial(propose_instead, reason=turned_down)
            try:
                proposal = self._ask(self._context(run, best_script), instead)
            except NoProposal as exc:
                journal.add_event("proposer", f"nothing left to propose: {exc}", run_id=run.id)
                self.say(f"nothing left to propose: {exc}")
                return None
            if journal.has_script_hash(run.id, proposal.script_hash):
                journal.add_event(
                    "agent",
                    f"{proposal.description}: this script was already trained",
                    run_id=run.id,
                    data={
                        "type": "rejected",
                        "reason": "already trained",
                        "proposer": proposal.proposer,
                    },
                )
                continue
            flags = inspect_script(best_script, proposal.script)
            if not flags or self.mode == "supervised":
                return proposal, flags
            self._refuse(run, proposal, flags)
        self.say(turned_down)
        return None

    def _await_approval(self, experiment: Experiment) -> None:
        journal = self._journal()
        if experiment.status == "proposed" or self.mode == "autonomous":
            journal.update_experiment(experiment.id, status="committed")
            return
        self._set_phase("awaiting_approval", experiment=experiment.number)
        while True:
            self._handle_commands()
            if (
                experiment.number in self.control.vetoed
                or experiment.number in self.control.approved
            ):
                break
            if self.control.stop_engine or self.mode == "autonomous":
                break
            time.sleep(COMMAND_POLL_SECONDS)
        if experiment.number in self.control.vetoed:
            reason = self.control.vetoed.pop(experiment.number) or "vetoed by the researcher"
            journal.record_decision(experiment.id, "veto", reason)
            journal.add_event(
                "veto",
                f"#{experiment.number} {experiment.description}: {reason}",
                run_id=experiment.run_id,
            )
            self.say(f"#{experiment.number} vetoed: {reason}")
        elif experiment.number in self.control.approved or self.mode == "autonomous":
            self.control.approved.discard(experiment.number)
            journal.update_experiment(experiment.id, status="committed")

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

    def _train(self, experiment: Experiment) -> None:
        journal = self._journal()
        run = self._run_record()
        self._verify_fixed_parts(run)
        run_directory = self.workspace.cockpit_dir / "runs" / run.tag
        directory = run_directory / f"{experiment.number:04d}"
        # Step plans are remembered per run: every script of the run is planned under the
        # run's own conditions, never by a plan made under another load elsewhere.
        pacing = run_directory / "pacing.json"
        if experiment.attempt > 1:  # attempts count from 1: a rerun gets a folder of its own
            directory = directory.with_name(f"{directory.name}-{experiment.attempt}")
        details = dict(experiment.details or {})
        # Each training of one script (noise runs, confirmations) gets the next seed.
        seed = self.settings.trainer.seed + len(details.get("trials", []))
        if seed != self.settings.trainer.seed:
            directory = directory.with_name(f"{directory.name}-seed{seed}")
        settings = self.settings.model_copy(
            update={"trainer": self.settings.trainer.model_copy(update={"seed": seed})}
        )
        files = RunFiles.under(directory)
        assert experiment.commit_sha is not None
        experiment_script = self.workspace.script_at(experiment.commit_sha)
        command = self.settings.trainer.command
        if command:
            # Script mode: the command runs the workspace's own file, so the experiment's
            # version goes there for the run (and the best one comes back after it).
            self._place_script(experiment_script)
            journal.set_state(confinement=SCRIPT_MODE_CONFINEMENT)
            job = dataclasses.replace(
                build_job(
                    settings, self.workspace.script_path, files, self.workspace.path, pacing=pacing
                ),
                command_line=["/bin/sh", "-c", command],
                metrics_path=None,
                summary_path=None,
            )
        else:
            script = directory / self.workspace.script_name
            script.write_text(experiment_script)
            job = build_job(settings, script, files, self.workspace.path, pacing=pacing)
        self.control.stop_current = False
        buffer: list[dict[str, Any]] = []
        last_flush = time.monotonic()
        # Early abort: the best run's curve to compare with, unless this is the baseline, a
        # repeated run of a script (noise floor, confirmation) or a script-mode command.
        watch = (
            None if command or details.get("trials") else self._early_abort_watch(run, experiment)
        )
        last_judged = 0.0

        def on_metric(record: dict[str, Any]) -> None:
            event = record.get("event")
            if event == "metric":
                buffer.append({**record, "seed": seed})  # which training: curves pair by seed
                if watch is not None:
                    watch.add(record)
            elif event == "phase" and record.get("phase") in ("exporting", "evaluating"):
                self._set_phase("evaluating", experiment=experiment.number)
            elif event == "start" and isinstance(record.get("confinement"), dict):
                journal.set_state(confinement=record["confinement"])

        def on_tick() -> None:
            nonlocal last_flush, last_judged
            if buffer and time.monotonic() - last_flush >= METRICS_FLUSH_SECONDS:
                journal.add_metrics(experiment.id, list(buffer))
                buffer.clear()
                last_flush = time.monotonic()
            due = time.monotonic() - last_judged >= EARLY_ABORT_CHECK_SECONDS
            if watch is not None and watch.verdict is None and due:
                last_judged = time.monotonic()
                if watch.check() is not None:
                    self.control.stop_current = True
            self._handle_commands()
            left = job.budget_seconds - (time.monotonic() - process.started_at)
            self._heartbeat(time_left=round(max(0.0, left), 1))

        journal.update_experiment(
            experiment.id,
            status="training",
            started_at=experiment.started_at or self.clock(),
            log_path=str(files.log),
            details={**details, "seed": seed},
        )
        self.say(f"#{experiment.number} training for {job.budget_seconds:g} s")
        self.agent.before_training(uses_gpu=settings.trainer.device != "cpu" and self._gpu_seen)
        process = self.executor.start(job)
        self.marks.append(("train_start", time.perf_counter()))
        self._process, self._current = process, experiment
        journal.set_state(train_pid=process.pid)
        self._set_phase("training", experiment=experiment.number)
        self._monitor.set_root(process.pid)
        try:
            result = process.wait(
                on_metric=on_metric,
                on_tick=on_tick,
                should_stop=lambda: self.control.stop_current or self.control.stop_now,
                poll_seconds=0.1,
            )
        finally:
            self.marks.append(("train_end", time.perf_counter()))
            self._monitor.set_root(None)
            self._process = self._current = None
            if command:
                self._place_script(self.workspace.script_at(self.workspace.best_commit(run.tag)))
        if buffer:
            journal.add_metrics(experiment.id, buffer)
        journal.set_state(train_pid=None)
        if result.outcome is Outcome.INTERRUPTED and self.control.stop_now:
            # The engine is stopping at once: the training runs again when it starts next.
            self._requeue(experiment, "by the engine stopping")
            return
        verdict = None if watch is None else watch.verdict
        if verdict is not None and result.outcome is Outcome.INTERRUPTED:
            self._record_result(experiment, result, files)
            self._discard_early(experiment, verdict)
            return
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
        self._record_result(experiment, result, files)
        refreshed = journal.experiment_by_id(experiment.id)
        assert refreshed is not None
        self._decide(refreshed)

    def _early_abort_watch(self, run: Run, experiment: Experiment) -> Watch | None:
        """A watch over this training against the best run's loss curve, with the margin
        calibrated on the keeps so far, when this experiment may be stopped early; None when
        early abort is off or there is nothing to compare with."""
        engine = self.settings.engine
        if not engine.early_abort or experiment.number == 0:
            return None
        journal = self._journal()
        experiments = journal.experiments(run.id)
        by_commit = {e.commit_sha: e for e in experiments if e.commit_sha}
        parent = by_commit.get(experiment.parent_commit or "")
        if parent is None:
            return None
        # The parent's training with the seed this one trains with first: the same batches.
        reference = paired_trace(journal.metrics(parent.id))
        if not reference.points:
            return None
        kept = []
        for other in experiments:
            origin = by_commit.get(other.parent_commit or "")
            if other.decision == "keep" and other.number > 0 and origin is not None:
                kept.append(
                    (
                        paired_trace(journal.metrics(other.id)),
                        paired_trace(journal.metrics(origin.id)),
                    )
                )
        margin = calibrate(kept, engine.early_abort_after, engine.early_abort_margin)
        return Watch(reference, margin, engine.early_abort_after)

    def _discard_early(self, experiment: Experiment, verdict: Verdict) -> None:
        """Record a training stopped early as discarded, with the evidence."""
        journal = self._journal()
        reason = verdict.describe()
        current = journal.experiment_by_id(experiment.id)
        details = dict((current.details if current else experiment.details) or {})
        journal.update_experiment(
            experiment.id, details={**details, "early_abort": verdict.evidence()}
        )
        journal.record_decision(experiment.id, "discard", reason)
        failpoint("decided")
        self.say(f"#{experiment.number} discard: {reason}")
        self._export()

    def _place_script(self, text: str) -> None:
        """Put a script into the working tree for a script-mode run, never over user edits."""
        path = self.workspace.script_path
        run = self._run_record()
        current = path.read_text() if path.exists() else None
        best = self.workspace.script_at(self.workspace.best_commit(run.tag))
        if current not in (best, text) and not self._journal().has_script_hash(
            run.id, script_hash(current or "")
        ):
            raise EngineError(
                f"{path.name} was edited while the run went on; commit your changes or move them "
                "aside, then start the engine again"
            )
        path.write_text(text)

    def _record_result(self, experiment: Experiment, result: RunResult, files: RunFiles) -> None:
        summary = dict(result.summary)
        outcome, value = result.outcome.status, result.val_bpb
        reason = result.reason
        if self.settings.trainer.command:
            # Script mode: the figures are whatever the command printed (self-reported).
            metric = self.settings.trainer.metric
            summary = (
                parse_summary(files.log.read_text(errors="replace")) if files.log.exists() else {}
            )
            summary.update(self_reported=True, metric=metric)
            value = summary.get(metric) if isinstance(summary.get(metric), (int, float)) else None
            if outcome == "ok" and value is None:
                outcome, reason = (
                    "crash",
                    f"the command's output has no '{metric}:' line in a summary block",
                )
                summary["reason"] = reason
        cuda = str(
            summary.get("device", "cuda" if summary.get("self_reported") else "")
        ).startswith("cuda")
        memory = summary.get("peak_vram_mb") if cuda else summary.get("peak_rss_mb")
        crash_tail = None
        if outcome != "ok":
            crash_tail = log_tail(files.log, CRASH_TAIL_LINES)
        self._journal().update_experiment(
            experiment.id,
            status="evaluating",
            outcome=outcome,
            exit_code=result.exit_code,
            val_bpb=value,
            peak_memory_mb=memory,
            training_seconds=summary.get("training_seconds"),
            total_seconds=summary.get("total_seconds"),
            num_steps=summary.get("num_steps"),
            summary={**summary, "runner_reason": reason},
            crash_tail=crash_tail,
            ended_at=self.clock(),
        )

    # --- deciding ------------------------------------------------------------------------

    def _decide(self, experiment: Experiment) -> None:
        journal = self._journal()
        run = self._run_record()
        number = experiment.number
        if experiment.outcome != "ok" or experiment.val_bpb is None:
            reason = (experiment.summary or {}).get("reason") or (experiment.summary or {}).get(
                "runner_reason"
            )
            status = {"timeout": "timeout", "interrupted": "interrupted"}.get(
                str(experiment.outcome), "crash"
            )
            journal.record_decision(
                experiment.id, "crash", f"{experiment.outcome}: {reason or 'no summary'}", status
            )
            self.say(f"#{number} {status}: {reason}")
            self._export()
            if number == 0:
                self.control.stop_engine = True
                raise EngineError(
                    f"the baseline failed ({experiment.outcome}: {reason}); fix train.py in "
                    f"{self.workspace.path} and run again (its log: {experiment.log_path})"
                )
            return
        summary = experiment.summary or {}
        trials = self._record_trial(experiment)
        values = [float(trial["val_bpb"]) for trial in trials]
        value = math.fsum(values) / len(values)
        runs = f"the mean of {len(values)} runs" if len(values) > 1 else "one run"
        if number == 0:
            assert experiment.commit_sha is not None
            if len(values) < self.settings.engine.noise_runs:
                self._train_again(experiment, trials, "noise floor: baseline run")
                return
            noise = self._noise_floor(run)
            journal.update_experiment(experiment.id, val_bpb=value)
            journal.record_decision(
                experiment.id,
                "keep",
                f"baseline: val_bpb {value:.6f} ({runs}); {noise.describe()}",
                run_update={
                    "baseline_val_bpb": value,
                    "best_val_bpb": value,
                    "best_commit": experiment.commit_sha,
                    "corpus_fingerprint": str(summary.get("corpus_fingerprint", "")),
                },
            )
            self.say(f"#0 baseline val_bpb {value:.6f} ({runs}); {noise.describe()}")
            self._export()
            return
        best = run.best_val_bpb
        best_experiment = self._best_experiment(run)
        assert best is not None and experiment.commit_sha is not None
        noise = self._noise_floor(run)
        margin = noise.margin
        own = {int(trial["seed"]): float(trial["val_bpb"]) for trial in trials}
        best_runs = dict(trial_results(best_experiment)) if best_experiment else {}
        comparison = compare(own, best_runs, best)
        delta = comparison.delta
        if needs_confirmation(-delta, margin, self.settings.engine.confirm_multiple, len(values)):
            self._train_again(
                experiment,
                trials,
                f"confirming a gain of {-delta:.6f} (margin {margin:.6f}): another run",
            )
            return
        best_lines = best_experiment.lines_of_code if best_experiment else None
        fewer_lines = (
            experiment.lines_of_code is not None
            and best_lines is not None
            and experiment.lines_of_code < best_lines
        )
        keep, reason = comparison.verdict(best, margin, fewer_lines, runs)
        flagged = {flag.get("kind") for flag in (experiment.details or {}).get("flags") or []}
        if keep and SEED_ONLY in flagged:
            # Approved despite its flag: whatever it measured, another seed is only noise.
            keep, reason = False, f"{reason}, but it changes nothing but the random seed"
        evidence = {
            "metric": self.settings.trainer.metric,
            "source": "self-reported" if self.settings.trainer.command else "harness",
            "runs": values,
            "margin": margin,
            "spread": noise.spread,
            "best_before": best,
            # What the decision set it against: the best's runs with the same seeds, when
            # the best had one for each (paired), else the best's mean.
            "compared_with": comparison.reference,
            "paired_seeds": list(comparison.seeds),
        }
        journal.update_experiment(
            experiment.id,
            val_bpb=value,
            details={**(experiment.details or {}), "trials": trials, "evidence": evidence},
        )
        if keep:
            self.workspace.keep(run.tag, experiment.commit_sha)
            failpoint("kept")
            journal.record_decision(
                experiment.id,
                "keep",
                reason,
                run_update={"best_val_bpb": value, "best_commit": experiment.commit_sha},
            )
        else:
            journal.record_decision(experiment.id, "discard", reason)
        failpoint("decided")
        self.say(f"#{number} {'keep' if keep else 'discard'}: {reason}")
        self._export()

    def _record_trial(self, experiment: Experiment) -> list[dict[str, Any]]:
        """The experiment's trainings so far, this one included (recorded once, even when
        the engine decides again after a restart)."""
        details = dict(experiment.details or {})
        trials: list[dict[str, Any]] = list(details.get("trials", []))
        seed = details.get("seed", self.settings.trainer.seed)
        if not any(trial.get("seed") == seed for trial in trials):
            trials.append(
                {
                    "seed": seed,
                    "val_bpb": experiment.val_bpb,
                    "training_seconds": experiment.training_seconds,
                    "num_steps": experiment.num_steps,
                    "log_path": experiment.log_path,
                }
            )
            self._journal().update_experiment(experiment.id, details={**details, "trials": trials})
        return trials

    def _train_again(self, experiment: Experiment, trials: list[dict[str, Any]], why: str) -> None:
        """Send a trained experiment back for one more training, with the next seed."""
        journal = self._journal()
        seed = self.settings.trainer.seed + len(trials)
        values = ", ".join(f"{float(trial['val_bpb']):.6f}" for trial in trials)
        message = f"#{experiment.number} {why} with seed {seed} (so far: {values})"
        journal.update_experiment(experiment.id, status="committed")
        journal.add_event("noise", message, run_id=experiment.run_id, experiment_id=experiment.id)
        self.say(message)

    def _noise_floor(self, run: Run) -> NoiseFloor:
        """The margin from every script of this run trained more than once, published for
        `cockpit status` and the cockpit."""
        groups = [
            [float(trial["val_bpb"]) for trial in (e.details or {}).get("trials", [])]
            for e in self._journal().experiments(run.id)
        ]
        engine = self.settings.engine
        noise = noise_floor(groups, floor=engine.keep_margin_bpb, multiple=engine.noise_multiple)
        self._journal().set_state(
            keep_margin_bpb=noise.margin, noise_spread_bpb=noise.spread, noise_runs=noise.runs
        )
        return noise

    def _best_experiment(self, run: Run) -> Experiment | None:
        for experiment in self._journal().experiments(run.id):
            if experiment.commit_sha == run.best_commit:
                return experiment
        return None

    # --- commands ------------------------------------------------------------------------

    def _handle_commands(self) -> None:
        journal = self._journal()
        self._heartbeat()
        for command in journal.pending_commands():
            try:
                result = self._apply(command.kind, command.payload)
            except (WorkspaceError, ValueError, KeyError) as exc:
                journal.finish_command(command.id, "failed", str(exc))
                continue
            journal.finish_command(command.id, "done", result)

    def _apply(self, kind: str, payload: dict[str, Any]) -> str:
        journal = self._journal()
        run = self._run_record()
        control = self.control
        if kind == "pause":
            control.paused = True
            return "paused after the current step"
        if kind == "resume":
            control.paused = False
            return "resumed"
        if kind == "stop_run":
            control.stop_current = True
            return "stopping the current training"
        if kind == "stop_engine":
            control.stop_engine = True
            control.stop_now = bool(payload.get("now"))
            return "stopping now" if control.stop_now else "stopping after the current experiment"
        if kind == "set_mode":
            mode = str(payload.get("mode"))
            if mode not in ("autonomous", "supervised"):
                raise ValueError(f"unknown mode {mode!r}; use autonomous or supervised")
            self.mode = mode
            journal.update_run(run.id, mode=mode)
            return f"mode {mode}"
        if kind == "note":
            text = str(payload.get("text", "")).strip()
            if not text:
                raise ValueError("a note needs text")
            journal.add_event("note", text, run_id=run.id)
            return "noted"
        if kind in ("approve", "veto"):
            waiting = [
                e for e in journal.unfinished_experiments(run.id) if e.status == "awaiting_approval"
            ]
            number = payload.get("experiment", waiting[0].number if waiting else None)
            if number is None:
                raise ValueError("no proposal is waiting for approval")
            if kind == "approve":
                control.approved.add(int(number))
                return f"approved #{number}"
            control.vetoed[int(number)] = str(payload.get("reason", "")).strip()
            return f"vetoed #{number}"
        if kind in ("override_keep", "override_discard"):
            return self._override(run, kind, int(payload["experiment"]))
        raise ValueError(f"unknown command {kind!r}")

    def _override(self, run: Run, kind: str, number: int) -> str:
        journal = self._journal()
        experiment = journal.experiment(run.id, number)
        if experiment is None or experiment.commit_sha is None or not experiment.is_final:
            raise ValueError(f"experiment #{number} has no decision to override")
        if kind == "override_keep":
            if experiment.val_bpb is None:
                raise ValueError(f"experiment #{number} has no val_bpb to keep")
            self.workspace.keep(run.tag, experiment.commit_sha)
            journal.record_decision(
                experiment.id,
                "keep",
                "kept by the researcher (override)",
                run_update={
                    "best_val_bpb": experiment.val_bpb,
                    "best_commit": experiment.commit_sha,
                },
            )
        else:
            if experiment.commit_sha != run.best_commit or experiment.parent_commit is None:
                raise ValueError(
                    f"only the current best experiment can be reverted; #{number} is not it"
                )
            parent = next(
                (
                    e
                    for e in journal.experiments(run.id)
                    if e.commit_sha == experiment.parent_commit
                ),
                None,
            )
            self.workspace.revert_to(run.tag, experiment.parent_commit)
            journal.record_decision(
                experiment.id,
                "discard",
                "reverted by the researcher (override)",
                run_update={
                    "best_val_bpb": parent.val_bpb if parent else None,
                    "best_commit": experiment.parent_commit,
                },
            )
        self._export()
        return f"{kind.replace('override_', '')} #{number}"

    # --- state ---------------------------------------------------------------------------

    def _set_phase(self, phase: str, **values: Any) -> None:
        self._journal().set_state(phase=phase, heartbeat=self.clock(), **values)

    def _heartbeat(self, **values: Any) -> None:
        now = self.clock()
        if values or now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self._journal().set_state(heartbeat=now, pid=os.getpid(), **values)

    def _on_sample(self, sample: MonitorSample) -> None:
        run = self.run_record
        if run is None or self.journal is None:
            return
        self._gpu_seen = self._gpu_seen or sample.gpu.available
        current = self._current
        self.journal.add_sample(
            run.id, sample.to_dict(), experiment_id=current.id if current else None
        )

    def _export(self) -> None:
        """After a decision: rewrite results.tsv, and prune what the decided runs left."""
        if self.run_record is not None:
            journal = self._journal()
            export_results_tsv(journal, self.run_record.id, self.workspace.path / "results.tsv")
            runs = self.workspace.cockpit_dir / "runs" / self.run_record.tag
            programs.prune(runs, journal.experiments(self.run_record.id))


def fixed_parts_fingerprint() -> str:
    """The fingerprint of the installed harness and evaluator (the trainer modules but the
    research script), found without importing them."""
    spec = importlib.util.find_spec("trainer")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the trainer package is not installed; reinstall research-cockpit")
    return fingerprint_fixed_parts(Path(next(iter(spec.submodule_search_locations))), "")
