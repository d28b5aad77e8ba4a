"""Plots drawn with text: braille line charts, sparklines and bars, as Rich ``Text``.

A braille character holds a 2 x 4 grid of dots, so a chart of W x H cells has 2W x 4H
points of resolution, enough for a loss curve in a terminal panel. Each cell takes the
colour of the last series drawn into it, so the series drawn last stays on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from rich.style import Style
from rich.text import Text

BRAILLE_BASE = 0x2800
# The bit of each dot in a braille cell, by (column, row) inside the cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"

Point = tuple[float, float]


class BrailleCanvas:
    """A grid of braille cells to draw points and lines on, in dot coordinates: x from 0 to
    ``2 * width - 1`` left to right, y from 0 to ``4 * height - 1`` top to bottom."""

    def __init__(self, width: int, height: int) -> None:
        self.width = max(0, width)
        self.height = max(0, height)
        self._bits = [[0] * self.width for _ in range(self.height)]
        self._styles: list[list[Style | str | None]] = [
            [None] * self.width for _ in range(self.height)
        ]

    @property
    def dot_width(self) -> int:
        """Dots across."""
        return self.width * 2

    @property
    def dot_height(self) -> int:
        """Dots down."""
        return self.height * 4

    def dot(self, x: int, y: int, style: Style | str) -> None:
        """Set one dot (outside the canvas: nothing happens)."""
        if not (0 <= x < self.dot_width and 0 <= y < self.dot_height):
            return
        row, column = y // 4, x // 2
        self._bits[row][column] |= _DOT_BITS[x % 2][y % 4]
        self._styles[row][column] = style

    def line(self, x0: int, y0: int, x1: int, y1: int, style: Style | str) -> None:
        """A straight line between two dots (Bresenham's)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        step_x = 1 if x0 < x1 else -1
        step_y = 1 if y0 < y1 else -1
        error = dx + dy
        while True:
            self.dot(x0, y0, style)
            if x0 == x1 and y0 == y1:
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += step_x
            if doubled <= dx:
                error += dx
                y0 += step_y

    def rows(self) -> list[Text]:
        """The canvas as lines of text, one per row of cells."""
        lines = []
        for bits, styles in zip(self._bits, self._styles, strict=True):
            line = Text(no_wrap=True, end="")
            for value, style in zip(bits, styles, strict=True):
                if value:
                    line.append(chr(BRAILLE_BASE + value), style or "")
                else:
                    line.append(" ")
            lines.append(line)
        return lines


@dataclass(frozen=True)
class Series:
    """One thing to plot: points (x, y) drawn as a line, as dots, or as a step line."""

    points: Sequence[Point]
    style: Style | str
    kind: str = "line"  # "line", "dots" or "step"


@dataclass(frozen=True)
class Axis:
    """The visible range of one axis."""

    low: float
    high: float

    def position(self, value: float, dots: int, *, flip: bool = False) -> int:
        """The dot (0 to dots - 1) where ``value`` falls, clamped to the canvas."""
        span = self.high - self.low
        fraction = 0.5 if span <= 0 else (value - self.low) / span
        fraction = min(1.0, max(0.0, fraction))
        index = round(fraction * (dots - 1))
        return dots - 1 - index if flip else index


def value_range(values: Sequence[float], *, pad: float = 0.05) -> Axis | None:
    """The range that shows all ``values`` with a margin; None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    margin = (high - low) * pad if high != low else (abs(high) * 0.01 or 1.0)
    return Axis(low - margin, high + margin)


def chart(
    series: Sequence[Series],
    width: int,
    height: int,
    *,
    x_axis: Axis,
    y_axis: Axis,
    y_format: Callable[[float], str] = "{:.3f}".format,
    x_labels: tuple[str, str] = ("", ""),
    axis_style: Style | str = "dim",
) -> list[Text]:
    """A line chart ``width`` x ``height`` cells with the y range written on the left and
    the x range below, as lines of text (fewer cells than the labels need: no chart)."""
    top_label, bottom_label = y_format(y_axis.high), y_format(y_axis.low)
    gutter = max(len(top_label), len(bottom_label)) + 1
    plot_width, plot_height = width - gutter - 1, height - 1
    if plot_width < 4 or plot_height < 1:
        return []
    canvas = BrailleCanvas(plot_width, plot_height)
    for item in series:
        _draw(canvas, item, x_axis, y_axis)
    lines = []
    for index, row in enumerate(canvas.rows()):
        label = ""
        if index == 0:
            label = top_label
        elif index == plot_height - 1:
            label = bottom_label
        line = Text(no_wrap=True, end="")
        line.append(label.rjust(gutter - 1) + " ", axis_style)
        line.append("│" if 0 < index < plot_height - 1 or plot_height == 1 else "┤", axis_style)
        line.append_text(row)
        lines.append(line)
    left, right = x_labels
    axis_line = Text(no_wrap=True, end="")
    axis_line.append(" " * gutter + "└", axis_style)
    room = plot_width - len(left) - len(right)
    if room >= 1:
        axis_line.append(left + "─" * room + right, axis_style)
    else:
        axis_line.append("─" * plot_width, axis_style)
    lines.append(axis_line)
    return lines


def _draw(canvas: BrailleCanvas, series: Series, x_axis: Axis, y_axis: Axis) -> None:
    columns, rows = canvas.dot_width, canvas.dot_height
    # Points above the range are left out rather than flattened against the top edge, where
    # they would read as a plateau that never was.
    dots = [
        (x_axis.position(x, columns), y_axis.position(y, rows, flip=True))
        for x, y in series.points
        if math.isfinite(x) and math.isfinite(y) and y <= y_axis.high
    ]
    if not dots:
        return
    if series.kind == "dots":
        for x, y in dots:
            canvas.dot(x, y, series.style)
        return
    if len(dots) == 1:
        canvas.dot(*dots[0], series.style)
        return
    for (x0, y0), (x1, y1) in pairwise(dots):
        if series.kind == "step":
            canvas.line(x0, y0, x1, y0, series.style)
            canvas.line(x1, y0, x1, y1, series.style)
        else:
            canvas.line(x0, y0, x1, y1, series.style)


def sparkline(values: Sequence[float | None], width: int, *, low: float, high: float) -> str:
    """The last ``width`` values as block characters from ▁ (``low``) to █ (``high``); a
    missing value is a space."""
    shown = list(values)[-width:] if width > 0 else []
    span = high - low
    characters = []
    for value in shown:
        if value is None or not math.isfinite(value):
            characters.append(" ")
            continue
        fraction = 0.0 if span <= 0 else min(1.0, max(0.0, (value - low) / span))
        characters.append(SPARK_BLOCKS[round(fraction * (len(SPARK_BLOCKS) - 1))])
    return "".join(characters)


def bar(fraction: float | None, width: int) -> tuple[str, str]:
    """A horizontal gauge ``width`` cells wide filled to ``fraction`` (0 to 1), in eighths
    of a cell: the filled part and the empty rest, to be styled apart."""
    if width <= 0:
        return "", ""
    if fraction is None or not math.isfinite(fraction):
        return "", " " * width
    eighths = round(min(1.0, max(0.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (BAR_EIGHTHS[part] if part else "")
    return filled, " " * (width - len(filled))
