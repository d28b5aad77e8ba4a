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

A seed's luck is largely shared by scripts that build the same tensors (the same weights'
shapes, so the same initial values and batches from one seed): on the template at 20 s on a
CPU, two seeds of one script lie 0.1-0.2 apart, while the difference between two such
scripts changes by under 0.01 from one seed to the next. So an experiment of the best's shapes,
trained on seeds the best was trained on, is compared seed by seed, with the spread of such
paired differences (`NoiseFloor.paired`), pooled over the pairs of scripts of one shape
trained on two seeds or more, robustly as above. Measured on few pairs it is uncertain, so the
gain it needs is as many standard errors as a Student's t with its degrees of freedom asks for
the same confidence as `multiple` asks of a normal one. Scripts of other shapes draw other
luck: they are compared with the plain spread.

A run's own spread starts from one pair of baseline runs, one degree of freedom: a quarter
of such measurements lie under a third of the true spread and a fifth over 1.3 times it, and
the margin would follow. So the spread the runs of this workspace measured before, on the
same device and settings (a `Prior`), is pooled with the run's own, weighed as their degrees
of freedom up to `PRIOR_FREEDOM` (a shrunk estimate): the run's first pair moves the margin
less, and its own measurements outweigh the prior as they grow. Pure functions: the engine feeds them the
journal's numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from cockpit.store.verification import difference_error

# From this many scripts trained more than once, one far out is left out of the pool.
ROBUST_FROM_GROUPS = 3
# A script's variance over this many times the median script's is further out than chance
# allows: of two runs of the same noise, 1 pair in 100,000 lies that far apart. The median it
# is set against is noisier: of sets of 3 to 10 clean pairs, 2 to 4 in 100 lose one, which
# lowers their spread by about 1 % on average (tests/test_noise.py measures both).
OUTLIER_RATIO = 20.0
# The most weight the earlier runs' spread gets, in degrees of freedom of this run's: three
# pairs of runs' worth, however many the earlier runs measured (fewer weigh what they are).
# Another night's spread is evidence of tonight's, not a measurement of it (other scripts,
# another load on the machine).
PRIOR_FREEDOM = 3
# The median of a chi-squared variable with k degrees of freedom, divided by k: a group's
# variance over the true one has this median, so the median group's variance over it is a
# fair estimate. k = 1..5 exactly; beyond, the Wilson-Hilferty approximation.
_CHI2_MEDIAN_OVER_DF = {1: 0.454936, 2: 0.693147, 3: 0.788457, 4: 0.839410, 5: 0.870842}


def _chi2_median_over_df(freedom: int) -> float:
    known = _CHI2_MEDIAN_OVER_DF.get(freedom)
    return known if known is not None else (1 - 2 / (9 * freedom)) ** 3


@functools.lru_cache(maxsize=256)
def student_multiple(multiple: float, freedom: int) -> float:
    """The standard errors a Student's t with ``freedom`` degrees of freedom needs for the
    confidence that ``multiple`` standard errors give a normal one (one-sided): 2.0 becomes
    13.97 on one degree of freedom, 4.53 on two, 2.28 on ten, and tends to 2.0."""
    if freedom < 1:
        raise ValueError("a spread measured on no degree of freedom says nothing")
    if multiple <= 0:
        return 0.0
    wanted = NormalDist().cdf(multiple) - 0.5  # the t density's area from 0 to the quantile
    scale = math.exp(math.lgamma((freedom + 1) / 2) - math.lgamma(freedom / 2)) / math.sqrt(
        freedom * math.pi
    )

    def area(t: float, steps: int = 400) -> float:  # Simpson's rule from 0 to t
        h = t / steps
        total = 0.0
        for i in range(steps + 1):
            weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
            total += weight * (1 + (i * h) ** 2 / freedom) ** (-(freedom + 1) / 2)
        return scale * total * h / 3

    low, high = multiple, multiple
    while area(high) < wanted:
        low, high = high, high * 2
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if area(middle) < wanted else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Prior:
    """The spread earlier runs measured on this device with these settings, and its weight."""

    spread: float
    freedom: int  # the degrees of freedom it weighs as (at most PRIOR_FREEDOM)
    runs: int  # the earlier runs it was measured in
    scripts: int  # their scripts trained more than once, in the pool

    @classmethod
    def measure(cls, runs: Sequence[Iterable[Sequence[float]]]) -> Prior | None:
        """From each earlier run's groups of repeated values (a script's val_bpb on each
        seed), pooled robustly as one run's are; None where none repeated a script."""
        measured = [(index, list(groups)) for index, groups in enumerate(runs)]
        spread, scripts, values, _ = robust_spread(g for _, groups in measured for g in groups)
        if spread is None:
            return None
        used = sum(any(len(g) >= 2 for g in groups) for _, groups in measured)
        return cls(spread, min(PRIOR_FREEDOM, values - scripts), used, scripts)

    def describe(self) -> str:
        runs = "run" if self.runs == 1 else "runs"
        return f"{self.spread:.6f} that {self.runs} earlier {runs} here measured"


def shrunk(own: float | None, freedom: int, prior: Prior | None) -> float | None:
    """The run's own spread (on ``freedom`` degrees of freedom) pooled with the prior's, as
    a variance weighted by degrees of freedom; the prior alone before the run has its own."""
    if prior is None:
        return own
    if own is None or freedom < 1:
        return prior.spread
    weight = prior.freedom + freedom
    return math.sqrt((prior.freedom * prior.spread**2 + freedom * own**2) / weight)


