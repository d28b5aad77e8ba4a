"""The report of a run: ``progress.png`` and ``report.md``, drawn from the journal.

``summarize`` reads a run's experiments into a ``RunSummary`` (pure read); ``plot_progress``
draws autoresearch's progress chart from it (experiment number against val_bpb: discarded
experiments as small grey dots, kept ones as larger green dots labelled with their change,
the running best as a step line, crashes as red crosses along the top edge); and
``render_markdown`` writes the figures a researcher reads in the morning, among them the gain
by proposer (``ProposerGain``: how much each proposer's keeps lowered the best);
``RunSummary.as_json`` gives the same figures as data (``cockpit report --json``, through
``read_report``). ``write_report`` does all three for a workspace.

The counts agree with ``results.tsv``: its rows are the experiments decided keep, discard or
crash. Row one is the baseline (experiment 0), the reference everything is measured against,
so ``experiments``, ``kept``, ``discarded`` and ``crashed`` count the rows after it, and the
keep rate is ``kept / experiments``. Vetoed proposals never trained, have no row, and are
counted apart.

matplotlib is an optional dependency (``research-cockpit[report]``), imported only when a
chart is drawn, and drawn on a figure of its own with the Agg canvas: no pyplot, no window,
no global backend switched under the feet of whatever else runs in the process.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import names
from cockpit.engine import programs
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import LEDGER_DECISIONS, Experiment, Journal, JournalError, Run
from cockpit.store.paths import WorkspacePaths

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase

PROGRESS_PNG = "progress.png"
REPORT_MD = "report.md"
REPORT_DIRNAME = "report"
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


class ReportError(Exception):
    """A report cannot be made; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# the summary


@dataclass(frozen=True)
class ProgressPoint:
    """One results.tsv row as the chart draws it (val_bpb is None for a crash)."""

    number: int
    decision: str
    status: str
    val_bpb: float | None
    description: str


@dataclass(frozen=True)
class KeptChange:
    """A kept experiment and what it gained over the best before it.

    ``delta_bpb`` is ``val_bpb - previous_best_bpb``: negative is an improvement (a tie kept
    for being simpler is 0 or a hair above; a researcher's override may be worse)."""

    number: int
    commit: str
    description: str
    val_bpb: float
    previous_best_bpb: float | None
    delta_bpb: float | None
    proposer: str


@dataclass(frozen=True)
class ProposerGain:
    """What one proposer's experiments came to (the baseline's is not a proposer's).

    ``experiments`` counts its results.tsv rows (decided keep, discard or crash; a vetoed
    proposal never trained and is not counted), ``keep_rate`` is ``kept / experiments``.
    ``gained_bpb`` is the sum over its keeps of how much each lowered the best at the time, in
    the run's order (a keep that lowered nothing adds 0): the gains of all proposers add up to
    the run's total gain. ``best_gain_bpb`` is its largest single gain and ``best_gain_number``
    the keep that made it (None when none of its keeps lowered the best)."""

    proposer: str  # as the journal records it: llm, optuna, builtin, recovered
    name: str  # as the ledger names it: LLM, Optuna, built-in, recovered
    experiments: int
    kept: int
    keep_rate: float
    gained_bpb: float
    best_gain_bpb: float | None
    best_gain_number: int | None


@dataclass(frozen=True)
class Crash:
    """An experiment that did not produce a metric: crashed, timed out or was interrupted."""

    number: int
    commit: str
    description: str
    status: str
    reason: str


