"""The status line: two lines on top of the cockpit, what the engine does now, and where and
with what: the phase, the best metric, who proposed the experiment in flight and those before
it, the model server's state, the hybrid's split and what the model's unusable replies came
to."""

from __future__ import annotations

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.ui import format as fmt
from cockpit.ui import keys
from cockpit.ui.palette import Palette
from cockpit.ui.panel import (
    ValuePanel,
    agent_state_text,
    fit_lines,
    palette_of,
    split_text,
    text_line,
)
from cockpit.ui.plot import bar
from cockpit.views.readmodel import StatusInfo

PHASE_WORDS = {
    "starting": "STARTING",
    "proposing": "PROPOSING",
    "awaiting_approval": "AWAITING APPROVAL",
    "training": "TRAINING",
    "evaluating": "EVALUATING",
    "verifying": "VERIFYING",
    "paused": "PAUSED",
    "stopped": "STOPPED",
}


class StatusLine(ValuePanel):
    """Two lines on top: what the engine does now, and where and with what."""

    def render(self) -> RenderableType:
        if self.view is None:
            return Text("reading the journal…")
        status, error, pause_requested = self.view
        palette = palette_of(self)
        width = self.size.width
        return fit_lines(
            [
                self._first_line(status, pause_requested, palette, width),
                self._second_line(status, error, palette, width),
            ],
            width,
            2,
        )

    def _first_line(
        self, status: StatusInfo, pause_requested: bool, palette: Palette, width: int
    ) -> Text:
        badge = Style(bold=True, color=palette.background)
        muted = Style(color=palette.muted)
        # (text, rank): when the line is too long, the highest ranks go first.
        parts: list[tuple[Text, int]] = []
        if not status.journal_exists:
            parts.append((text_line((" NO JOURNAL ", badge + Style(bgcolor=palette.muted))), 0))
            parts.append((text_line("  the engine has not run here yet; "), 1))
            parts.append((text_line(("cockpit start", Style(bold=True)), " starts it"), 1))
            return _squeeze(parts, width)
        if not status.engine_running:
            parts.append(
                (text_line((" ENGINE NOT RUNNING ", badge + Style(bgcolor=palette.error))), 0)
            )
            parts.append((text_line("  ", ("cockpit start", Style(bold=True)), " resumes it"), 3))
        else:
            colour = {
                "awaiting_approval": palette.waiting,
                "paused": palette.warning,
                "training": palette.running,
                "evaluating": palette.running,
                "verifying": palette.running,
            }.get(status.phase, palette.primary)
            word = PHASE_WORDS.get(status.phase, status.phase.upper())
            phase = text_line((f" {word} ", badge + Style(bgcolor=colour)))
            if status.experiment is not None and status.phase in (
                "proposing",
                "awaiting_approval",
                "training",
                "evaluating",
                "verifying",
            ):
                phase.append(f" #{status.experiment}", Style(bold=True, color=colour))
            parts.append((phase, 0))
            if status.phase == "training" and status.time_left is not None:
                parts.append(
                    (text_line((f"  {fmt.clock(status.time_left)} left", Style(bold=True))), 0)
                )
                if status.budget_seconds:
                    done = 1.0 - status.time_left / status.budget_seconds
                    filled, empty = bar(done, 12)
                    parts.append(
                        (
                            text_line(
                                " ",
                                (filled, Style(color=colour)),
                                ("░" * len(empty), muted),
                            ),
                            3,
                        )
                    )
            elif status.phase == "awaiting_approval":
                key = Style(bold=True, color=palette.accent)
                approve, veto = keys.shown("approve"), keys.shown("veto")
                parts.append(
                    (text_line("  ", (approve, key), " approve  ", (veto, key), " veto"), 2)
                )
            if pause_requested and status.phase != "paused":
                parts.append((text_line(("  pausing after this step", palette.warning)), 1))
            if status.stopping is not None:
                parts.append((text_line((f"  {status.stopping.message}", palette.warning)), 1))
        parts.append(
            (
                text_line(
                    ("   best ", muted),
                    (fmt.metric(status.best_val_bpb), Style(bold=True, color=palette.best)),
                ),
                0,
            )
        )
        gain = status.gain
        if gain is not None and status.baseline_val_bpb:
            # Lower is better: a gain shows as the drop it is.
            share = -100.0 * gain / status.baseline_val_bpb
            arrow = "▼" if gain > 0 else ("▲" if gain < 0 else "=")
            gain_style = Style(color=palette.keep if gain > 0 else palette.muted)
            parts.append((text_line((f" {arrow}{abs(gain):.4f}", gain_style)), 1))
            parts.append((text_line((f" ({share:+.1f}%) vs baseline", gain_style)), 4))
        verified = status.verified_gain
        if verified is not None:
            # What the best's script is worth on fresh seeds: the gain that can be banked.
            differs = status.verified is not None and status.verified.differs
            style = Style(color=palette.warning if differs else palette.keep)
            parts.append((text_line(("  verified ", muted), (f"{verified:+.4f}", style)), 2))
        if status.self_reported:
            parts.append((text_line((" self-reported", palette.warning)), 2))
        if status.mode:
            parts.append(
                (text_line("   ", (status.mode, Style(bold=True, color=palette.primary))), 1)
            )
        return _squeeze(parts, width)

    def _second_line(
        self, status: StatusInfo, error: str | None, palette: Palette, width: int
    ) -> Text:
        muted = Style(color=palette.muted)
        parts: list[tuple[Text, int]] = []
        if error:
            parts.append(
                (
                    text_line(
                        ("⚠ ", Style(color=palette.error, bold=True)), (error, palette.error)
                    ),
                    0,
                )
            )
            parts.append((text_line("  "), 0))
        confinement = status.confinement
        if confinement is not None and (confinement.degraded or not confinement.enforced):
            # Persistent, and first: whatever else the line leaves out, not this.
            if confinement.degraded:
                headline = f"⚠ confinement degraded to {confinement.layer}"
                detail = f": {confinement.reason}  "
            else:
                headline = "⚠ training is not confined"
                detail = f": {confinement.missing}: {confinement.reason}  "
            parts.append(
                (
                    text_line(
                        (headline, Style(color=palette.error, bold=True)),
                        (detail, palette.error),
                    ),
                    0,
                )
            )
        parts.append((text_line((status.workspace, Style(bold=True))), 2))
        if status.branch:
            parts.append((text_line(("  branch ", muted), status.branch), 3))
        parts += proposer_parts(status, palette)
        parts.append((text_line("  ", agent_state_text(status, palette)), 0))
        split = split_text(status, palette)
        if split is not None:
            parts.append((text_line("  ", split), 2))
        trouble = reply_trouble(status, palette)
        if trouble is not None:
            parts.append((trouble, 1))
        if status.keep_margin_bpb is not None:
            parts.append((text_line((f"  margin {status.keep_margin_bpb:.4f}", muted)), 4))
        return _squeeze(parts, width)


