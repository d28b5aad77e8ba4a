"""Early abort: stop a training that is clearly losing to the best run, before its budget is
spent, and say why.

The live training loss is compared with the best run's at the same fraction of the budget:
the gap is the relative difference of their mean losses over the last `WINDOW` of progress
(a window smooths the noise of single batches). A fraction of the budget is a point in the
script's schedule: where the harness recorded the script's step plan, the fraction of the
planned steps (the learning-rate schedule runs on it), else the fraction of the training time.
A plan that ends early (made while the machine was busier) squeezes its warmdown into less
time, and by the clock its last losses would be set against the middle of another run's
warmdown. Between `after` and `LAST_STOP` of the budget,
a run whose gap exceeds the margin is stopped and recorded as discarded early.

The margin is calibrated on the runs recorded so far: among the experiments that were kept,
the largest gap any of them showed at or after `after` (against the best run at its time),
plus `SLACK`, never below the configured floor. A keep that trailed the best early and won
late widens the margin, so that keeps like it are not aborted; until `MIN_KEEPS` keeps are
recorded the floor alone applies. All of it is pure: the engine and `cockpit bench
early-abort` (which replays a journal) use the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WINDOW = 0.1  # fraction of the budget the losses are averaged over
STEP = 0.05  # checkpoints of the replay and of the calibration, as fractions of the budget
SLACK = 0.01  # added to the widest gap a keep showed
MIN_KEEPS = 3  # keeps needed before the margin is calibrated rather than the floor
# No stop after this share of the budget: it would save little and lose the measurement.
LAST_STOP = 0.9

Curve = Sequence[tuple[float, float]]  # (progress 0..1, training loss), in progress order


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
    """The (position, loss) points of one training's metric records, in order: the position
    is ``step / planned_steps`` when the records carry the harness's step plan (the points
    from before the plan placed by it too), else the fraction of the budget by the clock."""
    records = list(records)
    planned = None
    for record in records:
        value = record.get("planned_steps")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            planned = value
    if planned is None:
        return curve_from_metrics(records)
    points = []
    for record in records:
        step, loss = record.get("step"), record.get("loss")
        if (
            isinstance(step, int)
            and not isinstance(step, bool)
            and isinstance(loss, (int, float))
            and math.isfinite(loss)
        ):
            points.append((step / planned, float(loss)))
    points.sort(key=lambda point: point[0])
    return points


def mean_loss(curve: Curve, progress: float, window: float = WINDOW) -> float | None:
    """The mean loss over (progress - window, progress]; None without a point there."""
    values = [loss for at, loss in curve if progress - window < at <= progress]
    return math.fsum(values) / len(values) if values else None


def gap(live: Curve, reference: Curve, progress: float) -> float | None:
    """How much worse the live loss is than the reference's around ``progress``: the relative
    difference of their mean losses (0.05 = 5 % higher). None when either has no points."""
    ours, theirs = mean_loss(live, progress), mean_loss(reference, progress)
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs - 1.0


def checkpoints(after: float, until: float = 1.0) -> list[float]:
    """The fractions of the budget at which the rule looks, from ``after`` on."""
    points, at = [], after
    while at <= until + 1e-9:
        points.append(round(at, 6))
        at += STEP
    return points


def widest_gap(live: Curve, reference: Curve, after: float) -> float | None:
    """The largest gap a run showed at the checkpoints from ``after`` on (None: no overlap)."""
    last = live[-1][0] if live else 0.0
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


def calibrate(kept: Iterable[tuple[Curve, Curve]], after: float, floor: float) -> Margin:
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
            f"(+{self.gap:.1%}, {self.margin.describe()})"
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
    live: Curve, reference: Curve, progress: float, after: float, margin: Margin
) -> Verdict | None:
    """A verdict to stop when, at ``progress`` (at or after ``after``), the live run trails
    the reference by more than the margin; else None."""
    if progress < after or progress > LAST_STOP or not live or not reference:
        return None
    behind = gap(live, reference, progress)
    if behind is None or behind <= margin.value:
        return None
    ours, theirs = mean_loss(live, progress), mean_loss(reference, progress)
    assert ours is not None and theirs is not None
    return Verdict(progress, behind, ours, theirs, margin)


def first_verdict(live: Curve, reference: Curve, after: float, margin: Margin) -> Verdict | None:
    """Where the rule would have stopped a recorded run (None: it would have run to the end)."""
    last = min(live[-1][0], LAST_STOP) if live else 0.0
    for progress in checkpoints(after, last):
        verdict = judge(live, reference, progress, after, margin)
        if verdict is not None:
            return verdict
    return None