@dataclass(frozen=True)
class NoiseFloor:
    """What the repeated runs so far say about run-to-run noise."""

    spread: float | None  # pooled standard deviation of val_bpb; None until measured
    scripts: int  # scripts trained more than once, in the pool
    runs: int  # their trainings in all
    margin: float  # the keep margin that follows from it
    left_out: int = 0  # scripts whose runs lay too far apart to pool (outliers)
    multiple: float = 0.0  # the margin's spreads; a gain must clear as many standard errors
    floor: float = 0.0  # the configured least margin (`[engine] keep_margin_bpb`)
    # The spread of the difference between two scripts of the same shapes trained on one seed
    # (None until a pair of them shares two seeds), the pairs it was pooled from and its
    # degrees of freedom (shared seeds less one, summed).
    paired: float | None = None
    pairs: int = 0
    paired_freedom: int = 0
    # The run's own spread before it was pooled with the earlier runs' (`prior`); where there
    # is no prior, ``spread`` is this.
    measured: float | None = None
    prior: Prior | None = None

    def as_state(self) -> dict[str, float | int | None]:
        """The engine state keys (`cockpit.store.state.EngineState`) that publish it."""
        return {
            "keep_margin_bpb": self.margin,
            "noise_spread_bpb": self.spread,
            "noise_runs": self.runs,
            "noise_scripts": self.scripts,
            "noise_left_out": self.left_out,
            "noise_paired_bpb": self.paired,
            "noise_pairs": self.pairs,
            "noise_measured_bpb": self.measured,
            "noise_prior_bpb": None if self.prior is None else self.prior.spread,
            "noise_prior_runs": None if self.prior is None else self.prior.runs,
        }

    def error(self, runs: int, reference_runs: int, paired: bool = False) -> float | None:
        """The standard error of the difference between a mean of ``runs`` trainings and one
        of ``reference_runs`` (None before the spread is measured); ``paired``: the runs were
        on the reference's seeds, by a script of its shapes, and the paired spread decides
        where it asks for less."""
        return self.test(runs, reference_runs, paired)[0]

    def needed(self, runs: int, reference_runs: int, paired: bool = False) -> float:
        """The gain a keep must show, as means of ``runs`` trainings against
        ``reference_runs``: the margin, or `multiple` standard errors of the difference of the
        two means when that is more (one run against one run: the margin times sqrt 2).
        ``paired``: as many paired standard errors as a Student's t on the paired spread's
        degrees of freedom asks (never under the configured floor), where that is less."""
        return self.test(runs, reference_runs, paired)[1]

    def test(
        self, runs: int, reference_runs: int, paired: bool = False
    ) -> tuple[float | None, float]:
        """(the standard error of the difference, the gain a keep needs): see `needed`."""
        error = difference_error(self.spread, runs, reference_runs)
        needed = self.margin if error is None else max(self.margin, self.multiple * error)
        if paired and self.paired is not None and runs >= 1 and self.paired_freedom >= 1:
            paired_error = self.paired / math.sqrt(runs)
            paired_needed = max(
                self.floor, student_multiple(self.multiple, self.paired_freedom) * paired_error
            )
            if paired_needed < needed:
                return paired_error, paired_needed
        return error, needed

    def describe(self) -> str:
        if self.spread is None:
            return f"margin {self.margin:.6f} (the configured floor; no repeated runs yet)"
        if self.measured is None and self.prior is not None:
            text = (
                f"margin {self.margin:.6f} from the spread of {self.prior.describe()} (none "
                "repeated in this run yet)"
            )
        else:
            text = (
                f"margin {self.margin:.6f} from a spread of {self.spread:.6f} measured over "
                f"{self.runs} runs of {self.scripts} script{'s' if self.scripts != 1 else ''}"
            )
        if self.measured is not None and self.prior is not None:
            text += (
                f" ({self.measured:.6f} in this run, pooled with the "
                f"{self.prior.describe()}, as {self.prior.freedom} degrees of freedom)"
            )
        if self.left_out:
            text += f" ({self.left_out} further apart than chance left out)"
        if self.paired is not None:
            text += f"; {paired_phrase(self.paired, self.pairs)}"
        return text


def paired_phrase(paired: float, pairs: int) -> str:
    """The paired spread as a person reads it, in a decision's reason and `cockpit status`."""
    return (
        f"paired on a seed, scripts of the same shapes differ by a spread of {paired:.6f} "
        f"({pairs} pair{'s' if pairs != 1 else ''})"
    )


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


def noise_floor(
    groups: Iterable[Sequence[float]],
    *,
    floor: float,
    multiple: float,
    differences: Iterable[Sequence[float]] = (),
    prior: Prior | None = None,
) -> NoiseFloor:
    """The keep margin: ``multiple`` robust spreads, and never less than ``floor``.

    ``differences``: for each pair of scripts of the same shapes trained on two seeds or more
    in common, one script's val_bpb less the other's on each of those seeds. ``prior``: the
    spread earlier runs measured, pooled with this run's (see `shrunk`)."""
    measured, scripts, runs, left_out = robust_spread(groups)
    spread = shrunk(measured, runs - scripts, prior)
    margin = floor if spread is None else max(floor, multiple * spread)
    paired, pairs, values, _ = robust_spread(differences)
    freedom = values - pairs  # each pair's shared seeds less one
    return NoiseFloor(
        spread,
        scripts,
        runs,
        margin,
        left_out,
        multiple,
        floor,
        paired,
        pairs,
        freedom,
        measured,
        prior,
    )


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
        needed = margin if needed is None else needed
        measured = f"val_bpb {self.value:.6f} ({runs})"
        cleared = f"margin {margin:.6f}" if needed == margin else f"needed {needed:.6f}"
        margin = min(margin, needed)  # paired, the noise is narrower than the margin
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
