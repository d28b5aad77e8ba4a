"""`cockpit doctor --gpu-check`: its plan fits ten minutes, and the whole pipeline (the doctor,
a training, the bench, a short research loop) runs here on the CPU with small budgets, its
block of figures agreeing with the files the runs left."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cockpit import cli
from cockpit.doctor.verdicts import FAIL, PASS, Check
from cockpit.engine.monitor import default_gpu_source
from cockpit.gpu_check import (
    BLOCK_END,
    BLOCK_START,
    LIMIT_SECONDS,
    GpuCheckOptions,
    GpuCheckResult,
    confinement_label,
    make_plan,
    render_block,
    render_plan,
)

REPO = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gpu_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "COCKPIT_DATA_DIR": str(tmp_path / "data"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}",
        # A small evaluation: the figures are the pipeline's, not the model's.
        "COCKPIT_TRAINER__SEQ_LEN": "64",
        "COCKPIT_TRAINER__EVAL_TOKENS": "4096",
    }
    return subprocess.run(
        [sys.executable, "-m", "cockpit", "doctor", "--gpu-check", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def block_of(output: str) -> dict[str, str]:
    """The pasted block's lines by their first word (the doctor's lines under "doctor")."""
    lines = output.splitlines()
    block = lines[lines.index(BLOCK_START) + 1 : lines.index(BLOCK_END)]
    found: dict[str, str] = {}
    for line in block:
        name, _, rest = line.partition(" ")
        if name:
            found[name] = rest.strip()
        else:
            found["doctor"] += "\n" + line.strip()
    return found


def test_the_default_plan_fits_ten_minutes_with_the_five_minute_training() -> None:
    defaults = GpuCheckOptions()
    assert defaults.train_budget == 300  # the default training of a night, never cut short
    assert sum(step.seconds for step in make_plan(defaults)) <= LIMIT_SECONDS
    assert [step.name for step in make_plan(defaults)] == ["doctor", "training", "bench", "loop"]
    asked = GpuCheckOptions(train_budget=300, bench_budget=30, loop_budget=60, loop_experiments=3)
    lines = render_plan(asked, make_plan(asked))
    assert lines[0].startswith("GPU check on cuda: about 15 min")
    assert "over 10 min 0 s: lower --train-budget" in lines[-1]


@pytest.mark.e2e
def test_the_whole_gpu_check_runs_on_the_cpu_and_its_block_agrees_with_the_runs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = gpu_check(
        tmp_path,
        "--device", "cpu", "--train-budget", "3", "--bench-budget", "2",
        "--loop-budget", "3", "--loop-experiments", "2", "--out", str(out),
    )  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]
    assert output.startswith("GPU check on cpu: about ")
    block = block_of(output)

    doctor_lines = block["doctor"].splitlines()
    assert [line.split()[1] for line in doctor_lines][:3] == ["torch", "gpus", "probe"]
    assert all(line.split()[0] in ("pass", "warn") for line in doctor_lines)

    summary = json.loads((out / "train" / "summary.json").read_text())
    training = re.fullmatch(
        r"3 s on cpu: val_bpb (\S+), MFU (\S+)%, tokens/s (\S+), peak RSS (\S+) MB, "
        r"confinement (.+); (\S+) s in all",
        block["training"],
    )
    assert training is not None, block["training"]
    val_bpb, mfu, tokens, memory, confinement, total = training.groups()
    assert val_bpb == f"{summary['val_bpb']:.6f}"
    assert mfu == f"{summary['mfu_percent']:.2f}"
    assert tokens == f"{summary['tokens_per_second']:,.0f}"
    assert memory == f"{summary['peak_rss_mb']:,.0f}"
    assert confinement == confinement_label(summary["confinement"])
    assert total == f"{summary['total_seconds']:.1f}"

    bench = re.fullmatch(
        r"2 s each: default script (\S+) tokens/s \(MFU \S+%\), plain GPT (\S+) tokens/s "
        r"\(MFU \S+%\): ratio (\S+)x",
        block["bench"],
    )
    assert bench is not None, block["bench"]
    script_speed, plain_speed, ratio = (float(value.replace(",", "")) for value in bench.groups())
    assert ratio == pytest.approx(script_speed / plain_speed, rel=0.05, abs=0.01)

    (workspace,) = (out / "loop").iterdir()
    rows = (workspace / "results.tsv").read_text().splitlines()[1:]
    assert len(rows) == 3  # the baseline and two experiments
    outcomes = re.fullmatch(
        r"2 experiments of 3 s \(optuna\): (.+); (\d+) kept, (\d+) crashed; best (\S+) "
        r"\(gain (\S+)\); (\S+) s",
        block["loop"],
    )
    assert outcomes is not None, block["loop"]
    printed = outcomes.group(1).split(", ")
    for number, (shown, row) in enumerate(zip(printed, rows, strict=True)):
        _, value, _, decision, _ = row.split("\t")
        expected = "baseline" if number == 0 else decision
        assert shown.startswith(f"#{number} {expected}"), (shown, row)
        if float(value) > 0:
            assert shown.endswith(value), (shown, row)
    kept = [row for row in rows[1:] if row.split("\t")[3] == "keep"]
    assert outcomes.group(2) == str(len(kept))
    assert re.fullmatch(r"(\d+ min )?\d+ s \(planned (\d+ min )?\d+ s\); ok", block["total"])


@pytest.mark.e2e
def test_without_a_gpu_the_gpu_check_says_so_and_stops(tmp_path: Path) -> None:
    source = default_gpu_source()
    try:
        if source.read(()).available:
            pytest.skip("NVML sees a GPU here")
    finally:
        source.close()
    result = gpu_check(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no NVIDIA GPU here: the GPU check needs one" in result.stdout
    assert "--device cpu" in result.stdout and BLOCK_START not in result.stdout


def test_json_is_for_the_doctor_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--gpu-check", "--json"]) == 2
    assert "--json prints the doctor's checks alone" in capsys.readouterr().err


def test_a_failed_check_that_stops_trainings_says_what_did_not_run() -> None:
    result = GpuCheckResult(
        checks=[
            Check("torch", PASS, "torch 2.5.1+cu124"),
            Check("probe", FAIL, "cuda refused: ...", "fix it"),
        ],
        stopped="the probe check failed",
    )
    block = render_block(result, 42.0, 580.0)
    assert block[0] == BLOCK_START and block[-1] == BLOCK_END
    assert "training  did not run (the probe check failed)" in block
    assert block[-2] == "total     42 s (planned 9 min 40 s); not ok"
    assert not result.ok
