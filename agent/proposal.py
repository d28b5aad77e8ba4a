"""What a proposer gets and what it gives back.

A proposer turns the current best script (and what was tried so far) into a proposal: a
short description for the ledger, the hypothesis behind it, and the complete new script.
It imports nothing of cockpit: the engine hands it plain data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DESCRIPTION_LIMIT = 60


def script_hash(text: str) -> str:
    """The identity of a script's content: the same text is never trained twice."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    """One experiment as a proposer sees it."""

    number: int
    description: str
    status: str  # keep, discard, crash, ...
    val_bpb: float | None = None
    delta: float | None = None  # against the best at the time; negative is better


@dataclass(frozen=True)
class CrashReport:
    """An experiment that failed, handed back to the proposer to fix."""

    number: int
    description: str
    script: str  # the script that failed
    outcome: str  # crash, timeout, oom, nan, ...
    log_tail: str  # the last lines of its log: the traceback, usually


@dataclass(frozen=True)
class AgentEvent:
    """Something a proposer reports while it works, for the journal and the UI.

    kinds: ``token`` (streamed reply text), ``reply`` (a whole reply arrived),
    ``rejected`` (a reply refused; ``message`` is the reason sent back to the model),
    ``health`` (the model server's state changed), ``fallback`` (another proposer stands
    in) and ``resumed`` (the preferred proposer is back).
    """

    kind: str
    message: str
    details: Mapping[str, object] = field(default_factory=dict)


EventSink = Callable[[AgentEvent], None]


@dataclass(frozen=True)
class ProposalContext:
    """Everything a proposer may use to make its next proposal."""

    best_script: str
    device: str = "cpu"  # the device the script trains on: picks a constant's branch
    tried_hashes: frozenset[str] = frozenset()
    ledger: Sequence[LedgerEntry] = ()
    notes: Sequence[str] = ()  # the researcher's notes for the agent, oldest first
    vetoes: Sequence[str] = ()  # "description: reason" of vetoed proposals, oldest first
    # "description: reason" of proposals the engine refused before training (integrity
    # checks), oldest first
    refused: Sequence[str] = ()
    program: str = ""  # the workspace's program.md
    fix: CrashReport | None = None  # set when the proposer is asked to fix a failure
    # Descriptions of the experiments being trained or waiting to be (other workers'): an
    # idea among them is not to be proposed again.
    in_flight: Sequence[str] = ()


@dataclass(frozen=True)
class Proposal:
    description: str
    hypothesis: str
    script: str
    proposer: str
    model: str | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def script_hash(self) -> str:
        return script_hash(self.script)


class NoProposal(Exception):
    """The proposer has nothing (new) to propose; the message says why."""


class Proposer(Protocol):
    """Anything that can propose the next experiment."""

    name: str

    def propose(self, context: ProposalContext) -> Proposal:
        """The next proposal, or NoProposal when there is none to make."""
        ...
