"""The progress panel: val_bpb of every experiment, and the best so far as a step line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.ui.panel import ValuePanel, fit_lines, palette_of, text_line
from cockpit.ui.plot import Axis, Series, chart, value_range
from cockpit.views.readmodel import LedgerRow


def running_best(rows: Iterable[LedgerRow]) -> list[tuple[float, float]]:
    """(number, best val_bpb so far) after each kept experiment, for a step line."""
    points = []
    best: float | None = None
    for row in sorted(rows, key=lambda r: r.number):
        if row.decision == "keep" and row.val_bpb is not None:
            best = row.val_bpb if best is None else min(best, row.val_bpb)
        if best is not None:
            points.append((float(row.number), best))
    return points


class ProgressPlot(ValuePanel):
    """val_bpb of every experiment: kept ones highlighted, the running best as a step line.
    View: a tuple of ledger rows."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        rows: Sequence[LedgerRow] = self.view or ()
        scored = [row for row in rows if row.val_bpb is not None and row.is_final]
        kept = [row for row in scored if row.decision == "keep"]
        others = [row for row in scored if row.decision != "keep"]
        crashed = sum(1 for row in rows if row.status in ("crash", "timeout"))
        legend = text_line(
            ("• ", Style(color=palette.keep, bold=True)),
            (f"{len(kept)} kept  ", Style(color=palette.muted)),
            ("• ", Style(color=palette.discard)),
            (f"{len(others)} not  ", Style(color=palette.muted)),
            ("━ ", Style(color=palette.best, bold=True)),
            ("best", Style(color=palette.muted)),
        )
        if crashed:
            legend.append(f"  ✗ {crashed} crashed", Style(color=palette.crash))
        if not scored:
            return Text("\n", end="").join(
                [legend, Text("no scored experiment yet", style=Style(color=palette.muted))]
            )
        values = sorted(row.val_bpb for row in scored if row.val_bpb is not None)
        # A few diverged runs would squash everything else into one line: the top of the
        # range stops at the 90th percentile or the highest kept value, whichever is higher.
        ceiling = max(
            values[min(len(values) - 1, int(0.9 * len(values)))],
            max(row.val_bpb for row in kept if row.val_bpb is not None) if kept else values[0],
        )
        y_axis = value_range([values[0], ceiling]) or Axis(0.0, 1.0)
        numbers = [row.number for row in rows]
        x_axis = Axis(float(min(numbers)), float(max(max(numbers), min(numbers) + 1)))
        series = [
            Series([(row.number, row.val_bpb or 0.0) for row in others], palette.discard, "dots"),
            Series(running_best(rows), Style(color=palette.best), "step"),
            Series(
                [(row.number, row.val_bpb or 0.0) for row in kept],
                Style(color=palette.keep, bold=True),
                "dots",
            ),
        ]
        lines = chart(
            series,
            width,
            height - 1,
            x_axis=x_axis,
            y_axis=y_axis,
            y_format="{:.3f}".format,
            x_labels=(f"#{min(numbers)}", f"experiment #{max(numbers)}"),
            axis_style=Style(color=palette.muted),
        )
        return fit_lines([legend, *lines], width, height)
