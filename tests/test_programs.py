"""The exported models of a run, through a real run: the baseline's and the kept ones stay,
the others and every training folder are pruned once decided, the run ends with the test
split's figures, and `cockpit report` shows them."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from cockpit.engine.programs import TRAINING_DIR, prune
from tests.helpers import cockpit, experiments, git_env, make_workspace
from tests.test_noise import scripted

pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes


def test_a_run_keeps_the_models_it_needs_and_reports_the_test_split(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    config = root / "config.toml"
    config.write_text(config.read_text().replace("test_split_summary = false", ""))
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "score"], check=True, env=git_env())
    run = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    records = experiments(root)
    (runs,) = (root / ".cockpit" / "runs").iterdir()
    for record in records:
        folder = runs / f"{record.number:04d}"
        assert not (folder / "training").exists()  # pruned once decided
        kept = record.number == 0 or record.decision == "keep"
        assert (folder / "model.program").is_file() == kept, (record.number, record.decision)
    lines = run.stdout.splitlines()
    assert lines[-1].startswith("test split: "), lines[-3:]
    assert any(r.decision == "discard" for r in records) or "validation gain" in lines[-1]

    report = cockpit("report", "--workspace", str(root))
    assert report.returncode == 0, report.stdout + report.stderr
    text = (root / "report" / "report.md").read_text()
    section = text.split("## Test split", 1)[1]
    baseline_row = next(line for line in section.splitlines() if line.startswith("| 0 |"))
    val, test = (float(cell) for cell in baseline_row.split("|")[2:4])
    assert 0.5 < val < 8 and 0.5 < test < 8  # a real score on each split, and they differ
    assert val != test
    assert "Kept models:" in section and "MB on disk" in section
    assert (runs / "0000" / "test.json").is_file()  # cached for the next report


def test_pruning_a_training_folder_nested_thousands_deep_neither_recurses_nor_leaves_it(
    tmp_path: Path,
) -> None:
    """A training can nest its folders 1,500 deep; the engine prunes after every decision,
    and a walk that recursed once per folder (Path.rglob, shutil.rmtree) raised
    RecursionError there, every time the engine came back."""
    training = tmp_path / "runs" / "0001" / TRAINING_DIR
    training.mkdir(parents=True)
    fd = os.open(training, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("deeper", dir_fd=fd)
        inner = os.open("deeper", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    decided = dataclasses.replace(scripted(1, None, []), decision="discard")
    assert prune(tmp_path / "runs", [decided]) > 0
    assert not training.exists() and (tmp_path / "runs" / "0001").is_dir()
