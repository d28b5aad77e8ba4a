"""The helm: the researcher's steering commands (`cockpit.store.steering`), carried out.

The cockpit and the command line write commands into the journal; the engine reads them at
every turn of its loop and hands each to the `Helm`, which carries it out and answers with
what it did (or why it could not). What the commands ask of the loop itself (pause, stop,
the mode) is kept in `Control`, which the loop reads. Decisions a command makes (a veto, an
override) go through the run's `Judge`, like every other decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cockpit.engine.flight import Flights
from cockpit.engine.judging import Judge
from cockpit.engine.workspace_error import WorkspaceError
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.state import PendingStop
from cockpit.store.steering import AUTONOMOUS, Kind, Steer


@dataclass
class Control:
    """What commands have asked of the engine."""

    mode: str  # supervised (proposals wait for approval) or autonomous
    paused: bool = False
    stop_engine: bool = False
    stop_now: bool = False


class Helm:
    """Carries out the commands sent to the engine during a run."""

    def __init__(
        self,
        journal: Callable[[], Journal],
        run: Callable[[], Run],
        judge: Callable[[], Judge],
        control: Control,
        flights: Flights,
        clock: Callable[[], float],
        say: Callable[[str], None],
    ) -> None:
        self.journal = journal  # the engine's journal while it runs
        self.run = run  # the run's record as the journal has it now
        self.judge = judge  # the run's judge
        self.control = control
        self.flights = flights
        self.clock = clock
        self.say = say

    def handle_pending(self) -> None:
        """Carry out the commands waiting in the journal, oldest first, recording each one's
        answer (or why it failed)."""
        journal = self.journal()
        for command in journal.pending_commands():
            try:
                result = self.apply(Steer.parse(command.kind, command.payload))
            except (WorkspaceError, ValueError, KeyError) as exc:
                journal.finish_command(command.id, "failed", str(exc))
                continue
            journal.finish_command(command.id, "done", result)

    def apply(self, steer: Steer) -> str:
        """Carry out one command; what it did, in a few words (ValueError: it cannot be
        done now, and why)."""
        control = self.control
        kind = steer.kind
        if kind is Kind.PAUSE:
            control.paused = True
            return "paused: nothing new starts; what trains goes on"
        if kind is Kind.RESUME:
            control.paused = False
            return "resumed"
        if kind is Kind.STOP_RUN:
            return self._stop_trainings(steer.experiment)
        if kind is Kind.STOP_ENGINE:
            control.stop_engine = True
            control.stop_now = steer.now
            stop = PendingStop(now=steer.now, asked_at=self.clock())
            self.journal().set_state(**stop.to_state())  # `cockpit status` and the cockpit show it
            return stop.message
        if kind is Kind.SET_MODE:
            return self._set_mode(steer.mode)
        if kind is Kind.NOTE:
            self.journal().add_event("note", steer.text, run_id=self.run().id)
            return "noted"
        if kind in (Kind.APPROVE, Kind.VETO):
            return self._approve_or_veto(steer)
        assert steer.experiment is not None
        return self.judge().override(self.run(), kind is Kind.OVERRIDE_KEEP, steer.experiment)

    def _stop_trainings(self, number: int | None) -> str:
        """Stop the training of experiment ``number`` (None: every training)."""
        flights = [f for f in self.flights if number is None or f.number == number]
        if not flights:
            raise ValueError(
                "no training is running" if number is None else f"#{number} is not training"
            )
        for flight in flights:
            flight.stop()
        return "stopping " + ", ".join(f"#{f.number}" for f in flights)

    def _set_mode(self, mode: str) -> str:
        """Switch the run's mode; going autonomous approves every proposal that waits."""
        journal = self.journal()
        self.control.mode = mode
        journal.update_run(self.run().id, mode=mode)
        if mode == AUTONOMOUS:
            for waiting in self._awaiting_approval():
                journal.update_experiment(waiting.id, status="committed")
        return f"mode {mode}"

    def _approve_or_veto(self, steer: Steer) -> str:
        waiting = self._awaiting_approval()
        if steer.experiment is None and not waiting:
            raise ValueError("no proposal is waiting for approval")
        number = waiting[0].number if steer.experiment is None else steer.experiment
        experiment = next((e for e in waiting if e.number == number), None)
        if experiment is None:
            raise ValueError(f"#{number} is not waiting for approval")
        if steer.kind is Kind.APPROVE:
            self.journal().update_experiment(experiment.id, status="committed")
            return f"approved #{number}"
        reason = steer.reason or "vetoed by the researcher"
        # Its reason, which the model reads, in the same transaction as the decision.
        veto = ("veto", f"#{number} {experiment.description}: {reason}")
        self.judge().record_decision(experiment, "veto", reason, events=[veto])
        self.say(f"#{number} vetoed: {reason}")
        return f"vetoed #{number}"

    def _awaiting_approval(self) -> list[Experiment]:
        """The proposals that wait for the researcher's approval, oldest first."""
        in_flight = self.flights.experiment_ids()
        return [
            e
            for e in self.journal().unfinished_experiments(self.run().id)
            if e.id not in in_flight and e.status == "awaiting_approval"
        ]