@dataclass(frozen=True)
class RunSummary:
    """The figures of one run, as its results.tsv rows tell them (see the module docstring
    for what is counted). Times are unix seconds; bpb figures are val_bpb units."""

    tag: str
    branch: str
    run_status: str
    baseline_val_bpb: float | None
    baseline_commit: str
    # Set when the baseline itself crashed: why (no later experiment runs then).
    baseline_failure: str | None
    best_val_bpb: float | None
    best_commit: str | None
    best_number: int | None
    # What the run's branch points at per the engine; differs from best_commit only after a
    # researcher kept a worse experiment by hand.
    branch_commit: str | None
    total_gain_bpb: float | None
    total_gain_percent: float | None
    # results.tsv rows after the baseline's: kept + discarded + crashed == experiments.
    experiments: int
    kept: int
    discarded: int
    crashed: int
    # Discarded without a val_bpb (stopped early): counted in discarded, drawn nowhere.
    stopped_early: int
    # Proposals vetoed before training: no results.tsv row, not in the counts above.
    vetoed: int
    keep_rate: float | None  # kept / experiments; None before the first experiment
    kept_changes: tuple[KeptChange, ...]
    crashes: tuple[Crash, ...]
    started_at: float | None
    ended_at: float | None
    wall_clock_seconds: float | None
    training_seconds: float
    # Proposer (with its model, if any) -> how many experiments after the baseline it proposed.
    proposers: dict[str, int]
    points: tuple[ProgressPoint, ...]
    # One per proposer of the experiments after the baseline, the largest gain first.
    proposer_gains: tuple[ProposerGain, ...]

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data (tuples become lists of objects)."""
        return dataclasses.asdict(self)


def summarize(journal: Journal, run_id: int) -> RunSummary:
    """The summary of run ``run_id``, read from the journal (nothing is written)."""
    run = journal.run(run_id)
    if run is None:
        tags = ", ".join(r.tag for r in journal.runs()) or "none"
        raise ReportError(
            f"no run with id {run_id} in the journal at {journal.path} (runs: {tags}); "
            "name one of them by its tag"
        )
    return summarize_experiments(journal.experiments(run_id), run=run)


def summarize_experiments(
    experiments: Iterable[Experiment], *, run: Run | None = None
) -> RunSummary:
    """The summary of a run's experiments (its record, if given, supplies tag and branch)."""
    records = list(experiments)
    ledger = sorted((e for e in records if e.decision in LEDGER_DECISIONS), key=lambda e: e.number)
    vetoed = sum(1 for e in records if e.decision == "veto")
    baseline = next((e for e in ledger if e.number == 0), None)
    later = [e for e in ledger if e.number > 0]
    baseline_value = (
        baseline.val_bpb if baseline is not None and baseline.decision == "keep" else None
    )

    kept_changes: list[KeptChange] = []
    running_best = baseline_value
    for experiment in later:
        if experiment.decision != "keep" or experiment.val_bpb is None:
            continue
        delta = None if running_best is None else experiment.val_bpb - running_best
        kept_changes.append(
            KeptChange(
                number=experiment.number,
                commit=experiment.short_commit,
                description=_one_line(experiment.description),
                val_bpb=experiment.val_bpb,
                previous_best_bpb=running_best,
                delta_bpb=delta,
                proposer=_proposer_label(experiment),
            )
        )
        running_best = (
            experiment.val_bpb if running_best is None else min(running_best, experiment.val_bpb)
        )

    kept_values = [e for e in ledger if e.decision == "keep" and e.val_bpb is not None]
    best = min(kept_values, key=lambda e: (e.val_bpb, e.number), default=None)
    best_value = None if best is None else best.val_bpb
    gain = None
    gain_percent = None
    if baseline_value is not None and best_value is not None:
        gain = baseline_value - best_value
        gain_percent = 100.0 * gain / baseline_value if baseline_value else None

    crashes = tuple(
        Crash(
            number=e.number,
            commit=e.short_commit,
            description=_one_line(e.description),
            status=e.status,
            reason=_one_line(e.decision_reason or e.outcome or "no reason recorded"),
        )
        for e in later
        if e.decision == "crash"
    )
    kept = sum(1 for e in later if e.decision == "keep")
    discarded = sum(1 for e in later if e.decision == "discard")
    stopped_early = sum(1 for e in later if e.decision == "discard" and e.val_bpb is None)

    starts = [e.started_at if e.started_at is not None else e.created_at for e in ledger]
    ends = [e.ended_at for e in ledger if e.ended_at is not None]
    started_at = min(starts, default=None)
    ended_at = max(ends, default=None)
    wall_clock = None if started_at is None or ended_at is None else max(0.0, ended_at - started_at)

    proposers = Counter(_proposer_label(e) for e in later)
    baseline_failure = None
    if baseline is not None and baseline.decision == "crash":
        baseline_failure = _one_line(baseline.decision_reason or baseline.outcome or "crashed")
    return RunSummary(
        tag="" if run is None else run.tag,
        branch="" if run is None else run.branch,
        run_status="" if run is None else run.status,
        baseline_val_bpb=baseline_value,
        baseline_commit="" if baseline is None else baseline.short_commit,
        baseline_failure=baseline_failure,
        best_val_bpb=best_value,
        best_commit=None if best is None else best.short_commit,
        best_number=None if best is None else best.number,
        branch_commit=None if run is None or run.best_commit is None else run.best_commit[:7],
        total_gain_bpb=gain,
        total_gain_percent=gain_percent,
        experiments=len(later),
        kept=kept,
        discarded=discarded,
        crashed=len(crashes),
        stopped_early=stopped_early,
        vetoed=vetoed,
        keep_rate=kept / len(later) if later else None,
        kept_changes=tuple(kept_changes),
        crashes=crashes,
        started_at=started_at,
        ended_at=ended_at,
        wall_clock_seconds=wall_clock,
        training_seconds=sum(e.training_seconds or 0.0 for e in ledger),
        proposers=dict(proposers.most_common()),
        points=tuple(
            ProgressPoint(
                number=e.number,
                decision=str(e.decision),
                status=e.status,
                val_bpb=None if e.decision == "crash" else e.val_bpb,
                description=_one_line(e.description),
            )
            for e in ledger
        ),
        proposer_gains=proposer_gains(later, kept_changes),
    )


