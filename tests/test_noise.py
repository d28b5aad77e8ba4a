"""The noise floor's arithmetic: pooled spread, margin, when to confirm."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest

from cockpit.cli import main
from cockpit.engine.noise import (
    OUTLIER_RATIO,
    PRIOR_FREEDOM,
    Prior,
    _chi2_median_over_df,
    compare,
    needs_confirmation,
    noise_floor,
    pooled_spread,
    robust_spread,
    student_multiple,
)
from cockpit.engine.run_noise import earlier_noise
from cockpit.engine.runs import COMPARABILITY_SETTINGS
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import (
    FULL_SHARE,
    next_seed,
    paired_differences,
    ran_short,
    trained_plan,
    trial_ran_short,
)
from tests.helpers import workspace_with_state


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


# --- one outlier cannot move the margin -------------------------------------------------------

CLEAN = [[2.500, 2.520], [2.410, 2.398], [2.450, 2.471], [2.380, 2.379], [2.300, 2.322]]


def test_one_script_however_far_apart_its_runs_moves_the_spread_within_a_stated_bound() -> None:
    """The bound: from three scripts on, a further script is pooled only while its variance is
    at most OUTLIER_RATIO times the typical one (the median script's, scaled by the median of
    its chi-squared distribution), so the spread can rise at most to the pool with that much
    more in it. Farther out, the script is left out and changes nothing. The plain pooled
    spread follows the outlier without bound."""
    squares = sum((a - b) ** 2 / 2 for a, b in CLEAN)
    scaled = sorted((a - b) ** 2 / 2 / _chi2_median_over_df(1) for a, b in CLEAN)
    typical = (scaled[2] + scaled[3]) / 2  # the middle of six, the outlier the largest
    bound = math.sqrt((squares + OUTLIER_RATIO * typical) / (len(CLEAN) + 1))
    clean = noise_floor(CLEAN, floor=0.001, multiple=2.0)
    assert clean.spread is not None and bound < 3.5 * clean.spread  # 3.4 times, here
    for step in range(1, 400):
        apart = step * 0.0025  # up to 1 bpb between two runs of one script
        noise = noise_floor([*CLEAN, [2.4, 2.4 + apart]], floor=0.001, multiple=2.0)
        assert noise.spread is not None and noise.spread <= bound * (1 + 1e-9), apart
        if apart > 0.2:
            assert noise.spread == pytest.approx(clean.spread) and noise.left_out == 1
    far = noise_floor([*CLEAN, [2.4, 3.4]], floor=0.001, multiple=2.0)
    assert (far.left_out, far.scripts, far.runs) == (1, 5, 10)
    assert "1 further apart than chance left out" in far.describe()
    plain, _, _ = pooled_spread([*CLEAN, [2.4, 3.4]])
    assert plain is not None and plain > 10 * clean.spread


def test_a_script_within_chance_is_pooled_though_it_is_the_widest() -> None:
    widest = [*CLEAN, [2.4, 2.46]]  # three times the others' typical distance
    noise = noise_floor(widest, floor=0.001, multiple=2.0)
    spread, _, _ = pooled_spread(widest)
    assert noise.left_out == 0 and noise.spread == pytest.approx(spread)


def test_two_scripts_cannot_tell_an_outlier_from_the_noise_and_are_pooled() -> None:
    """The baseline's pair and one confirmation pair: nothing to say which is the odd one."""
    pairs = [[2.50, 2.52], [2.40, 2.60]]
    noise = noise_floor(pairs, floor=0.001, multiple=2.0)
    spread, _, _ = pooled_spread(pairs)
    assert noise.left_out == 0 and noise.spread == pytest.approx(spread)


@pytest.mark.parametrize("scripts", [3, 4, 6, 10])
def test_on_clean_noise_the_robust_spread_leaves_out_little_and_stays_honest(scripts: int) -> None:
    """Pairs of one normal noise: under 5 sets in 100 lose a pair, and the spread stays
    within 5 % of the truth on average (a lower spread would keep more by luck)."""
    rng = random.Random(scripts)
    sets = 4000
    variances, lost = [], 0
    for _ in range(sets):
        groups = [[rng.gauss(0, 1), rng.gauss(0, 1)] for _ in range(scripts)]
        spread, _, _, left_out = robust_spread(groups)
        assert spread is not None
        variances.append(spread**2)
        lost += left_out > 0
    assert lost / sets < 0.05
    assert statistics.fmean(variances) == pytest.approx(1.0, abs=0.05)


def test_the_chi_squared_medians_agree_with_sampling() -> None:
    rng = random.Random(7)
    for freedom in (1, 2, 3, 6):
        draws = [sum(rng.gauss(0, 1) ** 2 for _ in range(freedom)) / freedom for _ in range(20000)]
        assert statistics.median(draws) == pytest.approx(_chi2_median_over_df(freedom), rel=0.03)


