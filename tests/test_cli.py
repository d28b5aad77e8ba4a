"""The `cockpit` command end to end: real processes, real trainings with small budgets."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.bench.trainer_bench import render_table
from cockpit.bench.ui_bench import MODEL
from cockpit.store.journal import Journal
from cockpit.views.readmodel import journal_file
from tests.conftest import REPO, SCRIPTS, write_text_corpus
from tests.helpers import workspace_with_state
from trainer.outcomes import Outcome
from trainer.summary import parse_summary

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e


def cockpit(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cockpit_train_on_the_default_script_learns_within_a_minute() -> None:
    """The acceptance run: the template on the stdlib corpus, 20 s of training on the CPU."""
    started = time.monotonic()
    result = cockpit("train", "--budget", "20", "--device", "cpu")
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    summary = parse_summary(result.stdout)
    assert summary["status"] == "ok"
    assert math.isfinite(summary["val_bpb"])
    # 8.0 is the untrained byte level and about 4.7 what byte frequencies alone score: the
    # model must have learned from context.
    assert summary["val_bpb"] < 4.0, summary
    assert summary["corpus"] == "stdlib" and summary["num_steps"] > 50
    assert wall < 60, f"took {wall:.1f} s"


def test_two_runs_with_the_same_seed_agree(text_corpus: Path) -> None:
    """The first run of a script on a machine fixes its step plan; a run that ran out of time
    cuts the plan to what fitted, and one that left much of its budget unused drops it. Once
    the plan fits, runs with the same seed do identical work and agree. (A machine whose load
    changes may settle the plan more than once: up to six runs are allowed, and the two that
    agree need not be consecutive.) A small corpus: the default one's evaluation alone takes
    8 s of each run here, and plans do not depend on it. 8 s of training: on a slow core the
    template reaches its planning step about 4 s in, and a run that ends before it has no plan
    to hand on."""
    corpus = f"text:{text_corpus}"
    args = ("train", "--budget", "8", "--device", "cpu", "--seed", "7", "--corpus", corpus)
    values: list[dict] = []
    pair = None
    for _ in range(6):
        result = cockpit(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        values.append(parse_summary(result.stdout))
        whole = [
            v for v in values if v.get("plan_reused") and v["num_steps"] == v.get("planned_steps")
        ]
        pair = next(
            (
                (a, b)
                for a, b in itertools.combinations(whole, 2)
                if a["planned_steps"] == b["planned_steps"]
            ),
            None,
        )
        if pair is not None:
            break
    for earlier, later in itertools.pairwise(values):
        if "planned_steps" not in earlier:  # it ended before its planning step: none to reuse
            assert later.get("plan_reused") is not True, values
            continue
        settled = earlier.get("plan_settled")
        assert later["plan_reused"] is (settled != "stale"), values  # a stale plan is replanned
        if settled == "shrunk":  # it reached the end of its budget: the next plan is smaller
            assert earlier["training_seconds"] >= earlier["budget_seconds"], values
            assert later["planned_steps"] < earlier["planned_steps"], values
    assert pair is not None, [(v.get("planned_steps"), v["num_steps"]) for v in values]
    first, second = pair
    assert abs(first["val_bpb"] - second["val_bpb"]) <= 0.002, values


def make_workspace(root: Path, script: str | Path, config: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    source = script.read_text() if isinstance(script, Path) else script
    (root / "train.py").write_text(source)
    (root / "config.toml").write_text(config)
    write_text_corpus(root / "corpus", documents=30, lines=30)
    return root


def test_a_workspace_config_drives_the_run_and_keeps_its_files(tmp_path: Path) -> None:
    workspace = make_workspace(
        tmp_path / "ws",
        SCRIPTS / "tiny_research.py",
        '[trainer]\nbudget_seconds = 2.5\ncorpus = "text:corpus"\nseq_len = 64\neval_tokens = 4096\n',
    )
    result = cockpit("train", "--workspace", str(workspace), "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = parse_summary(result.stdout)
    # The relative corpus folder is the workspace's, and the config's budget was used.
    assert summary["corpus"] == f"text:{(workspace / 'corpus').resolve()}"
    assert summary["budget_seconds"] == 2.5 and summary["seq_len"] == 64
    runs = list((workspace / ".cockpit" / "train").iterdir())
    assert len(runs) == 1
    assert json.loads((runs[0] / "summary.json").read_text())["status"] == "ok"
    assert (runs[0] / "metrics.jsonl").read_text().count('"event": "metric"') > 3


def test_flags_and_environment_override_the_workspace(tmp_path: Path) -> None:
    workspace = make_workspace(
        tmp_path / "ws",
        SCRIPTS / "tiny_research.py",
        '[trainer]\nbudget_seconds = 60\nseed = 1\ncorpus = "text:corpus"\nseq_len = 64\neval_tokens = 4096\n',
    )
    result = cockpit(
        "train", "--workspace", str(workspace), "--device", "cpu", "--budget", "2.5",
        env={"COCKPIT_TRAINER__SEED": "5"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = parse_summary(result.stdout)
    assert summary["budget_seconds"] == 2.5  # flag beats the workspace
    assert summary["seed"] == 5  # environment beats the workspace


def test_a_bad_setting_is_reported_with_file_and_line(tmp_path: Path) -> None:
    workspace = make_workspace(
        tmp_path / "ws", "def train(ctx):\n    pass\n", "[trainer]\n\nbudget_secs = 3\n"
    )
    result = cockpit("train", "--workspace", str(workspace))
    assert result.returncode == 2
    assert f"{workspace / 'config.toml'}:3" in result.stderr
    assert "budget_secs" in result.stderr and "Traceback" not in result.stderr


def test_a_crashing_script_exits_with_the_crash_code_and_its_reason(tmp_path: Path) -> None:
    workspace = make_workspace(
        tmp_path / "ws",
        "def train(ctx):\n    raise RuntimeError('bad idea')\n",
        '[trainer]\ncorpus = "text:corpus"\n',
    )
    result = cockpit("train", "--workspace", str(workspace), "--device", "cpu")
    assert result.returncode == Outcome.CRASH
    assert "RuntimeError: bad idea" in result.stdout
    assert parse_summary(result.stdout)["status"] == "crash"


def test_a_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    result = cockpit("train", "--workspace", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_bare_cockpit_without_a_terminal_runs_the_research_loop_on_the_defaults(
    tmp_path: Path,
) -> None:
    """`cockpit` alone on a fresh install: the default workspace is created, and without a
    terminal to show the cockpit in, the research loop runs headless in the foreground. No
    Ollama here: the optimiser stands in, and the output says how to start Ollama."""
    corpus = write_text_corpus(tmp_path / "corpus", documents=30, lines=30)
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    result = cockpit(
        env={
            "COCKPIT_DATA_DIR": str(tmp_path / "data"),
            "HOME": str(tmp_path / "home"),
            "OLLAMA_HOST": f"http://127.0.0.1:{closed}",
            "COCKPIT_ENGINE__EXPERIMENTS": "1",
            "COCKPIT_TRAINER__BUDGET_SECONDS": "2",
            "COCKPIT_TRAINER__DEVICE": "cpu",
            "COCKPIT_TRAINER__CORPUS": f"text:{corpus}",
            "COCKPIT_TRAINER__SEQ_LEN": "64",
            "COCKPIT_TRAINER__EVAL_TOKENS": "4096",
            "COCKPIT_ENGINE__VERIFY_SEEDS": "1",  # the defaults' 3, cut to one training
        }
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "created the default workspace" in output and "no terminal here" in output
    # A finished run trains its best again on a fresh seed and says what that showed.
    assert "verifying #" in output and "verified best" in output, output
    assert "`ollama serve`" in output and "the Optuna proposer stands in" in output, output
    (results,) = (tmp_path / "data").rglob("results.tsv")
    rows = results.read_text().splitlines()
    assert len(rows) == 3, rows  # header, baseline, one experiment
    assert rows[1].endswith("\tkeep\tbaseline")


def status_of(root: Path) -> tuple[str, dict[str, Any]]:
    """What `cockpit status` prints of the workspace, as text and as JSON."""
    text = cockpit("status", "--workspace", str(root))
    as_json = cockpit("status", "--workspace", str(root), "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    return text.stdout, json.loads(as_json.stdout)


HYBRID_SPLIT = {"llm": 0.35, "optuna": 0.65}


@pytest.mark.usefixtures("no_git_identity")
def test_status_shows_the_hybrids_split_with_its_model(tmp_path: Path) -> None:
    root = workspace_with_state(tmp_path / "ws", proposer="hybrid", search_split=HYBRID_SPLIT)
    text, report = status_of(root)
    assert report["agent"]["proposer"] == "hybrid" and report["agent"]["split"] == HYBRID_SPLIT
    assert f"  agent: hybrid proposer: LLM ({MODEL}) 35% · Optuna 65%\n" in text, text

    # Before the hybrid has said its split: who it shares the experiments between.
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(search_split=None)
    text, report = status_of(root)
    assert report["agent"]["split"] is None
    assert f"  agent: hybrid proposer: LLM ({MODEL}) and Optuna\n" in text, text


@pytest.mark.usefixtures("no_git_identity")
def test_status_names_optuna_or_the_built_in_proposer_alone_or_standing_in(
    tmp_path: Path,
) -> None:
    """Optuna stands in for the hybrid's model while Ollama is away: no split then, the
    hybrid is not proposing. Without a model, Optuna and the built-in proposer work alone."""
    root = workspace_with_state(
        tmp_path / "ws",
        proposer="optuna",
        search_split=HYBRID_SPLIT,
        agent_state="server_down",
        agent_message="Ollama is not running at http://127.0.0.1:11434",
    )
    text, report = status_of(root)
    assert report["agent"]["proposer"] == "optuna" and report["agent"]["split"] is None
    assert (
        f"  agent: Optuna proposer standing in for {MODEL}: Ollama is not running at "
        "http://127.0.0.1:11434\n" in text
    ), text
    assert "35%" not in text
    for proposer, named in (("optuna", "Optuna proposer"), ("builtin", "built-in proposer")):
        with Journal.open(journal_file(root)) as journal:
            journal.set_state(proposer=proposer, model=None, agent_state=None)
        text, report = status_of(root)
        assert report["agent"]["proposer"] == proposer and report["agent"]["model"] is None
        assert f"  agent: {named}\n" in text, text


def test_bench_trainer_prints_its_figures_as_json_and_their_table(tmp_path: Path) -> None:
    """Two rounds as JSON: each side trains twice, the script plans its steps in the benchmark
    itself (never from a plan remembered elsewhere) and the speed is the median of the rounds.
    The table without --json is the same report, drawn."""
    corpus = write_text_corpus(tmp_path / "corpus", documents=30, lines=30)
    # 8 s: on one core the template plans its steps at step 30, 3 to 5 s in on this machine;
    # with 5 s, a slow minute left the plan no room past that step, and the next round (which
    # replaces a plan no larger than the steps it has taken) planned afresh.
    args = ["bench", "trainer", "--budget", "8", "--device", "cpu", "--corpus", f"text:{corpus}"]
    result = cockpit(*args, "--json", "--repeat", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["repeat"] == 2
    assert len(report["script_runs"]) == len(report["reference_runs"]) == 2
    for row in report["script_runs"] + report["reference_runs"]:
        assert row["status"] == "ok", row
        assert row["tokens_per_second"] > 0 and row["num_steps"] > 0
        assert 0 < row["mfu_percent"] < 100
        assert row["val_bpb"] < 8.0 and row["peak_memory_mb"] > 0
    first, second = report["script_runs"]
    assert first["plan_reused"] is False  # planned in the benchmark itself
    assert first["plan_settled"] in (None, "shrunk"), first  # cut to what fitted, or kept
    assert second["plan_reused"] is True, report["script_runs"]
    assert report["reference_runs"][0]["planned_steps"] is None  # the plain GPT plans nothing
    assert report["script"] in report["script_runs"]
    assert report["reference"] in report["reference_runs"]
    assert report["peak_tflops"] > 0 and report["device"] == "cpu"
    rounds = [
        mine["tokens_per_second"] / plain["tokens_per_second"]
        for mine, plain in zip(report["script_runs"], report["reference_runs"], strict=True)
    ]
    assert report["speed_rounds"] == pytest.approx(rounds)
    assert report["speed_vs_plain_gpt"] == pytest.approx(sum(rounds) / 2)

    lines = render_table(report)
    assert lines[0].startswith("trainer benchmark:") and "budget 8 s" in lines[0]
    assert "TFLOP/s (float32 matmul, measured now)" in lines[1]
    row = next(line for line in lines if "default script" in line)
    for label in ("tokens/s", "MFU", "steps", "val_bpb", "peak memory"):
        assert label in row, label
    assert any("plain GPT" in line for line in lines)
    assert "(median of 2 rounds:" in lines[-1]
    # Without --json, the table; --no-reference trains the script alone (1 s is enough).
    table = cockpit(*args[:3], "1", *args[4:], "--no-reference")
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.startswith("trainer benchmark:") and "budget 1 s" in table.stdout
    assert "default script" in table.stdout and "plain GPT" not in table.stdout
