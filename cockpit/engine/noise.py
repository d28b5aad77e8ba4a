"""How noisy val_bpb is, and so how large a gain must be before it means anything.

The same script trained with another seed lands somewhere else: that run-to-run spread is
measured by training some scripts more than once (the baseline at the start of a run, and
experiments confirmed before they are kept). The spread is the pooled standard deviation of
those repeated runs; the keep margin is a multiple of it, never below the configured floor.

One noisy pair must not move the margin for the rest of the night: once there are
`ROBUST_FROM_GROUPS` scripts trained more than once, a script whose runs lie further apart
than chance allows (its variance over `OUTLIER_RATIO` times the spread the median script
gives) is left out of the pool, and said to be. The median script's spread is what decides,
so one script, however far out, moves the spread no further than the others allow.
Pure functions: the engine feeds them the journal's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cockpit.store.verification import difference_error

# From this many scripts trained more than once, one far out is left out of the pool.
ROBUST_FROM_GROUPS = 3
# A script's variance over this many times the median script's is further out than chance
# allows: of two runs of the same noise, 1 pair in 100,000 lies that far apart. The median it
# is set against is noisier: of sets of 3 to 10 clean pairs, 2 to 4 in 100 lose one, which
# lowers their spread by about 1 % on average (tests/test_noise.py measures both).
OUTLIER_RATIO = 20.0
# The median of a chi-squared variable with k degrees of freedom, divided by k: a group's
# variance over the true one has this median, so the median group's variance over it is a
# fair estimate. k = 1..5 exactly; beyond, the Wilson-Hilferty approximation.
_CHI2_MEDIAN_OVER_DF = {1: 0.454936, 2: 0.693147, 3: 0.788457, 4: 0.839410, 5: 0.870842}


def _chi2_median_over_df(freedom: int) -> float:
    known = _CHI2_MEDIAN_OVER_DF.get(freedom)
    return known if known is not None else (1 - 2 / (9 * freedom)) ** 3


@dataclass(frozen=True)
class NoiseFloor:
    """What the repeated runs so far say about run-to-run noise."""

    spread: float | None  # pooled standard deviation of val_bpb; None until measured
    scripts: int  # scripts trained more than once, in the pool
    runs: int  # their trainings in all
    margin: float  # the keep margin that follows from it
    left_out: int = 0  # scripts whose runs lay too far apart to pool (outliers)
    multiple: float = 0.0  # the margin's spreads; a gain must clear as many standard errors

    def as_state(self) -> dict[str, float | int | None]:
        """The engine state keys (`cockpit.store.state.EngineState`) that publish it."""
        return {
            "keep_margin_bpb": self.margin,
            "noise_spread_bpb": self.spread,
            "noise_runs": self.runs,
            "noise_scripts": self.scripts,
            "noise_left_out": self.left_out,
        }

    def error(self, runs: int, reference_runs: int) -> float | None:
        """The standard error of the difference between a mean of ``runs`` trainings and one
        of ``reference_runs`` (None before the spread is measured)."""
        return difference_error(self.spread, runs, reference_runs)

    def needed(self, runs: int, reference_runs: int) -> float:
        """The gain a keep must show, as means of ``runs`` trainings against
        ``reference_runs``: the margin, or `multiple` standard errors of the difference of the
        two means when that is more (one run against one run: the margin times sqrt 2)."""
        error = self.error(runs, reference_runs)
        return self.margin if error is None else max(self.margin, self.multiple * error)

    def describe(self) -> str:
        if self.spread is None:
            return f"margin {self.margin:.6f} (the configured floor; no repeated runs yet)"
        text = (
            f"margin {self.margin:.6f} from a spread of {self.spread:.6f} measured over "
            f"{self.runs} runs of {self.scripts} script{'s' if self.scripts != 1 else ''}"
        )
        if self.left_out:
            text += f" ({self.left_out} further apart than chance left out)"
        return text


@dataclass(frozen=True)
class _Group:
    squares: float  # the sum of squared deviations from its mean
    freedom: int  # its values less one
    values: int

    @property
    def variance(self) -> float:
        return self.squares / self.freedom


def _groups(groups: Iterable[Sequence[float]]) -> list[_Group]:
    """The groups of two values or more (a single value says nothing about spread)."""
    found = []
    for group in groups:
        if len(group) < 2:
            continue
        mean = math.fsum(group) / len(group)
        squares = math.fsum((value - mean) ** 2 for value in group)
        found.append(_Group(squares, len(group) - 1, len(group)))
    return found


def _pool(groups: Sequence[_Group]) -> float | None:
    freedom = sum(group.freedom for group in groups)
    return math.sqrt(math.fsum(g.squares for g in groups) / freedom) if freedom else None


def pooled_spread(groups: Iterable[Sequence[float]]) -> tuple[float | None, int, int]:
    """The pooled standard deviation of groups of repeated measurements of one thing each.

    Groups of one value say nothing about spread and are skipped. Returns (spread, groups
    used, values used); spread is None when no group has two values.
    """
    found = _groups(groups)
    spread = _pool(found)
    if spread is None:
        return None, 0, 0
    return spread, len(found), sum(group.values for group in found)


def robust_spread(groups: Iterable[Sequence[float]]) -> tuple[float | None, int, int, int]:
    """The pooled standard deviation without the groups further out than chance allows.

    From `ROBUST_FROM_GROUPS` groups on, the median group's variance (scaled by the median of
    its chi-squared distribution) is a spread no single group can move far; a group whose
    variance exceeds `OUTLIER_RATIO` times it is left out of the pool. Fewer groups than
    that cannot tell an outlier from the noise, and are all pooled. Returns (spread, groups
    used, values used, groups left out)."""
    found = _groups(groups)
    kept = found
    if len(found) >= ROBUST_FROM_GROUPS:
        scaled = sorted(group.variance / _chi2_median_over_df(group.freedom) for group in found)
        middle = len(scaled) // 2
        typical = scaled[middle] if len(scaled) % 2 else (scaled[middle - 1] + scaled[middle]) / 2
        if typical > 0:
            kept = [group for group in found if group.variance <= OUTLIER_RATIO * typical]
    spread = _pool(kept)
    if spread is None:
        return None, 0, 0, 0
    return spread, len(kept), sum(group.values for group in kept), len(found) - len(kept)


def noise_floor(groups: Iterable[Sequence[float]], *, floor: float, multiple: float) -> NoiseFloor:
    """The keep margin: ``multiple`` robust spreads, and never less than ``floor``."""
    spread, scripts, runs, left_out = robust_spread(groups)
    margin = floor if spread is None else max(floor, multiple * spread)
    return NoiseFloor(spread, scripts, runs, margin, left_out, multiple)


def needs_confirmation(gain: float, margin: float, multiple: float, runs: int) -> bool:
    """Whether a gain that clears the margin is small enough to be trained again first.

    ``gain`` is how much lower val_bpb is than the best (positive is better); ``runs`` how
    many trainings the experiment has had. One confirmation at most: then the mean decides.
    """
    return runs < 2 and multiple > 0 and margin < gain < multiple * margin


@dataclass(frozen=True)
class Comparison:
    """An experiment's val_bpb against the best's: what it was set against, and how."""

    value: float  # the mean of the experiment's runs
    reference: float  # the best's value it is compared with
    seeds: tuple[int, ...]  # the seeds of a paired comparison; () against the best's mean

    @property
    def delta(self) -> float:
        """The experiment's value minus the reference (negative is better)."""
        return self.value - self.reference

    def verdict(
        self,
        best: float,
        margin: float,
        fewer_lines: bool,
        runs: str,
        needed: float | None = None,
    ) -> tuple[bool, str]:
        """Keep or not, and why: a gain beyond ``needed`` (the margin, or more standard errors
        of the difference than that) is kept, and so is a tie within the margin by a shorter
        script (the simplicity criterion); ``best`` is the best's mean, which a keep never
        raises. ``runs`` says what ``value`` is ("one run", "the mean of 2 runs")."""
        delta, against = self.delta, self.describe_reference()
        needed = margin if needed is None else max(margin, needed)
        measured = f"val_bpb {self.value:.6f} ({runs})"
        cleared = f"margin {margin:.6f}" if needed <= margin else f"needed {needed:.6f}"
        if delta < -needed and self.value >= best:
            # Paired, it clears the margin; but the best's other seeds did better than this
            # one's luck can show, and keeping it would raise the best val_bpb.
            return False, (
                f"{measured} beats {against} by {-delta:.6f}, but not the best's mean {best:.6f}"
            )
        if delta < -needed:
            return True, f"{measured} beats {against} by {-delta:.6f} ({cleared})"
        if abs(delta) <= margin and fewer_lines:
            return True, f"{measured} ties {against} within {margin:.6f} with fewer lines"
        if delta < -margin:
            return False, (
                f"{measured} beats {against} by {-delta:.6f}, short of the {needed:.6f} a "
                "keep needs on this many runs (the margin in standard errors of the difference)"
            )
        if delta < 0:
            return False, (
                f"{measured} beats {against} by only {-delta:.6f}, within the noise margin "
                f"{margin:.6f}"
            )
        return False, f"{measured} is not better than {against} (+{delta:.6f})"

    def describe_reference(self) -> str:
        if not self.seeds:
            return f"the best {self.reference:.6f}"
        seeds = ", ".join(str(seed) for seed in self.seeds)
        runs = "run" if len(self.seeds) == 1 else "runs"
        return f"the best's {self.reference:.6f} ({runs} with seed {seeds})"


def compare(own: Mapping[int, float], best: Mapping[int, float], best_value: float) -> Comparison:
    """The experiment's runs (seed -> val_bpb) against the best's.

    The seed decides the initial weights and the batches, and its luck is shared: a seed that
    favours one script tends to favour the next (on a CPU run, one seed's runs came out
    0.06-0.1 bpb below another's for three scripts in a row). So where the best was trained
    with every seed the experiment was, the comparison is paired: the experiment's runs
    against the best's runs with the same seeds. Otherwise against the best's mean."""
    if not own:
        raise ValueError("an experiment without a run has nothing to compare")
    value = math.fsum(own.values()) / len(own)
    if set(own) <= set(best):
        seeds = tuple(sorted(own))
        reference = math.fsum(best[seed] for seed in seeds) / len(seeds)
        if len(seeds) < len(best):
            return Comparison(value, reference, seeds)
        return Comparison(value, reference, ())  # the same seeds as the best's mean
    return Comparison(value, best_value, ())
