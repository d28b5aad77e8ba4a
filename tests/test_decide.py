"""The decision on a trained experiment, as a pure function."""

from __future__ import annotations

import math

import pytest

from cockpit.engine.decide import Action, Decision, Rules, Standing, decide
from cockpit.engine.integrity import SEED_ONLY
from cockpit.engine.noise import NoiseFloor, noise_floor
from cockpit.store.verification import difference_error

NOISE = NoiseFloor(spread=None, scripts=0, runs=0, margin=0.01)
RULES = Rules(noise_runs=2, keep_runs=1, max_runs=4, confirm_multiple=2.0)
BASE = Standing(0, 2.0, {42: 2.0}, lines_of_code=50)


def test_the_baseline_is_trained_until_the_noise_runs_are_in() -> None:
    first = decide(0, {42: 2.0}, lines_of_code=50, best=None, parent=None, noise=NOISE, rules=RULES)
    assert first.action is Action.TRAIN_AGAIN
    second = decide(
        0, {42: 2.0, 43: 2.02}, lines_of_code=50, best=None, parent=None, noise=NOISE, rules=RULES
    )
    assert second.action is Action.KEEP and second.value == pytest.approx(2.01)
    assert second.reason.startswith("baseline: val_bpb 2.010000 (the mean of 2 runs)")


def test_a_clear_gain_on_the_best_is_kept_and_a_loss_discarded() -> None:
    kept = decide(1, {42: 1.9}, lines_of_code=50, best=BASE, parent=None, noise=NOISE, rules=RULES)
    assert kept.action is Action.KEEP
    assert kept.evidence["best_before"] == 2.0 and kept.evidence["compared_with"] == 2.0
    lost = decide(2, {42: 2.1}, lines_of_code=50, best=BASE, parent=None, noise=NOISE, rules=RULES)
    assert lost.action is Action.DISCARD and "not better" in lost.reason


def test_a_small_gain_is_trained_again_before_it_is_kept() -> None:
    small = decide(
        1, {42: 1.985}, lines_of_code=50, best=BASE, parent=None, noise=NOISE, rules=RULES
    )
    assert small.action is Action.TRAIN_AGAIN and "confirming a gain of 0.015" in small.reason


def test_a_tie_is_kept_by_the_shorter_script() -> None:
    tie = decide(1, {42: 2.005}, lines_of_code=40, best=BASE, parent=None, noise=NOISE, rules=RULES)
    assert tie.action is Action.KEEP and "fewer lines" in tie.reason


def test_a_change_of_the_seed_alone_is_never_kept() -> None:
    seeded = decide(
        1, {42: 1.5}, lines_of_code=50, best=BASE, parent=None, noise=NOISE, rules=RULES,
        flags={SEED_ONLY},
    )  # fmt: skip
    assert seeded.action is Action.DISCARD and "nothing but the random seed" in seeded.reason


def test_a_gain_made_on_a_best_that_moved_is_reapplied_not_kept() -> None:
    moved = Standing(3, 1.8, {42: 1.8}, lines_of_code=50)
    decision = decide(
        4, {42: 1.9}, lines_of_code=50, best=moved, parent=BASE, noise=NOISE, rules=RULES
    )
    assert decision.action is Action.REAPPLY
    assert "beats its parent #0" in decision.reason
    assert "the best moved to #3 (1.800000) while it trained" in decision.reason
    assert decision.evidence["parent"] == 0 and decision.evidence["compared_with"] == 2.0


def test_no_gain_on_its_parent_is_discarded_even_when_the_best_moved() -> None:
    moved = Standing(3, 1.8, {42: 1.8}, lines_of_code=50)
    decision = decide(
        4, {42: 2.05}, lines_of_code=50, best=moved, parent=BASE, noise=NOISE, rules=RULES
    )
    assert decision.action is Action.DISCARD
    assert "its parent #0" in decision.reason and "the best moved to #3" in decision.reason


def test_an_experiment_is_decided_only_after_the_baseline() -> None:
    with pytest.raises(ValueError, match="once the baseline is"):
        decide(1, {42: 1.9}, lines_of_code=50, best=None, parent=None, noise=NOISE, rules=RULES)
    with pytest.raises(ValueError, match="no trial"):
        decide(1, {}, lines_of_code=50, best=BASE, parent=None, noise=NOISE, rules=RULES)


# --- a keep is a mean over seeds, judged in standard errors of the difference ------------------

MEASURED = NoiseFloor(spread=0.02, scripts=1, runs=2, margin=0.04, multiple=2.0)
TWO_SEEDS = Rules(noise_runs=2, keep_runs=2, max_runs=4, confirm_multiple=2.0)
PAIRED_BASE = Standing(0, 2.0, {42: 2.0, 43: 2.0}, lines_of_code=50)


