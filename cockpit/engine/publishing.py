"""What the engine says about itself in the journal, for `cockpit status` and the cockpit to
read: that it started and stopped, its phase, what each worker does, a heartbeat with the
countdown of the training it follows, the model server's health, and the GPU samples of that
training.

Writes are sparing: the workers' state only when it changed (or a training started or
ended), the heartbeat once a second at most.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from agent.proposal import Proposer
from cockpit.engine.flight import Flight, Flights
from cockpit.engine.monitor import GpuSource, Monitor
from cockpit.engine.notify import EngineNotices
from cockpit.engine.workers import Worker
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.samples import MonitorSample
from cockpit.store.state import PendingStop

HEARTBEAT_SECONDS = 1.0


class Publisher:
    """Keeps the engine's state in the journal up to date."""

    def __init__(
        self,
        journal: Callable[[], Journal],
        flights: Flights,
        clock: Callable[[], float],
        proposer: Proposer,
        notices: EngineNotices,
    ) -> None:
        self.journal = journal  # the engine's journal while it runs
        self.flights = flights
        self.clock = clock
        self.proposer = proposer
        self.notices = notices
        # Whether the monitor has seen a GPU: the LLM's server is freed of its model before a
        # training only then.
        self.gpu_seen = False
        self._monitor: Monitor | None = None
        self._run_id: int | None = None
        self._last_heartbeat = 0.0
        self._published: Any = None
        self._agent_state: str | None = None

    def starting(self, run: Run) -> None:
        """Say that an engine drives ``run`` now (this process)."""
        journal = self.journal()
        journal.set_state(
            pid=os.getpid(), run=run.tag, phase="starting", heartbeat=self.clock(),
            **PendingStop.cleared(),  # an engine killed while stopping left its stop behind
        )  # fmt: skip
        journal.add_event("engine", f"engine started (pid {os.getpid()})", run_id=run.id)

    def stopped(self) -> None:
        """Say that the engine has stopped: nothing trains, nothing is being stopped."""
        self.journal().set_state(
            phase="stopped", pid=None, train_pid=None, train_pids=[], time_left=None,
            workers=[], **PendingStop.cleared(),
        )  # fmt: skip

    def set_phase(self, phase: str, **values: Any) -> None:
        self.journal().set_state(phase=phase, heartbeat=self.clock(), **values)

    def publish(
        self,
        workers: Sequence[Worker],
        waiting: Callable[[], list[Experiment]],
        *,
        paused: bool,
        force: bool = False,
    ) -> None:
        """Say what the workers do (state `workers`, and the phase, experiment and time left
        of the latest training, as a single worker has always said them); ``waiting``: the
        experiments that wait for a worker or for approval, oldest first."""
        states = [self._worker_state(worker) for worker in workers]
        lead = self.flights.lead()
        waits = [] if lead is not None or paused else waiting()
        if lead is not None:
            phase, number = lead.phase, lead.number
        elif paused:
            phase, number = "paused", None
        elif waits and all(e.status == "awaiting_approval" for e in waits):
            phase, number = "awaiting_approval", waits[0].number
        else:
            phase, number = None, None
        published = (phase, number, states)
        if force or published != self._published:
            self._published = published
            values: dict[str, Any] = {
                "workers": states,
                "train_pids": [w["pid"] for w in states if w["pid"] is not None],
                "train_pid": lead.handle.pid if lead is not None else None,
            }
            if phase is not None:
                values.update(phase=phase, experiment=number)
            if lead is not None:
                # A new training's countdown starts with it, not at the next heartbeat.
                values.update(time_left=round(lead.time_left(), 1))
            self.journal().set_state(**values)
        if self._monitor is not None:
            self._monitor.set_root(lead.handle.pid if lead is not None else None)
        self._heartbeat(lead)

    def _worker_state(self, worker: Worker) -> dict[str, Any]:
        flight = self.flights.of(worker)
        if flight is not None:
            return flight.state()
        return {"worker": worker.index, "device": worker.label, "experiment": None,
                "phase": "idle", "started_at": None, "budget_seconds": None, "pid": None}  # fmt: skip

    def _heartbeat(self, lead: Flight | None) -> None:
        """Once a second at most: the engine is alive, and the time left of the training it
        follows. The countdown rides on the heartbeat so that it moves as often as the
        heartbeat does, and the journal takes one write a second for both."""
        now = self.clock()
        if now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        values: dict[str, Any] = {"heartbeat": now, "pid": os.getpid()}
        if lead is not None:
            values.update(time_left=round(lead.time_left(), 1))
        self.journal().set_state(**values)
        self._watch_agent()

    def _watch_agent(self) -> None:
        health = getattr(self.proposer, "health", None)
        if health is None:
            return
        state = str(health.state.value)
        if state != self._agent_state:
            self._agent_state = state
            self.notices.agent_state(state, str(health.message))

    # --- GPU samples ---------------------------------------------------------------------

    def start_monitor(self, source: GpuSource, run_id: int, interval: float) -> None:
        """Sample the GPUs and the followed training's processes into the run's journal."""
        self._run_id = run_id
        self._monitor = Monitor(source, self._on_sample, interval=interval)
        self._monitor.start(None)

    def close_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.close()

    def _on_sample(self, sample: MonitorSample) -> None:
        """On the monitor's thread: record the sample against the training followed."""
        if self._run_id is None:
            return
        self.gpu_seen = self.gpu_seen or sample.gpu.available
        lead = self.flights.lead()
        self.journal().add_sample(
            self._run_id, sample.to_dict(), experiment_id=lead.experiment.id if lead else None
        )
