"""One training run from the command line: `cockpit train`.

Builds the harness job from the settings, runs it as its own process tree, shows its log and a
live progress line while it trains, and ends with the harness's summary block and exit code.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from cockpit.config import Settings, TrainerSettings
from cockpit.engine.runner import RunResult, TrainingJob, TrainingProcess
from trainer import template_path
from trainer.summary import format_summary


def resolve_corpus(corpus: str, base: Path) -> str:
    """A `text:DIR` or `parquet:DIR` corpus with DIR made absolute against base."""
    kind, sep, location = corpus.partition(":")
    if not sep or kind not in ("text", "parquet"):
        return corpus
    return f"{kind}:{(base / Path(location).expanduser()).resolve()}"


def device_placement(device: str) -> tuple[str, dict[str, str]]:
    """The harness's device and the environment that pins it: `cuda:N` trains on GPU N alone
    (CUDA_VISIBLE_DEVICES), so the training and everything it spawns see only that card."""
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        return "cuda", {"CUDA_VISIBLE_DEVICES": index}
    return device, {}


def harness_args(
    trainer: TrainerSettings, cache_dir: str, base: Path, pacing: Path | None = None
) -> list[str]:
    """The harness flags for the settings (budget and grace travel in TrainingJob)."""
    args = [
        "--device", device_placement(trainer.device)[0],
        "--seed", str(trainer.seed),
        "--corpus", resolve_corpus(trainer.corpus, base),
        "--seq-len", str(trainer.seq_len),
        "--eval-tokens", str(trainer.eval_tokens),
        "--threads", str(trainer.threads),
        "--confinement", "require" if trainer.require_confinement else "auto",
    ]  # fmt: skip
    if cache_dir:
        args += ["--cache-dir", str(Path(cache_dir).expanduser())]
    if pacing is not None:
        args += ["--pacing", str(pacing)]
    return args


@dataclass(frozen=True)
class RunFiles:
    """Where one run's output lives."""

    directory: Path
    log: Path
    metrics: Path
    summary: Path

    @classmethod
    def under(cls, directory: Path) -> RunFiles:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            directory,
            directory / "log.txt",
            directory / "metrics.jsonl",
            directory / "summary.json",
        )


def script_for(settings: Settings, workspace: Path | None) -> Path:
    """The workspace's script, or the bundled template when there is no workspace."""
    if workspace is None:
        return template_path()
    return (workspace / settings.trainer.script).resolve()


def build_job(
    settings: Settings,
    script: Path,
    files: RunFiles,
    base: Path,
    env: Mapping[str, str] | None = None,
    pacing: Path | None = None,
) -> TrainingJob:
    """The harness job for one training; `pacing` is the file of step plans it shares with
    other trainings (None: the one in the cache folder, shared by every run on the machine)."""
    trainer = settings.trainer
    return TrainingJob(
        script=script,
        budget_seconds=trainer.budget_seconds,
        grace_seconds=trainer.grace_seconds,
        harness_args=harness_args(trainer, settings.paths.cache_dir, base, pacing),
        metrics_path=files.metrics,
        summary_path=files.summary,
        log_path=files.log,
        cwd=base,
        env={**device_placement(trainer.device)[1], **(env or {})},
    )


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
        shutil.rmtree(temporary, ignore_errors=True)
    return result
