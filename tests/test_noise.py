"""The noise floor's arithmetic: pooled spread, margin, when to confirm."""

from __future__ import annotations

import math
import statistics

import pytest

from cockpit.engine.noise import needs_confirmation, noise_floor, pooled_spread


def test_two_runs_of_one_script_give_their_standard_deviation() -> None:
    spread, scripts, runs = pooled_spread([[2.50, 2.52]])
    assert spread == pytest.approx(statistics.stdev([2.50, 2.52]))
    assert (scripts, runs) == (1, 2)


def test_groups_pool_their_squares_and_degrees_of_freedom() -> None:
    groups = [[1.0, 1.2, 1.4], [3.0, 3.1], [7.0]]  # the single value says nothing
    squares = (0.04 + 0.0 + 0.04) + (0.0025 + 0.0025)
    spread, scripts, runs = pooled_spread(groups)
    assert spread == pytest.approx(math.sqrt(squares / 3))
    assert (scripts, runs) == (2, 5)


def test_without_repeated_runs_the_margin_is_the_floor() -> None:
    floor = noise_floor([[2.5], [2.4]], floor=0.001, multiple=2.0)
    assert floor.spread is None and floor.margin == 0.001
    assert "no repeated runs" in floor.describe()


def test_the_margin_is_a_multiple_of_the_spread_never_below_the_floor() -> None:
    wide = noise_floor([[2.50, 2.52]], floor=0.001, multiple=2.0)
    assert wide.margin == pytest.approx(2 * statistics.stdev([2.50, 2.52]))
    assert "2 runs of 1 script" in wide.describe()
    narrow = noise_floor([[2.5, 2.5001]], floor=0.001, multiple=2.0)
    assert narrow.margin == 0.001


@pytest.mark.parametrize(
    ("gain", "runs", "expected"),
    [
        (0.015, 1, True),  # clears the margin 0.01, but by less than 2 margins: confirm
        (0.025, 1, False),  # clear enough
        (0.005, 1, False),  # does not clear the margin at all: discarded without more runs
        (0.015, 2, False),  # already confirmed: the mean decides
        (-0.02, 1, False),  # worse
    ],
)
def test_only_small_gains_are_confirmed_and_only_once(
    gain: float, runs: int, expected: bool
) -> None:
    assert needs_confirmation(gain, 0.01, 2.0, runs) is expected


def test_confirmation_can_be_turned_off() -> None:
    assert not needs_confirmation(0.015, 0.01, 0.0, 1)