def decision_on(
    trials: dict[int, float], best: Standing = PAIRED_BASE, rules: Rules = TWO_SEEDS,
    **kwargs: object,
) -> Decision:  # fmt: skip
    """Experiment #1's decision against ``best``, with the measured noise."""
    return decide(
        1, trials, lines_of_code=50, best=best, parent=None, noise=MEASURED, rules=rules,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def judged(trials: dict[int, float], best: Standing = PAIRED_BASE, **kwargs: object) -> Action:
    return decision_on(trials, best, **kwargs).action  # type: ignore[arg-type]


def test_a_single_lucky_run_is_never_the_bests_value() -> None:
    """However far beyond the noise one training lands, it is trained on a second seed, and
    the keep's value, the best's from then on, is the mean of both."""
    lucky = decision_on({42: 1.5})
    assert lucky.action is Action.TRAIN_AGAIN
    assert "a keep is trained on 2 seeds at least" in lucky.reason
    kept = decision_on({42: 1.5, 43: 1.9})
    assert kept.action is Action.KEEP and kept.value == pytest.approx(1.7)
    assert "the mean of 2 runs" in kept.reason


def test_a_loss_or_a_gain_far_short_of_a_keep_costs_one_training() -> None:
    # One run against the best's same-seed run: the error is 0.0283, a keep needs 0.0566.
    assert judged({42: 2.05}) is Action.DISCARD
    assert judged({42: 1.975}) is Action.DISCARD  # 0.025: short by more than one error
    near = decision_on({42: 1.97})
    # 0.03, under the margin but within one error of a keep: one more seed can decide it.
    assert near.action is Action.TRAIN_AGAIN
    assert "a gain of 0.030000 over 1 run, short of the 0.056569" in near.reason
    once = Rules(noise_runs=2, keep_runs=2, max_runs=1, confirm_multiple=2.0)
    assert decision_on({42: 1.97}, rules=once).action is Action.DISCARD  # never a second


def test_one_noisy_baseline_pair_does_not_freeze_the_run() -> None:
    """A baseline pair far apart sets a margin no single training clears (a spread of 0.150
    from one pair: margin 0.300, measured on this machine). An experiment that comes within a
    standard error of a keep is trained again; its own pair joins the pool, the spread
    comes down, and a real gain is kept."""
    rules = Rules(noise_runs=2, keep_runs=2, max_runs=4, confirm_multiple=0.0)
    base = Standing(0, 2.845, {42: 2.739, 43: 2.951}, lines_of_code=50)
    first = noise_floor([[2.739, 2.951]], floor=0.0, multiple=2.0)
    assert first.margin == pytest.approx(0.2998, abs=1e-4)
    single = decide(
        18, {42: 2.51}, lines_of_code=50, best=base, parent=None, noise=first, rules=rules
    )
    assert single.action is Action.TRAIN_AGAIN, single.reason  # gain 0.229 < margin 0.300
    pooled = noise_floor([[2.739, 2.951], [2.51, 2.55]], floor=0.0, multiple=2.0)
    assert pooled.margin < first.margin - 0.08
    kept = decide(
        18, {42: 2.51, 43: 2.55}, lines_of_code=50, best=base, parent=None, noise=pooled,
        rules=rules,
    )  # fmt: skip
    assert kept.action is Action.KEEP, kept.reason


def test_the_standard_error_of_a_difference_of_means() -> None:
    assert difference_error(0.02, 1, 1) == pytest.approx(0.02 * math.sqrt(2))
    assert difference_error(0.02, 2, 2) == pytest.approx(0.02)
    assert difference_error(0.02, 4, 1) == pytest.approx(0.02 * math.sqrt(1.25))
    assert difference_error(None, 2, 2) is None
    # One run against one run must clear two standard errors of their difference, more than
    # the margin; two against two, the margin.
    assert MEASURED.needed(1, 1) == pytest.approx(2 * 0.02 * math.sqrt(2))
    assert MEASURED.needed(2, 2) == pytest.approx(0.04)
    assert NOISE.needed(1, 1) == NOISE.margin  # no spread measured: the configured margin


def test_one_training_against_one_is_kept_only_beyond_two_standard_errors() -> None:
    single = Rules(noise_runs=1, keep_runs=1, max_runs=1, confirm_multiple=0.0)
    one = Standing(0, 2.0, {42: 2.0}, lines_of_code=50)
    for gain, action in ((0.05, Action.DISCARD), (0.06, Action.KEEP)):  # needed: 0.0566
        decision = decide(
            1, {42: 2.0 - gain}, lines_of_code=50, best=one, parent=None, noise=MEASURED,
            rules=single,
        )  # fmt: skip
        assert decision.action is action, decision.reason
    assert decision.evidence["needed"] == pytest.approx(0.04 * math.sqrt(2))
    assert decision.evidence["difference_error"] == pytest.approx(0.02 * math.sqrt(2))


def test_extra_trainings_go_to_gains_in_doubt_not_to_clear_ones() -> None:
    """Past two seeds, a gain short of the keep by less than a standard error is trained
    again, up to max_runs; a clear gain is kept on two, a clear miss discarded."""
    assert judged({42: 1.9, 43: 1.9}) is Action.KEEP  # 0.1, far beyond 0.04
    assert judged({42: 1.95}) is Action.TRAIN_AGAIN  # 0.05 > margin: a second seed
    in_doubt = {42: 1.95, 43: 1.985}  # mean gain 0.0325: short of 0.04 by under 0.02
    assert judged(in_doubt) is Action.TRAIN_AGAIN
    assert judged({**in_doubt, 44: 1.97}) is Action.TRAIN_AGAIN  # 0.0317 vs 0.04 - 0.0183
    assert judged({**in_doubt, 44: 1.97, 45: 1.975}) is Action.DISCARD  # max_runs reached
    assert judged({42: 1.95, 43: 2.03}) is Action.DISCARD  # mean gain 0.01: a clear miss


def test_a_seed_only_change_is_not_trained_again() -> None:
    assert judged({42: 1.5}, flags={SEED_ONLY}) is Action.DISCARD


# --- scripts of the same shapes share a seed's luck: compared seed by seed ----------------------

SHAPES = "0123456789abcdef"


def test_a_freeze_on_one_noisy_baseline_pair_is_broken_by_pairing_scripts_of_its_shapes() -> None:
    """Measured on this machine (the template at 20 s): the baseline's two seeds lay 0.197
    apart, a margin of 0.278 that no single run cleared, and every experiment was discarded.
    An experiment of the baseline's shapes changed the two seeds' results by -0.100 and
    -0.095: seed luck is shared. Its gain on one run is trained again to measure that; the
    pair's spread then judges it, and it is kept on the mean of its two seeds."""
    rules = Rules(noise_runs=2, keep_runs=2, max_runs=4, confirm_multiple=0.0)
    base = Standing(0, 2.82465, {0: 2.7263, 1: 2.923}, lines_of_code=50, shapes=SHAPES)
    floor = noise_floor([[2.7263, 2.923]], floor=0.001, multiple=2.0)
    assert floor.margin == pytest.approx(0.2782, abs=1e-4) and floor.paired is None

    def judge(trials: dict[int, float], noise: NoiseFloor, shapes: str | None) -> Decision:
        return decide(
            6, trials, lines_of_code=50, best=base, parent=None, noise=noise, rules=rules,
            shapes=shapes, next_seed=len(trials),
        )  # fmt: skip

    # One run, 0.100 better than the baseline's seed 0: far short of 0.393 unpaired.
    one = judge({0: 2.6263}, floor, SHAPES)
    assert one.action is Action.TRAIN_AGAIN, one.reason
    assert "how much of a seed's luck such scripts share" in one.reason
    assert one.evidence["paired"] is True
    # Another shape draws other luck: nothing to measure, and 0.100 is noise.
    assert judge({0: 2.6263}, floor, "fedcba9876543210").action is Action.DISCARD
    assert judge({0: 2.6263}, floor, None).action is Action.DISCARD  # shapes unknown

    trials = {0: 2.6263, 1: 2.828}
    paired = noise_floor(
        [[2.7263, 2.923], list(trials.values())], floor=0.001, multiple=2.0,
        differences=[[2.6263 - 2.7263, 2.828 - 2.923]],
    )  # fmt: skip
    assert paired.pairs == 1 and paired.paired_freedom == 1
    assert paired.paired == pytest.approx(0.005 / math.sqrt(2), abs=1e-6)
    kept = judge(trials, paired, SHAPES)
    assert kept.action is Action.KEEP, kept.reason
    assert kept.value == pytest.approx(2.72715)
    # On one degree of freedom a paired keep needs 13.97 paired standard errors.
    assert kept.evidence["needed"] == pytest.approx(13.968 * paired.paired / math.sqrt(2), rel=1e-3)
    assert kept.evidence["needed"] < 0.05 < floor.margin
    # The same trials without the shapes are judged unpaired, and the gain is noise.
    assert judge(trials, paired, None).action is Action.DISCARD


def test_a_paired_gain_is_never_judged_more_leniently_than_the_spread_of_its_pairs_allows() -> None:
    """Pairs whose differences move from seed to seed as much as the scripts' own runs do
    (other batches, other luck) leave the paired spread as large as the unpaired error: the
    gain is judged as if unpaired, never more leniently."""
    rules = Rules(noise_runs=2, keep_runs=2, max_runs=2, confirm_multiple=0.0)
    base = Standing(0, 2.0, {0: 1.95, 1: 2.05}, lines_of_code=50, shapes=SHAPES)
    unshared = noise_floor(
        [[1.95, 2.05], [1.80, 2.00], [1.90, 1.90]], floor=0.001, multiple=2.0,
        differences=[[-0.15, -0.05], [0.05, -0.05]],
    )  # fmt: skip
    paired_needed = unshared.needed(2, 2, paired=True)
    assert paired_needed == pytest.approx(unshared.needed(2, 2))
    decision = decide(
        2, {0: 1.90, 1: 1.94}, lines_of_code=50, best=base, parent=None, noise=unshared,
        rules=rules, shapes=SHAPES,
    )  # fmt: skip
    assert decision.action is Action.DISCARD, decision.reason  # gain 0.08 < needed
    # A tiny paired spread never takes the need below the configured floor.
    tight = noise_floor([[1.95, 2.05]], floor=0.03, multiple=2.0, differences=[[0.0, 1e-6]] * 3)
    assert tight.needed(1, 1, paired=True) == pytest.approx(0.03)


def test_the_pairing_is_measured_only_where_the_best_has_a_seed_for_it() -> None:
    """A gain on one run is trained again to measure the pairing only while fewer than two
    pairs have measured it, and only where the reference was trained on another seed."""
    rules = Rules(noise_runs=1, keep_runs=1, max_runs=4, confirm_multiple=0.0)
    one_seed = Standing(0, 2.0, {0: 2.0}, lines_of_code=50, shapes=SHAPES)
    noise = NoiseFloor(spread=0.1, scripts=1, runs=2, margin=0.2, multiple=2.0)
    lone = decide(
        1, {0: 1.95}, lines_of_code=50, best=one_seed, parent=None, noise=noise, rules=rules,
        shapes=SHAPES, next_seed=1,
    )  # fmt: skip
    assert lone.action is Action.DISCARD, lone.reason
    two_seeds = Standing(0, 2.0, {0: 2.0, 1: 2.0}, lines_of_code=50, shapes=SHAPES)
    measured = NoiseFloor(
        spread=0.1, scripts=3, runs=6, margin=0.2, multiple=2.0, paired=0.1, pairs=2,
        paired_freedom=2,
    )  # fmt: skip
    settled = decide(
        1, {0: 1.95}, lines_of_code=50, best=two_seeds, parent=None, noise=measured,
        rules=rules, shapes=SHAPES, next_seed=1,
    )  # fmt: skip
    assert settled.action is Action.DISCARD, settled.reason


def test_a_paired_near_miss_is_not_trained_on_a_seed_the_best_lacks() -> None:
    """On the best's two seeds, a paired gain just short of a keep would need a third seed,
    which the best was never trained on: the comparison would become unpaired and far looser.
    So it is decided now; unpaired, the same near miss is trained again."""
    rules = Rules(noise_runs=2, keep_runs=2, max_runs=4, confirm_multiple=0.0)
    base = Standing(0, 2.0, {0: 1.95, 1: 2.05}, lines_of_code=50, shapes=SHAPES)
    noise = NoiseFloor(
        spread=0.05, scripts=3, runs=6, margin=0.1, multiple=2.0, floor=0.001, paired=0.01,
        pairs=4, paired_freedom=4,
    )  # fmt: skip
    needed = noise.needed(2, 2, paired=True)  # 2.869 x 0.01 / sqrt 2 = 0.0203
    assert needed == pytest.approx(2.869 * 0.01 / math.sqrt(2), rel=1e-3)
    trials = {0: 1.95 - needed + 0.002, 1: 2.05 - needed + 0.002}
    paired = decide(
        3, trials, lines_of_code=50, best=base, parent=None, noise=noise, rules=rules,
        shapes=SHAPES, next_seed=2,
    )  # fmt: skip
    assert paired.action is Action.DISCARD, paired.reason
    assert paired.evidence["paired"] is True
    unpaired_noise = NoiseFloor(spread=0.01, scripts=3, runs=6, margin=0.02, multiple=2.0)
    unpaired = decide(
        3, trials, lines_of_code=50, best=base, parent=None, noise=unpaired_noise, rules=rules,
    )  # fmt: skip
    assert unpaired.action is Action.TRAIN_AGAIN, unpaired.reason