def proposer_gains(
    experiments: Iterable[Experiment], kept_changes: Iterable[KeptChange]
) -> tuple[ProposerGain, ...]:
    """The gain by proposer of a run's decided experiments after the baseline, given the kept
    changes with their deltas against the best before each: the largest gain first."""
    gains = {
        change.number: max(0.0, -change.delta_bpb)
        for change in kept_changes
        if change.delta_bpb is not None
    }
    by_proposer: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        proposer = experiment.proposer or "unknown"
        decided = experiment.decision in LEDGER_DECISIONS
        if decided and experiment.number > 0 and proposer != "baseline":
            by_proposer.setdefault(proposer, []).append(experiment)
    rows = []
    for proposer, made in by_proposer.items():
        keeps = [e.number for e in made if e.decision == "keep"]
        best = max(keeps, key=lambda number: (gains.get(number, 0.0), -number), default=None)
        best_gain = None if best is None else gains.get(best, 0.0)
        improved = best_gain is not None and best_gain > 0
        rows.append(
            ProposerGain(
                proposer=proposer,
                name=names.label(proposer),
                experiments=len(made),
                kept=len(keeps),
                keep_rate=len(keeps) / len(made),
                gained_bpb=sum(gains.get(number, 0.0) for number in keeps),
                best_gain_bpb=best_gain if improved else None,
                best_gain_number=best if improved else None,
            )
        )
    rows.sort(key=lambda row: (-row.gained_bpb, -row.experiments, row.name))
    return tuple(rows)


def _proposer_label(experiment: Experiment) -> str:
    proposer = experiment.proposer or "unknown"
    return f"{proposer} ({experiment.model})" if experiment.model else proposer


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# progress.png


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


# ---------------------------------------------------------------------------------------------
# report.md


def _render_generalisation(found: programs.Generalisation) -> list[str]:
    lines = ["", "## Test split", ""]
    gains = found.gains()
    if gains is not None:
        lines += [
            f"Validation gain {gains[0]:.4f}, test gain {gains[1]:.4f} bits per byte (the best "
            "kept experiment against the baseline). The test split is read by no decision: "
            "a test gain well below the validation gain means the keeps fit the validation "
            "split more than the task.",
            "",
        ]
    if found.scores:
        lines += ["| # | val_bpb | test_bpb | |", "|--:|--:|--:|---|"]
        for score in found.scores:
            val = "\u2014" if score.val_bpb is None else f"{score.val_bpb:.6f}"
            test = "\u2014" if score.test_bpb is None else f"{score.test_bpb:.6f}"
            lines.append(f"| {score.number} | {val} | {test} | {_cell(score.error)} |")
    else:
        lines.append("No baseline or kept experiment has a score yet.")
    lines += [
        "",
        f"Kept models: {found.programs} ({found.program_bytes / 1e6:.1f} MB on disk; the "
        "baseline's and the kept experiments' are kept, the others pruned once decided).",
    ]
    return lines


