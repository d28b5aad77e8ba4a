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
    proposer: str | None = None  # who proposed it: llm, optuna, builtin, ...


RUNNING = "running"


@dataclass(frozen=True)
class TrialRecord:
    """A script of this run that was trained, or is being trained (status ``running``): what
    the optimiser rebuilds its study from."""

    number: int
    script: str
    status: str  # keep, discard, crash, timeout, or running
    val_bpb: float | None = None
    proposer: str | None = None

    @property
    def finished(self) -> bool:
        return self.status != RUNNING


def since_last_keep(ledger: Sequence[LedgerEntry]) -> int:
    """How many experiments were decided since the latest keep (the baseline counts as one)."""
    count = 0
    for entry in reversed(ledger):
        if entry.status == "keep":
            break
        if entry.status in ("discard", "crash", "timeout"):
            count += 1
    return count


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
    # The scripts trained in this run (the baseline first) and those in flight, with their
    # results; empty where the engine does not track them.
    trials: Sequence[TrialRecord] = ()
    # After this many experiments without a keep the proposers widen (0: never).
    plateau_after: int = 0
    # Set by the hybrid for the LLM: the constants the optimiser tunes, and the structures
    # (scripts up to their values) already trained: changing only those numbers is refused.
    tuned: frozenset[str] = frozenset()
    tuned_structures: frozenset[str] = frozenset()

    @property
    def on_plateau(self) -> bool:
        return self.plateau_after > 0 and since_last_keep(self.ledger) >= self.plateau_after


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
