"""The journal's connection: opening the database (creating or migrating its schema, or
refusing one newer than this code), its transactions and its reads. The journal's queries
(`cockpit.store.journal`) are built on it.

One connection may be shared by the threads of a process: a lock serialises every use of it,
and each write is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock up front
so that two processes never deadlock upgrading a read to a write.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from cockpit.store.records import (
    BUSY_TIMEOUT_MS,
    JournalError,
)
from cockpit.store.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION


class JournalConnection:
    """A connection to the journal's database; `Journal` adds the queries."""

    def __init__(self, connection: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._conn = connection
        self._path = path
        self._readonly = readonly
        self._lock = threading.RLock()
        self._closed = False

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Self:
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

    def __enter__(self) -> Self:
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

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the journal (SQLite's
        ``PRAGMA data_version``): a reader that finds it unchanged has nothing new to read."""
        return int(self._rows("PRAGMA data_version")[0][0])

    @functools.cached_property
    def _has_json(self) -> bool:
        try:
            self._rows("SELECT json_extract('{}', '$.a')")
        except sqlite3.OperationalError:
            return False
        return True
