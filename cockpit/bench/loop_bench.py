"""`cockpit bench loop`: the engine's own overhead per experiment.

Runs the real engine on a scratch workspace with a trivial script (it returns a tiny model at
once) and measures, for each experiment, the time from the end of one training process to
the start of the next, minus the time the proposer took: git commits, journal writes,
decisions, results.tsv, the monitor. Prints p50 and p95.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from agent.builtin import BuiltinProposer
from cockpit.config import load_settings
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.engine.workspace import Workspace

TRIVIAL_SCRIPT = '''"""Returns an untrained model at once: the bench measures the loop, not training."""
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
    return Table(ctx.vocab_size)
'''


def overheads(marks: list[tuple[str, float]]) -> list[float]:
    """Seconds between each training's end and the next one's start, the proposer excluded."""
    gaps: list[float] = []
    ended: float | None = None
    proposing = 0.0
    started_proposal: float | None = None
    for name, at in marks:
        if name == "train_end":
            ended, proposing = at, 0.0
        elif name == "propose_start":
            started_proposal = at
        elif name == "propose_end" and started_proposal is not None:
            proposing += at - started_proposal
        elif name == "train_start" and ended is not None:
            gaps.append(at - ended - proposing)
            ended = None
    return gaps


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_loop_bench(experiments: int, as_json: bool) -> int:
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
                "trainer.budget_seconds": 1.0,
                "trainer.device": "cpu",
                "trainer.corpus": f"text:{corpus}",
                "trainer.seq_len": 32,
                "trainer.eval_tokens": 1024,
                "engine.experiments": experiments,
                # one training per experiment: the bench times the loop, not noise calibration
                "engine.noise_runs": 1,
                "engine.confirm_multiple": 0.0,
            },
        )
        engine = Engine(
            workspace, settings, BuiltinProposer(seed=0), gpu_source=ScriptedGpuSource.no_gpu()
        )
        print(
            f"running {experiments} experiments of a trivial script ...",
            file=sys.stderr,
            flush=True,
        )
        engine.run(EngineOptions(experiments=experiments))
    gaps = overheads(engine.marks)
    report: dict[str, Any] = {
        "experiments": len(gaps),
        "overhead_p50_seconds": percentile(gaps, 0.5),
        "overhead_p95_seconds": percentile(gaps, 0.95),
        "overhead_max_seconds": max(gaps),
        "overhead_mean_seconds": statistics.mean(gaps),
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"engine overhead per experiment (end of one training to the start of the next, "
            f"proposer excluded) over {len(gaps)} experiments: p50 {report['overhead_p50_seconds'] * 1000:.0f} ms, "
            f"p95 {report['overhead_p95_seconds'] * 1000:.0f} ms, max {report['overhead_max_seconds'] * 1000:.0f} ms"
        )
    return 0
