"""One training run from the command line: `cockpit train`.

Builds the harness job from the settings, runs it as its own process tree, shows its log and a
live progress line while it trains, and ends with the harness's summary block and exit code.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from cockpit.config import Settings
from cockpit.engine.jobs import RunFiles, build_job, script_for
from cockpit.engine.runner import RunResult, TrainingProcess
from trainer.readback import remove_tree
from trainer.summary import format_summary


class LiveView:
    """Echoes the run's log and keeps one progress line up to date below it.

    On a terminal the progress line is redrawn in place; elsewhere (a log file, CI) a line
    is printed every few seconds instead, so the output stays readable."""

    def __init__(self, out: TextIO, budget_seconds: float) -> None:
        self.out = out
        self.budget = budget_seconds
        self.interactive = out.isatty()
        self.phase = "starting"
        self.last: dict[str, Any] = {}
        self._line_shown = False
        self._last_plain = 0.0

    def _clear(self) -> None:
        if self._line_shown:
            self.out.write("\r\033[K")
            self._line_shown = False

    def log_line(self, line: str) -> None:
        self._clear()
        self.out.write(line + "\n")

    def metric(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "phase":
            self.phase = str(record.get("phase", self.phase))
        elif event == "metric":
            self.last = record
        else:
            return
        self.draw()

    def draw(self) -> None:
        parts = [self.phase]
        if self.phase == "training" and self.last:
            left = max(0.0, self.budget - float(self.last.get("t", 0.0)))
            parts.append(f"step {self.last.get('step', '?')}")
            loss = self.last.get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                parts.append(f"loss {loss:.4f}")
            parts.append(f"{left:.0f} s left")
        text = "  ".join(parts)
        if self.interactive:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._line_shown = True
        elif time.monotonic() - self._last_plain >= 5.0 or self.phase != "training":
            self._last_plain = time.monotonic()
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        self._clear()
        self.out.flush()


def run_training(
    settings: Settings,
    workspace: Path | None,
    out: TextIO = sys.stdout,
    keep_dir: Path | None = None,
) -> RunResult:
    """Run one training with live output; return how it ended.

    Output files go under keep_dir (kept), under the workspace's .cockpit/train/ folder, or
    into a temporary folder that is removed afterwards."""
    base = workspace or Path.cwd()
    script = script_for(settings, workspace)
    temporary = None
    if keep_dir is not None:
        directory = keep_dir
    elif workspace is not None:
        directory = workspace / ".cockpit" / "train" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    else:
        directory = temporary = Path(tempfile.mkdtemp(prefix="cockpit-train-"))
    files = RunFiles.under(directory)
    job = build_job(settings, script, files, base)
    view = LiveView(out, settings.trainer.budget_seconds)
    log_offset = 0
    process = TrainingProcess(job)

    def echo_log() -> None:
        nonlocal log_offset
        try:
            with open(files.log, "rb") as stream:
                stream.seek(log_offset)
                chunk = stream.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # hold back an unfinished last line
        log_offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            view.log_line(line)

    process.start()
    try:
        result = process.wait(on_metric=view.metric, on_tick=echo_log)
    except KeyboardInterrupt:
        process.stop()
        result = process.wait()
    echo_log()
    view.close()
    if not result.summary or result.killed:
        figures = dict(result.summary) or {"status": result.outcome.status}
        figures.update(status=result.outcome.status, reason=result.reason)
        out.write(format_summary(figures) + "\n")
    out.flush()
    if temporary is not None:
        remove_tree(temporary)
    return result
