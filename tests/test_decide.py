"""The decision on a trained experiment, as a pure function."""

from __future__ import annotations

import pytest

from cockpit.engine.decide import Action, Rules, Standing, decide
from cockpit.engine.integrity import SEED_ONLY
from cockpit.engine.noise import NoiseFloor

NOISE = NoiseFloor(spread=None, scripts=0, runs=0, margin=0.01)
RULES = Rules(noise_runs=2, confirm_multiple=2.0)
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
