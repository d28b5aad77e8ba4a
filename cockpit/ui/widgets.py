"""The cockpit's panels. Each shows what the app hands it (``show(...)``) and redraws only
when that changed; none reads the journal or talks to another panel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pygments.token import Generic, Token
from pygments.token import Text as TextToken
from rich.console import Group, RenderableType
from rich.style import Style
from rich.syntax import ANSISyntaxTheme, Syntax
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.widgets.data_table import RowKey

from agent import names
from cockpit.store.samples import GPU_OK, GpuReading, MonitorSample
from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette, status_word
from cockpit.ui.plot import Axis, Series, bar, chart, sparkline, value_range
from cockpit.views.readmodel import (
    EventLine,
    ExperimentDetail,
    GpuHistory,
    LedgerRow,
    LossCurves,
    StatusInfo,
    describe_split,
)

# (key, label, width): the description takes whatever width is left.
LEDGER_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("number", "#", 4),
    ("commit", "commit", 7),
    ("val_bpb", "val_bpb", 7),
    ("delta", "Δ best", 7),
    ("memory", "mem GB", 6),
    ("status", "status", 8),
    ("proposer", "proposer", 8),
    ("description", "description", 0),
)
# A narrow ledger leaves out what matters least at a glance.
NARROW_LEAVES_OUT = frozenset({"memory", "proposer"})
MIN_DESCRIPTION_WIDTH = 16
AGENT_EVENT_KINDS = ("agent", "proposer", "note")
DECISION_EVENT_KINDS = ("decision",)


def palette_of(widget: Widget) -> Palette:
    """The palette of the app's current theme."""
    return Palette.from_theme(widget.app.current_theme)


class _View(Widget):
    """A panel drawn from one value: ``show()`` stores it and redraws when it differs."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._view: Any = None

    def show(self, view: Any) -> None:
        """Draw ``view`` (nothing happens when it equals what is drawn)."""
        if view != self._view:
            self._view = view
            self.refresh()

    @property
    def view(self) -> Any:
        """What the panel shows now."""
        return self._view


def _line(*parts: tuple[str, str | Style] | str | Text) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for part in parts:
        if isinstance(part, Text):
            text.append_text(part)
        elif isinstance(part, str):
            text.append(part)
        else:
            text.append(*part)
    return text


def _fit(lines: Sequence[Text], width: int, height: int) -> Text:
    """Lines cut to the panel's size, as one text."""
    shown = list(lines)[: max(0, height)]
    for line in shown:
        line.truncate(max(0, width), overflow="ellipsis")
    joined = Text("\n", end="").join(shown)
    joined.no_wrap = True
    joined.overflow = "ellipsis"
    return joined


# ---------------------------------------------------------------------------------------------
# the model server's state, as the status line (cockpit.ui.status_line) and the agent panel say it

AGENT_STATES = {
    "ready": ("Ollama ready", "success"),
    "server_down": ("Ollama unreachable", "error"),
    "model_missing": ("model not pulled", "error"),
    "timeout": ("Ollama timed out", "warning"),
    "bad_reply": ("bad reply from the model", "warning"),
    "error": ("Ollama error", "error"),
}


def agent_state_text(status: StatusInfo, palette: Palette) -> Text:
    """The model server's state in a few words; without a model, the proposer that works
    alone (Optuna or the built-in one)."""
    muted = Style(color=palette.muted)
    if (
        status.model is None
        and status.proposer is not None
        and not names.uses_model(status.proposer)
    ):
        name = names.label(status.proposer)
        return Text(f"{name} proposer (no LLM)", style=muted, end="")
    if status.agent_state is None:
        return Text("Ollama: no word yet", style=muted, end="")
    words, level = AGENT_STATES.get(status.agent_state, (status.agent_state, "warning"))
    colour = {"success": palette.success, "warning": palette.warning, "error": palette.error}[level]
    return Text("● " + words, style=Style(color=colour), end="")


def split_text(status: StatusInfo, palette: Palette) -> Text | None:
    """The hybrid's split, ``hybrid: LLM 35% · Optuna 65%`` (None: not the hybrid's turn)."""
    if status.search_split is None:
        return None
    return _line(("hybrid: ", Style(color=palette.muted)), describe_split(status.search_split))


