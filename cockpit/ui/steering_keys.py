"""What the steering keys ask of the engine, decided from what the screen shows: the command
to write to the journal, or why there is none (which the app says as a warning). Pure: the app
sends what these return, through its command worker."""

from __future__ import annotations

from dataclasses import dataclass

from cockpit.store.steering import AUTONOMOUS, SUPERVISED, Kind, Steer
from cockpit.ui.screen_state import ScreenState
from cockpit.views.readmodel import LedgerRow


@dataclass(frozen=True)
class Refused:
    """Why a key sends nothing."""

    reason: str


NO_PROPOSAL = Refused("no proposal is waiting for approval")


def waiting_proposal(state: ScreenState) -> int | None:
    """The proposal waiting for approval: the engine's, or (while it is down) the latest one
    the ledger shows as waiting, which it takes up again when it starts."""
    if state.status.awaiting_approval is not None:
        return state.status.awaiting_approval
    waiting = [row.number for row in state.ledger.values() if row.status == "awaiting_approval"]
    return max(waiting) if waiting else None


def approve(state: ScreenState) -> Steer | Refused:
    """Approve the proposal waiting for approval."""
    number = waiting_proposal(state)
    return NO_PROPOSAL if number is None else Steer(Kind.APPROVE, experiment=number)


def veto(number: int, reason: str | None) -> Steer | None:
    """Veto proposal ``number`` with the reason the researcher typed (None: they cancelled)."""
    if reason is None:
        return None
    return Steer(Kind.VETO, experiment=number, reason=reason.strip())


def stop_training(
    state: ScreenState, worker_chosen: bool, worker_experiment: int | None
) -> Steer | Refused:
    """Stop a training: the chosen worker's (``worker_chosen``: the workers panel has the
    focus, and ``worker_experiment`` is what its selected worker trains), or with several
    workers and none chosen, every one."""
    if worker_chosen and len(state.status.workers) > 1:
        if worker_experiment is None:
            return Refused("the selected worker is idle")
        return Steer(Kind.STOP_RUN, experiment=worker_experiment)
    if state.status.phase not in ("training", "evaluating"):
        return Refused("no training is running")
    return Steer(Kind.STOP_RUN)


def override(row: LedgerRow | None, decision: str) -> Steer | Refused:
    """Keep (``decision`` "keep") or discard the selected ledger row against the engine's
    decision."""
    if row is None:
        return Refused("select an experiment in the ledger first")
    if not row.is_final or row.status in ("vetoed", "rejected"):
        return Refused(f"#{row.number} has no decision to override ({row.status})")
    kind = Kind.OVERRIDE_KEEP if decision == "keep" else Kind.OVERRIDE_DISCARD
    return Steer(kind, experiment=row.number)


def note(text: str | None) -> Steer | None:
    """A note for the agent (None: cancelled, or nothing typed)."""
    if text is None or not text.strip():
        return None
    return Steer(Kind.NOTE, text=text.strip())


def toggle_mode(state: ScreenState) -> Steer | Refused:
    """Switch between autonomous and supervised mode."""
    if state.status.mode is None:
        return Refused("no run yet: start the engine first")
    mode = AUTONOMOUS if state.status.mode == SUPERVISED else SUPERVISED
    return Steer(Kind.SET_MODE, mode=mode)
