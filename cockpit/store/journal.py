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

import dataclasses
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from cockpit.store import state
from cockpit.store.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from cockpit.store.steering import MODES as RUN_MODES
from cockpit.store.steering import Kind

BUSY_TIMEOUT_MS = 5000

RUN_STATUSES = ("active", "finished", "stopped")
EXPERIMENT_STATUSES = (
    "proposed",
    "awaiting_approval",
    "vetoed",
    "committed",
    "training",
    "evaluating",
    "keep",
    "discard",
    "crash",
    "timeout",
    "interrupted",
    "rejected",
)
# Nothing more happens to an experiment in one of these (a re-run after an interruption is an
# explicit update by the engine, with attempt + 1).
FINAL_STATUSES = frozenset(
    {"vetoed", "keep", "discard", "crash", "timeout", "interrupted", "rejected"}
)
UNFINISHED_STATUSES = tuple(s for s in EXPERIMENT_STATUSES if s not in FINAL_STATUSES)
# A script in one of these has been (or is about to be) trained: training it again would only
# spend the budget on a known answer.
TRAINED_STATUSES = (
    "committed",
    "training",
    "evaluating",
    "keep",
    "discard",
    "crash",
    "timeout",
    "interrupted",
)
DECISIONS = ("keep", "discard", "crash", "veto")
# The status an experiment takes with a decision when the caller names none.
DECISION_STATUS = {"keep": "keep", "discard": "discard", "crash": "crash", "veto": "vetoed"}
# Only these reach results.tsv; a veto never trained, so it has no row there.
LEDGER_DECISIONS = ("keep", "discard", "crash")

# The commands the engine understands: the steering vocabulary owns the names.
COMMAND_KINDS = tuple(kind.value for kind in Kind)
COMMAND_STATUSES = ("pending", "done", "failed")

# Enumerated values (statuses, modes, kinds) are checked here in Python rather than with SQL
# CHECK constraints: SQLite can only change a CHECK by rebuilding the table, and new statuses
# are the likeliest schema change.


class JournalError(Exception):
    """A problem with the journal that the user can act on; the message says how."""


def now() -> float:
    """The journal's clock: unix time in float seconds."""
    return time.time()


def _dumps(value: Any) -> str:
    # default=str: configs hold Paths and the like, which should be recorded, not refused.
    return json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Run:
    """One research run: a tag, its branch and the best result so far."""

    id: int
    tag: str
    branch: str
    base_commit: str
    created_at: float
    mode: str
    proposer: str
    config: dict[str, Any]
    corpus_fingerprint: str
    status: str
    baseline_val_bpb: float | None
    best_val_bpb: float | None
    best_commit: str | None
    target: int | None


@dataclass(frozen=True)
class Experiment:
    """One proposed change to train.py and everything that happened to it."""

    id: int
    run_id: int
    number: int
    parent_commit: str | None
    commit_sha: str | None
    ref: str | None
    proposer: str | None
    model: str | None
    description: str
    hypothesis: str
    diff: str
    script_hash: str | None
    status: str
    outcome: str | None
    exit_code: int | None
    val_bpb: float | None
    peak_memory_mb: float | None
    training_seconds: float | None
    total_seconds: float | None
    num_steps: int | None
    attempt: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    decision: str | None
    decision_reason: str | None
    summary: dict[str, Any] | None
    log_path: str | None
    crash_tail: str | None
    lines_of_code: int | None
    details: dict[str, Any] | None = None

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to this experiment."""
        return self.status in FINAL_STATUSES

    @property
    def short_commit(self) -> str:
        """The first seven characters of the commit, as results.tsv and git show it."""
        return (self.commit_sha or "")[:7]


@dataclass(frozen=True)
class LedgerEntry:
    """An experiment as a ledger lists it: the columns a row of the screen shows, read without
    its diff, hypothesis, summary or details, so that a run of ten thousand reads at once."""

    id: int
    number: int
    commit_sha: str | None
    val_bpb: float | None
    peak_memory_mb: float | None
    status: str
    decision: str | None
    proposer: str | None
    model: str | None
    description: str
    decision_reason: str | None
    best_before: Any  # the best when it was decided, as the decision's evidence recorded it
    log_path: str | None
    attempt: int

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to this experiment."""
        return self.status in FINAL_STATUSES

    @property
    def short_commit(self) -> str:
        """The first seven characters of the commit, as results.tsv and git show it."""
        return (self.commit_sha or "")[:7]


