"""What the cockpit's screen shows, read from the journal: the rows, lines and status it is
made of, and the pure queries that build them. The terminal UI never reads the journal itself:
`cockpit.engine.poller.JournalPoller` follows it with these. Nothing here imports Textual.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import names
from cockpit.store.journal import Journal
from cockpit.store.paths import WorkspacePaths
from cockpit.store.records import (
    FINAL_STATUSES,
    TRAINED_STATUSES,
    Command,
    Event,
    Experiment,
    LedgerEntry,
    Run,
    short_commit,
)
from cockpit.store.samples import MonitorSample
from cockpit.store.state import EngineState, PendingStop
from cockpit.store.trials import (
    LossPoint,
    latest_curve,
    trial_results,
)
from cockpit.store.verification import Verification
from cockpit.views.agent_status import (
    ModelPaused,
    ProposedBy,
    UnusableReplies,
    in_flight,
    recent_proposers,
)
from trainer.confine import Confinement

WORKER_LOSSES = 24  # losses of a worker's training shown in its sparkline
GPU_HISTORY = 120  # samples kept for the gauges' history: two minutes at one a second
EVENT_HISTORY = 300  # events the screen keeps (decisions, agent lines, notes)


def journal_file(workspace: Path) -> Path:
    """Where a workspace's journal lives."""
    return WorkspacePaths(Path(workspace)).journal


def display_path(path: Path, home: Path | None = None) -> str:
    """A path as a person reads it: the home folder as ``~``."""
    home = Path.home() if home is None else home
    try:
        return "~/" + str(Path(path).relative_to(home)) if Path(path) != home else "~"
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the cockpit's workers panel shows it."""

    worker: int
    device: str  # "cuda:1", "cpu 0-3", "ray 2"
    experiment: int | None  # None: idle
    phase: str  # training, evaluating, idle
    started_at: float | None = None  # Unix time its training started
    budget_seconds: float | None = None
    losses: tuple[float, ...] = ()  # the training's latest losses, oldest first

    def time_left(self, now: float) -> float | None:
        """Seconds of its budget left at Unix time ``now`` (None when not training)."""
        if self.phase != "training" or self.started_at is None or self.budget_seconds is None:
            return None
        return max(0.0, self.budget_seconds - (now - self.started_at))

    @property
    def gpu_index(self) -> int | None:
        """The GPU it trains on, when its device names one by number."""
        kind, _, index = self.device.partition(":")
        return int(index) if kind == "cuda" and index.isdigit() else None


def read_workers(state: EngineState) -> tuple[WorkerRow, ...]:
    """The engine's workers, from its ``workers`` state key."""
    rows = []
    for entry in state.workers:
        if not isinstance(entry.get("worker"), int):
            continue
        number, started, budget = (
            entry.get("experiment"),
            entry.get("started_at"),
            entry.get("budget_seconds"),
        )
        rows.append(
            WorkerRow(
                worker=entry["worker"],
                device=str(entry.get("device") or "?"),
                experiment=number if isinstance(number, int) else None,
                phase=str(entry.get("phase") or "idle"),
                started_at=float(started) if isinstance(started, (int, float)) else None,
                budget_seconds=float(budget) if isinstance(budget, (int, float)) else None,
            )
        )
    return tuple(rows)


@dataclass(frozen=True)
class StatusInfo:
    """The status line: where, what the engine does, how the run stands."""

    workspace: str
    journal_exists: bool = False
    engine_running: bool = False
    phase: str = "stopped"
    experiment: int | None = None
    time_left: float | None = None
    budget_seconds: float | None = None
    run_tag: str | None = None
    branch: str | None = None
    run_status: str | None = None
    mode: str | None = None
    proposer: str | None = None
    model: str | None = None
    agent_state: str | None = None
    agent_message: str | None = None
    asking: str | None = None  # who is being asked for the proposal in progress
    unusable_replies: UnusableReplies | None = None
    model_paused: ModelPaused | None = None
    # The hybrid's shares of the next experiments ({"llm": 0.35, "optuna": 0.65}) while the
    # hybrid proposes; None otherwise, or before it has said them.
    search_split: dict[str, float] | None = None
    # Who proposed the experiment in flight, and the latest ones before it (newest first):
    # the journal's experiments, as the ledger has them.
    in_flight: ProposedBy | None = None
    recent_proposers: tuple[ProposedBy, ...] = ()
    best_val_bpb: float | None = None
    baseline_val_bpb: float | None = None
    keep_margin_bpb: float | None = None
    metric: str = "val_bpb"
    self_reported: bool = False
    # What confined the latest training (None: none has reported it yet).
    confinement: Confinement | None = None
    # The engine's workers (several: trainings side by side); () when it is not running.
    workers: tuple[WorkerRow, ...] = ()
    # The stop the running engine has accepted and not carried out yet.
    stopping: PendingStop | None = None
    verified: Verification | None = None  # the run's latest verification

    @property
    def verified_gain(self) -> float | None:
        """The gain of the best trained again on fresh seeds (`cockpit verify`), when it was
        verified at the best it is now (None otherwise)."""
        verified = self.verified
        if verified is None or verified.ledger_best != self.best_val_bpb:
            return None
        return verified.verified_gain

    @property
    def gain(self) -> float | None:
        """How much lower the best metric is than the baseline's (positive: better)."""
        if self.best_val_bpb is None or self.baseline_val_bpb is None:
            return None
        return self.baseline_val_bpb - self.best_val_bpb

    @property
    def awaiting_approval(self) -> int | None:
        """The number of the proposal waiting for the researcher, if one is."""
        if self.engine_running and self.phase == "awaiting_approval":
            return self.experiment
        return None


