"""Early abort: stop a training that is clearly losing to the best run, before its budget is
spent, and say why with the numbers it was decided on.

The live training loss is compared with the best run's at the same point of their schedules,
over the last `WINDOW` of progress (a window smooths the noise of single batches). A point
of the schedule is, where the harness recorded the script's step plan, the fraction of the
planned steps (the learning-rate schedule runs on it), else the fraction of the training
time. A plan that ends early (made while the machine was busier) squeezes its warmdown into
less time, and by the clock its last losses would be set against the middle of another run's
warmdown.

Both trainings use the same seed, so step k of each saw the same batch. Where the two plans
are of nearly the same length (within `SAME_PLAN_TOLERANCE`), the gap is taken on the same
batches: the live window's losses against the best run's losses at the same steps, carried
by the best run's own trend (a straight line fitted over its neighbourhood) to the same point
of its plan; a batch's difficulty then cancels out. Plans further apart are compared point
of plan against point of plan, on different batches. Step against step they would set a
run early in its schedule against one far into its warmdown, where the loss falls with the
learning rate and not with the model: on a recorded CPU run, three scripts with plans
12-16 % longer than the best's trailed it step for step by +2.5 % to +3.7 % late in the
budget, and ended level with it or better. A straight trend line does not carry that.

Every comparison has an uncertainty, the standard error of its gap: of the per-step loss
ratios on the same batches, else of each window's losses about their own trend. Between
`after` and `LAST_STOP` of the budget, at checkpoints every `STEP`, a run is stopped when
its gap less `CONFIDENCE` standard errors (the least it trails by, fairly surely) exceeds the
margin; it is recorded as discarded early, with the comparison as evidence.

The margin is calibrated on the runs recorded so far: among the experiments that were kept,
the largest such bound any of them showed at or after `after` (against the best run at its
time), plus `SLACK`, never below the configured floor. A keep that trailed the best early and
won late widens the margin, so that keeps like it are not aborted; until `MIN_KEEPS` keeps
are recorded the floor alone applies. All of it is pure: the engine and `cockpit bench
early-abort` (which replays a journal) use the same functions.

What it trusts. The losses a training reports are its script's own word, and the script is
the proposal: one that reported its loss scaled down (it reads as a units conversion) and was
kept would make every later honest experiment look far behind it, and be stopped. The one
figure about a training that no script can steer is the loss the harness measured for the
model it ended with (`val_loss`: mean nats per token on the validation split, the units of
the cross-entropy per token a script reports as its training loss). So a live training is
never held against a decided curve as reported, but against a `Reference` built from
`Measured` curves (see `reference`):

- the best run's curve, scaled to answer to its measured loss: its report ratio (the measured
  loss over its last reported losses) set against the lowest ratio among it, its parent and
  the baseline, and never scaled down. A constant factor on its reports moves its ratio by the
  inverse factor and the scale undoes it;
- its parent's curve and the baseline's (the workspace's own script, which no proposal
  wrote), each carried to the best run's measured loss: their shapes, at the level the best
  run was measured to end on. A best run cannot claim an early lead over them larger than the
  lead it was measured to end with;
- at each checkpoint the live training is stopped only if it trails every one of them beyond
  the margin (the comparison quoted is the most lenient one), and the margin is calibrated on
  the same references. A best with no measured loss is no reference: nothing is stopped.

What remains steerable, and what it costs. Between its start and its end a best run's curve
is still its word: it can report low early and honest late, and so stand in for the most
that the carried curves allow, a lead over its parent and the baseline as large all along as
at its end. A best whose true curve starts slower than theirs (a larger model) can thereby
make its successors' reference stricter than its honest curve would, by as much as it
started slower. And the ratio of an honest training's last losses to its measured loss is
not a constant (batches, how far the warmdown got, the gap between the training and the
held-out text): scaling its reports, a best whose honest ratio sits below the lowest of the
three makes its reference stricter by that difference (on the recorded CPU runs of
tests/data the ratios spread over 0.94-1.00). Either way what it can get is an honest
successor stopped early, and recorded as discarded early with the comparison quoted: that
run's own chance, no more. It cannot make a worse script kept, change a measured result, or
touch how a successor that runs to its end is decided. Reporting high, a script only makes
the rule more lenient (its successors' reference, or, as a keep, the margin): compute, not a
decision. The price for honest runs is leniency too: a best whose ratio is above the lowest
has its curve scaled up by as much, and a best that leads early by more than it ends with is
held to the carried curves: fewer stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from cockpit.store.curves import (
    MIN_WINDOW_POINTS,
    WINDOW,
    Against,
    Curve,
    Reference,
    Trace,
    as_trace,
    trace,
)

STEP = 0.05  # checkpoints of the replay and of the calibration, as fractions of the budget
SLACK = 0.01  # added to the widest bound a keep showed
MIN_KEEPS = 3  # keeps needed before the margin is calibrated rather than the floor
# No stop after this share of the budget: it would save little and lose the measurement.
LAST_STOP = 0.9
TREND_REACH = 0.2  # share of the best run's plan its trend line reaches beyond the two points
MIN_SHARED_STEPS = 3  # fewer shared steps in a window: compare the windows' means instead
# Plans whose lengths differ by more than this are not compared step for step (see above).
SAME_PLAN_TOLERANCE = 0.03
CONFIDENCE = 2.5  # standard errors a gap must clear the margin by (13 checkpoints look)


@dataclass(frozen=True)
class Comparison:
    """The live run set against the best run at one point of the budget: the numbers a
    verdict is decided on, as it quotes them.

    ``method`` is ``same batches`` (step against step, carried along the best run's trend),
    ``plan`` (point of plan against point of plan, different batches) or ``clock`` (neither
    run has a step plan: fractions of the training time). The spans are the first and last
    step of each window (fractions of the budget on the clock)."""

    progress: float
    method: str
    gap: float  # live_loss / reference_loss - 1: 0.05 = 5 % higher
    uncertainty: float  # the gap's standard error
    live_loss: float
    reference_loss: float
    live_span: tuple[float, float]
    reference_span: tuple[float, float]
    live_planned: int | None = None
    reference_planned: int | None = None
    # Same batches: the best run's mean loss on the live window's own steps, before the trend
    # carried it to the same point of its plan.
    same_batches_loss: float | None = None
    # The curve it was set against (see `Reference`), what its reports were scaled by, and
    # whether it is an earlier run's curve carried to the best run's measured loss.
    against: str = "the best run"
    reference_scale: float = 1.0
    carried: bool = False

    @property
    def bound(self) -> float:
        """The least the live run trails by, fairly surely: the gap less `CONFIDENCE`
        standard errors."""
        return self.gap - CONFIDENCE * self.uncertainty

    def describe(self) -> str:
        """What was set against what, and the gap."""
        against = self.against
        if self.method == "clock":
            where = (
                f"between {self.live_span[0]:.0%} and {self.live_span[1]:.0%} of the budget, "
                f"against {against}'s {self.reference_loss:.4f} over the same span"
            )
            ours = f"loss {self.live_loss:.4f} "
        else:
            ours = (
                f"loss {self.live_loss:.4f} over steps {_span(self.live_span)} of "
                f"{self.live_planned} planned, "
            )
            if self.method == "same batches":
                where = (
                    f"against {against}'s {self.same_batches_loss:.4f} on the same batches, "
                    f"{self.reference_loss:.4f} carried along its trend to the same point of its "
                    f"{self.reference_planned}-step plan"
                )
            else:
                where = (
                    f"against {against}'s {self.reference_loss:.4f} over steps "
                    f"{_span(self.reference_span)} of {self.reference_planned} planned, the "
                    "same point of its plan on other batches"
                )
        if self.carried:
            where += (
                f" (its reports times {self.reference_scale:.3g}: its curve carried to the loss "
                "the harness measured at the best run's end)"
            )
        elif self.reference_scale != 1.0:
            where += (
                f" (its reports times {self.reference_scale:.3g}, to answer to the loss the "
                "harness measured at its end)"
            )
        return f"{ours}{where}: a gap of {self.gap:+.1%} \u00b1 {self.uncertainty:.1%}"


def _span(span: tuple[float, float]) -> str:
    first, last = round(span[0]), round(span[1])
    return str(first) if first == last else f"{first}-{last}"


def compare(live: Curve | Trace, reference: Against, progress: float) -> Comparison | None:
    """The live run against the reference around ``progress``: on the same batches where
    both trainings have step plans of nearly the same length, else point of schedule against
    point of schedule. None when either has too few points there.

    Against a `Reference`, the most lenient of its curves' comparisons (the least bound), and
    None unless every one of them can be compared there."""
    live = as_trace(live)
    if not isinstance(reference, Reference):
        return _compare(live, as_trace(reference), progress)
    comparisons = []
    for candidate in reference.candidates:
        comparison = _compare(live, candidate.trace, progress)
        if comparison is None:
            return None
        comparisons.append(
            replace(
                comparison,
                against=candidate.label,
                reference_scale=candidate.scale,
                carried=candidate.carried,
            )
        )
    return min(comparisons, key=lambda c: c.bound, default=None)


def _compare(live: Trace, reference: Trace, progress: float) -> Comparison | None:
    return _same_batches(live, reference, progress) or _same_point(live, reference, progress)


def gap(live: Curve | Trace, reference: Against, progress: float) -> float | None:
    """How much worse the live loss is than the reference's around ``progress`` (0.05 = 5 %
    higher; see `compare`). None when either has too few points there."""
    comparison = compare(live, reference, progress)
    return None if comparison is None else comparison.gap


def _window(trace: Trace, progress: float) -> list[tuple[float, float]]:
    return [(at, loss) for at, loss in trace.points if progress - WINDOW < at <= progress]


def _same_point(live: Trace, reference: Trace, progress: float) -> Comparison | None:
    """The windows' mean losses at the same point of their schedules, with the standard error
    of their ratio from each window's scatter about its own trend."""
    ours, theirs = _window(live, progress), _window(reference, progress)
    if len(ours) < MIN_WINDOW_POINTS or len(theirs) < MIN_WINDOW_POINTS:
        return None
    live_loss = math.fsum(loss for _, loss in ours) / len(ours)
    reference_loss = math.fsum(loss for _, loss in theirs) / len(theirs)
    if live_loss <= 0 or reference_loss <= 0:
        return None
    uncertainty = math.sqrt(_scatter(ours) ** 2 / len(ours) + _scatter(theirs) ** 2 / len(theirs))
    planned = live.planned is not None and reference.planned is not None

    def span(points: list[tuple[float, float]], steps: int | None) -> tuple[float, float]:
        scale = steps if planned and steps else 1.0
        return points[0][0] * scale, points[-1][0] * scale

    return Comparison(
        progress=progress,
        method="plan" if planned else "clock",
        gap=live_loss / reference_loss - 1.0,
        uncertainty=uncertainty,
        live_loss=live_loss,
        reference_loss=reference_loss,
        live_span=span(ours, live.planned),
        reference_span=span(theirs, reference.planned),
        live_planned=live.planned if planned else None,
        reference_planned=reference.planned if planned else None,
    )


