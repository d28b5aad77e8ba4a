"""Follows one workspace's journal for the cockpit's screen, incrementally.

A `JournalPoller` (one per screen, used from a worker thread) keeps a `Snapshot` of everything
the screen shows and, on each `poll()`, reads only what may have changed since the previous one
and returns it as a `Delta`:

- first, whether anything can have changed: the journal's data version (SQLite's count of
  other connections' commits), its file and the engine's lock. A quiet journal costs a
  pragma, a stat and a look at the kernel's lock table, and the poll returns at once;
- state and run: two small reads;
- experiments, as the ledger lists them (`Journal.ledger`: no diffs, no details): new numbers, the unfinished ones and those a new decision event names, and
  only when the state, the run, the events or the numbering moved (the engine's heartbeat
  moves every second while it runs, so nothing waits longer than that);
- events after the last id, GPU samples after the last time, and loss points of the live
  experiment after the last one seen.

A ledger of ten thousand experiments therefore costs one lean read when the screen opens and a
few indexed reads afterwards, and nothing while the journal is quiet. What it reads, and how a row or a status is made of it, is
`cockpit.views.readmodel`'s. Nothing here imports Textual.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock_held
from cockpit.store.records import Command, LedgerEntry, Run
from cockpit.store.samples import MonitorSample
from cockpit.store.state import EngineState
from cockpit.store.verification import latest_verification
from cockpit.views.loss_follow import LossFollower
from cockpit.views.readmodel import (
    EVENT_HISTORY,
    GPU_HISTORY,
    WORKER_LOSSES,
    Delta,
    EventLine,
    ExperimentDetail,
    GpuHistory,
    LedgerRow,
    Snapshot,
    StatusInfo,
    WorkerRow,
    display_path,
    event_line,
    experiment_detail,
    experiment_detail_without_curve,
    journal_file,
    ledger_row,
    ledger_rows,
    monitor_samples,
    read_status,
    shown_status,
    with_deltas,
    with_proposers,
)


class JournalPoller:
    """Follows one workspace's journal for the screen; see the module docstring.

    Thread-safe: one poll at a time (a poll that finds another in progress returns an empty
    Delta at once). The journal is opened read-only when it first exists and reopened after
    an error."""

    def __init__(
        self,
        workspace: Path,
        *,
        workspace_label: str | None = None,
        gpu_history: int = GPU_HISTORY,
        event_history: int = EVENT_HISTORY,
    ) -> None:
        self.workspace = Path(workspace)
        self.path = journal_file(self.workspace)
        self.label = workspace_label or display_path(self.workspace)
        self._gpu_history = gpu_history
        self._event_history = event_history
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self.snapshot = Snapshot(status=StatusInfo(workspace=self.label))
        self._fresh = True  # nothing sent yet: the first poll sends everything
        self._last_wake: tuple[tuple[int, int], int, bool] | None = None
        self._watch_lock = threading.Lock()
        self._watched: set[int] = set()
        self._reset_follow()

    def _reset_follow(self) -> None:
        self._last_event_id = 0
        self._next_number = 0
        self._fingerprint: tuple[Any, ...] | None = None
        self._last_sample_at: float | None = None
        self._gpu: deque[MonitorSample] = deque(maxlen=self._gpu_history)
        self._trial_keys: dict[int, tuple[str | None, int]] = {}
        self._loss = LossFollower(self.snapshot.ledger, self._trial_keys)

    # -- opening and closing -------------------------------------------------------------

    def close(self) -> None:
        """Close the journal connection (a later poll opens it again)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _open(self) -> Journal | None:
        # A journal the engine is creating this instant fails to open with a JournalError
        # that says so; the caller shows it and the next poll opens it.
        if self._journal is None:
            if not self.path.exists():
                return None
            self._journal = Journal.open(self.path, readonly=True)
        return self._journal

    def watch_command(self, command_id: int) -> None:
        """Report the engine's answer to this command in the Delta of a later poll."""
        with self._watch_lock:
            self._watched.add(command_id)

    def _answered(self, journal: Journal) -> tuple[Command, ...]:
        with self._watch_lock:
            watched = sorted(self._watched)
        answered = []
        for command_id in watched:
            command = journal.command(command_id)
            if command is None or command.status != "pending":
                with self._watch_lock:
                    self._watched.discard(command_id)
                if command is not None:
                    answered.append(command)
        return tuple(answered)

    # -- polling ---------------------------------------------------------------------------

    def poll(self) -> Delta:
        """Read what changed since the last poll (everything, the first time)."""
        if not self._lock.acquire(blocking=False):
            return Delta()
        try:
            journal = self._open()
            if journal is None:
                return self._no_journal()
            try:
                wake = self._wake(journal)
                if wake is None:
                    return self._no_journal()
                if wake == self._last_wake and not self._fresh:
                    return Delta()  # nothing was written and the engine is as it was
                self._last_wake = wake
                return self._poll(journal, running_lock=wake[2])
            except Exception:
                # The next poll starts from a fresh connection (and a full read).
                self._close()
                self._fresh = True
                raise
        finally:
            self._lock.release()

    def _with_losses(
        self, journal: Journal, status: StatusInfo, ledger: Mapping[int, LedgerRow]
    ) -> StatusInfo:
        """The status with each busy worker's latest losses, for its sparkline."""
        if len(status.workers) < 2:
            return status
        workers = []
        for row in status.workers:
            known = ledger.get(row.experiment) if row.experiment is not None else None
            if known is None:
                workers.append(row)
                continue
            points = journal.metrics(known.id, last=WORKER_LOSSES)
            losses = tuple(
                float(point["loss"])
                for point in points
                if isinstance(point.get("loss"), (int, float))
            )
            workers.append(dataclasses.replace(row, losses=losses))
        return dataclasses.replace(status, workers=tuple(workers))

    def _no_journal(self) -> Delta:
        status = StatusInfo(workspace=self.label, journal_exists=False)
        fresh, self._fresh = self._fresh, False
        if status == self.snapshot.status and not fresh:
            return Delta()
        self.snapshot = Snapshot(status=status)
        return Delta(reset=fresh, status=status)

    def _wake(self, journal: Journal) -> tuple[tuple[int, int], int, bool] | None:
        """What must move for a poll to find anything: the journal's file (a new one, after
        the old was removed), its data version (a commit by the engine or a command's
        answer) and the engine's lock (an engine that dies writes nothing). None: the file is
        gone, and the connection with it."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            return None
        return (stat.st_dev, stat.st_ino), journal.data_version(), engine_lock_held(self.workspace)

    def _poll(self, journal: Journal, *, running_lock: bool) -> Delta:
        state = journal.engine_state()
        run = journal.latest_run()
        running = running_lock
        verified = None if run is None else latest_verification(journal, run.id)
        status = read_status(self.label, state, run, running=running, verified=verified)
        snapshot = self.snapshot
        reset = self._fresh or (run is not None and run.id != snapshot.run_id)
        if reset:
            snapshot = Snapshot(status=snapshot.status, run_id=None if run is None else run.id)
            snapshot.events = deque(maxlen=self._event_history)
            self.snapshot = snapshot
            self._reset_follow()
            self._fresh = False
        previous_status = None if reset else snapshot.status
        snapshot.status = status
        stream = state.agent_stream
        stream_changed = reset or stream != snapshot.agent_stream
        snapshot.agent_stream = stream
        answered = self._answered(journal)
        if run is None:
            status_changed = status != previous_status
            return Delta(
                reset=reset,
                status=status if status_changed else None,
                agent_stream=stream if stream_changed else None,
                answered=answered,
            )

        events = self._read_events(journal, run, reset)
        next_number = journal.next_number(run.id)
        fingerprint = (
            dataclasses.replace(state, agent_stream=""),
            run,
            self._last_event_id,
            next_number,
        )
        ledger: tuple[LedgerRow, ...] = ()
        current_changed = False
        if reset or fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            fetched = self._read_experiments(journal, run, reset, next_number, events)
            ledger = self._merge_ledger(fetched, status.workers, reset)
            current_changed = self._update_current(journal, state, fetched, status.workers)
        status = with_proposers(status, state, snapshot.ledger)
        status = snapshot.status = self._with_losses(journal, status, snapshot.ledger)
        status_changed = status != previous_status
        loss = self._loss.read(journal, run, status, self.snapshot)
        gpu = self._read_samples(journal, run, reset)
        return Delta(
            reset=reset,
            status=status if status_changed else None,
            ledger=ledger,
            events=tuple(events),
            current=snapshot.current,
            current_changed=current_changed or reset,
            loss=loss,
            gpu=gpu,
            agent_stream=stream if stream_changed else None,
            answered=answered,
        )

    def _read_events(self, journal: Journal, run: Run, reset: bool) -> list[EventLine]:
        if reset:
            found = journal.events(run.id, limit=self._event_history, latest=True)
        else:
            found = journal.events(run.id, since_id=self._last_event_id)
        lines = [event_line(event) for event in found]
        if lines:
            self._last_event_id = max(self._last_event_id, lines[-1].id)
            self.snapshot.events.extend(lines)
        return lines

    def _read_experiments(
        self,
        journal: Journal,
        run: Run,
        reset: bool,
        next_number: int,
        events: Sequence[EventLine],
    ) -> dict[int, LedgerEntry]:
        """The ledger's entries of the experiments that may have changed, by number."""
        if reset:
            found = journal.ledger(run.id)
        else:
            numbers = set(range(self._next_number, next_number))
            numbers |= {row.number for row in self.snapshot.ledger.values() if not row.is_final}
            for event in events:
                number = event.data.get("number")
                if event.kind == "decision" and isinstance(number, int):
                    numbers.add(number)
            current = self.snapshot.status.experiment
            if current is not None and current < next_number:
                numbers.add(current)
            found = journal.ledger(run.id, numbers)
        self._next_number = next_number
        for entry in found:
            self._trial_keys[entry.number] = (entry.log_path, entry.attempt)
        return {entry.number: entry for entry in found}

    def _merge_ledger(
        self, entries: Mapping[int, LedgerEntry], workers: Sequence[WorkerRow], reset: bool
    ) -> tuple[LedgerRow, ...]:
        """Fold fetched entries into the ledger; the rows that changed (their Δ too)."""
        ledger = self.snapshot.ledger
        if reset:  # the whole ledger, read at once: every row is new
            rows = ledger_rows(entries.values(), workers)
            ledger.clear()
            ledger.update((row.number, row) for row in rows)
            self._ledger_changed()
            return tuple(rows)
        previous = dict(ledger)
        touched = False
        for entry in entries.values():
            fresh = ledger_row(entry, workers)
            old = ledger.get(entry.number)
            if old is None or dataclasses.replace(old, delta_vs_best=None) != fresh:
                ledger[entry.number] = fresh
                touched = True
        if not touched:
            return ()
        changed = []
        # One new decision can change the Δ of every later row, so all are recomputed.
        for row in with_deltas(ledger.values()):
            if previous.get(row.number) != row:
                changed.append(row)
            ledger[row.number] = row
        self._ledger_changed()
        return tuple(changed)

    def _ledger_changed(self) -> None:
        """Forget what was worked out of the ledger as it was (the live and best numbers)."""
        self._loss.ledger_changed()

    def _current_number(self, state: EngineState) -> int | None:
        """The experiment the detail panels follow: the one the engine works on, or else the
        latest one."""
        ledger = self.snapshot.ledger
        experiment = state.experiment
        if experiment is not None and experiment in ledger:
            return experiment
        return max(ledger) if ledger else None

    def _update_current(
        self,
        journal: Journal,
        state: EngineState,
        fetched: Mapping[int, LedgerEntry],
        workers: Sequence[WorkerRow],
    ) -> bool:
        number = self._current_number(state)
        snapshot = self.snapshot
        if number is None:
            changed = snapshot.current is not None
            snapshot.current = None
            return changed
        same = snapshot.current is not None and snapshot.current.number == number
        if same and number not in fetched:
            return False
        experiment = journal.experiment(snapshot.run_id or 0, number)
        if experiment is None:
            return False
        detail = dataclasses.replace(
            experiment_detail_without_curve(experiment),
            status=shown_status(experiment, workers),
        )
        if detail == snapshot.current:
            return False
        snapshot.current = detail
        return True

    # -- GPU samples -------------------------------------------------------------------------

    def _read_samples(self, journal: Journal, run: Run, reset: bool) -> GpuHistory | None:
        found = journal.samples(
            run.id, since=None if reset else self._last_sample_at, limit=self._gpu_history
        )
        if not found:
            return GpuHistory() if reset else None
        self._last_sample_at = found[-1].at
        self._gpu.extend(monitor_samples(sample.data for sample in found))
        history = GpuHistory(tuple(self._gpu))
        self.snapshot.gpu = history
        return history

    # -- one experiment on demand ----------------------------------------------------------------

    def detail(self, number: int) -> ExperimentDetail | None:
        """Experiment ``number`` of the run on screen, with its loss curve (None: no such)."""
        with self._lock:
            journal = self._open()
            run_id = self.snapshot.run_id
            if journal is None or run_id is None:
                return None
            experiment = journal.experiment(run_id, number)
            return None if experiment is None else experiment_detail(journal, experiment)
