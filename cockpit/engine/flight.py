"""One training in flight on a worker: followed without blocking, its live metrics into the
journal, stopped early when its loss trails the best run's, and its result recorded.

The engine holds one `Flight` per busy worker in its `Flights` and ticks each of them from its
loop; a flight never waits on its process, so one engine follows any number of them. A
training cut short (the engine stopping, or dying) is requeued: it runs again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cockpit.config import EngineSettings, Settings
from cockpit.engine.early_abort import Watch, calibrate
from cockpit.engine.jobs import RunFiles
from cockpit.engine.runner import JobHandle, RunResult, TrainingJob, log_tail
from cockpit.engine.workers import Worker
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import paired_trace, trusted_reference
from trainer.confine import Confinement
from trainer.summary import parse_summary

METRICS_FLUSH_SECONDS = 0.5
EARLY_ABORT_CHECK_SECONDS = 0.5  # how often a training's loss is held against the best run's
CRASH_TAIL_LINES = 40
STOP_WAIT_SECONDS = 30.0  # how long trainings stopped with the engine get to end
STOP_POLL_SECONDS = 0.05  # how often a stopped training is looked at until it has ended


@dataclass
class Flight:
    """A training of one experiment on one worker."""

    experiment: Experiment  # as it was when the training started
    worker: Worker
    handle: JobHandle
    job: TrainingJob
    files: RunFiles
    seed: int
    watch: Watch | None  # None: never stopped early (baseline, repeated runs, script mode)
    on_phase: Callable[[Flight], None]  # told when the flight's phase changes
    journal: Journal
    started_wall: float = field(default_factory=time.time)
    phase: str = "training"
    stop_requested: bool = False
    # A training of the best's script on this worker's kind of device, to compare with there
    # (its experiment is decided already and stays so).
    reference: bool = False
    buffer: list[dict[str, Any]] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _last_judged: float = 0.0

    @property
    def number(self) -> int:
        return self.experiment.number

    def time_left(self) -> float:
        return max(0.0, self.job.budget_seconds - (time.monotonic() - self.handle.started_at))

    def tick(self) -> RunResult | None:
        """Follow the training one step: its metrics, its early-abort check; how it ended,
        once it has."""
        result = self.handle.poll(self._on_metric)
        now = time.monotonic()
        if self.buffer and (result is not None or now - self._last_flush >= METRICS_FLUSH_SECONDS):
            self.journal.add_metrics(self.experiment.id, list(self.buffer))
            self.buffer.clear()
            self._last_flush = now
        if result is not None:
            return result
        watch = self.watch
        if (
            watch is not None
            and watch.verdict is None
            and now - self._last_judged >= EARLY_ABORT_CHECK_SECONDS
        ):
            self._last_judged = now
            if watch.check() is not None:
                self.stop()
        return None

    def stop(self) -> None:
        """Stop the training now; it ends as interrupted."""
        self.stop_requested = True
        self.handle.stop()

    def _on_metric(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "metric":
            point = {**record, "seed": self.seed}  # curves pair by seed (and kind of device)
            if self.worker.kind:
                point["kind"] = self.worker.kind
            self.buffer.append(point)
            if self.watch is not None:
                self.watch.add(record)
        elif event == "phase" and record.get("phase") in ("exporting", "evaluating"):
            if self.phase != "evaluating":
                self.phase = "evaluating"
                self.on_phase(self)
        elif event == "start" and isinstance(record.get("confinement"), dict):
            confinement = record["confinement"]
            if self.journal.engine_state().confinement != confinement:
                # Said in the run's events whenever it changes: a degraded layer, a kernel
                # that refused a part, or confinement back in full.
                said = Confinement.from_dict(confinement)
                self.journal.add_event(
                    "confinement",
                    said.describe() if said is not None else "confinement unknown",
                    run_id=self.experiment.run_id,
                    experiment_id=self.experiment.id,
                )
            self.journal.set_state(confinement=confinement)

    def state(self) -> dict[str, Any]:
        """The flight as `cockpit status` and the cockpit's workers panel read it."""
        return {
            "worker": self.worker.index,
            "device": self.worker.label,
            "experiment": self.number,
            "phase": self.phase,
            "started_at": self.started_wall,
            "budget_seconds": self.job.budget_seconds,
            "pid": self.handle.pid,
        }


