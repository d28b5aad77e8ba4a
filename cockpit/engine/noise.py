"""How noisy val_bpb is, and so how large a gain must be before it means anything.

The same script trained with another seed lands somewhere else: that run-to-run spread is
measured by training some scripts more than once (the baseline at the start of a run, and
experiments confirmed before they are kept). The spread is the pooled standard deviation of
those repeated runs; the keep margin is a multiple of it, never below the configured floor.
Pure functions: the engine feeds them the journal's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
