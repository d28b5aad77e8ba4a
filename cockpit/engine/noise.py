"""How noisy val_bpb is, and so how large a gain must be before it means anything.

The same script trained with another seed lands somewhere else: that run-to-run spread is
measured by training some scripts more than once (the baseline at the start of a run, and
experiments confirmed before they are kept). The spread is the pooled standard deviation of
those repeated runs; the keep margin is a multiple of it, never below the configured floor.
Pure functions: the engine feeds them the journal's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NoiseFloor:
    """What the repeated runs so far say about run-to-run noise."""

    spread: float | None  # pooled standard deviation of val_bpb; None until measured
    scripts: int  # scripts trained more than once
    runs: int  # their trainings in all
    margin: float  # the keep margin that follows from it

    def describe(self) -> str:
        if self.spread is None:
            return f"margin {self.margin:.6f} (the configured floor; no repeated runs yet)"
        return (
            f"margin {self.margin:.6f} from a spread of {self.spread:.6f} measured over "
            f"{self.runs} runs of {self.scripts} script{'s' if self.scripts != 1 else ''}"
        )


def pooled_spread(groups: Iterable[Sequence[float]]) -> tuple[float | None, int, int]:
    """The pooled standard deviation of groups of repeated measurements of one thing each.

    Groups of one value say nothing about spread and are skipped. Returns (spread, groups
    used, values used); spread is None when no group has two values.
    """
    squares, freedom, used, values = 0.0, 0, 0, 0
    for group in groups:
        if len(group) < 2:
            continue
        mean = math.fsum(group) / len(group)
        squares += math.fsum((value - mean) ** 2 for value in group)
        freedom += len(group) - 1
        used += 1
        values += len(group)
    if not freedom:
        return None, 0, 0
    return math.sqrt(squares / freedom), used, values


def noise_floor(groups: Iterable[Sequence[float]], *, floor: float, multiple: float) -> NoiseFloor:
    """The keep margin: ``multiple`` spreads, and never less than ``floor``."""
    spread, scripts, runs = pooled_spread(groups)
    margin = floor if spread is None else max(floor, multiple * spread)
    return NoiseFloor(spread, scripts, runs, margin)


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

    def verdict(self, best: float, margin: float, fewer_lines: bool, runs: str) -> tuple[bool, str]:
        """Keep or not, and why: a gain beyond the margin is kept, and so is a tie within it
        by a shorter script (the simplicity criterion); ``best`` is the best's mean, which a
        keep never raises. ``runs`` says what ``value`` is ("one run", "the mean of 2 runs")."""
        delta, against = self.delta, self.describe_reference()
        measured = f"val_bpb {self.value:.6f} ({runs})"
        if delta < -margin and self.value >= best:
            # Paired, it clears the margin; but the best's other seeds did better than this
            # one's luck can show, and keeping it would raise the best val_bpb.
            return False, (
                f"{measured} beats {against} by {-delta:.6f}, but not the best's mean {best:.6f}"
            )
        if delta < -margin:
            return True, f"{measured} beats {against} by {-delta:.6f} (margin {margin:.6f})"
        if abs(delta) <= margin and fewer_lines:
            return True, f"{measured} ties {against} within {margin:.6f} with fewer lines"
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
