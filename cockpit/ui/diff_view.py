"""The proposal panel: what an experiment changes, why, what became of it, and its diff."""

from __future__ import annotations

from typing import Any

from pygments.token import Generic, Token
from pygments.token import Text as TextToken
from rich.console import Group, RenderableType
from rich.style import Style
from rich.syntax import ANSISyntaxTheme, Syntax
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette, status_word
from cockpit.ui.panel import palette_of, text_line
from cockpit.views.readmodel import ExperimentDetail


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
    first = text_line(
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