class Flights:
    """The trainings in flight, one per busy worker."""

    def __init__(self) -> None:
        self._by_worker: dict[int, Flight] = {}  # worker index -> its training

    def __len__(self) -> int:
        return len(self._by_worker)

    def __iter__(self) -> Iterator[Flight]:
        # A copy: the monitor's thread asks while the loop may change the flights.
        return iter(list(self._by_worker.values()))

    def add(self, flight: Flight) -> None:
        self._by_worker[flight.worker.index] = flight

    def busy(self, worker: Worker) -> bool:
        return worker.index in self._by_worker

    def of(self, worker: Worker) -> Flight | None:
        """The worker's training, None when it is free."""
        return self._by_worker.get(worker.index)

    def lead(self) -> Flight | None:
        """The training started last: the one the status line and the monitor follow."""
        return max(self, key=lambda f: f.handle.started_at, default=None)

    def experiment_ids(self) -> set[int]:
        """The experiments training now (the best's, for a reference training, included)."""
        return {flight.experiment.id for flight in self}

    def measuring(self) -> set[str]:
        """The kinds of device on which the best is being measured (reference trainings)."""
        return {flight.worker.kind for flight in self if flight.reference}

    def landed(self) -> Iterator[tuple[Flight, RunResult]]:
        """Tick every flight one step; yield each that has ended, with how it ended, taken
        off its worker. Lazily: what the caller does with one ends before the next is ticked."""
        for index, flight in list(self._by_worker.items()):
            result = flight.tick()
            if result is not None:
                del self._by_worker[index]
                yield flight, result

    def abandon(self, journal: Journal) -> None:
        """Stop every training in flight (the engine is leaving) and give them
        STOP_WAIT_SECONDS to end; each experiment still training runs again when the engine
        starts next."""
        if not self._by_worker:
            return
        for flight in self:
            flight.stop()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for flight in self:
            while flight.tick() is None and time.monotonic() < deadline:
                time.sleep(STOP_POLL_SECONDS)
            current = journal.experiment_by_id(flight.experiment.id)
            if current is not None and current.status == "training":
                requeue(journal, current, "by the engine stopping")
        self._by_worker.clear()


def requeue(journal: Journal, experiment: Experiment, when: str) -> None:
    """Record a training that was cut short as interrupted; it runs again, as a new attempt."""
    journal.update_experiment(experiment.id, status="committed", attempt=experiment.attempt + 1)
    journal.add_event(
        "interrupted",
        f"experiment {experiment.number} was interrupted {when}; it runs again",
        run_id=experiment.run_id,
        experiment_id=experiment.id,
    )


def record_result(
    journal: Journal,
    settings: Settings,
    experiment: Experiment,
    result: RunResult,
    files: RunFiles,
    ended_at: float,
) -> None:
    """Write how a training ended into its experiment, which then waits for its decision."""
    summary = dict(result.summary)
    outcome, value = result.outcome.status, result.val_bpb
    reason = result.reason
    if settings.trainer.command:
        # Script mode: the figures are whatever the command printed (self-reported).
        metric = settings.trainer.metric
        summary = parse_summary(files.log.read_text(errors="replace")) if files.log.exists() else {}
        summary.update(self_reported=True, metric=metric)
        value = summary.get(metric) if isinstance(summary.get(metric), (int, float)) else None
        if outcome == "ok" and value is None:
            outcome, reason = (
                "crash",
                f"the command's output has no '{metric}:' line in a summary block",
            )
            summary["reason"] = reason
    cuda = str(summary.get("device", "cuda" if summary.get("self_reported") else "")).startswith(
        "cuda"
    )
    memory = summary.get("peak_vram_mb") if cuda else summary.get("peak_rss_mb")
    crash_tail = None
    if outcome != "ok":
        crash_tail = log_tail(files.log, CRASH_TAIL_LINES)
    journal.update_experiment(
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
        ended_at=ended_at,
    )


def early_abort_watch(
    journal: Journal, engine: EngineSettings, run: Run, experiment: Experiment, kind: str = ""
) -> Watch | None:
    """A watch over this training against the best run's loss curve, as far as the harness's
    measurements back it (`trials.trusted_reference`), with the margin calibrated on the keeps
    so far, when this experiment may be stopped early; None when early abort is off or there
    is nothing measured to compare with. Only curves trained on devices of the same ``kind``
    are compared: another kind trains at another speed."""
    if not engine.early_abort or experiment.number == 0:
        return None
    experiments = journal.experiments(run.id)
    by_commit = {e.commit_sha: e for e in experiments if e.commit_sha}
    parent = by_commit.get(experiment.parent_commit or "")
    if parent is None:
        return None
    read: dict[int, list[dict[str, Any]]] = {}

    # An experiment's points on this kind of device; the training with the seed this one
    # trains with first is taken from them (the same batches).
    def curve(other: Experiment) -> list[dict[str, Any]]:
        if other.id not in read:
            read[other.id] = [
                m for m in journal.metrics(other.id) if str(m.get("kind") or "") == kind
            ]
        return read[other.id]

    reference = trusted_reference(parent, experiments, curve)
    if reference is None:
        return None
    kept = []
    for other in experiments:
        origin = by_commit.get(other.parent_commit or "")
        if other.decision == "keep" and other.number > 0 and origin is not None:
            against = trusted_reference(origin, experiments, curve)
            if against is not None:
                kept.append((paired_trace(curve(other)), against))
    margin = calibrate(kept, engine.early_abort_after, engine.early_abort_margin)
    return Watch(reference, margin, engine.early_abort_after)
