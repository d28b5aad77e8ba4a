"""Every second of the script's counts against its budget: work done while the script is
imported (module-level training, a thread started there) is spent from the budget, not from
the allowance the training process has for starting Python and torch. Real harness runs.

A script trains at import time, and then for as long as the context says is left: if the
import were free, it would get the whole budget on top of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged

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
