"""The workers panel: one row per worker while trainings run side by side.

Each row says the worker's device, its experiment and phase, the time its training has left,
its latest losses as a sparkline and its GPU's utilisation. Selecting a row shows that
experiment's diff and live loss; `s` stops the selected worker's training. The panel is shown
only when the engine has more than one worker.
"""

from __future__ import annotations

import math
import time

from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

from cockpit.store.samples import MonitorSample
from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette
from cockpit.ui.plot import sparkline
from cockpit.views.readmodel import WorkerRow

# (key, label, width)
WORKER_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("worker", "w", 2),
    ("device", "device", 9),
    ("experiment", "#", 4),
    ("phase", "phase", 10),
    ("left", "left", 5),
    ("loss", "loss", 12),
    ("gpu", "GPU", 4),
)


SPARK_WIDTH = 12


def _squeeze(values: list[float], width: int) -> list[float]:
    """At most ``width`` values: the means of equal runs of them, so the whole curve shows."""
    if len(values) <= width:
        return values
    step = len(values) / width
    return [
        sum(chunk) / len(chunk)
        for chunk in (values[round(i * step) : round((i + 1) * step)] for i in range(width))
        if chunk
    ]


def now_seconds() -> float:
    """Unix time now: the countdowns' clock (the snapshot tests fix it)."""
    return time.time()


class WorkersPanel(DataTable[Text]):
    """The engine's workers and what each one trains."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.worker_rows: tuple[WorkerRow, ...] = ()
        self.sample: MonitorSample | None = None
        for key, label, width in WORKER_COLUMNS:
            self.add_column(label, key=key, width=width)

    def show(
        self, rows: tuple[WorkerRow, ...], sample: MonitorSample | None, palette: Palette
    ) -> None:
        """Show these workers (the cursor stays on the same worker)."""
        if rows == self.worker_rows and sample == self.sample:
            return
        self.worker_rows, self.sample = rows, sample
        keep = self.cursor_row
        self.clear()
        now = now_seconds()
        for row in rows:
            self.add_row(*self.cells(row, now, palette), key=str(row.worker))
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1))

    def cells(self, row: WorkerRow, now: float, palette: Palette) -> list[Text]:
        muted = Style(color=palette.muted)
        idle = row.experiment is None
        left = row.time_left(now)
        losses = _squeeze([value for value in row.losses if math.isfinite(value)], SPARK_WIDTH)
        spark = (
            sparkline(losses, SPARK_WIDTH, low=min(losses), high=max(losses))
            if len(losses) > 1
            else ""
        )
        return [
            Text(str(row.worker)),
            Text(row.device),
            Text("" if idle else f"#{row.experiment}", style=Style(bold=True)),
            Text(row.phase, style=muted if idle else Style(color=palette.live)),
            Text("" if left is None else fmt.clock(left)),
            Text(spark, style=Style(color=palette.live)),
            Text(self._gpu(row)),
        ]

    def _gpu(self, row: WorkerRow) -> str:
        index = row.gpu_index
        if index is None or self.sample is None or not self.sample.gpu.available:
            return ""
        for reading in self.sample.gpu.gpus:
            if reading.index == index and reading.utilization_percent is not None:
                return f"{reading.utilization_percent:.0f}%"
        return ""

    def selected_experiment(self) -> int | None:
        """The experiment of the worker under the cursor (None: idle, or no workers)."""
        if not self.worker_rows or not 0 <= self.cursor_row < len(self.worker_rows):
            return None
        return self.worker_rows[self.cursor_row].experiment