@pytest.mark.usefixtures("no_git_identity")
def test_status_says_how_many_runs_and_scripts_the_spread_stands_on_and_what_was_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = noise_floor([*CLEAN, [2.4, 3.4]], floor=0.001, multiple=2.0)
    root = workspace_with_state(tmp_path / "ws", **noise.as_state())
    assert main(["status", "--workspace", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["noise_runs"], report["noise_scripts"], report["noise_left_out"]) == (10, 5, 1)
    assert main(["status", "--workspace", str(root)]) == 0
    text = capsys.readouterr().out
    assert (
        f"keep margin {noise.margin:.6f} (the run-to-run spread is {noise.spread:.6f} over 10 "
        "repeated runs of 5 scripts; 1 script whose runs lay further apart than chance allows "
        "left out)"
    ) in text, text
    assert "paired on a seed" not in text  # no pair measured yet

    paired = noise_floor(CLEAN, floor=0.001, multiple=2.0, differences=[[0.01, 0.012]] * 3)
    root = workspace_with_state(tmp_path / "paired", **paired.as_state())
    assert main(["status", "--workspace", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["noise_pairs"] == 3
    assert report["noise_paired_bpb"] == pytest.approx(0.002 / math.sqrt(2))
    assert main(["status", "--workspace", str(root)]) == 0
    assert (
        f"paired on a seed, scripts of the same shapes differ by a spread of "
        f"{paired.paired:.6f} (3 pairs)"
    ) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("probability", "freedom", "quantile"),
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 5, 2.571), (0.975, 30, 2.042)],
)
def test_the_student_multiple_is_the_t_quantile_of_the_normal_confidence(
    probability: float, freedom: int, quantile: float
) -> None:
    multiple = statistics.NormalDist().inv_cdf(probability)
    assert student_multiple(multiple, freedom) == pytest.approx(quantile, abs=2e-3)
    assert student_multiple(2.0, 10_000) == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="no degree of freedom"):
        student_multiple(2.0, 0)


def test_the_paired_spread_pools_differences_and_leaves_an_outlier_out() -> None:
    """Each pair's differences seed by seed pool into the paired spread (a pair of two
    shared seeds is one degree of freedom); a pair whose difference swings further than
    chance allows against the others (its scripts drew other luck) is left out."""
    steady = [[-0.100, -0.095], [-0.172, -0.176], [0.010, 0.013, 0.008]]
    floor = noise_floor(CLEAN, floor=0.001, multiple=2.0, differences=steady)
    assert (floor.pairs, floor.paired_freedom) == (3, 4)
    spread, _, _ = pooled_spread(steady)
    assert floor.paired == pytest.approx(spread)
    swung = noise_floor(CLEAN, floor=0.001, multiple=2.0, differences=[*steady, [-0.1, 0.1]])
    assert (swung.pairs, swung.paired_freedom) == (3, 4)
    assert swung.paired == pytest.approx(floor.paired)
    assert noise_floor(CLEAN, floor=0.001, multiple=2.0, differences=[[0.1], []]).paired is None


def scripted(
    number: int, parent: int | None, trials: list[tuple[int, float, str | None]]
) -> Experiment:
    """Experiment ``number``, made from ``parent``, with trainings (seed, val_bpb, shapes)."""
    return Experiment(
        id=number + 1, run_id=1, number=number,
        parent_commit=None if parent is None else f"{parent:040d}", commit_sha=f"{number:040d}",
        ref=None, proposer=None, model=None, description="", hypothesis="", diff="",
        script_hash=None, status="keep", outcome="ok", exit_code=0, val_bpb=None,
        peak_memory_mb=None, training_seconds=None, total_seconds=None, num_steps=None,
        attempt=1, created_at=0.0, started_at=None, ended_at=None, decision=None,
        decision_reason=None, summary=None, log_path=None, crash_tail=None, lines_of_code=None,
        details={"trials": [
            {"seed": seed, "val_bpb": value, **({"shapes": shapes} if shapes else {})}
            for seed, value, shapes in trials
        ]},
    )  # fmt: skip


def test_a_pair_is_a_script_and_its_parent_of_the_same_shapes_on_two_seeds_in_common() -> None:
    a, b = "a" * 16, "b" * 16
    journal = [
        scripted(0, None, [(0, 2.70, a), (1, 2.90, a)]),
        scripted(1, 0, [(0, 2.60, a), (1, 2.81, a), (2, 2.5, a)]),  # a pair on seeds 0 and 1
        scripted(2, 1, [(0, 2.50, b), (1, 2.70, b)]),  # other shapes: other luck
        scripted(3, 1, [(0, 2.55, a)]),  # one seed: no spread
        scripted(4, 1, [(0, 2.55, None), (1, 2.75, None)]),  # shapes unknown
        scripted(5, 1, [(0, 2.55, a), (1, 2.75, b)]),  # shapes changed between seeds
        scripted(6, 9, [(0, 2.55, a), (1, 2.75, a)]),  # its parent is not in the run
    ]
    ((first, second),) = paired_differences(journal)
    assert (first, second) == (pytest.approx(-0.10), pytest.approx(-0.09))


