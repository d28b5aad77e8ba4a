"""The journal as the bus between the processes: the commands the screen and the CLI post for
the engine, with its answers, and the engine's state (`cockpit.store.state.EngineState`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cockpit.store import records, state
from cockpit.store.connection import JournalConnection
from cockpit.store.records import (
    COMMAND_KINDS,
    Command,
    JournalError,
    check_choice,
    dumps,
    from_row,
    loads,
)


class Messages(JournalConnection):
    """Commands and the engine's state (a part of `Journal`)."""

    # -- commands ------------------------------------------------------------------------------

    def post_command(self, kind: str, payload: Mapping[str, Any] | None = None) -> int:
        """Ask the engine for something (from any process); the command's id."""
        if kind not in COMMAND_KINDS:
            raise ValueError(
                f"unknown command {kind!r}; valid commands: {', '.join(COMMAND_KINDS)}"
            )
        with self._write() as tx:
            return self._insert(
                tx,
                "commands",
                {
                    "created_at": records.now(),
                    "kind": kind,
                    "payload_json": dumps(dict(payload or {})),
                    "status": "pending",
                },
            )

    def pending_commands(self) -> list[Command]:
        """Commands not handled yet, oldest first."""
        rows = self._rows("SELECT * FROM commands WHERE status = 'pending' ORDER BY id")
        return [from_row(Command, row) for row in rows]

    def command(self, command_id: int) -> Command | None:
        """The command with this id (to see how the engine answered it), or None."""
        row = self._row("SELECT * FROM commands WHERE id = ?", (command_id,))
        return None if row is None else from_row(Command, row)

    def finish_command(self, command_id: int, status: str = "done", result: str = "") -> None:
        """Mark a pending command handled (``done`` or ``failed``, with a word on the result).

        Finishing a command twice is a JournalError: it means it was handled twice."""
        check_choice("command status", status, ("done", "failed"))
        with self._write() as tx:
            cursor = tx.execute(
                "UPDATE commands SET status = ?, handled_at = ?, result = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, records.now(), result, command_id),
            )
            if cursor.rowcount == 0:
                row = tx.execute(
                    "SELECT status FROM commands WHERE id = ?", (command_id,)
                ).fetchone()
                if row is None:
                    raise JournalError(f"no command with id {command_id} in the journal")
                raise JournalError(f"command {command_id} is already {row['status']}")

    # -- state ---------------------------------------------------------------------------------

    def set_state(self, **values: Any) -> None:
        """Set some keys of the engine's state (phase, pid, heartbeat…) in one transaction;
        values are anything JSON can hold. The keys are `EngineState`'s fields: any other is
        refused, so that a key is never written under a name no reader knows."""
        unknown = sorted(set(values) - state.KEYS)
        if unknown:
            raise ValueError(
                f"no engine state key {', '.join(unknown)}: the keys are EngineState's fields "
                "(cockpit/store/state.py); add a field there first"
            )
        if not values:
            return
        at = records.now()
        with self._write() as tx:
            tx.executemany(
                "INSERT INTO state (key, value_json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                "updated_at = excluded.updated_at",
                [(key, dumps(value), at) for key, value in values.items()],
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        """The value of one state key as written, or ``default`` when it was never set."""
        if key not in state.KEYS:
            raise ValueError(f"no engine state key {key}: the keys are EngineState's fields")
        row = self._row("SELECT value_json FROM state WHERE key = ?", (key,))
        return default if row is None else loads(row["value_json"])

    def engine_state(self) -> state.EngineState:
        """The engine's state, every key parsed (see `EngineState`)."""
        return state.EngineState.from_state(self.all_state())

    def all_state(self) -> dict[str, Any]:
        """Every state key and its value, as written."""
        rows = self._rows("SELECT key, value_json FROM state ORDER BY key")
        return {row["key"]: loads(row["value_json"]) for row in rows}