@dataclass(frozen=True)
class LedgerRow:
    """One experiment as the ledger lists it."""

    id: int
    number: int
    commit: str
    val_bpb: float | None
    memory_mb: float | None
    status: str
    decision: str | None
    proposer: str | None
    model: str | None
    description: str
    decision_reason: str | None
    # The best val_bpb when it was decided, as the engine recorded it (None: not recorded).
    best_before: float | None = None
    # val_bpb minus the best at the time it was decided (negative: better).
    delta_vs_best: float | None = None

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to this experiment."""
        return self.status in FINAL_STATUSES

    @property
    def trained(self) -> bool:
        """Whether it has been (or is being) trained."""
        return self.status in TRAINED_STATUSES


@dataclass(frozen=True)
class EventLine:
    """One line of the run's story, as the agent panel and the decision log show it."""

    id: int
    at: float
    kind: str
    message: str
    experiment_id: int | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ExperimentDetail:
    """Everything the detail panels show of one experiment."""

    id: int
    number: int
    status: str
    description: str
    hypothesis: str
    diff: str
    proposer: str | None
    model: str | None
    val_bpb: float | None
    decision: str | None
    decision_reason: str | None
    outcome: str | None
    crash_tail: str | None
    curve: tuple[LossPoint, ...] = ()
    flags: tuple[str, ...] = ()  # what the integrity checks found, one line each
    trials: tuple[tuple[int, float], ...] = ()  # (seed, val_bpb) of each training of the script


@dataclass(frozen=True)
class LossCurves:
    """The live (or latest trained) experiment's loss against the best run's."""

    live_number: int | None = None
    live_status: str | None = None
    live: tuple[LossPoint, ...] = ()
    best_number: int | None = None
    best: tuple[LossPoint, ...] = ()


@dataclass(frozen=True)
class GpuHistory:
    """The most recent monitor samples, oldest first."""

    samples: tuple[MonitorSample, ...] = ()

    @property
    def latest(self) -> MonitorSample | None:
        """The newest sample, if any."""
        return self.samples[-1] if self.samples else None


@dataclass
class Snapshot:
    """The whole picture the screen shows, as the poller has assembled it so far."""

    status: StatusInfo
    run_id: int | None = None
    ledger: dict[int, LedgerRow] = field(default_factory=dict)
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=EVENT_HISTORY))
    current: ExperimentDetail | None = None
    loss: LossCurves = field(default_factory=LossCurves)
    gpu: GpuHistory = field(default_factory=GpuHistory)
    agent_stream: str = ""