def test_a_scripts_next_seed_follows_its_trainings_on_that_kind_of_device() -> None:
    """The one rule the launch, the message that trains again and the paired decision share."""
    trials = [
        {"seed": 42, "val_bpb": 2.7, "kind": "NVIDIA H100"},
        {"seed": 42, "val_bpb": 2.6, "kind": "NVIDIA H200"},
        {"seed": 43, "val_bpb": 2.8, "kind": "NVIDIA H100"},
    ]
    assert next_seed(42, trials, "NVIDIA H100") == 44
    assert next_seed(42, trials, "NVIDIA H200") == 43
    assert next_seed(42, [], "") == next_seed(42, None) == 42
    assert next_seed(0, [{"seed": 0, "val_bpb": 2.7}, "not a trial"]) == 1


def test_a_training_under_the_full_share_of_its_plan_ran_short() -> None:
    assert not ran_short(98, 100) and ran_short(97, 100) and FULL_SHARE == 0.98
    assert not ran_short(None, 100) and not ran_short(50, None)  # no plan: never short
    assert trial_ran_short({"seed": 42, "num_steps": 195, "planned": 227})
    assert not trial_ran_short({"seed": 42, "num_steps": 227, "planned": 227})
    assert not trial_ran_short({"seed": 42, "num_steps": 195})  # a record from before plans


def test_the_plan_a_script_trained_on_is_its_latest_whole_trainings() -> None:
    """What a verification gives the script: the plan its trainings ran whole, the latest one
    where the run cut or dropped a plan between them."""
    experiment = scripted(2, 1, [(42, 2.7, None), (43, 2.6, None), (44, 2.65, None)])
    assert trained_plan(experiment) is None  # a script that plans no steps, or a record from before
    trials = (experiment.details or {})["trials"]
    trials[0].update(num_steps=300, planned=300)
    trials[1].update(num_steps=280, planned=320)  # ran short
    assert trained_plan(experiment) == 300
    trials[2].update(num_steps=290, planned=290)  # the plan cut to what fitted, run whole
    assert trained_plan(experiment) == 290
    trials[0]["num_steps"] = trials[2]["num_steps"] = 200  # every one ran short: the latest
    assert trained_plan(experiment) == 290


def test_a_prior_from_earlier_runs_is_pooled_as_three_degrees_of_freedom_at_most() -> None:
    """One pair of baseline runs is one degree of freedom: the run's first spread is pooled
    with the earlier runs' (as PRIOR_FREEDOM degrees of freedom however many they measured),
    and the run's own measurements outweigh it as they grow."""
    earlier = [[[2.70, 2.80], [2.60, 2.72]], [[2.50, 2.58], [2.90, 3.00], [2.4]]]
    prior = Prior.measure(earlier)
    assert prior is not None
    spread, scripts, _ = pooled_spread([g for run in earlier for g in run])
    assert (prior.spread, prior.scripts, prior.runs) == (pytest.approx(spread), scripts, 2)
    assert prior.freedom == PRIOR_FREEDOM == 3  # 4 degrees measured, weighed as 3
    lucky = [[2.774, 2.964]]  # a wide first pair: alone, a margin of 0.27
    alone = noise_floor(lucky, floor=0.001, multiple=2.0)
    pooled = noise_floor(lucky, floor=0.001, multiple=2.0, prior=prior)
    own = statistics.stdev(lucky[0])
    assert pooled.measured == pytest.approx(own) and pooled.prior == prior
    assert pooled.spread == pytest.approx(math.sqrt((3 * prior.spread**2 + own**2) / 4))
    assert prior.spread < pooled.spread < own
    assert pooled.margin == pytest.approx(2.0 * pooled.spread)
    assert pooled.margin < alone.margin
    assert pooled.error(1, 2) == pytest.approx(pooled.spread * math.sqrt(1.5))
    assert "(0.134350 in this run, pooled with the " in pooled.describe()
    assert "that 2 earlier runs here measured, as 3 degrees of freedom)" in pooled.describe()
    state = pooled.as_state()
    assert state["noise_prior_bpb"] == prior.spread and state["noise_prior_runs"] == 2
    assert state["noise_measured_bpb"] == pytest.approx(own)
    # Thirty degrees of freedom of its own: the prior's three barely move it.
    many = [[2.7 + 0.01 * i, 2.9 + 0.01 * i] for i in range(30)]
    grown = noise_floor(many, floor=0.001, multiple=2.0, prior=prior)
    assert grown.spread == pytest.approx(grown.measured, rel=0.05)
    # No prior: as before.
    assert alone.spread == alone.measured and alone.prior is None
    assert noise_floor([], floor=0.01, multiple=2.0).spread is None
    # Before the run repeats a script, the prior alone sets the margin.
    early = noise_floor([[2.7]], floor=0.001, multiple=2.0, prior=prior)
    assert early.spread == prior.spread and early.measured is None
    assert "none repeated in this run yet" in early.describe()


