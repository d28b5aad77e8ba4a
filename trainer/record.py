"""One harness run's record (`Run`): the figures its summary is built from, whatever way the
run ends, and its one end: the summary block printed, its JSON and the last metrics record
written."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.atomic import write_json_atomic
from trainer.context import MetricsSink
from trainer.outcomes import Outcome
from trainer.summary import format_summary

if TYPE_CHECKING:
    from trainer.options import HarnessOptions
    from trainer.probe import DeviceCheck


def reported_number(value: Any) -> float | None:
    """A number the training reported, as a float; None for anything else (a bool included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Run:
    """One harness run: state that the summary is built from, whatever way the run ends."""

    def __init__(self, options: HarnessOptions) -> None:
        self.options = options
        self.started = time.perf_counter()
        self.summary: dict[str, Any] = {"status": "setup"}
        self.training: dict[str, Any] = {}  # what the training process reported
        self.sink = MetricsSink.open(options.metrics_path, options.metrics_fd)
        self.child: subprocess.Popen[bytes] | None = None
        self.device_check: DeviceCheck | None = None
        # The training's folder where the harness made a temporary one (no summary or work
        # folder was named): removed when the run ends, export and all.
        self.scratch: Path | None = None
        self._finished = threading.Lock()

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = dict(self.summary)
        reported = self.training
        seconds = reported_number(reported.get("training_seconds"))
        tokens = reported_number(reported.get("tokens_seen"))
        figures["training_seconds"] = seconds
        figures["total_seconds"] = time.perf_counter() - self.started
        if tokens is not None:
            figures["total_tokens_M"] = tokens / 1e6
            if seconds:
                figures["tokens_per_second"] = tokens / seconds
        steps = reported.get("num_steps")
        if isinstance(steps, int):
            figures["num_steps"] = steps
        for key in ("peak_vram_mb", "peak_rss_mb"):
            if reported_number(reported.get(key)) is not None:
                figures[key] = reported[key]
        return figures

    def finish(self, outcome: Outcome, reason: str | None) -> int:
        """Print the summary block, write its JSON and the final metrics line; once per run."""
        if not self._finished.acquire(blocking=False):
            return int(outcome)
        figures = self.figures()
        figures["status"] = outcome.status
        figures["exit_code"] = int(outcome)
        if reason:
            figures["reason"] = reason.replace("\n", " ")
        if outcome is not Outcome.OK:
            figures.pop("val_bpb", None)
        self.sink.write({"event": "end", **figures})
        self.sink.close()
        if self.options.summary_json is not None:
            write_json_atomic(self.options.summary_json, figures)
        sys.stdout.write(format_summary(figures) + "\n")
        sys.stdout.flush()
        return int(outcome)

    def hard_stop(self, reason: str) -> None:
        """Called from the watchdog thread: the evaluation ignored the soft stop."""
        if self._finished.locked():
            return
        os._exit(self.finish(Outcome.TIMEOUT, reason))

    def memory_stop(self, reason: str) -> None:
        """Called from the memory bound's thread: the evaluation grew past its limit. The main
        thread may be inside the allocation that grows it, so the process ends from here."""
        if self._finished.locked():
            return
        os._exit(self.finish(Outcome.BAD_MODEL, f"the exported model was refused: {reason}"))
