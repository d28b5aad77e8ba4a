"""The harness, run for real in its own process: every way a run ends has its own exit code and
a one-line reason, nothing hangs, metrics stream live, and scripts see training data only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRIPTS, run_harness
from trainer.outcomes import Outcome
from trainer.summary import parse_summary

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

TINY = SCRIPTS / "tiny_research.py"


def corpus_arg(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


def test_a_good_script_is_evaluated_and_summarised(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(TINY, tmp_path, budget=2.5, corpus=corpus_arg(text_corpus))
    assert run.exit_code == 0, run.output
    summary = run.summary
    assert summary["status"] == "ok"
    assert 0 < summary["val_bpb"] < 8.0  # a bigram table learns something in 2.5 s
    assert summary["num_steps"] > 5
    assert summary["corpus_fingerprint"] and summary["corpus"].startswith("text:")
    # The printed block carries autoresearch's keys, and agrees with the JSON.
    printed = parse_summary(run.output)
    for key in ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M"):  # fmt: skip
        assert key in printed, key
    assert printed["val_bpb"] == pytest.approx(summary["val_bpb"], abs=1e-6)
    # The exported weights' fingerprint, as text (16 hex digits may all be digits).
    assert printed["shapes"] == summary["shapes"] and len(summary["shapes"]) == 16
    assert run.output.index("---") < run.output.index("val_bpb:")
    events = [m["event"] for m in run.metrics]
    assert events[0] == "start" and events[-1] == "end"
    assert "training" in [m.get("phase") for m in run.metrics if m["event"] == "phase"]


def test_a_script_that_raises_is_a_crash_with_its_traceback(
    tmp_path: Path, text_corpus: Path
) -> None:
    run = run_harness(
        """
        def train(ctx):
            ctx.batch(2)
            raise ValueError("learning rate schedule is broken")
        """,
        tmp_path,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.CRASH == 3
    assert run.summary["status"] == "crash"
    assert run.summary["reason"] == "ValueError: learning rate schedule is broken"
    assert "Traceback" in run.output and "train" in run.output
    assert "val_bpb" not in run.summary


def test_a_nan_loss_ends_the_run_as_nan(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(
        """
        def train(ctx):
            for step in range(1000):
                ctx.report(step=step, loss=float("nan") if step == 3 else 5.0)
        """,
        tmp_path,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.NAN
    assert "nan" in run.summary["reason"] and "step 3" in run.summary["reason"]


def test_an_exploding_loss_is_diverged_even_if_the_script_swallows_the_stop(
    tmp_path: Path, text_corpus: Path
) -> None:
    run = run_harness(
        """
        def train(ctx):
            for step in range(1, 100):
                try:
                    ctx.report(step=step, loss=5.5 if step < 10 else 400.0)
                except BaseException:
                    pass  # a script cannot talk its way out of a divergence
            return None
        """,
        tmp_path,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.DIVERGED
    assert "exploded" in run.summary["reason"]


def test_a_script_that_sleeps_past_the_budget_is_stopped(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(
        """
        import time
        def train(ctx):
            time.sleep(600)
        """,
        tmp_path,
        budget=1.0,
        grace=1.0,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.TIMEOUT
    assert "ran past its budget" in run.summary["reason"]
    assert run.seconds < 30  # start-up + 2 s, nowhere near the 600 s the script asked for


def test_a_script_that_ignores_the_soft_stop_is_ended_by_the_watchdog(
    tmp_path: Path, text_corpus: Path
) -> None:
    run = run_harness(
        """
        import time
        def train(ctx):
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass  # swallows the harness's soft stop
        """,
        tmp_path,
        budget=0.5,
        grace=0.5,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.TIMEOUT
    assert "did not yield" in run.summary["reason"]
    assert run.seconds < 40


def test_a_model_of_the_wrong_vocabulary_is_rejected(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(
        """
        import torch.nn as nn, torch.nn.functional as F
        class Small(nn.Module):
            def __init__(self):
                super().__init__()
                self.table = nn.Embedding(256, 128)
            def forward(self, idx, targets=None, reduction="mean"):
                logits = self.table(idx)
                if targets is None:
                    return logits
                return F.cross_entropy(logits.view(-1, 128), targets.view(-1).clamp(max=127), reduction=reduction)
        def train(ctx):
            return Small()
        """,
        tmp_path,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.BAD_MODEL
    assert "predicts over 128 tokens" in run.summary["reason"]
    assert "256" in run.summary["reason"]


def test_returning_nothing_is_a_bad_model(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(
        "def train(ctx):\n    return None\n", tmp_path, corpus=corpus_arg(text_corpus)
    )
    assert run.exit_code == Outcome.BAD_MODEL
    assert "returned None" in run.summary["reason"]


def test_an_out_of_memory_error_is_classified_oom(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(
        """
        import torch
        def train(ctx):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        """,
        tmp_path,
        corpus=corpus_arg(text_corpus),
    )
    assert run.exit_code == Outcome.OOM
    assert "out of memory" in run.summary["reason"]


@pytest.mark.parametrize(
    ("source", "corpus", "reason"),
    [
        ("x = 1\n", None, "defines no train(ctx)"),
        ("def train(ctx):\n    pass\n", "text:/nonexistent/corpus", "is not a directory"),
        ("def train(ctx):\n    pass\n", "wikipedia", "unknown corpus"),
    ],
)
def test_setup_problems_have_their_own_reason(
    tmp_path: Path, text_corpus: Path, source: str, corpus: str | None, reason: str
) -> None:
    run = run_harness(source, tmp_path, corpus=corpus or corpus_arg(text_corpus))
    expected = Outcome.CRASH if "train(ctx)" in reason else Outcome.SETUP
    assert run.exit_code == expected
    assert reason in run.summary["reason"]


def test_a_missing_script_is_a_setup_error(tmp_path: Path, text_corpus: Path) -> None:
    run = run_harness(tmp_path / "missing.py", tmp_path, corpus=corpus_arg(text_corpus))
    assert run.exit_code == Outcome.SETUP
    assert "not found" in run.summary["reason"]


def test_every_failure_has_a_distinct_exit_code() -> None:
    codes = [outcome.value for outcome in Outcome]
    assert len(set(codes)) == len(codes)
    assert not {1, 2} & set(codes)  # left to Python and argparse


def test_sigterm_interrupts_the_run(tmp_path: Path, text_corpus: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ndef train(ctx):\n    while True:\n        time.sleep(0.05)\n")
    metrics = tmp_path / "metrics.jsonl"
    summary = tmp_path / "summary.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "--script", str(script), "--device", "cpu", "--budget", "60",
         "--corpus", corpus_arg(text_corpus), "--metrics", str(metrics), "--summary-json", str(summary)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while '"training"' not in (metrics.read_text() if metrics.exists() else ""):
        assert time.monotonic() < deadline, "the run never started training"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == Outcome.INTERRUPTED
    assert json.loads(summary.read_text())["reason"] == "stopped by SIGTERM"


def test_metrics_can_be_followed_while_the_run_goes_on(tmp_path: Path, text_corpus: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "--script", str(TINY), "--device", "cpu", "--budget", "4",
         "--corpus", corpus_arg(text_corpus), "--metrics", str(metrics), "--seq-len", "64"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen_while_running: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.exists():
            lines = [
                json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")
            ]
            seen_while_running = [m for m in lines if m["event"] == "metric"]
            if len(seen_while_running) >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before its metrics could be followed"
    assert len(seen_while_running) >= 3
    assert all("loss" in m and "step" in m and 0 <= m["progress"] <= 1 for m in seen_while_running)
    process.wait(timeout=60)


def test_metrics_can_go_to_a_file_descriptor(tmp_path: Path, text_corpus: Path) -> None:
    """With no summary or folder named, the training's folder is a temporary one, and it goes
    with the run (its export could be gigabytes on a GPU)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "--script", str(TINY), "--device", "cpu", "--budget", "2.5",
         "--corpus", corpus_arg(text_corpus), "--metrics-fd", str(write_end), "--seq-len", "64"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_end,),
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    os.close(write_end)
    with open(read_end, encoding="utf-8") as stream:
        records = [json.loads(line) for line in stream]
    assert process.wait(timeout=60) == 0
    assert records[-1]["event"] == "end" and records[-1]["status"] == "ok"
    assert records[-1]["program"] is None and records[-1]["val_bpb"] > 0  # not kept
    assert any(r["event"] == "metric" for r in records)
    assert list(scratch.iterdir()) == []