# ---------------------------------------------------------------------------------------------
# ledger


class LedgerTable(DataTable[Text]):
    """Every experiment of the run, newest first, coloured by status."""

    def __init__(self, *, compact: bool = False, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.rows_by_number: dict[int, LedgerRow] = {}
        self.shown_columns = tuple(
            (key, label, width)
            for key, label, width in LEDGER_COLUMNS
            if not (compact and key in NARROW_LEAVES_OUT)
        )
        self.description_width = 40
        for key, label, width in self.shown_columns:
            self.add_column(label, key=key, width=width or None)

    def on_resize(self, event: Any) -> None:
        width = self._description_room(self.size.width)
        if width != self.description_width:
            self.description_width = width
            if self.rows_by_number:
                self.set_rows(list(self.rows_by_number.values()))

    def _description_room(self, total: int) -> int:
        fixed = sum(width + 2 * self.cell_padding for _k, _l, width in self.shown_columns if width)
        # The description's own padding and the vertical scrollbar.
        room = total - fixed - 2 * self.cell_padding - 1
        return max(MIN_DESCRIPTION_WIDTH, room)

    def cells(self, row: LedgerRow, palette: Palette) -> list[Text]:
        """The cells of one row in the shown columns."""
        return [
            ledger_cell(key, row, palette, self.description_width)
            for key, _label, _width in self.shown_columns
        ]

    def set_rows(self, rows: Iterable[LedgerRow]) -> None:
        """Show exactly these rows (the cursor stays on the same experiment if it can)."""
        keep = self.selected_number()
        if self.size.width:  # the room of the description, whether or not a resize came first
            self.description_width = self._description_room(self.size.width)
        self.clear()
        self.rows_by_number = {}
        self._add(sorted(rows, key=lambda r: r.number, reverse=True))
        self._restore_cursor(keep)

    def upsert(self, rows: Iterable[LedgerRow]) -> None:
        """Add new rows and redraw the cells of changed ones."""
        palette = palette_of(self)
        added = []
        for row in rows:
            old = self.rows_by_number.get(row.number)
            if old is None:
                added.append(row)
                continue
            if old == row:
                continue
            self.rows_by_number[row.number] = row
            before, after = self.cells(old, palette), self.cells(row, palette)
            for (key, _label, _width), old_cell, new_cell in zip(
                self.shown_columns, before, after, strict=True
            ):
                if old_cell != new_cell:
                    self.update_cell(str(row.number), key, new_cell)
        if added:
            keep = self.selected_number()
            follow = keep is None or keep == self._newest()
            self._add(sorted(added, key=lambda r: r.number))
            self.sort("number", key=lambda cell: -int(cell.plain))
            # A researcher watching the newest row keeps watching the newest row.
            self._restore_cursor(self._newest() if follow else keep)

    def _add(self, rows: Sequence[LedgerRow]) -> None:
        palette = palette_of(self)
        for row in rows:
            self.rows_by_number[row.number] = row
            self.add_row(*self.cells(row, palette), key=str(row.number))

    def _newest(self) -> int | None:
        return max(self.rows_by_number) if self.rows_by_number else None

    def _restore_cursor(self, number: int | None) -> None:
        if number is None or number not in self.rows_by_number:
            return
        self.move_cursor(row=self.get_row_index(str(number)), animate=False)

    def selected_number(self) -> int | None:
        """The experiment under the cursor."""
        if not self.row_count:
            return None
        try:
            key: RowKey = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else int(key.value)

    def selected_row(self) -> LedgerRow | None:
        """The ledger row under the cursor."""
        number = self.selected_number()
        return None if number is None else self.rows_by_number.get(number)


def ledger_cell(key: str, row: LedgerRow, palette: Palette, description_width: int) -> Text:
    """One cell of a ledger row."""
    colour = palette.status_colour(row.status)
    quiet = row.status in ("discard", "vetoed", "rejected", "interrupted")
    text_style = Style(color=palette.muted) if quiet else Style()
    if key == "number":
        return Text(str(row.number), style=Style(color=colour, bold=True), justify="right", end="")
    if key == "commit":
        return Text(row.commit or "", style=Style(color=palette.muted), end="")
    if key == "val_bpb":
        style = Style(color=palette.keep, bold=True) if row.decision == "keep" else text_style
        return Text(fmt.metric(row.val_bpb), style=style, justify="right", end="")
    if key == "delta":
        better = row.delta_vs_best is not None and row.delta_vs_best < 0
        style = Style(color=palette.keep if better else palette.muted)
        return Text(fmt.signed(row.delta_vs_best), style=style, justify="right", end="")
    if key == "memory":
        memory = fmt.gib(row.memory_mb) if row.memory_mb is not None else ""
        return Text(memory, style=text_style, justify="right", end="")
    if key == "status":
        return Text(status_word(row.status), style=Style(color=colour, bold=not quiet), end="")
    if key == "proposer":
        return Text(row.proposer or "", style=Style(color=palette.muted), end="")
    if key == "description":
        return Text(fmt.shorten(row.description, description_width), style=text_style, end="")
    raise ValueError(f"the ledger has no column {key!r}")


# ---------------------------------------------------------------------------------------------
# diff


def diff_theme(palette: Palette) -> ANSISyntaxTheme:
    """Colours for the diff lexer's tokens, from the palette."""
    styles = {
        Token: Style(color=palette.foreground),
        TextToken: Style(color=palette.foreground),
        Generic.Inserted: Style(color=palette.keep),
        Generic.Deleted: Style(color=palette.crash),
        Generic.Subheading: Style(color=palette.primary, bold=True),
        Generic.Heading: Style(color=palette.muted, bold=True),
        Generic.Strong: Style(bold=True),
    }
    return ANSISyntaxTheme(styles)


class DiffView(VerticalScroll):
    """The proposal under way (or the experiment selected): what, why, and the diff."""

    DEFAULT_CSS = """
    DiffView > Static { width: auto; min-width: 100%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._view: tuple[ExperimentDetail | None, bool, str] | None = None

    def compose(self) -> Any:
        yield Static(id="diff-head")
        yield Static(id="diff-body")

    def on_mount(self) -> None:
        self._draw()

    def show(self, detail: ExperimentDetail | None, pinned: bool, note: str = "") -> None:
        """Show one experiment (``pinned``: the researcher chose it)."""
        view = (detail, pinned, note)
        if view != self._view:
            self._view = view
            if self.is_mounted:
                self._draw()

    def redraw(self) -> None:
        """Draw again (the theme changed)."""
        if self.is_mounted:
            self._draw()

    def _draw(self) -> None:
        head, body = self.query_one("#diff-head", Static), self.query_one("#diff-body", Static)
        palette = palette_of(self)
        detail, pinned, note = self._view or (None, False, "")
        if detail is None:
            head.update(Text(note or "no experiment yet", style=Style(color=palette.muted)))
            body.update("")
            return
        head.update(detail_header(detail, pinned, note, palette))
        if detail.diff.strip():
            body.update(
                Syntax(
                    detail.diff.rstrip("\n"),
                    "diff",
                    theme=diff_theme(palette),
                    background_color=palette.background,
                    word_wrap=False,
                )
            )
        else:
            message = (
                "the baseline: the script as it is, no change"
                if detail.number == 0
                else "no diff recorded"
            )
            body.update(Text(message, style=Style(color=palette.muted, italic=True)))


def detail_header(
    detail: ExperimentDetail, pinned: bool, note: str, palette: Palette
) -> RenderableType:
    """What an experiment is: number, status, proposer, description, hypothesis, decision."""
    colour = palette.status_colour(detail.status)
    first = _line(
        (f"#{detail.number} ", Style(bold=True, color=colour)),
        (status_word(detail.status), Style(color=colour)),
    )
    if detail.val_bpb is not None:
        first.append(f"  val_bpb {fmt.metric(detail.val_bpb, 6)}", Style(bold=True))
    if detail.proposer:
        first.append(f"  {detail.proposer}", Style(color=palette.muted))
        if detail.model:
            first.append(f" · {detail.model}", Style(color=palette.muted))
    if pinned:
        first.append("  (selected; esc: follow the engine)", Style(color=palette.muted))
    first.end = "\n"
    parts: list[RenderableType] = [first]
    if note:
        parts.append(Text(note, style=Style(color=palette.accent)))
    parts.append(Text(detail.description or "(no description)", style=Style(bold=True)))
    for flag in detail.flags:
        parts.append(Text(f"⚠ flagged {flag}", style=Style(color=palette.crash, bold=True)))
    # Each part is a line of its own (a Text's default end): the hypothesis and the decision
    # are sentences, and one run into the next reads as one ("…val_bpb.discard: …").
    if detail.hypothesis:
        hypothesis = Text("why: ", style=Style(color=palette.muted))
        hypothesis.append(detail.hypothesis, Style(italic=True))
        parts.append(hypothesis)
    if len(detail.trials) > 1:
        runs = ", ".join(f"{fmt.metric(value, 6)} (seed {seed})" for seed, value in detail.trials)
        parts.append(Text(f"runs: {runs}", style=Style(color=palette.muted)))
    if detail.decision_reason:
        reason = Text(f"{detail.decision or 'decision'}: ", style=Style(color=colour))
        reason.append(detail.decision_reason)
        parts.append(reason)
    if detail.crash_tail and detail.status in ("crash", "timeout"):
        tail = "\n".join(detail.crash_tail.splitlines()[-6:])
        parts.append(Text(tail, style=Style(color=palette.crash)))
    parts.append(Text(""))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------
# plots


class LossPlot(_View):
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
        legend = _line()
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
        return _fit([legend, *lines], width, height)


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


class ProgressPlot(_View):
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
        legend = _line(
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
        return _fit([legend, *lines], width, height)


# ---------------------------------------------------------------------------------------------
# GPU


class GpuPanel(_View):
    """Each GPU's utilisation, memory, temperature and power with a short history, and the
    training's CPU and memory. View: (GpuHistory, engine running)."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        history, running = self.view or (GpuHistory(), False)
        latest = history.latest
        muted = Style(color=palette.muted)
        if latest is None:
            message = (
                "waiting for the first reading"
                if running
                else "no readings: the engine samples the GPUs while it runs"
            )
            return Text(message, style=muted)
        lines: list[Text] = []
        gpu_ok = latest.gpu.state == GPU_OK and bool(latest.gpu.gpus)
        if not gpu_ok:
            word = "no NVIDIA GPU" if latest.gpu.state == "no_gpu" else "GPU readings failed"
            colour = palette.muted if latest.gpu.state == "no_gpu" else palette.error
            lines.append(_line((word, Style(bold=True, color=colour))))
            detail = (latest.gpu.message or "").removeprefix(word).lstrip(":;, ")
            for text in _wrap(detail, max(1, width)) if detail else []:
                lines.append(_line((text, muted)))
            if latest.gpu.state == "no_gpu":
                lines.append(_line(("training runs on the CPU", muted)))
        else:
            compact = height < 4 * len(latest.gpu.gpus) + 2
            for gpu in latest.gpu.gpus:
                series = _gpu_series(history.samples, gpu.index)
                if compact:
                    lines.append(_gpu_compact(gpu, series, width, palette))
                else:
                    lines.extend(_gpu_block(gpu, series, width, palette))
        lines.append(_process_line(history.samples, width, palette))
        if not running:
            lines.append(_line(("last readings; the engine is not running", muted)))
        room = height - len(lines)
        if room >= 4:
            if gpu_ok:
                lines.extend(_gpu_history_chart(history.samples, width, room, palette))
            elif any(sample.process is not None for sample in history.samples):
                lines.extend(_cpu_history_chart(history.samples, width, room, palette))
        return _fit(lines, width, height)


def _span_labels(samples: Sequence[MonitorSample]) -> tuple[str, str]:
    span = samples[-1].at - samples[0].at if len(samples) > 1 else 0.0
    return f"-{fmt.clock(span)}", "now"


def _gpu_history_chart(
    samples: Sequence[MonitorSample], width: int, height: int, palette: Palette
) -> list[Text]:
    """Utilisation and memory of every GPU over the samples kept, as a braille chart."""
    utilisation: list[Series] = []
    memory: list[Series] = []
    indices = sorted({gpu.index for sample in samples for gpu in sample.gpu.gpus})
    for index in indices:
        series = _gpu_series(samples, index)
        utilisation.append(
            Series(
                [(float(i), v) for i, v in enumerate(series["util"]) if v is not None],
                Style(color=palette.running),
            )
        )
        memory.append(
            Series(
                [(float(i), v) for i, v in enumerate(series["memory"]) if v is not None],
                Style(color=palette.accent),
            )
        )
    legend = _line(
        ("━ ", Style(color=palette.running, bold=True)),
        ("util  ", Style(color=palette.muted)),
        ("━ ", Style(color=palette.accent, bold=True)),
        ("memory", Style(color=palette.muted)),
    )
    lines = chart(
        [*memory, *utilisation],
        width,
        height - 1,
        x_axis=Axis(0.0, float(max(1, len(samples) - 1))),
        y_axis=Axis(0.0, 100.0),
        y_format=lambda value: f"{value:.0f}%",
        x_labels=_span_labels(samples),
        axis_style=Style(color=palette.muted),
    )
    return [legend, *lines]


def _cpu_history_chart(
    samples: Sequence[MonitorSample], width: int, height: int, palette: Palette
) -> list[Text]:
    """The training's CPU use over the samples kept (percent of one core), as a chart."""
    points = [
        (float(i), s.process.cpu_percent)
        for i, s in enumerate(samples)
        if s.process is not None and s.process.cpu_percent is not None
    ]
    top = max([100.0, *(value for _, value in points)])
    legend = _line(
        ("━ ", Style(color=palette.accent, bold=True)),
        ("training CPU, % of one core", Style(color=palette.muted)),
    )
    lines = chart(
        [Series(points, Style(color=palette.accent))],
        width,
        height - 1,
        x_axis=Axis(0.0, float(max(1, len(samples) - 1))),
        y_axis=Axis(0.0, top),
        y_format=lambda value: f"{value:.0f}%",
        x_labels=_span_labels(samples),
        axis_style=Style(color=palette.muted),
    )
    return [legend, *lines]


def _gpu_series(samples: Sequence[MonitorSample], index: int) -> dict[str, list[float | None]]:
    series: dict[str, list[float | None]] = {"util": [], "memory": [], "power": []}
    for sample in samples:
        reading = next((g for g in sample.gpu.gpus if g.index == index), None)
        series["util"].append(None if reading is None else reading.utilization_percent)
        memory = None
        if reading and reading.memory_used_mb is not None and reading.memory_total_mb:
            memory = 100.0 * reading.memory_used_mb / reading.memory_total_mb
        series["memory"].append(memory)
        series["power"].append(None if reading is None else reading.power_w)
    return series


def _gauge(
    label: str,
    fraction: float | None,
    value: str,
    history: Sequence[float | None],
    low: float,
    high: float,
    width: int,
    colour: str,
    palette: Palette,
) -> Text:
    spark_width = max(0, min(24, (width - 8) // 3))
    gauge_width = max(4, width - 8 - len(value) - 2 - spark_width - 1)
    filled, empty = bar(fraction, gauge_width)
    line = _line((f" {label:<5} ", Style(color=palette.muted)))
    line.append(filled, Style(color=colour))
    line.append(empty, Style(bgcolor=palette.surface))
    line.append(f" {value}")
    if spark_width:
        line.append(" " + sparkline(history, spark_width, low=low, high=high), Style(color=colour))
    return line


def _heat(value: float | None, warm: float, hot: float, palette: Palette) -> str:
    if value is None:
        return palette.muted
    if value >= hot:
        return palette.error
    if value >= warm:
        return palette.warning
    return palette.success


def _gpu_block(
    gpu: GpuReading, series: dict[str, list[float | None]], width: int, palette: Palette
) -> list[Text]:
    name = gpu.name.removeprefix("NVIDIA ").strip() or gpu.name
    util = gpu.utilization_percent
    used, total = gpu.memory_used_mb, gpu.memory_total_mb
    memory_fraction = None if used is None or not total else used / total
    power_fraction = (
        None if gpu.power_w is None or not gpu.power_limit_w else gpu.power_w / gpu.power_limit_w
    )
    temperature = "N/A" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
    header = _line(
        (f"GPU{gpu.index} ", Style(bold=True, color=palette.primary)),
        (name, Style(bold=True)),
        ("  ", ""),
        (temperature, Style(color=_heat(gpu.temperature_c, 75, 85, palette), bold=True)),
    )
    memory_text = f"{fmt.memory(used)}/{fmt.memory(total)}" if used is not None or total else "N/A"
    power_text = "N/A"
    if gpu.power_w is not None:
        power_text = f"{gpu.power_w:.0f}" + (
            f"/{gpu.power_limit_w:.0f} W" if gpu.power_limit_w else " W"
        )
    power_high = gpu.power_limit_w or max(
        [value for value in series["power"] if value is not None] or [1.0]
    )
    return [
        header,
        _gauge(
            "util",
            None if util is None else util / 100,
            fmt.percent(util).rjust(4),
            series["util"],
            0,
            100,
            width,
            _heat(util, 101, 101, palette) if util is not None else palette.muted,
            palette,
        ),
        _gauge(
            "mem",
            memory_fraction,
            memory_text,
            series["memory"],
            0,
            100,
            width,
            _heat(None if memory_fraction is None else memory_fraction * 100, 85, 95, palette),
            palette,
        ),
        _gauge(
            "power",
            power_fraction,
            power_text,
            series["power"],
            0,
            power_high,
            width,
            palette.accent,
            palette,
        ),
    ]


def _gpu_compact(
    gpu: GpuReading, series: dict[str, list[float | None]], width: int, palette: Palette
) -> Text:
    util = gpu.utilization_percent
    line = _line((f"GPU{gpu.index} ", Style(bold=True, color=palette.primary)))
    line.append(fmt.percent(util).rjust(4), Style(bold=True))
    used, total = gpu.memory_used_mb, gpu.memory_total_mb
    if used is not None and total:
        line.append(f" {used / 1024:.0f}/{total / 1024:.0f}G")
    if gpu.temperature_c is not None:
        line.append(
            f" {gpu.temperature_c:.0f}°C", Style(color=_heat(gpu.temperature_c, 75, 85, palette))
        )
    if gpu.power_w is not None:
        line.append(f" {gpu.power_w:.0f}W")
    room = width - line.cell_len - 1
    if room > 3:
        line.append(
            " " + sparkline(series["util"], room, low=0, high=100), Style(color=palette.running)
        )
    return line


def _process_line(samples: Sequence[MonitorSample], width: int, palette: Palette) -> Text:
    latest = next((s.process for s in reversed(samples) if s.process is not None), None)
    muted = Style(color=palette.muted)
    line = _line(("train ", Style(bold=True, color=palette.primary)))
    if latest is None or samples[-1].process is None:
        line.append("no training running", muted)
        return line
    cpu = "N/A" if latest.cpu_percent is None else f"{latest.cpu_percent:.0f}%"
    line.append("CPU ", muted)
    line.append(cpu, Style(bold=True))
    line.append("  RSS ", muted)
    line.append(fmt.memory(latest.rss_mb), Style(bold=True))
    line.append(f"  {latest.pids} proc", muted)
    history = [s.process.cpu_percent if s.process else None for s in samples]
    known = [value for value in history if value is not None]
    room = min(32, width - line.cell_len - 1)
    if known and room > 3:
        line.append(
            " " + sparkline(history, room, low=0, high=max(100.0, *known)),
            Style(color=palette.accent),
        )
    return line


# ---------------------------------------------------------------------------------------------
# agent and decisions


class AgentPanel(_View):
    """The model's reply as it streams, and the proposals it got rejected, fallbacks and
    notes. View: (StatusInfo or None, stream text, agent events)."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        status, stream, events = self.view or (None, "", ())
        muted = Style(color=palette.muted)
        lines: list[Text] = []
        if status is not None:
            head = agent_state_text(status, palette)
            head.no_wrap = True
            if status.model:
                head.append(f"  {status.model}", Style(bold=True))
            split = split_text(status, palette)
            if split is not None:
                head.append("  ")
                head.append_text(split)
            if status.agent_message:
                head.append(f"  {status.agent_message}", muted)
            lines.append(head)
        shown_events = [_agent_event_line(event, palette) for event in reversed(events)]
        stream_lines = _wrap(stream.rstrip(), max(1, width - 2)) if stream.strip() else []
        room = height - len(lines)
        if stream_lines:
            stream_room = max(2, room - min(len(shown_events), max(2, room // 3)) - 1)
            tail = stream_lines[-stream_room:]
            lines.append(_line(("▍reply so far", Style(color=palette.primary, bold=True))))
            lines.extend(_line(("▍", Style(color=palette.primary)), (text, "")) for text in tail)
        if shown_events:
            lines.extend(shown_events)
        if len(lines) <= (1 if status is not None else 0):
            lines.append(_line(("nothing from the agent yet", muted)))
        return _fit(lines, width, height)


def _agent_event_line(event: EventLine, palette: Palette) -> Text:
    """One agent event: what kind (``data.type``: rejected, fallback, resumed, health, fix…)
    with a mark and a colour, and its message."""
    kind = event.data.get("type")
    line = _line((fmt.time_of_day(event.at) + " ", Style(color=palette.muted)))
    if event.kind == "note":
        line.append("✎ note ", Style(color=palette.accent, bold=True))
        line.append(event.message)
        return line
    if kind == "rejected":
        line.append("✗ rejected ", Style(color=palette.crash, bold=True))
        # The reason first: it is what the model is told, and what a narrow panel keeps.
        reason = str(event.data.get("reason") or "")
        if reason and reason not in event.message:
            line.append(reason)
            line.append(f" — {event.message}", Style(color=palette.muted))
        else:
            line.append(event.message)
        return line
    if kind == "fallback":
        line.append("↯ ", Style(color=palette.warning, bold=True))
        line.append(event.message, Style(color=palette.warning))
        return line
    if kind == "resumed":
        line.append("✓ ", Style(color=palette.success, bold=True))
        line.append(event.message, Style(color=palette.success))
        return line
    if kind == "health":
        state = str(event.data.get("state", ""))
        _words, level = AGENT_STATES.get(state, (state, "warning"))
        colour = {"success": palette.success, "warning": palette.warning}.get(level, palette.error)
        line.append("● ", Style(color=colour))
        line.append(event.message)
        return line
    line.append("• ", Style(color=palette.primary))
    line.append(event.message)
    return line


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for raw in text.splitlines() or [""]:
        raw = raw.expandtabs(4)
        while len(raw) > width:
            lines.append(raw[:width])
            raw = raw[width:]
        lines.append(raw)
    return lines


class DecisionLog(_View):
    """Every keep, discard, crash and veto, newest first, with its reason and time. View: a
    tuple of decision events."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        events: Sequence[EventLine] = self.view or ()
        if not events:
            return Text("no decision yet", style=Style(color=palette.muted))
        lines = []
        for event in reversed(events):
            decision = str(event.data.get("decision", ""))
            status = str(event.data.get("status", decision))
            colour = palette.status_colour(status)
            number = event.data.get("number")
            reason = event.message
            if "(" in reason and reason.endswith(")"):
                reason = reason[reason.index("(") + 1 : -1]
            line = _line(
                (fmt.time_of_day(event.at) + " ", Style(color=palette.muted)),
                (f"#{number}".rjust(5) + " ", Style(bold=True, color=colour)),
                (f"{status_word(status):<8} ", Style(bold=True, color=colour)),
            )
            previous = event.data.get("previous_decision")
            if previous and previous != decision:
                line.append(f"(was {previous}) ", Style(color=palette.warning))
            line.append(reason)
            lines.append(line)
        return _fit(lines, width, height)
