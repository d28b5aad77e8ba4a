"""`cockpit bench loop`: the scheduler's own overhead per experiment, and how busy the
workers are kept.

Runs the real engine on a scratch workspace with a trivial script (it reports one loss, waits
out its budget and returns a tiny model) and a proposer that answers after a set delay, over
one or more workers. It measures:

- the overhead of each training start: from the moment both a worker and an experiment were
  ready (the worker's previous training ended; the proposal was committed) to the start of
  the training: recording, deciding, results.tsv, the worktree, the job, the journal;
- the share of the wall time each worker had a training running, from the first training's
  start to the last one's (after that there is nothing left to hand out).

Prints p50 and p95 of the overhead and each worker's busy share.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.builtin import BuiltinProposer
from agent.proposal import Proposal, ProposalContext
from cockpit.config import load_settings
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.engine.workers import Worker
from cockpit.engine.workspace import Workspace

TRIVIAL_SCRIPT = '''"""Returns an untrained model at once: the bench measures the loop, not training."""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LEARNING_RATE = 0.1
BATCH_SIZE = 16
BETA2 = 0.99
WIDTH = 8


class Table(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.table(idx)
        if targets is None:
            return logits
        losses = F.cross_entropy(logits.view(-1, self.vocab_size), targets.reshape(-1), reduction=reduction)
        return losses.view(targets.shape) if reduction == "none" else losses


def train(ctx):
    ctx.report(step=1, loss=5.5)
    while ctx.time_left() > 0:  # a training of the budget's length, doing nothing
        time.sleep(min(0.05, max(ctx.time_left(), 0.0)))
    return Table(ctx.vocab_size)
'''


class SlowProposer:
    """The built-in proposer, answering after ``delay`` seconds (a model's thinking time)."""

    def __init__(self, delay: float) -> None:
        self.inner = BuiltinProposer(seed=0)
        self.name = self.inner.name
        self.delay = delay

    def propose(self, context: ProposalContext) -> Proposal:
        time.sleep(self.delay)
        return self.inner.propose(context)


def overheads(marks: list[tuple[Any, ...]]) -> list[float]:
    """The scheduler's seconds before each training after a worker's first: from the end of
    the worker's previous training to the start of this one, less the time the worker waited
    for the proposer (a proposal being drafted, none ready)."""
    ready: dict[int, float] = {}
    free: dict[int, float] = {}
    drafting: list[tuple[float, float]] = []
    opened: list[float] = []
    gaps: list[float] = []
    for mark in marks:
        name, at = mark[0], mark[1]
        if name == "propose_start":
            opened.append(at)
        elif name == "propose_end" and opened:
            drafting.append((opened.pop(0), at))
        elif name == "ready":
            ready[mark[2]] = at
        elif name == "train_end":
            free[mark[2]] = at
            ready[mark[3]] = at  # trained again (noise, confirmation): ready once decided
        elif name == "train_start" and mark[2] in free:
            freed, waited_until = free.pop(mark[2]), ready.get(mark[3], 0.0)
            gap = at - freed
            if waited_until > freed:
                gap -= _covered(drafting, freed, waited_until)
            gaps.append(gap)
    return gaps


def _covered(intervals: list[tuple[float, float]], begin: float, end: float) -> float:
    """How much of [begin, end] the intervals cover."""
    covered, reached = 0.0, begin
    for start, stop in sorted(intervals):
        start, stop = max(start, reached), min(stop, end)
        if stop > start:
            covered += stop - start
            reached = stop
    return covered


def busy_shares(marks: list[tuple[Any, ...]], workers: int) -> list[float]:
    """Each worker's share of the time from the first training's start to the last one's
    that it had a training running."""
    starts = [mark for mark in marks if mark[0] == "train_start"]
    if len(starts) < 2:
        return [1.0] * workers
    begin, end = starts[0][1], starts[-1][1]
    busy = [0.0] * workers
    running: dict[int, float] = {}
    for mark in marks:
        if mark[0] == "train_start":
            running[mark[2]] = mark[1]
        elif mark[0] == "train_end" and mark[2] in running:
            started = running.pop(mark[2])
            busy[mark[2]] += max(0.0, min(mark[1], end) - max(started, begin))
    for worker, started in running.items():
        busy[worker] += max(0.0, end - max(started, begin))
    return [min(1.0, value / (end - begin)) for value in busy]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_loop_bench(
    experiments: int,
    as_json: bool,
    *,
    workers: int = 1,
    budget: float = 1.0,
    propose_seconds: float = 0.0,
) -> int:
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-loop-") as scratch:
        root = Path(scratch)
        script = root / "trivial.py"
        script.write_text(TRIVIAL_SCRIPT)
        corpus = root / "corpus"
        corpus.mkdir()
        for number in range(30):
            (corpus / f"doc{number}.txt").write_text(f"document {number} says hello\n" * 40)
        workspace = Workspace.init(root / "ws", script_source=script)
        os.environ.setdefault("COCKPIT_CACHE_DIR", str(root / "cache"))
        settings = load_settings(
            workspace.path,
            overrides={
                "trainer.budget_seconds": budget,
                "trainer.device": "cpu",
                "trainer.corpus": f"text:{corpus}",
                "trainer.seq_len": 32,
                "trainer.eval_tokens": 1024,
                "engine.experiments": experiments,
                # one training per experiment: the bench times the loop, not noise calibration
                "engine.noise_runs": 1,
                "engine.confirm_multiple": 0.0,
                "engine.test_split_summary": False,
                "engine.verify_seeds": 0,
            },
        )
        proposer = SlowProposer(propose_seconds)
        engine = Engine(
            workspace,
            settings,
            proposer,
            gpu_source=ScriptedGpuSource.no_gpu(),
            # The scheduler is measured, not training speed: the workers share the cores.
            workers=[Worker(index, "cpu") for index in range(workers)],
        )
        print(
            f"running {experiments} experiments of a trivial script ({budget:g} s each) on "
            f"{workers} worker{'s' if workers != 1 else ''}, the proposer answering in "
            f"{propose_seconds:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        engine.run(EngineOptions(experiments=experiments))
    gaps = overheads(engine.marks)
    shares = busy_shares(engine.marks, workers)
    report: dict[str, Any] = {
        "workers": workers,
        "experiments": len(gaps),
        "overhead_p50_seconds": percentile(gaps, 0.5),
        "overhead_p95_seconds": percentile(gaps, 0.95),
        "overhead_max_seconds": max(gaps),
        "overhead_mean_seconds": statistics.mean(gaps),
        "busy_share": shares,
        "busy_share_min": min(shares),
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        busy = ", ".join(f"{share * 100:.1f}%" for share in shares)
        print(
            f"scheduling overhead per training (worker and experiment ready to training "
            f"started) over {len(gaps)} trainings: p50 {report['overhead_p50_seconds'] * 1000:.0f} ms, "
            f"p95 {report['overhead_p95_seconds'] * 1000:.0f} ms, max {report['overhead_max_seconds'] * 1000:.0f} ms; "
            f"busy share per worker: {busy}"
        )
    return 0