def test_one_wild_earlier_script_does_not_move_the_prior() -> None:
    clean = [[[2.7, 2.72], [2.6, 2.63]], [[2.5, 2.52], [2.4, 2.42], [2.3, 2.31]]]
    calm = Prior.measure(clean)
    wild = Prior.measure([*clean, [[2.0, 3.5]]])  # a run whose baseline pair lay 1.5 apart
    assert calm is not None and wild is not None
    assert wild.spread == pytest.approx(calm.spread)
    assert Prior.measure([[[2.7]], [[2.6], [2.5]]]) is None  # nothing repeated: no prior


def _run_with_trials(
    journal: Journal, tag: str, trainer: dict[str, object], device: str, groups: list[list[float]]
) -> Run:
    run = journal.create_run(
        tag, tag, "0" * 40, "autonomous", "builtin",
        {"trainer": trainer, "fixed_parts": "parts"}, "",
    )  # fmt: skip
    for number, values in enumerate(groups):
        trials = [{"seed": 42 + i, "val_bpb": value} for i, value in enumerate(values)]
        journal.add_experiment(
            run.id, number, summary={"device_name": device}, details={"trials": trials}
        )
    return run


def test_a_run_borrows_the_spread_of_the_workspaces_runs_with_its_settings_and_device(
    tmp_path: Path,
) -> None:
    """Real SQLite: the runs measured on another device, with another budget or other fixed
    parts lend nothing; the run's own trainings are not its prior."""
    settings = {key: None for key in COMPARABILITY_SETTINGS} | {"budget_seconds": 20}
    other_budget = settings | {"budget_seconds": 60}
    with Journal.open(tmp_path / "journal.db") as journal:
        _run_with_trials(journal, "a", settings, "cpu-x", [[2.70, 2.80], [2.6]])
        _run_with_trials(journal, "b", other_budget, "cpu-x", [[2.0, 3.0]])
        _run_with_trials(journal, "c", settings, "gpu-y", [[2.0, 3.0]])
        parts = _run_with_trials(journal, "d", settings, "cpu-x", [[2.0, 3.0]])
        journal.update_run(parts.id, config={"trainer": settings, "fixed_parts": "older"})
        run = _run_with_trials(journal, "now", settings, "cpu-x", [[2.5, 2.9]])
        prior = earlier_noise(journal, run)
        assert prior is not None and prior.runs == 1 and prior.scripts == 1
        assert prior.spread == pytest.approx(statistics.stdev([2.70, 2.80]))
        # A run whose baseline has not trained yet has no device to match: no prior yet.
        fresh = journal.create_run(
            "fresh", "fresh", "0" * 40, "autonomous", "builtin",
            {"trainer": settings, "fixed_parts": "parts"}, "",
        )  # fmt: skip
        assert earlier_noise(journal, fresh) is None
        # The first run has the later one as its prior (its own trainings are not).
        first = journal.run_by_tag("a")
        assert first is not None
        assert earlier_noise(journal, first) == Prior(statistics.stdev([2.5, 2.9]), 1, 1, 1)


@pytest.mark.usefixtures("no_git_identity")
def test_status_says_what_the_earlier_runs_spread_and_this_runs_own_were(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prior = Prior(0.05, 3, 2, 4)
    noise = noise_floor([[2.774, 2.964]], floor=0.001, multiple=2.0, prior=prior)
    root = workspace_with_state(tmp_path / "ws", **noise.as_state())
    assert main(["status", "--workspace", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["noise_prior_bpb"] == 0.05 and report["noise_prior_runs"] == 2
    assert report["noise_measured_bpb"] == pytest.approx(noise.measured)
    assert report["noise_spread_bpb"] == pytest.approx(noise.spread)
    assert main(["status", "--workspace", str(root)]) == 0
    assert (
        f"keep margin {noise.margin:.6f} (the run-to-run spread is {noise.spread:.6f} over 2 "
        "repeated runs of 1 script; pooled with the spread of 0.050000 that 2 earlier runs of "
        f"these settings measured (this run alone: {noise.measured:.6f}))"
    ) in capsys.readouterr().out