def test_batches_come_only_from_training_files(tmp_path: Path) -> None:
    from tests.conftest import write_text_corpus
    from trainer.data import is_validation

    corpus = write_text_corpus(tmp_path / "corpus", documents=40, lines=20)
    val_names = [f"doc_{n:03d}.txt" for n in range(40) if is_validation(f"doc_{n:03d}.txt")]
    assert val_names, "the corpus needs at least one held-out file for this test"
    seen = tmp_path / "training" / "seen.bin"  # the training's own folder: all it may write
    run = run_harness(
        f"""
        import torch
        from pathlib import Path
        def train(ctx):
            chunks = []
            while ctx.time_left() > 0:
                x, y = ctx.batch(64, 32)
                rows = torch.cat([x, y[:, -1:], torch.full_like(x[:, :1], 255)], dim=1)
                chunks.append(rows.to(torch.uint8))
            Path({str(seen)!r}).write_bytes(torch.cat(chunks).numpy().tobytes())
            return None
        """,
        tmp_path,
        budget=1.0,
        corpus=f"text:{corpus}",
    )
    assert run.summary["reason"].startswith("train(ctx) returned None")
    data = seen.read_bytes()
    assert len(data) > 100_000
    train_names = {f"file {n:03d}".encode() for n in range(40)} - {
        f"file {name[4:7]}".encode() for name in val_names
    }
    for name in val_names:
        assert f"file {name[4:7]}".encode() not in data, f"validation file {name} reached training"
    assert sum(marker in data for marker in train_names) >= len(train_names) // 2


def test_training_runs_are_offline() -> None:
    """The audit hook refuses connections that leave the machine; no packet is ever sent."""
    code = (
        "import socket, sys\n"
        "from trainer.training import install_offline_guard\n"
        "install_offline_guard()\n"
        "sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "sys.audit('socket.connect', sock, ('127.0.0.1', 9))\n"  # loopback stays allowed
        "try:\n"
        "    sys.audit('socket.connect', sock, ('93.184.216.34', 443))\n"
        "except ConnectionRefusedError as exc:\n"
        "    print('blocked:', exc)\n"
        "try:\n"
        "    sys.audit('socket.getaddrinfo', 'huggingface.co', 443, 0, 0, 0)\n"
        "except ConnectionRefusedError as exc:\n"
        "    print('blocked:', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.count("blocked: network access to") == 2
    assert "'huggingface.co'" in result.stdout