_LEDGER_COLUMNS = (
    "id, number, commit_sha, val_bpb, peak_memory_mb, status, decision, proposer, model, "
    "description, decision_reason, {best_before} AS best_before, log_path, attempt"
)


@dataclass(frozen=True)
class Event:
    """A line of the run's story: a decision, a phase change, a fallback, a rejection…"""

    id: int
    run_id: int | None
    experiment_id: int | None
    at: float
    kind: str
    message: str
    data: dict[str, Any] | None


@dataclass(frozen=True)
class Command:
    """A request from the user (through the TUI or the CLI) for the engine."""

    id: int
    created_at: float
    kind: str
    payload: dict[str, Any]
    status: str
    handled_at: float | None
    result: str


@dataclass(frozen=True)
class Sample:
    """One monitor reading (GPU and process figures) taken while a run goes on."""

    id: int
    run_id: int
    experiment_id: int | None
    at: float
    data: dict[str, Any]


_R = TypeVar("_R", Run, Experiment, Event, Command, Sample)

# The record fields stored as JSON, in a column named <field>_json.
_JSON_FIELDS: dict[type, frozenset[str]] = {
    Run: frozenset({"config"}),
    Experiment: frozenset({"summary", "details"}),
    Event: frozenset({"data"}),
    Command: frozenset({"payload"}),
    Sample: frozenset({"data"}),
}
# What update_run may change: never the id, the tag (it names the branch) or the birth date.
_RUN_UPDATABLE = frozenset(
    {
        "branch",
        "base_commit",
        "mode",
        "proposer",
        "config",
        "corpus_fingerprint",
        "status",
        "baseline_val_bpb",
        "best_val_bpb",
        "best_commit",
        "target",
    }
)
# What add_experiment/update_experiment may set. The decision is left out on purpose: only
# record_decision writes it, so that a decision never exists without its event.
_EXPERIMENT_UPDATABLE = frozenset(f.name for f in dataclasses.fields(Experiment)) - {
    "id",
    "run_id",
    "number",
    "created_at",
    "decision",
    "decision_reason",
}


def _from_row(cls: type[_R], row: sqlite3.Row) -> _R:
    json_fields = _JSON_FIELDS[cls]
    present = set(row.keys())  # a journal of an older schema, opened read-only, lacks some
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        column = f"{f.name}_json" if f.name in json_fields else f.name
        if column not in present:
            continue  # the field's default stands in
        values[f.name] = _loads(row[column]) if f.name in json_fields else row[column]
    return cls(**values)


def _columns(cls: type, fields: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Turn record-field keyword arguments into column values, refusing anything unlisted."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(
            f"cannot set {', '.join(unknown)} on {cls.__name__.lower()}; "
            f"settable fields: {', '.join(sorted(allowed))}"
        )
    json_fields = _JSON_FIELDS[cls]
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name in json_fields:
            columns[f"{name}_json"] = None if value is None else _dumps(value)
        elif isinstance(value, os.PathLike):
            columns[name] = os.fspath(value)
        else:
            columns[name] = value
    return columns


def _check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def _check_run_fields(fields: Mapping[str, Any]) -> None:
    if "mode" in fields:
        _check_choice("run mode", fields["mode"], RUN_MODES)
    if "status" in fields:
        _check_choice("run status", fields["status"], RUN_STATUSES)


def _check_experiment_fields(fields: Mapping[str, Any]) -> None:
    if "status" in fields:
        _check_choice("experiment status", fields["status"], EXPERIMENT_STATUSES)


def _set_clause(columns: Mapping[str, Any]) -> str:
    # Column names come from the whitelists above, never from the caller, so this is safe.
    return ", ".join(f"{name} = ?" for name in columns)


# ---------------------------------------------------------------------------------------------
# the journal