def render_markdown(
    summary: RunSummary,
    plot_name: str = PROGRESS_PNG,
    generalised: programs.Generalisation | None = None,
) -> str:
    """The Markdown report of a run: headline figures, the gain by proposer, the kept changes
    with what each gained, the crashes, the test split's figures and a link to the chart
    (``plot_name``, next to the report)."""
    name = summary.tag or "run"
    lines = [f"# Research report: {name}", ""]
    if summary.branch:
        status = f" ({summary.run_status})" if summary.run_status else ""
        lines += [f"Run `{summary.tag}` on branch `{summary.branch}`{status}.", ""]
    lines += ["| | |", "|---|---|"]
    for label, value in _headline_rows(summary):
        lines.append(f"| {label} | {value} |")
    lines.append("")
    if summary.baseline_failure:
        lines += [f"The baseline crashed: {_cell(summary.baseline_failure)}.", ""]
    if (
        summary.branch_commit
        and summary.best_commit
        and summary.branch_commit != summary.best_commit
    ):
        lines += [
            f"Note: the branch `{summary.branch}` points at `{summary.branch_commit}`, "
            f"not at the best result `{summary.best_commit}`: a decision was overridden.",
            "",
        ]
    lines += [
        f"![val_bpb over experiments]({plot_name})",
        "",
        f"The chart is `{plot_name}`, next to this file: val_bpb of every experiment, "
        "kept changes in green, the running best as a line (an experiment stopped early has "
        "no val_bpb and is not drawn).",
        "",
        *_render_proposer_gains(summary.proposer_gains),
        f"## Kept changes ({len(summary.kept_changes)})",
        "",
    ]
    if summary.kept_changes:
        lines += [
            "| # | commit | val_bpb | \u0394 vs best before | change |",
            "|--:|---|--:|--:|---|",
        ]
        for change in summary.kept_changes:
            delta = "\u2014" if change.delta_bpb is None else f"{change.delta_bpb:+.6f}"
            lines.append(
                f"| {change.number} | `{change.commit}` | {change.val_bpb:.6f} | {delta} | "
                f"{_cell(change.description)} |"
            )
    else:
        lines.append("No change beat the baseline.")
    lines += ["", f"## Crashes ({len(summary.crashes)})", ""]
    if summary.crashes:
        lines += ["| # | status | change | reason |", "|--:|---|---|---|"]
        for crash in summary.crashes:
            lines.append(
                f"| {crash.number} | {crash.status} | {_cell(crash.description)} | "
                f"{_cell(crash.reason)} |"
            )
    else:
        lines.append("No experiment crashed.")
    if generalised is not None:
        lines += _render_generalisation(generalised)
    return "\n".join(lines) + "\n"


