"""The relay of a training's metrics: its pipe followed in a thread of the harness, each record
passed on to the run's sink, minus what only the harness may say; and the training's start and
its script's start, timed here where the script cannot move them."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from trainer import readback
from trainer.bounds import hint
from trainer.context import MetricsSink

# Events the training may put in the metrics stream; the harness writes the end itself.
RELAYED_EVENTS = frozenset({"start", "phase", "metric"})
MAX_RECORD_CHARACTERS = 1 << 16


class Relay:
    """Follows the training's metrics pipe and passes its records on, minus what only the
    harness may say: no end record, and the start record only once (the training process
    writes it before the script is loaded)."""

    def __init__(self, read_fd: int, sink: MetricsSink, limit_bytes: int = 0) -> None:
        self._stream = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._sink = sink
        # The metrics bound (0: none): past it nothing more is passed on, the stream is drained
        # so that the training does not block on it, and `overflow` says so.
        self._limit = limit_bytes
        self.received = 0
        self.overflow: str | None = None
        self.start: dict[str, Any] | None = None
        self._began = time.perf_counter()
        # From the training process's start to its training phase: its start-up cost.
        self.startup_seconds: float | None = None
        # When the training process said it starts the script (before any of the script ran,
        # so the script cannot move it), and when the process ended: the script's own time.
        self.script_began: float | None = None
        self.script_ended: float = 0.0
        self._thread = threading.Thread(target=self._follow, name="metrics-relay", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        # Lines are read in bounded pieces: an endless line cannot fill this process's memory
        # (a piece of one fails to parse and is dropped).
        for line in iter(lambda: self._stream.readline(MAX_RECORD_CHARACTERS), ""):
            self.received += len(line)
            if self._limit and self.received > self._limit:
                if self.overflow is None:
                    self.overflow = (
                        f"the training wrote more than {readback.size_text(self._limit)} of "
                        f"metrics, past its bound; {hint('metrics')}"
                    )
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") not in RELAYED_EVENTS:
                continue
            if record["event"] == "start":
                if self.start is not None:
                    continue
                self.start = record
            if record.get("phase") == "training" and self.startup_seconds is None:
                self.script_began = time.perf_counter()
                self.startup_seconds = self.script_began - self._began
            self._sink.write(record)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
