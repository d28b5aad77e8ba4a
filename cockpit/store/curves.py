"""A training's loss curve as the engine and the screens read it, and the reference a live
training is held against: the best run's reports answering to the loss the harness measured
for it, with its parent's and the baseline's curves carried to that loss. Why a reference
is built this way, and what it leaves steerable, is early abort's to say (see
`cockpit.engine.early_abort`); the screens draw the same reference the engine judges by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

WINDOW = 0.1  # fraction of the budget the losses are averaged over
MIN_WINDOW_POINTS = 3  # fewer losses in a window: too few to tell their scatter, no comparison
# The share at the end of a schedule whose reported losses are set against the loss the harness
# measured. The spread of that ratio among honest runs is what stays steerable (and what the
# rule gives away in leniency): on the recorded CPU runs of tests/data, 6 % at 0.2 against
# 9 % at 0.1; wider windows reach into the fall of the loss.
END_WINDOW = 0.2

Curve = Sequence[tuple[float, float]]  # (progress 0..1, training loss), in progress order


@dataclass(frozen=True)
class Trace:
    """One training's losses as early abort compares them: placed on its schedule, and, where
    the harness recorded its step plan, by step (for comparisons on the same batches)."""

    points: tuple[tuple[float, float], ...]  # (position 0..1, loss), in position order
    by_step: Mapping[int, float] = field(default_factory=dict)
    planned: int | None = None


def trace(records: Iterable[Mapping[str, object]]) -> Trace:
    """The trace of one training's metric records: placed by ``step / planned_steps`` when
    the records carry the harness's step plan (the points from before the plan placed by it
    too), else by the fraction of the budget on the clock."""
    records = list(records)
    planned = _planned_steps(records)
    if planned is None:
        return Trace(tuple(curve_from_metrics(records)))
    by_step = {
        step: float(loss)
        for record in records
        if isinstance(step := record.get("step"), int)
        and not isinstance(step, bool)
        and isinstance(loss := record.get("loss"), (int, float))
        and math.isfinite(loss)
    }
    points = tuple(sorted((step / planned, loss) for step, loss in by_step.items()))
    return Trace(points, by_step, planned)


def as_trace(curve: Curve | Trace) -> Trace:
    return curve if isinstance(curve, Trace) else Trace(tuple(curve))


def _planned_steps(records: Sequence[Mapping[str, object]]) -> int | None:
    planned = None
    for record in records:
        value = record.get("planned_steps")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            planned = value
    return planned


def curve_from_metrics(records: Iterable[Mapping[str, object]]) -> list[tuple[float, float]]:
    """The (progress, loss) points of metric records with a finite loss, in progress order."""
    points = []
    for record in records:
        progress, loss = record.get("progress"), record.get("loss")
        if (
            isinstance(progress, (int, float))
            and isinstance(loss, (int, float))
            and math.isfinite(progress)
            and math.isfinite(loss)
        ):
            points.append((float(progress), float(loss)))
    points.sort(key=lambda point: point[0])
    return points


def schedule_curve(records: Iterable[Mapping[str, object]]) -> list[tuple[float, float]]:
    """The (position, loss) points of one training's metric records, on its schedule (see
    `trace`)."""
    return list(trace(records).points)


def mean_loss(curve: Curve, progress: float, window: float = WINDOW) -> float | None:
    """The mean loss over (progress - window, progress]; None without a point there."""
    values = [loss for at, loss in curve if progress - window < at <= progress]
    return math.fsum(values) / len(values) if values else None


@dataclass(frozen=True)
class Measured:
    """A decided training's curve as its script reported it, with the loss the harness
    measured for the model it ended with: mean nats per token on the validation split, the
    units of the cross-entropy per token a script reports (None: not measured)."""

    trace: Trace
    loss: float | None
    label: str = "the best run"  # how a verdict names it


def reported_end(trace: Trace) -> float | None:
    """The mean of a training's reported losses over the last `END_WINDOW` of its schedule,
    or of its last `MIN_WINDOW_POINTS` losses where fewer lie there (a sparse curve); None
    with fewer in all."""
    if len(trace.points) < MIN_WINDOW_POINTS:
        return None
    last = trace.points[-1][0]
    window = [loss for at, loss in trace.points if last - END_WINDOW < at]
    if len(window) < MIN_WINDOW_POINTS:
        window = [loss for _, loss in trace.points[-MIN_WINDOW_POINTS:]]
    end = math.fsum(window) / len(window)
    return end if end > 0 else None


def report_ratio(measured: Measured) -> float | None:
    """The measured loss over the training's last reported losses: near 1 for a script that
    reports its training loss as it is (above it where the held-out text is harder than the
    last batches, below where the loss was still falling), 1.8 for one that reports 0.56 of
    it. None: not measured, or too few reports at its end."""
    end = reported_end(measured.trace)
    loss = measured.loss
    if end is None or loss is None or not math.isfinite(loss) or loss <= 0:
        return None
    return loss / end


def scaled(trace: Trace, factor: float) -> Trace:
    """The trace with every reported loss multiplied by ``factor``."""
    return Trace(
        tuple((at, loss * factor) for at, loss in trace.points),
        {step: loss * factor for step, loss in trace.by_step.items()},
        trace.planned,
    )


@dataclass(frozen=True)
class Candidate:
    """One curve of a `Reference`: a decided training's reports times ``scale``."""

    trace: Trace
    label: str
    scale: float
    carried: bool  # an earlier run's curve carried to the best run's measured loss


@dataclass(frozen=True)
class Reference:
    """What a live training is held against: the best run's curve answering to its measured
    loss, and earlier runs' curves carried to that loss (see `reference`). At a checkpoint
    the most lenient of them judges."""

    candidates: tuple[Candidate, ...]

    @property
    def best(self) -> Candidate:
        """The best run's own curve (as scaled)."""
        return self.candidates[0]


Against = Curve | Trace | Reference  # a reference, as the rule's functions take it


def reference(best: Measured, ancestors: Sequence[Measured] = ()) -> Reference | None:
    """The reference a training made from ``best`` is held against (see the module's "What it
    trusts"). ``ancestors``: its parent's and the baseline's curves, each with its measured
    loss; one without a measurement, or too short, is left out.

    The best run's reports are scaled by its report ratio over the lowest ratio among it and
    its ancestors (at least 1: never stricter than its reports); an ancestor's curve by the
    best run's measured loss over its own last reported losses, over that lowest ratio: its
    shape at the level the best run ended on, in the units of a report as honest as the
    most lenient of theirs. None: the best run has no measured curve, and nothing is
    compared."""
    best_ratio = report_ratio(best)
    if best_ratio is None or best.loss is None:
        return None
    usable = [
        (ancestor, ratio, end)
        for ancestor in ancestors
        if (ratio := report_ratio(ancestor)) is not None
        and (end := reported_end(ancestor.trace)) is not None
    ]
    lowest = min([best_ratio, *(ratio for _, ratio, _ in usable)])
    own = best_ratio / lowest
    candidates = [Candidate(scaled(best.trace, own), best.label, own, carried=False)]
    for ancestor, _, end in usable:
        factor = best.loss / (end * lowest)
        candidates.append(Candidate(scaled(ancestor.trace, factor), ancestor.label, factor, True))
    return Reference(tuple(candidates))
