"""The loss curves the screen draws, followed incrementally: the live experiment's latest
training (its new points read after the last one seen) against the best run's, read once per
best. A part of `cockpit.views.poller.JournalPoller`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from cockpit.store.journal import Journal
from cockpit.store.records import Run
from cockpit.store.trials import LossPoint, current_trial_start, loss_points, paired_curve
from cockpit.views.readmodel import LedgerRow, LossCurves, Snapshot, StatusInfo


@dataclass
class LiveCurve:
    """The loss points of the live experiment's latest training, followed incrementally."""

    key: tuple[int, str | None, int] | None = None  # experiment id, log path, attempt
    experiment_id: int | None = None
    points: list[tuple[float, float, float]] = field(default_factory=list)
    # The clocks of the experiment's earlier trainings, sorted: a read past the last point's
    # clock returns those of them that are later, first, and they are dropped.
    earlier_times: list[float] = field(default_factory=list)


class LossFollower:
    """The live and best curves of one run's ledger (the poller's, which it reads and never
    changes); ``trial_keys``: each experiment's log path and attempt, as the poller read them."""

    def __init__(
        self, ledger: Mapping[int, LedgerRow], trial_keys: Mapping[int, tuple[str | None, int]]
    ) -> None:
        self._ledger = ledger
        self._trial_keys = trial_keys
        self._live = LiveCurve()
        self._best_key: tuple[int, str | None] | None = None
        self._best_curve: tuple[LossPoint, ...] = ()
        # (best commit, live number, best number), worked out of the ledger as it is.
        self._ledger_facts: tuple[str | None, int | None, int | None] | None = None

    def ledger_changed(self) -> None:
        """Forget what was worked out of the ledger as it was."""
        self._ledger_facts = None

    def _facts(self, run: Run) -> tuple[int | None, int | None]:
        """The live number (the latest trained) and the best run's number (the latest keep of
        the run's best commit), worked out once per change of the ledger or of the best."""
        key = run.best_commit
        if self._ledger_facts is None or self._ledger_facts[0] != key:
            rows = self._ledger.values()
            live = max((row.number for row in rows if row.trained), default=None)
            best = None
            if key is not None:
                best = max(
                    (
                        row.number
                        for row in rows
                        if row.commit and key.startswith(row.commit) and row.decision == "keep"
                    ),
                    default=None,
                )
            self._ledger_facts = (key, live, best)
        return self._ledger_facts[1], self._ledger_facts[2]

    def read(
        self, journal: Journal, run: Run, status: StatusInfo, snapshot: Snapshot
    ) -> LossCurves | None:
        """The curves, when they changed since the last read (None: unchanged)."""
        ledger = self._ledger
        live_number, best_number = self._facts(run)
        live_row = None if live_number is None else ledger[live_number]
        changed = self._follow_live(journal, live_row, status)
        if best_number is not None and best_number != live_number:
            log_path, _attempt = self._trial_keys.get(best_number, (None, 0))
            key = (ledger[best_number].id, log_path)
            if key != self._best_key:
                self._best_key = key
                self._best_curve = paired_curve(journal.metrics(ledger[best_number].id))
                changed = True
        elif self._best_key is not None:
            self._best_key, self._best_curve = None, ()
            changed = True
        previous = snapshot.loss
        if (
            not changed
            and previous.live_number == live_number
            and previous.live_status == (None if live_row is None else live_row.status)
        ):
            return None
        curves = LossCurves(
            live_number=live_number,
            live_status=None if live_row is None else live_row.status,
            live=tuple((p, loss) for _, p, loss in self._live.points),
            best_number=best_number if best_number != live_number else None,
            best=self._best_curve,
        )
        if not changed and curves == snapshot.loss:
            return None
        snapshot.loss = curves
        return curves

    def _follow_live(self, journal: Journal, row: LedgerRow | None, status: StatusInfo) -> bool:
        """Read the live experiment's new loss points; whether the curve changed."""
        live = self._live
        if row is None:
            if live.key is None:
                return False
            self._live = LiveCurve()
            return True
        log_path, attempt = self._trial_keys.get(row.number, (None, 0))
        key = (row.id, log_path, attempt)
        elapsed = None
        if (
            status.phase == "training"
            and status.experiment == row.number
            and status.time_left is not None
            and status.budget_seconds is not None
        ):
            elapsed = max(0.0, status.budget_seconds - status.time_left)
        if key != live.key:
            points = loss_points(journal.metrics(row.id))
            start = current_trial_start([p[0] for p in points], elapsed)
            self._live = LiveCurve(
                key=key,
                experiment_id=row.id,
                points=points[start:],
                earlier_times=sorted(p[0] for p in points[:start]),
            )
            return True
        if row.is_final and row.status != "training":
            # A decided experiment gets no more points (until a re-run changes its key).
            return False
        after = live.points[-1][0] if live.points else None
        found = loss_points(journal.metrics(row.id, after_t=after))
        if live.earlier_times:
            skip = (
                len(live.earlier_times)
                if after is None
                else len(live.earlier_times) - bisect.bisect_right(live.earlier_times, after)
            )
            found = found[skip:]
        if not found:
            return False
        live.points.extend(found)
        return True
