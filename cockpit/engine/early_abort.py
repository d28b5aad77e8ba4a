"""Early abort: stop a training that is clearly losing to the best run, before its budget is
spent, and say why.

The live training loss is compared with the best run's at the same fraction of the budget:
the gap is the relative difference of their mean losses over the last `WINDOW` of progress
(a window smooths the noise of single batches). A fraction of the budget is a point in the
script's schedule: where the harness recorded the script's step plan, the fraction of the
planned steps (the learning-rate schedule runs on it), else the fraction of the training time.
A plan that ends early (made while the machine was busier) squeezes its warmdown into less
time, and by the clock its last losses would be set against the middle of another run's
warmdown.

Both trainings use the same seed, so step k of each saw the same batch. Where both have step
plans, the gap is taken on the same batches: the live window's losses against the best run's
losses at the same steps, corrected by the best run's own trend (a straight line fitted over
its neighbourhood) for where those steps fall in its plan. Two plans a tenth apart would
otherwise set different batches against each other, and on small CPU batches that alone
moves a window's mean by several percent.

Between `after` and `LAST_STOP` of the budget, at checkpoints every `STEP`, a run whose gap
exceeds the margin is stopped and recorded as discarded early.

The margin is calibrated on the runs recorded so far: among the experiments that were kept,
the largest gap any of them showed at or after `after` (against the best run at its time),
plus `SLACK`, never below the configured floor. A keep that trailed the best early and won
late widens the margin, so that keeps like it are not aborted; until `MIN_KEEPS` keeps are
recorded the floor alone applies. All of it is pure: the engine and `cockpit bench
early-abort` (which replays a journal) use the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

WINDOW = 0.1  # fraction of the budget the losses are averaged over
STEP = 0.05  # checkpoints of the replay and of the calibration, as fractions of the budget
SLACK = 0.01  # added to the widest gap a keep showed
MIN_KEEPS = 3  # keeps needed before the margin is calibrated rather than the floor
# No stop after this share of the budget: it would save little and lose the measurement.
LAST_STOP = 0.9
TREND_REACH = 0.2  # share of the best run's plan its trend line reaches beyond the two points
MIN_SHARED_STEPS = 3  # fewer shared steps in a window: compare the windows' means instead

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


def _as_trace(curve: Curve | Trace) -> Trace:
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


def gap(live: Curve | Trace, reference: Curve | Trace, progress: float) -> float | None:
    """How much worse the live loss is than the reference's around ``progress``: the relative
    difference of their mean losses (0.05 = 5 % higher), on the same batches where both
    trainings have step plans. None when either has no points there."""
    live, reference = _as_trace(live), _as_trace(reference)
    shared = _same_batches_gap(live, reference, progress)
    if shared is not None:
        return shared
    ours, theirs = mean_loss(live.points, progress), mean_loss(reference.points, progress)
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs - 1.0


def _same_batches_gap(live: Trace, reference: Trace, progress: float) -> float | None:
    """The gap on the same steps (the same batches), carried to the same point of the
    reference's plan along its trend; None where the two cannot be paired step by step."""
    if not (live.planned and reference.planned and live.by_step and reference.by_step):
        return None
    window = [
        (step, loss)
        for step, loss in live.by_step.items()
        if progress - WINDOW < step / live.planned <= progress
    ]
    shared = [(loss, reference.by_step[step]) for step, loss in window if step in reference.by_step]
    if len(shared) < max(MIN_SHARED_STEPS, len(window) // 2):
        return None
    theirs = math.fsum(loss for _, loss in shared)
    if theirs <= 0:
        return None
    ratio = math.fsum(loss for loss, _ in shared) / theirs
    centre = math.fsum(step for step, _ in window) / len(window)
    same_point = centre / live.planned * reference.planned  # in the reference's steps
    if math.isclose(centre, same_point):
        return ratio - 1.0
    reach = TREND_REACH * reference.planned
    line = _trend(
        reference.by_step, min(centre, same_point) - reach, max(centre, same_point) + reach
    )
    if line is None or line(centre) <= 0 or line(same_point) <= 0:
        return None
    return ratio * line(centre) / line(same_point) - 1.0


def _trend(losses: Mapping[int, float], low: float, high: float) -> Callable[[float], float] | None:
    """The least-squares line through the losses of the steps from ``low`` to ``high``."""
    points = [(step, loss) for step, loss in losses.items() if low <= step <= high]
    if len(points) < 2 * MIN_SHARED_STEPS:
        return None
    mean_step = math.fsum(step for step, _ in points) / len(points)
    mean_loss_ = math.fsum(loss for _, loss in points) / len(points)
    spread = math.fsum((step - mean_step) ** 2 for step, _ in points)
    if spread <= 0:
        return None
    slope = math.fsum((step - mean_step) * (loss - mean_loss_) for step, loss in points) / spread
    return lambda step: mean_loss_ + slope * (step - mean_step)


def checkpoints(after: float, until: float = 1.0) -> list[float]:
    """The fractions of the budget at which the rule looks, from ``after`` on."""
    points, at = [], after
    while at <= until + 1e-9:
        points.append(round(at, 6))
        at += STEP
    return points


def widest_gap(live: Curve | Trace, reference: Curve | Trace, after: float) -> float | None:
    """The largest gap a run showed at the checkpoints from ``after`` on (None: no overlap)."""
    points = _as_trace(live).points
    last = points[-1][0] if points else 0.0
    gaps = [g for p in checkpoints(after, last) if (g := gap(live, reference, p)) is not None]
    return max(gaps) if gaps else None


@dataclass(frozen=True)
class Margin:
    """The gap beyond which a run is stopped, and where it comes from."""

    value: float
    keeps: int  # the kept runs it was calibrated on (0: the floor alone)
    widest_keep_gap: float | None

    def describe(self) -> str:
        if self.keeps < MIN_KEEPS:
            return (
                f"margin {self.value:.1%} (the configured floor; {self.keeps} keeps to learn from)"
            )
        return (
            f"margin {self.value:.1%} (the widest gap of {self.keeps} keeps was "
            f"{(self.widest_keep_gap or 0.0):.1%})"
        )


def calibrate(
    kept: Iterable[tuple[Curve | Trace, Curve | Trace]], after: float, floor: float
) -> Margin:
    """The margin from the (curve, reference curve) pairs of kept runs."""
    gaps = [g for live, reference in kept if (g := widest_gap(live, reference, after)) is not None]
    if len(gaps) < MIN_KEEPS:
        return Margin(floor, len(gaps), max(gaps) if gaps else None)
    widest = max(gaps)
    return Margin(max(floor, widest + SLACK), len(gaps), widest)


@dataclass(frozen=True)
class Verdict:
    """Stop the run: where, how far behind, against which margin."""

    progress: float
    gap: float
    live_loss: float
    reference_loss: float
    margin: Margin

    def describe(self) -> str:
        return (
            f"discarded early at {self.progress:.0%} of the budget: loss {self.live_loss:.4f} "
            f"against the best run's {self.reference_loss:.4f} at the same point "
            f"(a gap of +{self.gap:.1%}, {self.margin.describe()})"
        )

    def evidence(self) -> dict[str, object]:
        return {
            "progress": round(self.progress, 4),
            "gap": round(self.gap, 6),
            "live_loss": round(self.live_loss, 6),
            "reference_loss": round(self.reference_loss, 6),
            "margin": round(self.margin.value, 6),
            "calibrated_on_keeps": self.margin.keeps,
        }


def judge(
    live: Curve | Trace,
    reference: Curve | Trace,
    progress: float,
    after: float,
    margin: Margin,
) -> Verdict | None:
    """A verdict to stop when, at ``progress`` (at or after ``after``), the live run trails
    the reference by more than the margin; else None."""
    live, reference = _as_trace(live), _as_trace(reference)
    if progress < after or progress > LAST_STOP or not live.points or not reference.points:
        return None
    behind = gap(live, reference, progress)
    if behind is None or behind <= margin.value:
        return None
    ours, theirs = mean_loss(live.points, progress), mean_loss(reference.points, progress)
    if ours is None or theirs is None:
        return None
    return Verdict(progress, behind, ours, theirs, margin)


def first_verdict(
    live: Curve | Trace, reference: Curve | Trace, after: float, margin: Margin
) -> Verdict | None:
    """Where the rule would have stopped a recorded run (None: it would have run to the end)."""
    points = _as_trace(live).points
    last = min(points[-1][0], LAST_STOP) if points else 0.0
    for progress in checkpoints(after, last):
        verdict = judge(live, reference, progress, after, margin)
        if verdict is not None:
            return verdict
    return None