def _scatter(points: Sequence[tuple[float, float]]) -> float:
    """The standard deviation of the log losses about their least-squares line."""
    logs = [(at, math.log(loss)) for at, loss in points if loss > 0]
    line = _line(logs)
    if line is None:
        return 0.0
    residuals = [value - line(at) for at, value in logs]
    return math.sqrt(math.fsum(r * r for r in residuals) / max(1, len(residuals) - 2))


def plans_apart(live: Trace, reference: Trace) -> bool:
    """Whether both trainings have step plans, of lengths more than `SAME_PLAN_TOLERANCE`
    apart: then they are compared point of plan against point of plan, not step for step."""
    if not (live.planned and reference.planned):
        return False
    return abs(live.planned / reference.planned - 1.0) > SAME_PLAN_TOLERANCE + 1e-9


def _same_batches(live: Trace, reference: Trace, progress: float) -> Comparison | None:
    """The gap on the same steps (the same batches), carried to the same point of the
    reference's plan along its trend; None where the two cannot be paired step by step."""
    if not (live.planned and reference.planned and live.by_step and reference.by_step):
        return None
    if plans_apart(live, reference):
        return None
    window = [step for step in live.by_step if progress - WINDOW < step / live.planned <= progress]
    shared = sorted(step for step in window if step in reference.by_step)
    if len(shared) < max(MIN_SHARED_STEPS, len(window) // 2):
        return None
    live_loss = math.fsum(live.by_step[step] for step in shared) / len(shared)
    same_batches_loss = math.fsum(reference.by_step[step] for step in shared) / len(shared)
    if live_loss <= 0 or same_batches_loss <= 0:
        return None
    centre = math.fsum(shared) / len(shared)
    same_point = centre / live.planned * reference.planned  # in the reference's steps
    carry = 1.0
    if not math.isclose(centre, same_point):
        reach = TREND_REACH * reference.planned
        low, high = min(centre, same_point) - reach, max(centre, same_point) + reach
        line = _line([(s, loss) for s, loss in reference.by_step.items() if low <= s <= high])
        if line is None or line(centre) <= 0 or line(same_point) <= 0:
            return None
        carry = line(same_point) / line(centre)
    ratios = [math.log(live.by_step[step] / reference.by_step[step]) for step in shared]
    mean_ratio = math.fsum(ratios) / len(ratios)
    spread = math.sqrt(math.fsum((r - mean_ratio) ** 2 for r in ratios) / (len(ratios) - 1))
    reference_loss = same_batches_loss * carry
    step_span = (float(shared[0]), float(shared[-1]))
    return Comparison(
        progress=progress,
        method="same batches",
        gap=live_loss / reference_loss - 1.0,
        uncertainty=spread / math.sqrt(len(ratios)),
        live_loss=live_loss,
        reference_loss=reference_loss,
        live_span=step_span,
        reference_span=(
            shared[0] / live.planned * reference.planned,
            shared[-1] / live.planned * reference.planned,
        ),
        live_planned=live.planned,
        reference_planned=reference.planned,
        same_batches_loss=same_batches_loss,
    )


def _line(points: Sequence[tuple[float, float]]) -> Callable[[float], float] | None:
    """The least-squares line through the points (x, y); None with too few to fit one."""
    if len(points) < 2 * MIN_SHARED_STEPS:
        return None
    mean_x = math.fsum(x for x, _ in points) / len(points)
    mean_y = math.fsum(y for _, y in points) / len(points)
    spread = math.fsum((x - mean_x) ** 2 for x, _ in points)
    if spread <= 0:
        return None
    slope = math.fsum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return lambda x: mean_y + slope * (x - mean_x)


def checkpoints(after: float, until: float = 1.0) -> list[float]:
    """The fractions of the budget at which the rule looks, from ``after`` on."""
    points, at = [], after
    while at <= until + 1e-9:
        points.append(round(at, 6))
        at += STEP
    return points


def widest_bound(live: Curve | Trace, reference: Against, after: float) -> float | None:
    """The largest bound (gap less its uncertainty, see `Comparison.bound`) a run showed at
    the checkpoints from ``after`` on (None: no overlap)."""
    points = as_trace(live).points
    last = points[-1][0] if points else 0.0
    bounds = [
        c.bound for p in checkpoints(after, last) if (c := compare(live, reference, p)) is not None
    ]
    return max(bounds) if bounds else None


@dataclass(frozen=True)
class Margin:
    """The bound beyond which a run is stopped, and where it comes from."""

    value: float
    keeps: int  # the kept runs it was calibrated on (0: the floor alone)
    widest_keep_bound: float | None

    def describe(self) -> str:
        if self.keeps < MIN_KEEPS:
            return (
                f"margin {self.value:.1%}, the configured floor ({self.keeps} keeps to learn "
                f"from, {MIN_KEEPS} needed)"
            )
        return (
            f"margin {self.value:.1%}, from {self.keeps} keeps (the furthest any trailed "
            f"was {(self.widest_keep_bound or 0.0):+.1%})"
        )


def calibrate(kept: Iterable[tuple[Curve | Trace, Against]], after: float, floor: float) -> Margin:
    """The margin from the (curve, reference) pairs of kept runs: each held against what it
    was held against when it trained."""
    bounds = [
        b for live, reference in kept if (b := widest_bound(live, reference, after)) is not None
    ]
    if len(bounds) < MIN_KEEPS:
        return Margin(floor, len(bounds), max(bounds) if bounds else None)
    widest = max(bounds)
    return Margin(max(floor, widest + SLACK), len(bounds), widest)


@dataclass(frozen=True)
class Verdict:
    """Stop the run: where, on what comparison, against which margin."""

    comparison: Comparison
    margin: Margin

    @property
    def progress(self) -> float:
        return self.comparison.progress

    @property
    def gap(self) -> float:
        return self.comparison.gap

    def describe(self) -> str:
        comparison = self.comparison
        return (
            f"discarded early at {comparison.progress:.0%} of the budget: "
            f"{comparison.describe()}; trailing by at least {comparison.bound:+.1%} "
            f"({CONFIDENCE:g} standard errors less), beyond the {self.margin.describe()}"
        )

    def evidence(self) -> dict[str, object]:
        comparison = self.comparison
        return {
            "progress": round(comparison.progress, 4),
            "method": comparison.method,
            "gap": round(comparison.gap, 6),
            "uncertainty": round(comparison.uncertainty, 6),
            "bound": round(comparison.bound, 6),
            "live_loss": round(comparison.live_loss, 6),
            "reference_loss": round(comparison.reference_loss, 6),
            "same_batches_loss": None
            if comparison.same_batches_loss is None
            else round(comparison.same_batches_loss, 6),
            "live_span": [round(v, 4) for v in comparison.live_span],
            "reference_span": [round(v, 4) for v in comparison.reference_span],
            "live_planned": comparison.live_planned,
            "reference_planned": comparison.reference_planned,
            "reference": comparison.against,
            "reference_scale": round(comparison.reference_scale, 6),
            "carried": comparison.carried,
            "margin": round(self.margin.value, 6),
            "calibrated_on_keeps": self.margin.keeps,
        }


def ledger_note(evidence: Mapping[str, object]) -> str:
    """An early stop in a few words, from a verdict's evidence: for the ledger's rows."""
    progress, gap_ = evidence.get("progress"), evidence.get("gap")
    if not isinstance(progress, (int, float)) or not isinstance(gap_, (int, float)):
        return "stopped early"
    against = evidence.get("reference")
    against = against if isinstance(against, str) and against else "the best run"
    return f"stopped early at {progress:.0%} of the budget, loss {gap_:+.1%} against {against}'s"


def judge(
    live: Curve | Trace,
    reference: Against,
    progress: float,
    after: float,
    margin: Margin,
) -> Verdict | None:
    """A verdict to stop when, at ``progress`` (at or after ``after``), the live run trails
    the reference by more than the margin even after its uncertainty; else None."""
    if progress < after or progress > LAST_STOP:
        return None
    comparison = compare(live, reference, progress)
    if comparison is None or comparison.bound <= margin.value:
        return None
    return Verdict(comparison, margin)


def first_verdict(
    live: Curve | Trace,
    reference: Against,
    after: float,
    margin: Margin,
    since: float = -1.0,
) -> Verdict | None:
    """Where the rule would have stopped a recorded run, at the first checkpoint after
    ``since`` that its curve reaches (None: it would have run to the end)."""
    points = as_trace(live).points
    last = min(points[-1][0], LAST_STOP) if points else 0.0
    for progress in checkpoints(after, last):
        if progress <= since:
            continue
        verdict = judge(live, reference, progress, after, margin)
        if verdict is not None:
            return verdict
    return None


class Watch:
    """One live training held against the best run's: its metric records as they arrive,
    judged at the checkpoints it has reached, each once (judged at every tick, the noise of a
    long run would get hundreds of chances to cross the margin)."""

    def __init__(self, reference: Trace | Reference, margin: Margin, after: float) -> None:
        self.reference = reference
        self.margin = margin
        self.after = after
        self.records: list[Mapping[str, object]] = []
        self.judged_through = 0.0
        self.verdict: Verdict | None = None  # once given, it stands

    def add(self, record: Mapping[str, object]) -> None:
        """A metric record of the live training."""
        self.records.append(record)

    def check(self) -> Verdict | None:
        """The verdict to stop, at the first checkpoint reached since the last check where
        the run trails beyond the margin; None while it does not."""
        if self.verdict is not None or not self.records:
            return self.verdict
        live = trace(self.records)
        self.verdict = first_verdict(
            live, self.reference, self.after, self.margin, since=self.judged_through
        )
        reached = checkpoints(self.after, live.points[-1][0] if live.points else 0.0)
        if self.verdict is not None:
            self.judged_through = self.verdict.progress
        elif reached:
            self.judged_through = max(self.judged_through, reached[-1])
        return self.verdict
