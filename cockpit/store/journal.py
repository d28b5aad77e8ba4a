"""The journal: one SQLite database that is the engine's memory and the cockpit's message bus.

It lives at ``<workspace>/.cockpit/journal.db``. The engine process is its one writer; the
terminal UI, ``cockpit status`` and the CLI commands read it, and post commands into it, from
other processes. WAL mode lets those readers work while the engine writes, and every state
change is one transaction, so a ``kill -9`` of the engine at any moment leaves whole records
only: a restart resumes from what is here.

Conventions:

- Every timestamp is unix time in float seconds (``time.time()``), so that ages, heartbeats
  and durations are plain subtraction and sort as numbers.
- JSON lives in TEXT columns named ``*_json``; the records expose it decoded, under the name
  without the suffix (``Run.config``, ``Experiment.summary``, ``Event.data``,
  ``Command.payload``, ``Sample.data``), and the keyword arguments of the write methods use
  those same names.
- An experiment's ``decision`` and ``decision_reason`` are written by ``record_decision``
  only, together with their ``decision`` event (and the run's best), in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cockpit.store import records
from cockpit.store.messages import Messages
from cockpit.store.records import (
    DECISION_STATUS,
    DECISIONS,
    EXPERIMENT_UPDATABLE,
    FINAL_STATUSES,
    LEDGER_COLUMNS,
    RUN_UPDATABLE,
    TRAINED_STATUSES,
    UNFINISHED_STATUSES,
    Experiment,
    JournalError,
    LedgerEntry,
    Run,
    check_choice,
    check_experiment_fields,
    check_run_fields,
    dumps,
    from_row,
    like_escape,
    set_clause,
    to_columns,
)
from cockpit.store.series import Series
from cockpit.store.steering import MODES as RUN_MODES


class Journal(Series, Messages):
    """The journal. Open it with ``Journal.open(path)``: its connection is
    `JournalConnection`'s, its time series `Series`', its commands and state `Messages`'; the
    runs and experiments (the research's record) are here."""

    # -- runs ----------------------------------------------------------------------------------

    def create_run(
        self,
        tag: str,
        branch: str,
        base_commit: str,
        mode: str,
        proposer: str,
        config: Mapping[str, Any],
        corpus_fingerprint: str,
        *,
        target: int | None = None,
    ) -> Run:
        """Start a run record (status ``active``). A tag can be used once: see ``unique_tag``."""
        if not tag or tag != tag.strip():
            raise ValueError(f"a run tag must be non-empty without surrounding spaces: {tag!r}")
        check_choice("run mode", mode, RUN_MODES)
        columns = {
            "tag": tag,
            "branch": branch,
            "base_commit": base_commit,
            "created_at": records.now(),
            "mode": mode,
            "proposer": proposer,
            "config_json": dumps(dict(config)),
            "corpus_fingerprint": corpus_fingerprint,
            "status": "active",
            "target": target,
        }
        try:
            with self._write() as tx:
                run_id = self._insert(tx, "runs", columns)
        except sqlite3.IntegrityError as error:
            if "UNIQUE" not in str(error):
                raise
            raise JournalError(
                f"a run tagged {tag!r} already exists; pick another tag "
                f"(for example {self.unique_tag(tag)!r})"
            ) from error
        return self._require_run(run_id)

    def run(self, run_id: int) -> Run | None:
        """The run with this id, or None."""
        row = self._row("SELECT * FROM runs WHERE id = ?", (run_id,))
        return None if row is None else from_row(Run, row)

    def run_by_tag(self, tag: str) -> Run | None:
        """The run with this tag, or None."""
        row = self._row("SELECT * FROM runs WHERE tag = ?", (tag,))
        return None if row is None else from_row(Run, row)

    def latest_run(self) -> Run | None:
        """The run created last, or None when there is none."""
        row = self._row("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        return None if row is None else from_row(Run, row)

    def runs(self) -> list[Run]:
        """Every run, oldest first."""
        return [from_row(Run, row) for row in self._rows("SELECT * FROM runs ORDER BY id")]

    def update_run(self, run_id: int, **fields: Any) -> Run:
        """Change some of a run's fields (not its id, tag or creation time); returns the run."""
        columns = to_columns(Run, fields, RUN_UPDATABLE)
        check_run_fields(fields)
        with self._write() as tx:
            self._update(tx, "runs", run_id, columns)
        return self._require_run(run_id)

    def unique_tag(self, base: str) -> str:
        """``base`` if no run uses it yet, else the first free one of ``base-2``, ``base-3``…"""
        used = {
            row["tag"]
            for row in self._rows(
                "SELECT tag FROM runs WHERE tag = ? OR tag LIKE ? ESCAPE '\\'",
                (base, like_escape(base) + "-%"),
            )
        }
        if base not in used:
            return base
        suffix = 2
        while f"{base}-{suffix}" in used:
            suffix += 1
        return f"{base}-{suffix}"

    def _require_run(self, run_id: int) -> Run:
        run = self.run(run_id)
        if run is None:
            raise JournalError(f"no run with id {run_id} in the journal at {self._path}")
        return run

    @staticmethod
    def _update(
        tx: sqlite3.Connection, table: str, row_id: int, columns: Mapping[str, Any]
    ) -> None:
        if columns:
            sql = f"UPDATE {table} SET {set_clause(columns)} WHERE id = ?"
            found = tx.execute(sql, (*columns.values(), row_id)).rowcount > 0
        else:
            found = (
                tx.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None
            )
        if not found:
            raise JournalError(f"no {table[:-1]} with id {row_id} in the journal")

    # -- experiments ---------------------------------------------------------------------------

    def add_experiment(self, run_id: int, number: int, **fields: Any) -> Experiment:
        """Record a new experiment of a run (status ``proposed`` unless given; number 0 is the
        baseline). A number already used in the run is a JournalError."""
        columns = to_columns(Experiment, fields, EXPERIMENT_UPDATABLE)
        check_experiment_fields(fields)
        columns = {"run_id": run_id, "number": number, "created_at": records.now(), **columns}
        try:
            with self._write() as tx:
                experiment_id = self._insert(tx, "experiments", columns)
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error):
                raise JournalError(f"no run with id {run_id}: create the run first") from error
            if "UNIQUE" not in str(error):
                raise
            raise JournalError(
                f"run {run_id} already has an experiment #{number}; "
                f"number the next one with next_number() ({self.next_number(run_id)})"
            ) from error
        return self._require_experiment(experiment_id)

    def update_experiment(self, experiment_id: int, **fields: Any) -> Experiment:
        """Change some of an experiment's fields; the decision goes through ``record_decision``."""
        columns = to_columns(Experiment, fields, EXPERIMENT_UPDATABLE)
        check_experiment_fields(fields)
        with self._write() as tx:
            self._update(tx, "experiments", experiment_id, columns)
        return self._require_experiment(experiment_id)

    def experiment(self, run_id: int, number: int) -> Experiment | None:
        """Experiment ``number`` of a run, or None."""
        row = self._row(
            "SELECT * FROM experiments WHERE run_id = ? AND number = ?", (run_id, number)
        )
        return None if row is None else from_row(Experiment, row)

    def experiment_by_id(self, experiment_id: int) -> Experiment | None:
        """The experiment with this id, or None."""
        row = self._row("SELECT * FROM experiments WHERE id = ?", (experiment_id,))
        return None if row is None else from_row(Experiment, row)

    def experiments(self, run_id: int) -> list[Experiment]:
        """Every experiment of a run, in number order."""
        rows = self._rows("SELECT * FROM experiments WHERE run_id = ? ORDER BY number", (run_id,))
        return [from_row(Experiment, row) for row in rows]

    def ledger(self, run_id: int, numbers: Iterable[int] | None = None) -> list[LedgerEntry]:
        """The run's experiments as a ledger lists them (``numbers``: those only), in number
        order; one query, with the decision's recorded best taken out of its details by
        SQLite."""
        # Version 1 had no details; SQLite builds without JSON functions are rare but exist.
        if self._user_version() < 2:
            best_before = "NULL"
        elif self._has_json:
            best_before = "json_extract(details_json, '$.evidence.best_before')"
        else:
            best_before = "NULL"
        sql = f"SELECT {LEDGER_COLUMNS.format(best_before=best_before)} FROM experiments "
        sql += "WHERE run_id = ?"
        params: list[Any] = [run_id]
        if numbers is not None:
            wanted = sorted(set(numbers))
            if not wanted:
                return []
            sql += f" AND number IN ({', '.join('?' * len(wanted))})"
            params += wanted
        rows = self._rows(sql + " ORDER BY number", params)
        return [LedgerEntry(*row) for row in rows]

    def next_number(self, run_id: int) -> int:
        """The number the next experiment of the run gets (0, the baseline, for the first)."""
        row = self._row(
            "SELECT COALESCE(MAX(number), -1) + 1 FROM experiments WHERE run_id = ?", (run_id,)
        )
        assert row is not None
        return int(row[0])

    def count_planned(self, run_id: int) -> int:
        """The run's experiments beyond the baseline that were trained or will be (a vetoed
        proposal never is)."""
        row = self._row(
            "SELECT COUNT(*) FROM experiments WHERE run_id = ? AND number > 0 "
            "AND (decision IS NULL OR decision != 'veto')",
            (run_id,),
        )
        assert row is not None
        return int(row[0])

    def unfinished_experiments(self, run_id: int) -> list[Experiment]:
        """The run's experiments in a status that is not final (what a restart must resume or
        mark interrupted), in number order."""
        marks = ", ".join("?" for _ in UNFINISHED_STATUSES)
        rows = self._rows(
            f"SELECT * FROM experiments WHERE run_id = ? AND status IN ({marks}) ORDER BY number",
            (run_id, *UNFINISHED_STATUSES),
        )
        return [from_row(Experiment, row) for row in rows]

    def has_script_hash(
        self, run_id: int, script_hash: str, *, exclude_experiment_id: int | None = None
    ) -> bool:
        """Whether the run already trained (or committed for training) a script with this
        sha256; ``exclude_experiment_id`` leaves one experiment out (the one being re-run)."""
        marks = ", ".join("?" for _ in TRAINED_STATUSES)
        row = self._row(
            f"SELECT 1 FROM experiments WHERE run_id = ? AND script_hash = ? "
            f"AND status IN ({marks}) AND id IS NOT ? LIMIT 1",
            (run_id, script_hash, *TRAINED_STATUSES, exclude_experiment_id),
        )
        return row is not None

    def record_decision(
        self,
        experiment_id: int,
        decision: str,
        reason: str,
        status: str | None = None,
        *,
        run_update: Mapping[str, Any] | None = None,
        events: Sequence[tuple[str, str]] = (),
    ) -> Experiment:
        """Record a decision in one transaction: the experiment's decision, reason, status (by
        default the decision's own: keep, discard, crash, vetoed) and end time, a ``decision``
        event, ``events`` of the run besides (kind, message: a veto's reason, which the model
        reads), and optionally fields of its run (best_val_bpb, best_commit, baseline_val_bpb…).
        Either all of it is written or none. Deciding again (an override) is allowed; the event
        keeps the previous decision."""
        check_choice("decision", decision, DECISIONS)
        status = DECISION_STATUS[decision] if status is None else status
        check_choice("status of a decided experiment", status, sorted(FINAL_STATUSES))
        # Checked again inside the transaction; checking first keeps the usual mistake cheap.
        run_columns = to_columns(Run, run_update or {}, RUN_UPDATABLE)
        check_run_fields(run_update or {})
        with self._write() as tx:
            row = tx.execute(
                "SELECT run_id, number, decision, val_bpb FROM experiments WHERE id = ?",
                (experiment_id,),
            ).fetchone()
            if row is None:
                raise JournalError(f"no experiment with id {experiment_id} in the journal")
            at = records.now()
            tx.execute(
                "UPDATE experiments SET decision = ?, decision_reason = ?, status = ?, "
                "ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                (decision, reason, status, at, experiment_id),
            )
            data = {
                "decision": decision,
                "status": status,
                "number": row["number"],
                "val_bpb": row["val_bpb"],
                "previous_decision": row["decision"],
            }
            self._insert(
                tx,
                "events",
                {
                    "run_id": row["run_id"],
                    "experiment_id": experiment_id,
                    "at": at,
                    "kind": "decision",
                    "message": f"experiment {row['number']}: {decision} ({reason})",
                    "data_json": dumps(data),
                },
            )
            for kind, message in events:
                if not kind:  # inside the transaction: the decision goes with it
                    raise ValueError("an event needs a kind")
                self._insert(
                    tx,
                    "events",
                    {"run_id": row["run_id"], "at": at, "kind": kind, "message": message},
                )
            if run_columns:
                self._update(tx, "runs", row["run_id"], run_columns)
        return self._require_experiment(experiment_id)

    def _require_experiment(self, experiment_id: int) -> Experiment:
        experiment = self.experiment_by_id(experiment_id)
        if experiment is None:
            raise JournalError(f"no experiment with id {experiment_id} in the journal")
        return experiment
