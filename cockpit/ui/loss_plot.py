"""The live loss panel: the training's loss against the best run's."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.ui.palette import status_word
from cockpit.ui.panel import ValuePanel, fit_lines, palette_of, text_line
from cockpit.ui.plot import Axis, Series, chart, value_range
from cockpit.views.readmodel import LossCurves


class LossPlot(ValuePanel):
    """The loss of the live (or selected) experiment against the best run's, over training
    progress. View: (LossCurves, pinned ExperimentDetail or None)."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        curves, pinned = self.view or (LossCurves(), None)
        if pinned is not None:
            live_number, live = pinned.number, pinned.curve
            live_status = pinned.status
        else:
            live_number, live, live_status = curves.live_number, curves.live, curves.live_status
        best_number, best = curves.best_number, curves.best
        if best_number is not None and best_number == live_number:
            best_number, best = None, ()
        legend = text_line()
        if live_number is not None:
            legend.append("━ ", Style(color=palette.live, bold=True))
            legend.append(f"#{live_number}", Style(bold=True))
            if live_status:
                legend.append(f" {status_word(live_status)}", Style(color=palette.muted))
        if best_number is not None:
            legend.append("   ━ ", Style(color=palette.best, bold=True))
            legend.append(f"#{best_number} best", Style(color=palette.muted))
        if live:
            legend.append(f"   loss {live[-1][1]:.4f}", Style(color=palette.muted))
        y_axis = value_range(loss_window(live, best))
        if y_axis is None:
            message = (
                "no loss reported yet"
                if live_number is not None
                else "the loss curve appears when a training starts"
            )
            return Text("\n", end="").join(
                [legend, Text(message, style=Style(color=palette.muted))]
            )
        series = []
        if best:
            series.append(Series(best, Style(color=palette.best)))
        if live:
            series.append(Series(live, Style(color=palette.live)))
        lines = chart(
            series,
            width,
            height - 1,
            x_axis=Axis(0.0, 1.0),
            y_axis=y_axis,
            y_format="{:.3f}".format,
            x_labels=("0%", "progress 100%"),
            axis_style=Style(color=palette.muted),
        )
        return fit_lines([legend, *lines], width, height)


def loss_window(*curves: Sequence[tuple[float, float]]) -> list[float]:
    """The losses that set a loss chart's range. The first quarter of a training falls steeply
    and would squash the part where runs differ into one line, so it is left out when later
    points exist (earlier points are drawn clipped to the top)."""
    points = [point for curve in curves for point in curve]
    for start in (0.25, 0.05):
        window = [loss for progress, loss in points if progress >= start]
        if window:
            return window
    return [loss for _progress, loss in points]
