"""A training that ran short of its step plan: the machine slowed down after the plan was made,
and its time ran out before its schedule ended. With `short_reruns` it is trained again on the
same seed, on the plan cut to what fitted, and set aside; with no rerun left (by default) it is
decided as it is, and the reason says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.store.journal import Journal
from cockpit.store.trials import trial_ran_short
from tests.helpers import PLANNED_RESEARCH, cockpit, experiments, make_workspace
from trainer.pacing import SAFETY

PLAN_LINE = (
    "            planned = ctx.plan_steps(step, (ctx.budget_seconds - ctx.time_left()) / step)\n"
)
# Plans from a pace three times as fast as the one it trains at, as when the machine slows down
# once a plan is made; a sleep in every step makes the pace the same from training to training.
# (No CAPS constant: the built-in proposer changes only those.)
MISPACED_RESEARCH = PLANNED_RESEARCH.replace(
    PLAN_LINE, PLAN_LINE.replace(") / step)", ") / step / 3)")
).replace("        step += 1\n", "        time.sleep(0.02)\n        step += 1\n", 1)
MISPACED_RESEARCH = "import time\n" + MISPACED_RESEARCH


@pytest.mark.e2e
@pytest.mark.usefixtures("no_git_identity")
def test_a_short_training_is_trained_again_on_its_seed_until_no_rerun_is_left(
    tmp_path: Path,
) -> None:
    """With one rerun: the baseline's first training runs short and is trained again with seed
    42 on the cut plan; its second seed trains that plan too. The experiment after it runs
    short and is trained again too. Resumed with no rerun, the next one is decided on its
    short training, and its reason says so."""
    assert "/ step / 3)" in MISPACED_RESEARCH and "time.sleep" in MISPACED_RESEARCH
    script = tmp_path / "mispaced_research.py"
    script.write_text(MISPACED_RESEARCH)
    root = tmp_path / "ws"
    make_workspace(root, script, budget=2.0)
    config = (root / "config.toml").read_text()
    # Two seeds of the baseline; an experiment trains once, but for a short training's rerun.
    config = config.replace("noise_runs = 1", "noise_runs = 2") + "max_runs = 1\n"
    (root / "config.toml").write_text(config + "short_reruns = 1\n")
    resume = ("run", "--headless", "--workspace", str(root), "--tag", "short")
    result = cockpit(*resume, "--experiments", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    baseline, first = experiments(root)

    # The baseline's first training ran short of its plan, and was trained again with its
    # seed, on the plan its harness cut to what fitted; the second seed reused that plan.
    (short,) = baseline.details["short"]
    assert short["seed"] == 42 and trial_ran_short(short), short
    trials = baseline.details["trials"]
    assert [trial["seed"] for trial in trials] == [42, 43]
    cut = int(short["num_steps"] * SAFETY)
    # (On a loaded machine the rerun may run short too, with no rerun left: its plan is then
    # cut again before the second seed reuses it.)
    assert trials[0]["planned"] == cut and trials[1]["planned"] <= cut, trials
    assert baseline.attempt == 2
    folders = sorted(p.name for p in (root / ".cockpit" / "runs").glob("*/0000*"))
    assert folders == ["0000", "0000-2", "0000-2-seed43"], folders
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        said = [event.message for event in journal.events(baseline.run_id, kinds=["noise"])]
    assert any(
        message.startswith(
            f"#0 ran short of its plan ({short['num_steps']} of {short['planned']} steps"
        )
        and message.endswith("trained again with seed 42 on the plan cut to what fitted")
        for message in said
    ), said
    values = [trial["val_bpb"] for trial in trials]
    assert baseline.val_bpb == pytest.approx(sum(values) / 2)  # the short one is not in it

    # The experiment's fresh plan was as wrong: it spent its own rerun.
    (again,) = first.details["short"]
    assert again["seed"] == 42 and trial_ran_short(again), again

    # With no rerun (the default), the next experiment is decided on the short training it had,
    # and the reason says so.
    environ = {"COCKPIT_ENGINE__SHORT_RERUNS": "0"}
    result = cockpit(*resume, "--experiments", "2", env=environ)
    assert result.returncode == 0, result.stdout + result.stderr
    *_, second = experiments(root)
    assert second.number == 2 and "short" not in second.details
    assert trial_ran_short(second.details["trials"][0]), second.details
    assert "(one of its trainings ran short of its plan)" in (second.decision_reason or "")

    # The spread is of the trainings decisions were made on, and of none that was set aside.
    groups = [[t["val_bpb"] for t in e.details["trials"]] for e in experiments(root)]
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["noise_runs"] == sum(len(group) for group in groups if len(group) > 1), groups
