"""The messages that workers post to the app. Small and immutable; the app's handlers own
every change of state.

Messages that carry a whole picture (the status, the loss curves, the GPU history, the
agent's stream) replace an older one of their kind still waiting in the queue, so a busy
screen never falls behind; those that carry increments (ledger rows, events) never do.
`delta_messages` turns what one read of the journal found into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from cockpit.store.records import Command
from cockpit.views.readmodel import (
    Delta,
    EventLine,
    ExperimentDetail,
    GpuHistory,
    LedgerRow,
    LossCurves,
    StatusInfo,
)


class _Latest(Message):
    """A message that a newer one of the same kind makes obsolete."""

    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)


@dataclass
class RunReset(Message):
    """The screen follows a new run (or reads the journal afresh): forget what it shows."""


@dataclass
class StatusChanged(_Latest):
    """The status line's facts changed."""

    status: StatusInfo


@dataclass
class LedgerChanged(Message):
    """Ledger rows that are new or changed."""

    rows: tuple[LedgerRow, ...]


@dataclass
class EventsAdded(Message):
    """New events of the run, oldest first."""

    events: tuple[EventLine, ...]


@dataclass
class CurrentChanged(_Latest):
    """The experiment the engine works on (or the latest one) changed."""

    detail: ExperimentDetail | None


@dataclass
class LossChanged(_Latest):
    """The live loss curve (or the best run's) has new points."""

    curves: LossCurves


@dataclass
class GpuChanged(_Latest):
    """New monitor samples."""

    history: GpuHistory


@dataclass
class AgentStreamChanged(_Latest):
    """The model's reply so far, as it streams."""

    text: str


@dataclass
class CommandsAnswered(Message):
    """The engine handled commands that the screen sent."""

    commands: tuple[Command, ...]


@dataclass
class PollFailed(_Latest):
    """Reading the journal failed (``error``), or works again (None)."""

    error: str | None


@dataclass
class DetailLoaded(_Latest):
    """The experiment the researcher selected, read in full."""

    detail: ExperimentDetail | None
    number: int


@dataclass
class CommandSent(Message):
    """A command reached the journal."""

    kind: str
    payload: dict[str, Any]
    command_id: int
    then_exit: str | None = None


@dataclass
class CommandFailed(Message):
    """A command could not be written to the journal."""

    kind: str
    error: str


def delta_messages(delta: Delta) -> list[Message]:
    """The messages that carry a poll's changes to the app, in the order to apply them."""
    messages: list[Message] = []
    if delta.reset:
        messages.append(RunReset())
    if delta.status is not None:
        messages.append(StatusChanged(delta.status))
    if delta.ledger:
        messages.append(LedgerChanged(delta.ledger))
    if delta.events:
        messages.append(EventsAdded(delta.events))
    if delta.current_changed:
        messages.append(CurrentChanged(delta.current))
    if delta.loss is not None:
        messages.append(LossChanged(delta.loss))
    if delta.gpu is not None:
        messages.append(GpuChanged(delta.gpu))
    if delta.agent_stream is not None:
        messages.append(AgentStreamChanged(delta.agent_stream))
    if delta.answered:
        messages.append(CommandsAnswered(delta.answered))
    return messages