class Journal:
    """A connection to the journal. Open it with ``Journal.open(path)``.

    One connection may be shared by the threads of a process: a lock serialises every use of
    it, and each write is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock
    up front so that two processes never deadlock upgrading a read to a write."""

    def __init__(self, connection: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._conn = connection
        self._path = path
        self._readonly = readonly
        self._lock = threading.RLock()
        self._closed = False

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Journal:
        """Open the journal at ``path``; unless read-only, create it (and its folder) if need be.

        A read-only journal must exist already; it refuses writes. A journal written by a newer
        version of the cockpit is refused with a JournalError."""
        path = Path(path)
        if readonly:
            if not path.exists():
                raise JournalError(
                    f"no journal at {path}: nothing has run in this workspace yet "
                    "(start the engine with `cockpit` first)"
                )
            target = f"file:{quote(str(path.resolve()))}?mode=ro"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        try:
            # isolation_level=None: transactions are begun and ended here, explicitly, rather
            # than by the sqlite3 module's guesses.
            connection = sqlite3.connect(
                target,
                uri=readonly,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal at {path}: {error}") from error
        connection.row_factory = sqlite3.Row
        journal = cls(connection, path, readonly)
        try:
            journal._setup()
        except BaseException:
            connection.close()
            raise
        return journal

    def _setup(self) -> None:
        conn = self._conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self._readonly:
                conn.execute("PRAGMA query_only = ON")
                self._check_version(self._user_version(), fresh_ok=False)
                return
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"the journal at {self._path} cannot use WAL mode (got {mode!r}); "
                    "put the workspace on a local filesystem"
                )
            # NORMAL is durable against a crash of the process (kill -9) in WAL mode; only a
            # power cut can lose the last transactions, and never corrupts the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._check_version(self._user_version(), fresh_ok=True):
                return
            with self._write() as tx:
                # Another process may have created the schema while this one waited.
                version = self._user_version()
                if version == 0:
                    for statement in SCHEMA:
                        tx.execute(statement)
                elif not self._check_version(version, fresh_ok=True):
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[step]:
                            tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise JournalError(
                f"{self._path} is not a usable journal ({error}); move it aside and the "
                "cockpit will start a new one"
            ) from error

    def _user_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int, *, fresh_ok: bool) -> bool:
        """Whether the schema is current; raises if it is newer than this code knows."""
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal at {self._path} has schema version {version}, newer than this "
                f"cockpit understands ({SCHEMA_VERSION}): upgrade research-cockpit"
            )
        if version == 0 and not fresh_ok:
            raise JournalError(
                f"the journal at {self._path} is empty: the engine has not set it up yet"
            )
        # Versions between 0 and SCHEMA_VERSION are migrated by _setup (read-only: as they are).
        return version == SCHEMA_VERSION

    @property
    def path(self) -> Path:
        """Where the database file is."""
        return self._path

    @property
    def readonly(self) -> bool:
        """Whether this connection refuses writes."""
        return self._readonly

    def close(self) -> None:
        """Close the connection (again is fine)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        if self._readonly:
            raise JournalError(
                f"the journal at {self._path} was opened read-only; open it writable to change it"
            )
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise self._busy_error(error) from error
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _busy_error(self, error: sqlite3.OperationalError) -> Exception:
        if "locked" in str(error) or "busy" in str(error):
            return JournalError(
                f"the journal at {self._path} stayed locked by another process for over "
                f"{BUSY_TIMEOUT_MS / 1000:g} s; try again, or look for a stuck cockpit process"
            )
        return error

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _row(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, tuple(params)).fetchone()
            return row

    @staticmethod
    def _insert(tx: sqlite3.Connection, table: str, columns: Mapping[str, Any]) -> int:
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        cursor = tx.execute(
            f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(columns.values())
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

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
        _check_choice("run mode", mode, RUN_MODES)
        columns = {
            "tag": tag,
            "branch": branch,
            "base_commit": base_commit,
            "created_at": now(),
            "mode": mode,
            "proposer": proposer,
            "config_json": _dumps(dict(config)),
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
        return None if row is None else _from_row(Run, row)

    def run_by_tag(self, tag: str) -> Run | None:
        """The run with this tag, or None."""
        row = self._row("SELECT * FROM runs WHERE tag = ?", (tag,))
        return None if row is None else _from_row(Run, row)

    def latest_run(self) -> Run | None:
        """The run created last, or None when there is none."""
        row = self._row("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        return None if row is None else _from_row(Run, row)

    def runs(self) -> list[Run]:
        """Every run, oldest first."""
        return [_from_row(Run, row) for row in self._rows("SELECT * FROM runs ORDER BY id")]

    def update_run(self, run_id: int, **fields: Any) -> Run:
        """Change some of a run's fields (not its id, tag or creation time); returns the run."""
        columns = _columns(Run, fields, _RUN_UPDATABLE)
        _check_run_fields(fields)
        with self._write() as tx:
            self._update(tx, "runs", run_id, columns)
        return self._require_run(run_id)

    def unique_tag(self, base: str) -> str:
        """``base`` if no run uses it yet, else the first free one of ``base-2``, ``base-3``…"""
        used = {
            row["tag"]
            for row in self._rows(
                "SELECT tag FROM runs WHERE tag = ? OR tag LIKE ? ESCAPE '\\'",
                (base, _like_escape(base) + "-%"),
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
            sql = f"UPDATE {table} SET {_set_clause(columns)} WHERE id = ?"
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
        columns = _columns(Experiment, fields, _EXPERIMENT_UPDATABLE)
        _check_experiment_fields(fields)
        columns = {"run_id": run_id, "number": number, "created_at": now(), **columns}
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
        columns = _columns(Experiment, fields, _EXPERIMENT_UPDATABLE)
        _check_experiment_fields(fields)
        with self._write() as tx:
            self._update(tx, "experiments", experiment_id, columns)
        return self._require_experiment(experiment_id)

    def experiment(self, run_id: int, number: int) -> Experiment | None:
        """Experiment ``number`` of a run, or None."""
        row = self._row(
            "SELECT * FROM experiments WHERE run_id = ? AND number = ?", (run_id, number)
        )
        return None if row is None else _from_row(Experiment, row)

    def experiment_by_id(self, experiment_id: int) -> Experiment | None:
        """The experiment with this id, or None."""
        row = self._row("SELECT * FROM experiments WHERE id = ?", (experiment_id,))
        return None if row is None else _from_row(Experiment, row)

    def experiments(self, run_id: int) -> list[Experiment]:
        """Every experiment of a run, in number order."""
        rows = self._rows("SELECT * FROM experiments WHERE run_id = ? ORDER BY number", (run_id,))
        return [_from_row(Experiment, row) for row in rows]

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
        sql = f"SELECT {_LEDGER_COLUMNS.format(best_before=best_before)} FROM experiments "
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

    @functools.cached_property
    def _has_json(self) -> bool:
        try:
            self._rows("SELECT json_extract('{}', '$.a')")
        except sqlite3.OperationalError:
            return False
        return True

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the journal (SQLite's
        ``PRAGMA data_version``): a reader that finds it unchanged has nothing new to read."""
        return int(self._rows("PRAGMA data_version")[0][0])

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
        return [_from_row(Experiment, row) for row in rows]

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
        _check_choice("decision", decision, DECISIONS)
        status = DECISION_STATUS[decision] if status is None else status
        _check_choice("status of a decided experiment", status, sorted(FINAL_STATUSES))
        # Checked again inside the transaction; checking first keeps the usual mistake cheap.
        run_columns = _columns(Run, run_update or {}, _RUN_UPDATABLE)
        _check_run_fields(run_update or {})
        with self._write() as tx:
            row = tx.execute(
                "SELECT run_id, number, decision, val_bpb FROM experiments WHERE id = ?",
                (experiment_id,),
            ).fetchone()
            if row is None:
                raise JournalError(f"no experiment with id {experiment_id} in the journal")
            at = now()
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
                    "data_json": _dumps(data),
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

    # -- events --------------------------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        run_id: int | None = None,
        experiment_id: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> int:
        """Append an event to the story of a run (or of the engine, without a run); its id."""
        if not kind:
            raise ValueError("an event needs a kind")
        with self._write() as tx:
            return self._insert(
                tx,
                "events",
                {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "at": now(),
                    "kind": kind,
                    "message": message,
                    "data_json": None if data is None else _dumps(dict(data)),
                },
            )

    def events(
        self,
        run_id: int | None = None,
        kinds: Iterable[str] | None = None,
        since_id: int = 0,
        limit: int = 1000,
        *,
        latest: bool = False,
    ) -> list[Event]:
        """Events with an id above ``since_id`` (of one run, of some kinds), oldest first.

        By default the first ``limit`` of them, so that polling with the last id seen never
        skips one; with ``latest=True`` the last ``limit`` (still oldest first), for a view
        that opens on the recent past."""
        where = ["id > ?"]
        params: list[Any] = [since_id]
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            params.extend(kinds)
        order = "DESC" if latest else "ASC"
        rows = self._rows(
            f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            (*params, limit),
        )
        records = [_from_row(Event, row) for row in rows]
        return records[::-1] if latest else records

    # -- metrics -------------------------------------------------------------------------------

    def add_metrics(self, experiment_id: int, points: Iterable[Mapping[str, Any]]) -> int:
        """Store live loss points of an experiment in one transaction; how many were stored.

        A point's t, step, progress and loss have columns of their own; any other key goes
        to its data (the harness's ``"event": "metric"`` marker is dropped)."""
        known = ("t", "step", "progress", "loss")
        rows = []
        for point in points:
            extras = {k: v for k, v in point.items() if k not in known and k != "event"}
            rows.append(
                (
                    experiment_id,
                    *(point.get(k) for k in known),
                    _dumps(extras) if extras else None,
                )
            )
        if not rows:
            return 0
        with self._write() as tx:
            tx.executemany(
                "INSERT INTO metrics (experiment_id, t, step, progress, loss, data_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def metrics(
        self, experiment_id: int, *, after_t: float | None = None, last: int | None = None
    ) -> list[dict[str, Any]]:
        """An experiment's loss points in the order they came (those past ``after_t`` only, and
        the ``last`` ones only, if given), each a dict of t, step, progress, loss and any extra
        keys.

        SQLite stores a NaN as NULL, so a NaN loss comes back as None."""
        sql = "SELECT id, t, step, progress, loss, data_json FROM metrics WHERE experiment_id = ?"
        params: list[Any] = [experiment_id]
        if after_t is not None:
            sql += " AND t > ?"
            params.append(after_t)
        if last is not None:  # the newest ones, read back in the order they came
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?)"
            params.append(last)
        sql += " ORDER BY id"
        points = []
        for row in self._rows(sql, params):
            point: dict[str, Any] = {k: row[k] for k in ("t", "step", "progress", "loss")}
            if row["data_json"] is not None:
                point.update(json.loads(row["data_json"]))
            points.append(point)
        return points

    # -- samples -------------------------------------------------------------------------------

    def add_sample(
        self, run_id: int, data: Mapping[str, Any], experiment_id: int | None = None
    ) -> int:
        """Store one monitor reading of a run (taken now); its id."""
        with self._write() as tx:
            return self._insert(
                tx,
                "samples",
                {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "at": now(),
                    "data_json": _dumps(dict(data)),
                },
            )

    def samples(self, run_id: int, since: float | None = None, limit: int = 1000) -> list[Sample]:
        """The most recent ``limit`` readings of a run taken after ``since`` (a time), oldest
        first. A monitor wants the latest picture, so a gap longer than ``limit`` is skipped."""
        sql = "SELECT * FROM samples WHERE run_id = ?"
        params: list[Any] = [run_id]
        if since is not None:
            sql += " AND at > ?"
            params.append(since)
        rows = self._rows(sql + " ORDER BY at DESC, id DESC LIMIT ?", (*params, limit))
        return [_from_row(Sample, row) for row in reversed(rows)]

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
                    "created_at": now(),
                    "kind": kind,
                    "payload_json": _dumps(dict(payload or {})),
                    "status": "pending",
                },
            )

    def pending_commands(self) -> list[Command]:
        """Commands not handled yet, oldest first."""
        rows = self._rows("SELECT * FROM commands WHERE status = 'pending' ORDER BY id")
        return [_from_row(Command, row) for row in rows]

    def command(self, command_id: int) -> Command | None:
        """The command with this id (to see how the engine answered it), or None."""
        row = self._row("SELECT * FROM commands WHERE id = ?", (command_id,))
        return None if row is None else _from_row(Command, row)

    def finish_command(self, command_id: int, status: str = "done", result: str = "") -> None:
        """Mark a pending command handled (``done`` or ``failed``, with a word on the result).

        Finishing a command twice is a JournalError: it means it was handled twice."""
        _check_choice("command status", status, ("done", "failed"))
        with self._write() as tx:
            cursor = tx.execute(
                "UPDATE commands SET status = ?, handled_at = ?, result = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, now(), result, command_id),
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
        at = now()
        with self._write() as tx:
            tx.executemany(
                "INSERT INTO state (key, value_json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                "updated_at = excluded.updated_at",
                [(key, _dumps(value), at) for key, value in values.items()],
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        """The value of one state key as written, or ``default`` when it was never set."""
        if key not in state.KEYS:
            raise ValueError(f"no engine state key {key}: the keys are EngineState's fields")
        row = self._row("SELECT value_json FROM state WHERE key = ?", (key,))
        return default if row is None else _loads(row["value_json"])

    def engine_state(self) -> state.EngineState:
        """The engine's state, every key parsed (see `EngineState`)."""
        return state.EngineState.from_state(self.all_state())

    def all_state(self) -> dict[str, Any]:
        """Every state key and its value, as written."""
        rows = self._rows("SELECT key, value_json FROM state ORDER BY key")
        return {row["key"]: _loads(row["value_json"]) for row in rows}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