def proposer_parts(status: StatusInfo, palette: Palette) -> list[tuple[Text, int]]:
    """Who proposed the experiment in flight, or is being asked for it (else who proposes
    next), and who proposed those before it (the latest ones): (text, rank) parts of the
    status line."""
    muted, bold = Style(color=palette.muted), Style(bold=True)
    current = status.in_flight
    parts: list[tuple[Text, int]] = []
    if current is not None and current.proposer:
        asking = " asking " if current.status == "proposing" else " "
        head = text_line((f"  #{current.experiment}{asking}", muted), (current.proposer, bold))
        if current.model:
            head.append(f" · {current.model}")
        parts.append((head, 1))
    elif status.proposer:
        parts.append((text_line(("  ", muted), (status.proposer, bold)), 2))
        if status.model:
            parts.append((text_line(f" · {status.model}"), 2))
    # As many as `cockpit status` names (agent_status.RECENT_PROPOSERS, the README's five):
    # the read model chose them; a line too narrow leaves the list out whole.
    recent = [p.proposer or "?" for p in status.recent_proposers]
    if recent:
        label = "before" if current is not None else "latest"
        parts.append((text_line((f"  {label}: " + ", ".join(recent), muted)), 4))
    return parts


def reply_trouble(status: StatusInfo, palette: Palette) -> Text | None:
    """The model's unusable replies, or its pause, in a few words (None: nothing to say)."""
    replies = status.unusable_replies
    if replies is None:
        return None
    warning = Style(color=palette.warning)
    paused = status.model_paused
    if paused is not None:
        what = f"model paused ({paused.proposals_left} more)"
    else:
        what = f"{replies.count} unusable repl{'y' if replies.count == 1 else 'ies'}"
    return text_line(
        ("  ⚠ ", Style(color=palette.warning, bold=True)),
        (f"{what}: ", warning),
        (replies.short_reason, warning),
    )


def _squeeze(parts: list[tuple[Text, int]], width: int) -> Text:
    """The parts in order, leaving out the highest-ranked ones until the rest fits."""
    kept = list(parts)
    while sum(text.cell_len for text, _ in kept) > width:
        worst = max(rank for _, rank in kept)
        if worst == 0:
            break
        # The last part of the worst rank goes first.
        index = max(i for i, (_text, rank) in enumerate(kept) if rank == worst)
        del kept[index]
    line = text_line()
    for text, _rank in kept:
        line.append_text(text)
    return line
