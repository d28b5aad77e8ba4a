"""What a training script's ``train(ctx)`` gets, and where its live metrics go.

The context hands out the device, the clock, batches of the training split (the only split
the training process can read) and ``report()`` for live metrics. It runs inside the confined
training process; nothing it records is trusted by the evaluation.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from trainer.outcomes import HarnessStop, Outcome
from trainer.pacing import Pacing

# A reported loss this many times the loss of uniform guessing means training has diverged.
DIVERGED_FACTOR = 3.0
DIVERGED_AFTER_REPORTS = 5


class MetricsSink:
    """JSON lines, flushed one by one so that another process can follow them live."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | None, fd: int | None) -> MetricsSink:
        if fd is not None:
            return cls(os.fdopen(fd, "w", buffering=1, closefd=False))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(open(path, "a", buffering=1, encoding="utf-8"))
        return cls(None)

    def write(self, record: dict[str, Any]) -> None:
        if self._stream is None:
            return
        line = json.dumps(record, allow_nan=True, default=float)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                self._stream = None  # the reader went away; the run goes on

    def close(self) -> None:
        if self._stream is not None:
            with self._lock:
                try:
                    self._stream.close()
                except OSError:
                    pass
                self._stream = None


# --- the context handed to train(ctx) ------------------------------------------------------


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


class Context:
    """What a training script gets: the device, the clock, training batches and live reporting.

    Only the training split is reachable from here; the evaluation data is loaded after
    train(ctx) returns."""

    def __init__(
        self,
        device: torch.device,
        seed: int,
        budget_seconds: float,
        seq_len: int,
        vocab_size: int,
        train_tokens: np.ndarray,
        sink: MetricsSink,
        pacing: Pacing | None = None,
    ) -> None:
        self.device = device
        self.seed = seed
        self.budget_seconds = budget_seconds
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.tokens_seen = 0
        self.steps_reported = 0
        self.last_step = 0
        self.planned_steps: int | None = None  # the step plan, once the script asked for one
        self.failure: HarnessStop | None = None
        self._sink = sink
        self._pacing = pacing
        self._generator = torch.Generator().manual_seed(seed)
        # Small corpora live on the device itself, so sampling a batch costs no host copy.
        data = torch.from_numpy(np.asarray(train_tokens))
        on_device = device.type == "cuda" and data.numel() <= 2**30
        self._data = data.to(device) if on_device else data
        self._started: float | None = None
        self._diverged_above = DIVERGED_FACTOR * math.log(vocab_size)

    # the clock
    def start_clock(self) -> None:
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far."""
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def time_left(self) -> float:
        """Seconds of the budget still left (negative once it is spent)."""
        return self.budget_seconds - self.elapsed()

    def progress(self) -> float:
        """The fraction of the budget spent, from 0 to 1: the natural clock for schedules."""
        return min(1.0, max(0.0, self.elapsed() / self.budget_seconds))

    def plan_steps(self, steps_done: int, seconds_per_step: float) -> int:
        """How many steps this run should take in all, at the pace measured so far.

        The first run of a script fixes the number; later runs of the same script (and
        budget, device, threads) that share its plan file reuse it, so that two runs differing
        only by their seed do identical work and a rerun with the same seed gives the same
        result. The engine gives each experiment run a plan file of its own.
        Train until the plan is done or time runs out, whichever comes first. Metric
        records from then on carry the plan (``planned_steps``): the cockpit compares curves
        at the same point of their schedules."""
        if self._pacing is None:
            planned = steps_done + int(max(0.0, self.time_left()) / seconds_per_step)
        else:
            planned = self._pacing.plan_steps(steps_done, seconds_per_step, self.time_left())
        self.planned_steps = planned
        return planned

    # data
    def batch(
        self, batch_size: int, seq_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of training windows: inputs and next-token targets, int64, on the device."""
        length = self.seq_len if seq_len is None else int(seq_len)
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {length}")
        highest_start = self._data.numel() - length - 1
        if highest_start < 1:
            raise ValueError(
                f"the training split has {self._data.numel()} tokens, too few for seq_len {length}"
            )
        starts = torch.randint(0, highest_start, (batch_size,), generator=self._generator)
        index = starts.unsqueeze(1) + torch.arange(length + 1)
        windows = self._data[index.to(self._data.device)].to(self.device, non_blocking=True).long()
        self.tokens_seen += batch_size * length
        return windows[:, :-1], windows[:, 1:]

    # reporting
    def report(self, step: int | None = None, loss: Any = None, **metrics: Any) -> None:
        """Record live metrics (a JSON line that the cockpit follows while the run goes on).

        A NaN or infinite loss ends the run at once, and so does a loss that has exploded far
        above what uniform guessing scores."""
        record: dict[str, Any] = {"event": "metric", "t": round(self.elapsed(), 4)}
        record["progress"] = round(self.progress(), 5)
        if step is not None:
            self.last_step = int(step)
            record["step"] = self.last_step
        if self.planned_steps is not None:
            record["planned_steps"] = self.planned_steps
        for name, value in metrics.items():
            try:
                record[name] = _as_float(value)
            except (TypeError, ValueError):
                record[name] = str(value)
        self.steps_reported += 1
        if loss is not None:
            loss_value = _as_float(loss)
            record["loss"] = loss_value
            self._sink.write(record)
            if not math.isfinite(loss_value):
                self._fail(
                    HarnessStop(
                        Outcome.NAN, f"training loss became {loss_value} at step {self.last_step}"
                    )
                )
            if loss_value > self._diverged_above and self.steps_reported > DIVERGED_AFTER_REPORTS:
                self._fail(
                    HarnessStop(
                        Outcome.DIVERGED,
                        f"training loss exploded to {loss_value:.3g} at step {self.last_step} "
                        f"(uniform guessing scores {math.log(self.vocab_size):.2f})",
                    )
                )
        else:
            self._sink.write(record)

    def log(self, message: str) -> None:
        """Print a line to the run's log, flushed."""
        print(message, flush=True)

    def _fail(self, stop: HarnessStop) -> None:
        # Remembered as well as raised: a script that swallows the exception still fails.
        self.failure = stop
        raise stop
