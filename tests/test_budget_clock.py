"""Every second of the script's counts against its budget: work done while the script is
imported (module-level training, a thread started there) is spent from the budget, not from
the allowance the training process has for starting Python and torch. Real harness runs.

A script trains at import time, and then for as long as the context says is left: if the
import were free, it would get the whole budget on top of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

BUDGET = 3.0
IMPORT_WORK = 1.5  # seconds the script trains while it is imported

AT_IMPORT = f"""
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

_began = time.perf_counter()


class Model(nn.Module):
    def __init__(self, vocab_size=256, width=32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.head(self.embed(idx))
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# "Warm-up": the model trains before train(ctx) is called, on bytes of its own.
MODEL = Model()
_optimizer = torch.optim.AdamW(MODEL.parameters(), lr=3e-3)
_warm_steps = 0
while time.perf_counter() - _began < {IMPORT_WORK}:
    batch = torch.randint(0, 256, (8, 65))
    loss = MODEL(batch[:, :-1], batch[:, 1:])
    loss.backward()
    _optimizer.step()
    _optimizer.zero_grad()
    _warm_steps += 1

# And a thread started here that goes on working while train(ctx) runs.
_background = {{"seconds": 0.0}}


def _keep_busy():
    started = time.perf_counter()
    while time.perf_counter() - started < 0.5:
        sum(range(1000))
    _background["seconds"] = time.perf_counter() - started


threading.Thread(target=_keep_busy, daemon=True).start()


def train(ctx):
    print(f"CLOCK left_at_train={{ctx.time_left():.3f}}", flush=True)
    print(f"CLOCK warm_steps={{_warm_steps}}", flush=True)
    steps = 0
    while ctx.time_left() > 0:
        inputs, targets = ctx.batch(8)
        loss = MODEL(inputs, targets)
        loss.backward()
        _optimizer.step()
        _optimizer.zero_grad()
        steps += 1
        ctx.report(step=steps, loss=loss.item())
    print(f"CLOCK steps={{steps}}", flush=True)
    return MODEL
"""


@pytest.fixture(scope="module")
def corpus(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


def test_work_done_while_the_script_is_imported_is_spent_from_the_budget(
    tmp_path: Path, corpus: str
) -> None:
    run = run_harness(
        AT_IMPORT, tmp_path, "--threads", "1", budget=BUDGET, grace=2.0, corpus=corpus
    )
    assert run.exit_code == 0, run.output
    said = tagged(run.output, "CLOCK")
    assert int(said["warm_steps"]) > 0  # it did train while it was imported
    # When train(ctx) starts, the import's seconds are already gone from the budget.
    left = float(said["left_at_train"])
    assert left <= BUDGET - IMPORT_WORK + 0.1, said
    # The seconds the harness counts as training cover the import: import and train(ctx)
    # together fit the budget, as an honest script's training does.
    seconds = float(run.summary["training_seconds"])
    assert IMPORT_WORK <= seconds <= BUDGET + 0.5, run.summary


# --- the harness keeps the clock the script cannot stop ----------------------------------------

# A stand-in for the training process: says it starts the script after ``said`` seconds (as
# the trusted part of the training process does), then runs for ``runs`` seconds whatever
# its own clock says (a script that disarmed the process's alarm and watchdog).
TRAINING = """
import json, os, sys, time
said, runs = float(sys.argv[1]), float(sys.argv[2])
pipe = os.fdopen(int(sys.argv[3]), "w")
if said >= 0:
    time.sleep(said)
    pipe.write(json.dumps({"event": "phase", "phase": "training"}) + "\\n")
    pipe.flush()
time.sleep(runs)
"""


def _wait(monkeypatch: pytest.MonkeyPatch, said: float, runs: float) -> tuple[object, str, float]:
    import os
    import subprocess
    import sys
    import time

    from trainer import limits, supervise
    from trainer.bounds import Bounds, Watch
    from trainer.context import MetricsSink
    from trainer.outcomes import Outcome
    from trainer.relay import Relay

    # Small limits, so that the test takes seconds: 2 s to start, 1 s of budget, 0.5 s grace,
    # 0.5 s for the watchdog's margin and 0.5 s to export.
    monkeypatch.setattr(limits, "STARTUP_ALLOWANCE_SECONDS", 2.0)
    monkeypatch.setattr(limits, "HARD_STOP_MARGIN_SECONDS", 0.5)
    monkeypatch.setattr(limits, "EXPORT_TIMEOUT_MIN_SECONDS", 0.5)  # past a quarter of 1 s
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(said), str(runs), str(write_end)],
        pass_fds=(write_end,),
    )
    os.close(write_end)
    relay = Relay(read_end, MetricsSink.open(None, None))
    started = time.perf_counter()
    try:
        watch = Watch(Bounds(disk_mb=0), child.pid, os.getcwd())  # no folder to add up
        code, cut = supervise._wait_for_training(child, relay, watch, 1.0, 0.5)
    finally:
        child.kill()
        child.wait()
    seconds = time.perf_counter() - started
    if cut is not None:
        assert cut.outcome is Outcome.TIMEOUT
    return code, cut.reason if cut is not None else "", seconds


def test_the_script_is_ended_on_the_harness_clock_from_its_own_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It starts its script after 0.5 s and then runs on: ended 2.5 s later (budget, grace,
    # margin, export), not after the 1.5 s of start-up allowance it did not use as well.
    code, why, seconds = _wait(monkeypatch, said=0.5, runs=30.0)
    assert code is None and "the script ran past 2.5 s" in why, why
    assert 2.9 <= seconds < 3.8, seconds


def test_a_training_that_never_starts_its_script_is_ended_after_the_allowance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, why, seconds = _wait(monkeypatch, said=-1, runs=30.0)
    assert code is None and "did not start the script within 2 s" in why, why
    assert 2.0 <= seconds < 2.8, seconds


def test_a_training_that_ends_in_time_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    code, why, _ = _wait(monkeypatch, said=0.2, runs=0.5)
    assert code == 0 and why == ""
