"""A keep is a mean over seeds, end to end: a real engine, real trainings, real git."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from cockpit.config import load_settings
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.store.journal import Journal
from tests.helpers import Scripted, cockpit, experiments, make_workspace, slow_script

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_git_identity")]


def test_a_clear_gain_is_trained_on_two_seeds_and_the_best_is_their_mean(tmp_path: Path) -> None:
    """The default rules: the baseline's two noise runs, then a change far beyond the noise
    is trained on a second seed before it is kept, and the best's value is the mean of both;
    a loss costs one training."""
    root = tmp_path / "ws"
    workspace = make_workspace(root, slow_script(tmp_path))
    settings = load_settings(
        root, overrides={"engine.noise_runs": 2, "engine.keep_runs": 2, "engine.max_runs": 4}
    )
    proposer = Scripted(
        [
            ("raise the learning rate", "LEARNING_RATE = 0.001", "LEARNING_RATE = 0.05"),
            ("drop the learning rate", "LEARNING_RATE = 0.05", "LEARNING_RATE = 0.00001"),
        ]
    )
    engine = Engine(workspace, settings, proposer, gpu_source=ScriptedGpuSource.no_gpu())
    assert engine.run(EngineOptions(tag="seeds", experiments=2)) == 0

    baseline, raised, dropped = experiments(root)
    assert raised.decision == "keep", raised.decision_reason
    seeds = [trial["seed"] for trial in raised.details["trials"]]
    values = [trial["val_bpb"] for trial in raised.details["trials"]]
    assert seeds == [42, 43]
    assert raised.val_bpb == pytest.approx(statistics.fmean(values))
    assert "the mean of 2 runs" in raised.decision_reason
    evidence = raised.details["evidence"]
    # Trained on the seeds of the baseline's two runs: set against their mean, two runs each.
    assert evidence["compared_with"] == pytest.approx(baseline.val_bpb)
    assert evidence["reference_runs"] == 2
    assert evidence["difference_error"] is not None and evidence["needed"] >= evidence["margin"]
    assert dropped.decision == "discard" and len(dropped.details["trials"]) == 1

    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.run_by_tag("seeds")
        noise = [event.message for event in journal.events(kinds=["noise"])]
    assert run is not None and run.best_val_bpb == pytest.approx(raised.val_bpb)
    assert any("#1 a gain of" in m and "a keep is trained on 2 seeds" in m for m in noise), noise
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["best_val_bpb"] == pytest.approx(statistics.fmean(values))
    assert (status["noise_scripts"], status["noise_runs"]) == (2, 4)
