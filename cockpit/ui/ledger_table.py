"""The ledger: every experiment of the run, one row each, newest first."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette, status_word
from cockpit.ui.panel import palette_of
from cockpit.views.readmodel import LedgerRow

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
# Rows the table holds at first, and adds each time the cursor reaches the oldest it holds.
PAGE_ROWS = 200
# A narrow ledger leaves out what matters least at a glance.
NARROW_LEAVES_OUT = frozenset({"memory", "proposer"})
MIN_DESCRIPTION_WIDTH = 16


class LedgerTable(DataTable[Text]):
    """Every experiment of the run, newest first, coloured by status.

    A run of ten thousand experiments would cost the table seconds to lay out, so it holds the
    newest `PAGE_ROWS` at first and `PAGE_ROWS` older ones more each time the cursor reaches
    the oldest it holds: every row is reachable, and only the rows that are held are drawn."""

    def __init__(self, *, compact: bool = False, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.rows_by_number: dict[int, LedgerRow] = {}  # the rows the table holds
        self._every: dict[int, LedgerRow] = {}  # every row of the ledger, held or not
        self._limit = PAGE_ROWS  # how many rows the table holds, at least
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
                self.set_rows(list(self._every.values()))

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

    @property
    def held_all(self) -> bool:
        """Whether the table holds every row of the ledger."""
        return len(self.rows_by_number) >= len(self._every)

    def set_rows(self, rows: Iterable[LedgerRow]) -> None:
        """Show exactly these rows (the cursor stays on the same experiment if it can)."""
        keep = self.selected_number()
        if self.size.width:  # the room of the description, whether or not a resize came first
            self.description_width = self._description_room(self.size.width)
        self.clear()
        self.rows_by_number = {}
        self._every = {row.number: row for row in rows}
        newest = heapq.nlargest(self._limit, self._every.values(), key=_number)
        self._add(newest)
        self._restore_cursor(keep)

    def upsert(self, rows: Iterable[LedgerRow]) -> None:
        """Add new rows and redraw the cells of changed ones."""
        palette = palette_of(self)
        added = []
        for row in rows:
            self._every[row.number] = row
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
        held = self._to_hold(added)
        if held:
            keep = self.selected_number()
            follow = keep is None or keep == self._newest()
            self._add(sorted(held, key=_number))
            self.sort("number", key=lambda cell: -int(cell.plain))
            # A researcher watching the newest row keeps watching the newest row.
            self._restore_cursor(self._newest() if follow else keep)

    def _to_hold(self, added: Iterable[LedgerRow]) -> list[LedgerRow]:
        """Of rows the table does not hold, those it takes: any newer than the oldest it holds,
        and the newest of the others while it holds fewer than its limit."""
        oldest = min(self.rows_by_number, default=None)
        room = self._limit - len(self.rows_by_number)
        held = []
        for row in sorted(added, key=_number, reverse=True):
            if oldest is not None and row.number > oldest:
                held.append(row)
            elif room > 0:
                held.append(row)
                room -= 1
        return held

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The cursor on the oldest row held: hold the next older page below it."""
        if event.cursor_row >= self.row_count - 1 and not self.held_all:
            self.hold_older()

    def hold_older(self) -> None:
        """Add the next `PAGE_ROWS` older rows at the bottom (the table is newest first)."""
        oldest = min(self.rows_by_number, default=None)
        older = (row for row in self._every.values() if oldest is None or row.number < oldest)
        page = heapq.nlargest(PAGE_ROWS, older, key=_number)
        self._limit = len(self.rows_by_number) + len(page)
        self._add(page)

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


def _number(row: LedgerRow) -> int:
    return row.number
