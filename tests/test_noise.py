"""The noise floor's arithmetic: pooled spread, margin, when to confirm."""

from __future__ import annotations

import math
import statistics

import pytest

from cockpit.engine.noise import compare, needs_confirmation, noise_floor, pooled_spread


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


def test_an_experiment_is_set_against_the_bests_runs_with_its_seeds() -> None:
    """The baseline's seed 42 came out 0.06 below its seed 43 (a lucky seed, as on the CPU
    recordings). A seed-42 experiment 0.02 below the baseline's mean is 0.01 above its
    seed-42 run: against the mean it would look better only by the seed's luck."""
    baseline = {42: 2.46, 43: 2.52}
    one = compare({42: 2.47}, baseline, 2.49)
    assert one.reference == 2.46 and one.seeds == (42,)
    assert one.delta == pytest.approx(0.01)
    assert "(run with seed 42)" in one.describe_reference()
    # Confirmed with seed 43 too: both runs against both of the best's, its mean.
    both = compare({42: 2.47, 43: 2.50}, baseline, 2.49)
    assert both.reference == pytest.approx(2.49) and both.seeds == ()
    assert both.delta == pytest.approx(-0.005)
    assert both.describe_reference() == "the best 2.490000"
    # A seed the best never trained with: against the best's mean.
    unpaired = compare({42: 2.40, 43: 2.44}, {42: 2.46}, 2.46)
    assert unpaired.reference == 2.46 and unpaired.seeds == ()
    assert unpaired.delta == pytest.approx(-0.04)
    with pytest.raises(ValueError):
        compare({}, baseline, 2.49)


@pytest.mark.parametrize(
    ("own", "fewer_lines", "keep", "says"),
    [
        (2.40, False, True, "beats the best's 2.460000 (run with seed 42) by 0.060000 (margin"),
        (2.44, False, False, "by only 0.020000, within the noise margin 0.050000"),
        (2.47, False, False, "is not better than the best's 2.460000 (run with seed 42) (+0.0"),
        (2.48, True, True, "ties the best's 2.460000 (run with seed 42) within 0.050000 with"),
    ],
)
def test_the_verdict_keeps_gains_beyond_the_margin_and_shorter_ties(
    own: float, fewer_lines: bool, keep: bool, says: str
) -> None:
    comparison = compare({42: own}, {42: 2.46, 43: 2.52}, 2.49)
    kept, reason = comparison.verdict(2.49, 0.05, fewer_lines, "one run")
    assert kept is keep
    assert reason.startswith(f"val_bpb {own:.6f} (one run) ") and says in reason, reason


def test_a_paired_gain_that_would_raise_the_best_is_not_kept() -> None:
    """The best's seed-42 run was its unlucky one: 0.12 better than it is still above the
    best's mean, and the best val_bpb never goes up by a keep."""
    comparison = compare({42: 2.50}, {42: 2.62, 43: 2.34}, 2.48)
    assert comparison.delta == pytest.approx(-0.12)
    kept, reason = comparison.verdict(2.48, 0.1, False, "one run")
    assert not kept and "but not the best's mean 2.480000" in reason
