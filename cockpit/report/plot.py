"""``progress.png``: autoresearch's progress chart of a run (experiment number against val_bpb:
discarded experiments as small grey dots, kept ones as larger green dots labelled with their
change, the running best as a step line, crashes as red crosses along the top edge).

matplotlib is an optional dependency (``research-cockpit[report]``), imported only when a
chart is drawn, and drawn on a figure of its own with the Agg canvas: no pyplot, no window,
no global backend switched under the feet of whatever else runs in the process.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit.report.summary import ReportError, RunSummary, summarize_experiments
from cockpit.store.atomic import write_atomic
from cockpit.store.records import Experiment

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase

PROGRESS_PNG = "progress.png"
MATPLOTLIB_MISSING = 'matplotlib is needed for progress.png: pip install "research-cockpit[report]"'

FIGURE_INCHES = (16.0, 8.0)
FIGURE_DPI = 100  # 1600 x 800 pixels
LABEL_CHARACTERS = 44
# A label squeezed by an edge keeps at least this much of its change.
LABEL_MIN_CHARACTERS = 12
LABEL_EDGE_PIXELS = 8.0
CRASH_ROW = 0.965  # of the axes height
LABEL_CEILING = 0.94  # of the axes height: below the crash marks
# Kept changes are labelled along a rising slant, as in autoresearch's chart: the running best
# falls to the right, so the space above and to the right of a kept point is mostly free.
LABEL_ANGLE_DEGREES = 32.0
LABEL_OFFSET_POINTS = (5.0, 5.0)
LABEL_GAP_PIXELS = 2.0

KEPT_COLOR = "#2e9e4f"
KEPT_EDGE = "#14532d"
BEST_LINE_COLOR = "#1b7a3d"
LABEL_COLOR = "#14532d"
DISCARD_COLOR = "#a8a8a8"
OFF_SCALE_COLOR = "#8a8a8a"
CRASH_COLOR = "#d62728"
BASELINE_COLOR = "#555555"


def plot_progress(summary_or_experiments: RunSummary | Sequence[Experiment], path: Path) -> None:
    """Draw the run's progress chart to ``path`` (a PNG of 1600 x 800 pixels).

    x is the experiment number, y val_bpb (lower is better). Discarded experiments are small
    grey dots (those far above the baseline sit on the top edge as triangles), kept ones larger
    green dots labelled with their change, the running best a step line, and crashes red
    crosses along the top. The title gives the tag and the gain. Raises ReportError when
    matplotlib is not installed."""
    summary = (
        summary_or_experiments
        if isinstance(summary_or_experiments, RunSummary)
        else summarize_experiments(summary_or_experiments)
    )
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    canvas = canvas_class(figure)
    figure.subplots_adjust(left=0.06, right=0.985, top=0.89, bottom=0.08)
    axes = figure.add_subplot()
    _draw_progress(axes, summary)
    _label_kept_changes(axes, canvas.get_renderer(), summary)
    _save_png_atomically(figure, Path(path))


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's Figure and Agg canvas classes; a ReportError that says how to get them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ReportError(MATPLOTLIB_MISSING) from error
    return Figure, FigureCanvasAgg


def _value_range(summary: RunSummary) -> tuple[float, float] | None:
    """The y range that shows the descent from the baseline to the best, with room above for
    the labels; None when there is no value to show."""
    values = sorted(p.val_bpb for p in summary.points if p.val_bpb is not None)
    if not values:
        return None
    high = summary.baseline_val_bpb if summary.baseline_val_bpb is not None else values[-1]
    low = summary.best_val_bpb if summary.best_val_bpb is not None else values[0]
    upper_quartile = values[(3 * len(values)) // 4]
    span = high - low
    if span <= 0:
        # Nothing improved: show the bulk of the attempts above the baseline instead.
        span = max(upper_quartile - low, abs(high) * 0.005, 1e-6)
    # Most attempts stay in sight even when the gain is small next to their spread, while a
    # diverged one (far above) goes to the top edge rather than flatten the whole chart.
    top = max(high + 0.32 * span, low + 1.1 * (upper_quartile - low))
    bottom = min(low, values[0]) - 0.09 * (top - low)
    return bottom, top


def _draw_progress(axes: Axes, summary: RunSummary) -> None:
    from matplotlib.ticker import MaxNLocator

    points = summary.points
    last_number = max((p.number for p in points), default=0)
    axes.set_xlim(-1.0, last_number + max(2.0, 0.13 * (last_number + 1)))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    # The room on the right is for labels: no experiment numbers there.
    axes.set_xticks([tick for tick in axes.get_xticks() if 0 <= tick <= last_number])
    axes.set_xlabel("experiment #", fontsize=12)
    axes.set_ylabel("val_bpb (lower is better)", fontsize=12)
    axes.tick_params(labelsize=10)
    axes.grid(True, color="#e6e6e6", linewidth=0.8, zorder=0)
    axes.set_axisbelow(True)
    axes.set_title(_chart_title(summary), fontsize=14, loc="left", pad=12)

    value_range = _value_range(summary)
    if value_range is None:
        axes.text(
            0.5,
            0.5,
            (
                f"the baseline crashed: {summary.baseline_failure}"
                if summary.baseline_failure
                else "no results yet: the baseline has not finished"
            ),
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color=BASELINE_COLOR,
        )
        axes.set_yticks([])
    else:
        bottom, top = value_range
        axes.set_ylim(bottom, top)
        measured = [(p, p.val_bpb) for p in points if p.val_bpb is not None]
        on_scale = [(p, value) for p, value in measured if value <= top]
        off_scale = [p for p, value in measured if value > top]
        discarded = [(p, value) for p, value in on_scale if p.decision == "discard"]
        if discarded:
            axes.scatter(
                [p.number for p, _ in discarded],
                [value for _, value in discarded],
                s=18,
                color=DISCARD_COLOR,
                linewidths=0,
                zorder=2,
                label=f"discarded ({summary.discarded})",
            )
        if off_scale:
            axes.scatter(
                [p.number for p in off_scale],
                [1.0] * len(off_scale),
                transform=axes.get_xaxis_transform(),
                marker="^",
                s=32,
                color=OFF_SCALE_COLOR,
                linewidths=0,
                clip_on=False,
                zorder=2,
                label=f"discarded, above {top:.4f} ({len(off_scale)})",
            )
        if summary.baseline_val_bpb is not None:
            axes.axhline(
                summary.baseline_val_bpb, color=BASELINE_COLOR, linestyle=":", linewidth=1, zorder=1
            )
            axes.scatter(
                [0],
                [summary.baseline_val_bpb],
                marker="D",
                s=60,
                color=BASELINE_COLOR,
                zorder=5,
                label=f"baseline {summary.baseline_val_bpb:.4f}",
            )
            steps_x, steps_y = _running_best_steps(summary, last_number)
            axes.step(
                steps_x,
                steps_y,
                where="post",
                color=BEST_LINE_COLOR,
                linewidth=2,
                alpha=0.8,
                zorder=3,
                label="running best",
            )
        kept = [(p, value) for p, value in on_scale if p.decision == "keep" and p.number > 0]
        if kept:
            axes.scatter(
                [p.number for p, _ in kept],
                [value for _, value in kept],
                s=70,
                color=KEPT_COLOR,
                edgecolors=KEPT_EDGE,
                linewidths=0.8,
                zorder=4,
                label=f"kept ({summary.kept})",
            )
    crashed = [p for p in points if p.decision == "crash"]
    if crashed:
        axes.scatter(
            [p.number for p in crashed],
            [CRASH_ROW] * len(crashed),
            transform=axes.get_xaxis_transform(),
            marker="x",
            s=40,
            color=CRASH_COLOR,
            linewidths=1.5,
            zorder=5,
            label=f"crashed ({len(crashed)})",
        )
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize=10, framealpha=0.9)


def _chart_title(summary: RunSummary) -> str:
    name = summary.tag or "run"
    counts = (
        f"{summary.experiments} experiments after the baseline, {summary.kept} kept, "
        f"{summary.discarded} discarded, {summary.crashed} crashed"
    )
    if (
        summary.baseline_val_bpb is None
        or summary.best_val_bpb is None
        or summary.total_gain_bpb is None
    ):
        state = "the baseline crashed" if summary.baseline_failure else "no baseline yet"
        return f"{name}: {state}\n{counts}"
    gain = f"{summary.total_gain_bpb:.4f} bpb better"
    if summary.total_gain_percent is not None:
        gain += f" ({summary.total_gain_percent:.2f} %)"
    return (
        f"{name}: val_bpb {summary.baseline_val_bpb:.4f} \u2192 {summary.best_val_bpb:.4f}, "
        f"{gain}\n{counts}"
    )


def _running_best_steps(summary: RunSummary, last_number: int) -> tuple[list[float], list[float]]:
    """The running best as step corners: from the baseline, down at each kept change."""
    assert summary.baseline_val_bpb is not None
    best = summary.baseline_val_bpb
    steps_x: list[float] = [0]
    steps_y: list[float] = [best]
    for change in summary.kept_changes:
        best = min(best, change.val_bpb)
        steps_x.append(change.number)
        steps_y.append(best)
    steps_x.append(last_number)
    steps_y.append(best)
    return steps_x, steps_y


def _short_label(number: int, description: str, characters: int = LABEL_CHARACTERS) -> str:
    description = description or "(no description)"
    if len(description) > characters:
        description = description[: max(characters - 1, 0)].rstrip() + "\u2026"
    return f"#{number} {description}"


def _label_kept_changes(axes: Axes, renderer: RendererBase, summary: RunSummary) -> None:
    """Label each kept point along a rising slant, nudging a label that would cover an
    earlier one further down its own side, with a thin leader line back to its point, and
    shortening one that would run past the right edge or into the crash marks at the top.

    Every label has the same angle, so in a frame turned by that angle each is an upright
    box: two overlap exactly when both their extents along and across the slant overlap."""
    from matplotlib.font_manager import FontProperties

    high = axes.get_ylim()[1]
    changes = [change for change in summary.kept_changes if change.val_bpb <= high]
    if not changes:
        return
    font = FontProperties(size=9)
    angle = math.radians(LABEL_ANGLE_DEGREES)
    along = (math.cos(angle), math.sin(angle))
    across = (-math.sin(angle), math.cos(angle))
    pixels_per_point = FIGURE_DPI / 72.0
    offset_x, offset_y = (value * pixels_per_point for value in LABEL_OFFSET_POINTS)
    figure_width = axes.figure.bbox.width
    axes_box = axes.bbox
    ceiling = axes_box.y0 + LABEL_CEILING * axes_box.height
    placed: list[tuple[float, float, float, float]] = []
    for change in changes:
        text = _short_label(change.number, change.description)
        width, height, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
        anchor_x, anchor_y = axes.transData.transform((change.number, change.val_bpb))
        start_x, start_y = anchor_x + offset_x, anchor_y + offset_y
        along_start = start_x * along[0] + start_y * along[1]
        across_start = start_x * across[0] + start_y * across[1]
        # Move across the slant, away from the labels before it, until this one is clear.
        for _ in range(len(placed) + 1):
            blocking = [
                box
                for box in placed
                if along_start < box[1]
                and box[0] < along_start + width
                and across_start < box[3] + LABEL_GAP_PIXELS
                and box[2] < across_start + height + LABEL_GAP_PIXELS
            ]
            if not blocking:
                break
            across_start = min(box[2] for box in blocking) - height - LABEL_GAP_PIXELS
        label_x = along_start * along[0] + across_start * across[0]
        label_y = along_start * along[1] + across_start * across[1]
        room = min(
            (figure_width - LABEL_EDGE_PIXELS - label_x) / along[0],
            (ceiling - label_y - height * across[1]) / along[1],
        )
        characters = len(change.description)
        while width > room and characters > LABEL_MIN_CHARACTERS:
            characters -= 1
            text = _short_label(change.number, change.description, characters)
            width = renderer.get_text_width_height_descent(text, font, ismath=False)[0]
        placed.append((along_start, along_start + width, across_start, across_start + height))
        nudged = math.hypot(label_x - start_x, label_y - start_y) > 1.0
        axes.annotate(
            text,
            xy=(change.number, change.val_bpb),
            xytext=(
                (label_x - anchor_x) / pixels_per_point,
                (label_y - anchor_y) / pixels_per_point,
            ),
            textcoords="offset points",
            fontproperties=font,
            color=LABEL_COLOR,
            rotation=LABEL_ANGLE_DEGREES,
            rotation_mode="anchor",
            ha="left",
            va="bottom",
            zorder=6,
            annotation_clip=False,
            arrowprops=(
                {"arrowstyle": "-", "color": LABEL_COLOR, "linewidth": 0.6, "alpha": 0.6}
                if nudged
                else None
            ),
        )


def _save_png_atomically(figure: Any, path: Path) -> None:
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=FIGURE_DPI)
    write_atomic(path, image.getvalue())