def _render_proposer_gains(gains: Sequence[ProposerGain]) -> list[str]:
    """The gain by proposer: one table row per proposer (nothing before the first experiment)."""
    if not gains:
        return []
    lines = [
        "## Gain by proposer",
        "",
        "What each proposer's keeps gained: how much each lowered the best val_bpb at the time "
        "it was kept, summed, and the largest of them.",
        "",
        "| proposer | experiments | kept | keep rate | val_bpb gained | best keep |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for gain in gains:
        best = (
            "\u2014"
            if gain.best_gain_bpb is None
            else f"{gain.best_gain_bpb:.6f} (#{gain.best_gain_number})"
        )
        lines.append(
            f"| {_cell(gain.name)} | {gain.experiments} | {gain.kept} | "
            f"{100 * gain.keep_rate:.1f} % | {gain.gained_bpb:.6f} | {best} |"
        )
    return [*lines, ""]


def _headline_rows(summary: RunSummary) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if summary.baseline_val_bpb is not None:
        rows.append(
            (
                "Baseline",
                f"{summary.baseline_val_bpb:.6f} val_bpb (commit `{summary.baseline_commit}`)",
            )
        )
    else:
        rows.append(("Baseline", "none yet"))
    if summary.best_val_bpb is not None:
        rows.append(
            (
                "Best",
                f"**{summary.best_val_bpb:.6f}** val_bpb (#{summary.best_number}, "
                f"commit `{summary.best_commit}`)",
            )
        )
    if summary.total_gain_bpb is not None:
        percent = (
            "" if summary.total_gain_percent is None else f" ({summary.total_gain_percent:.2f} %)"
        )
        rows.append(("Total gain", f"{summary.total_gain_bpb:.6f} bpb{percent}"))
    stopped = (
        f" ({summary.stopped_early} of them stopped early by early abort, with no val_bpb)"
        if summary.stopped_early
        else ""
    )
    experiments = (
        f"{summary.experiments} after the baseline: {summary.kept} kept, "
        f"{summary.discarded} discarded{stopped}, {summary.crashed} crashed"
    )
    if summary.vetoed:
        experiments += f" ({summary.vetoed} more vetoed before training)"
    rows.append(("Experiments", experiments))
    if summary.keep_rate is not None:
        rows.append(
            (
                "Keep rate",
                f"{100 * summary.keep_rate:.1f} % ({summary.kept} of {summary.experiments})",
            )
        )
    if summary.wall_clock_seconds is not None:
        rows.append(
            (
                "Time spent",
                f"{format_duration(summary.wall_clock_seconds)} wall clock, "
                f"{format_duration(summary.training_seconds)} of it training",
            )
        )
    if summary.proposers:
        rows.append(
            (
                "Proposers",
                ", ".join(f"{_cell(name)}: {count}" for name, count in summary.proposers.items()),
            )
        )
    return rows


def format_duration(seconds: float) -> str:
    """A duration as a person reads it: ``42 s``, ``5 min 03 s``, ``9 h 05 min``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return _one_line(text).replace("|", "\\|")


# ---------------------------------------------------------------------------------------------
# writing a workspace's report


def workspace_journal_path(workspace_dir: Path) -> Path:
    """Where a workspace's journal is, without touching the workspace."""
    return WorkspacePaths(Path(workspace_dir)).journal


def select_run(journal: Journal, tag: str | None) -> Run:
    """The run tagged ``tag``, or the latest when tag is None; ReportError when there is none."""
    if tag is None:
        run = journal.latest_run()
        if run is None:
            raise ReportError(_no_experiments(journal.path.parent.parent))
        return run
    run = journal.run_by_tag(tag)
    if run is None:
        tags = [r.tag for r in journal.runs()]
        if not tags:
            raise ReportError(_no_experiments(journal.path.parent.parent))
        raise ReportError(
            f"no run tagged {tag!r} in this workspace; its runs are: {', '.join(tags)} "
            f"(leave out --tag for the latest, {tags[-1]!r})"
        )
    return run


@dataclass(frozen=True)
class RunReport:
    """What a report says of one run of a workspace: its summary and its test-split scores."""

    workspace: Path
    tag: str
    summary: RunSummary
    generalised: programs.Generalisation

    def as_json(self) -> dict[str, Any]:
        """``cockpit report --json``: the summary, with the test split's scores and gains."""
        gains = self.generalised.gains()
        return {
            "workspace": str(self.workspace),
            "tag": self.tag,
            **self.summary.as_json(),
            "test_split": {
                "validation_gain": None if gains is None else gains[0],
                "test_gain": None if gains is None else gains[1],
                "scores": [dataclasses.asdict(score) for score in self.generalised.scores],
                "programs": self.generalised.programs,
                "program_bytes": self.generalised.program_bytes,
            },
        }


def read_report(workspace_dir: Path, tag: str | None = None, cache_dir: str = "") -> RunReport:
    """The report of a run of the workspace: the one tagged ``tag``, or the latest.

    The journal is opened read-only, so a report can be made while the engine runs. Raises
    ReportError (the message says what to do) for a missing workspace, a workspace with no
    experiments, an unknown tag or a journal that cannot be read."""
    workspace = Path(workspace_dir).expanduser().resolve()
    if not workspace.is_dir():
        raise ReportError(
            f"workspace {workspace} does not exist; check the path given to --workspace"
        )
    path = workspace_journal_path(workspace)
    if not path.exists():
        raise ReportError(_no_experiments(workspace))
    try:
        with Journal.open(path, readonly=True) as journal:
            run = select_run(journal, tag)
            summary = summarize(journal, run.id)
            experiments = journal.experiments(run.id)
    except JournalError as error:
        raise ReportError(str(error)) from error
    generalised = programs.generalisation(
        WorkspacePaths(workspace).runs(run.tag), experiments, cache_dir
    )
    return RunReport(workspace, run.tag, summary, generalised)


def write_report(
    workspace_dir: Path, out_dir: Path | None = None, tag: str | None = None, cache_dir: str = ""
) -> tuple[Path, Path]:
    """Write ``progress.png`` and ``report.md`` of a run of the workspace into ``out_dir``
    (default ``<workspace>/report/``); their paths, in that order.

    Raises ReportError as ``read_report`` does, and for a missing matplotlib."""
    report = read_report(workspace_dir, tag, cache_dir)
    target = report.workspace / REPORT_DIRNAME if out_dir is None else Path(out_dir).expanduser()
    png_path = target / PROGRESS_PNG
    markdown_path = target / REPORT_MD
    plot_progress(report.summary, png_path)
    markdown = render_markdown(report.summary, PROGRESS_PNG, report.generalised)
    write_atomic(markdown_path, markdown.encode("utf-8"))
    return png_path, markdown_path


def _no_experiments(workspace: Path) -> str:
    return f"no experiments recorded in {workspace} yet: start a run with `cockpit run`"