@dataclass(frozen=True)
class Delta:
    """What one poll found changed. ``reset``: a new run (or the first read): the screen
    replaces what it shows instead of merging. Fields left None (or empty) did not change."""

    reset: bool = False
    status: StatusInfo | None = None
    ledger: tuple[LedgerRow, ...] = ()
    events: tuple[EventLine, ...] = ()
    current: ExperimentDetail | None = None
    current_changed: bool = False
    loss: LossCurves | None = None
    gpu: GpuHistory | None = None
    agent_stream: str | None = None
    # Commands the engine has answered since the last poll (see JournalPoller.watch_command).
    answered: tuple[Command, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether nothing changed."""
        return not (
            self.answered
            or self.reset
            or self.status is not None
            or self.ledger
            or self.events
            or self.current_changed
            or self.loss is not None
            or self.gpu is not None
            or self.agent_stream is not None
        )


# ---------------------------------------------------------------------------------------------
# pure queries


def read_status(
    workspace: str,
    state: EngineState,
    run: Run | None,
    *,
    running: bool,
    journal_exists: bool = True,
    verified: Verification | None = None,
) -> StatusInfo:
    """The status line from the engine's state and the latest run; ``running``: whether the
    engine runs (its lock is held: `cockpit.store.lock.engine_lock_held`)."""
    phase = (state.phase or "starting") if running else "stopped"
    trainer: Mapping[str, Any] = {}
    if run is not None:
        trainer = run.config.get("trainer", {}) if isinstance(run.config, Mapping) else {}
    budget = trainer.get("budget_seconds")
    return StatusInfo(
        workspace=workspace,
        journal_exists=journal_exists,
        engine_running=running,
        phase=phase,
        experiment=state.experiment,
        time_left=state.time_left if phase == "training" else None,
        budget_seconds=float(budget) if isinstance(budget, (int, float)) else None,
        run_tag=None if run is None else run.tag,
        branch=None if run is None else run.branch,
        run_status=None if run is None else run.status,
        mode=None if run is None else run.mode,
        proposer=state.proposer or (None if run is None else run.proposer),
        model=state.model,
        agent_state=state.agent_state,
        agent_message=state.agent_message,
        asking=state.asking if running else None,
        unusable_replies=UnusableReplies.from_state(state.agent_replies),
        model_paused=ModelPaused.from_state(state.agent_paused),
        search_split=read_search_split(state),
        best_val_bpb=None if run is None else run.best_val_bpb,
        baseline_val_bpb=None if run is None else run.baseline_val_bpb,
        keep_margin_bpb=state.keep_margin_bpb,
        metric=str(trainer.get("metric") or "val_bpb"),
        self_reported=bool(trainer.get("command")),
        confinement=Confinement.from_dict(state.confinement),
        workers=read_workers(state) if running else (),
        stopping=state.stopping if running else None,
        verified=verified,
    )


def read_search_split(state: EngineState) -> dict[str, float] | None:
    """The hybrid's shares of the next experiments (state ``search_split``), while the hybrid
    proposes (state ``proposer``): None when another proposer does (the split of a hybrid
    standing aside, or of an earlier run, is not in effect), or when the value is not a
    non-empty mapping of names to numbers."""
    value = state.search_split
    if state.proposer != names.HYBRID or not value:
        return None
    numbers = all(
        isinstance(name, str) and isinstance(share, (int, float)) and not isinstance(share, bool)
        for name, share in value.items()
    )
    return {str(name): float(share) for name, share in value.items()} if numbers else None


def describe_split(split: Mapping[str, float], model: str | None = None) -> str:
    """The hybrid's split in a few words: ``LLM 35% · Optuna 65%`` (``model``: named after
    the LLM, ``LLM (qwen2.5-coder:7b) 35% · Optuna 65%``)."""
    parts = []
    for proposer, share in split.items():
        name = names.label(proposer)
        if proposer == names.LLM and model:
            name += f" ({model})"
        parts.append(f"{name} {share:.0%}")
    return " · ".join(parts)


def with_proposers(
    status: StatusInfo, state: EngineState, ledger: Mapping[int, LedgerRow]
) -> StatusInfo:
    """The status with who proposed the experiment in flight and the latest ones before it."""
    current = in_flight(state, ledger, running=status.engine_running)
    exclude = None if current is None else current.experiment
    recent = recent_proposers(ledger.values(), exclude=exclude)
    return dataclasses.replace(status, in_flight=current, recent_proposers=recent)


def shown_status(experiment: Experiment | LedgerEntry, workers: Iterable[WorkerRow] = ()) -> str:
    """An experiment's status as the screen shows it. The journal says ``training`` until the
    training's process has exited, yet the harness evaluates before that, and the engine's
    worker (state ``workers``, which the header's phase follows) says so: while a worker
    trains the experiment, the worker's phase is the one owner of it, so that the header and
    the ledger cannot disagree."""
    if experiment.status != "training":
        return experiment.status
    phase = next((w.phase for w in workers if w.experiment == experiment.number), None)
    return "evaluating" if phase == "evaluating" else experiment.status


def ledger_entry(experiment: Experiment) -> LedgerEntry:
    """The ledger's columns of a whole experiment (as `Journal.ledger` reads them)."""
    evidence = (experiment.details or {}).get("evidence") or {}
    return LedgerEntry(
        id=experiment.id,
        number=experiment.number,
        commit_sha=experiment.commit_sha,
        val_bpb=experiment.val_bpb,
        peak_memory_mb=experiment.peak_memory_mb,
        status=experiment.status,
        decision=experiment.decision,
        proposer=experiment.proposer,
        model=experiment.model,
        description=experiment.description,
        decision_reason=experiment.decision_reason,
        best_before=evidence.get("best_before") if isinstance(evidence, Mapping) else None,
        log_path=experiment.log_path,
        attempt=experiment.attempt,
    )


def ledger_row(
    entry: LedgerEntry, workers: Iterable[WorkerRow] = (), delta_vs_best: float | None = None
) -> LedgerRow:
    """An experiment as a ledger row (its Δ is filled in by `with_deltas`); ``workers``: the
    engine's, whose phase an experiment in training shows (`shown_status`)."""
    return LedgerRow(
        id=entry.id,
        number=entry.number,
        commit=short_commit(entry.commit_sha),
        val_bpb=entry.val_bpb,
        memory_mb=entry.peak_memory_mb,
        status=shown_status(entry, workers),
        decision=entry.decision,
        proposer=entry.proposer,
        model=entry.model,
        description=entry.description,
        decision_reason=entry.decision_reason,
        best_before=_float_or_none(entry.best_before),
        delta_vs_best=delta_vs_best,
    )


def ledger_rows(
    entries: Iterable[LedgerEntry], workers: Iterable[WorkerRow] = ()
) -> list[LedgerRow]:
    """A whole ledger from its entries, each row with its Δ (see `with_deltas`), in one pass."""
    workers = tuple(workers)
    rows = []
    best: float | None = None
    for entry in sorted(entries, key=lambda e: e.number):
        best_before = _float_or_none(entry.best_before)
        delta = _delta(entry.number, entry.val_bpb, best_before, best)
        rows.append(ledger_row(entry, workers, delta))
        if entry.decision == "keep" and entry.val_bpb is not None:
            best = entry.val_bpb
    return rows


def with_deltas(rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    """The rows in number order, each with its val_bpb minus the best at the time it was
    decided: the best the engine recorded then, or else the last kept value before it."""
    result = []
    best: float | None = None
    for row in sorted(rows, key=lambda r: r.number):
        delta = _delta(row.number, row.val_bpb, row.best_before, best)
        result.append(row if row.delta_vs_best == delta else replace(row, delta_vs_best=delta))
        if row.decision == "keep" and row.val_bpb is not None:
            best = row.val_bpb
    return result


def _delta(
    number: int, val_bpb: float | None, best_before: float | None, best: float | None
) -> float | None:
    """val_bpb minus the best when it was decided (``best_before``, else ``best``, the last
    kept value before it); None for the baseline or without both numbers."""
    reference = best_before if best_before is not None else best
    if val_bpb is None or reference is None or number == 0:
        return None
    return val_bpb - reference


def event_line(event: Event) -> EventLine:
    """An event as the screen shows it."""
    return EventLine(
        id=event.id,
        at=event.at,
        kind=event.kind,
        message=event.message,
        experiment_id=event.experiment_id,
        data=dict(event.data or {}),
    )


def integrity_flags(experiment: Experiment) -> tuple[str, ...]:
    """The integrity flags recorded with an experiment, as `line N: [kind] message` lines."""
    flags = (experiment.details or {}).get("flags") or []
    lines = []
    for flag in flags if isinstance(flags, list) else []:
        if isinstance(flag, Mapping):
            where = f"line {flag['line']}" if flag.get("line") is not None else "train.py"
            lines.append(f"{where}: [{flag.get('kind', '?')}] {flag.get('message', '')}")
    return tuple(lines)


def experiment_detail(journal: Journal, experiment: Experiment) -> ExperimentDetail:
    """The detail panels' view of one experiment, with its latest loss curve."""
    detail = experiment_detail_without_curve(experiment)
    if experiment.status not in TRAINED_STATUSES:
        return detail
    return dataclasses.replace(detail, curve=latest_curve(journal.metrics(experiment.id)))


def monitor_samples(data: Iterable[Mapping[str, Any]]) -> list[MonitorSample]:
    """Monitor samples from their journal form; a malformed one is left out."""
    samples = []
    for item in data:
        try:
            samples.append(MonitorSample.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue
    return samples


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def experiment_detail_without_curve(experiment: Experiment) -> ExperimentDetail:
    """The detail panels' view of an experiment, without reading its loss points."""
    return ExperimentDetail(
        id=experiment.id,
        number=experiment.number,
        status=experiment.status,
        description=experiment.description,
        hypothesis=experiment.hypothesis,
        diff=experiment.diff,
        proposer=experiment.proposer,
        model=experiment.model,
        val_bpb=experiment.val_bpb,
        decision=experiment.decision,
        decision_reason=experiment.decision_reason,
        outcome=experiment.outcome,
        crash_tail=experiment.crash_tail,
        flags=integrity_flags(experiment),
        trials=trial_results(experiment),
    )


__all__ = [
    "Delta",
    "EventLine",
    "ExperimentDetail",
    "GpuHistory",
    "LedgerRow",
    "LossCurves",
    "Snapshot",
    "StatusInfo",
    "WorkerRow",
    "display_path",
    "experiment_detail",
    "journal_file",
    "ledger_row",
    "read_status",
    "read_workers",
    "shown_status",
    "with_deltas",
    "with_proposers",
]
