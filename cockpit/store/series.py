"""The journal's time series: the run's story (events), each training's metric points and the
monitor's samples. Append-only, read forward from the last id or time a reader saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from cockpit.store import records
from cockpit.store.connection import JournalConnection
from cockpit.store.records import (
    Event,
    Sample,
    dumps,
    from_row,
)


class Series(JournalConnection):
    """Events, metrics and samples (a part of `Journal`)."""

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
                    "at": records.now(),
                    "kind": kind,
                    "message": message,
                    "data_json": None if data is None else dumps(dict(data)),
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
        records = [from_row(Event, row) for row in rows]
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
                    dumps(extras) if extras else None,
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
                    "at": records.now(),
                    "data_json": dumps(dict(data)),
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
        return [from_row(Sample, row) for row in reversed(rows)]
