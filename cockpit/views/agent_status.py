"""Who proposed what, and how the model's replies fare: what `cockpit status` and the
cockpit's status line say of the agent, read from the journal.

Each fact has one source. Who proposed experiment #N is that experiment's ``proposer`` (and
``model``) in the journal, as the ledger shows it; only the proposal in progress, which has
no experiment yet, is named by the state key ``asking``. The model server's health, the
model's unusable replies and its pause are the state keys the engine's `AgentSetup` writes
(``agent_state``/``agent_message``, ``agent_replies``, ``agent_paused``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent import names
from cockpit.store.state import EngineState

# The phases in which an experiment is in flight: being proposed, waiting, trained, scored.
IN_FLIGHT_PHASES = ("proposing", "awaiting_approval", "training", "evaluating")
RECENT_PROPOSERS = 5  # the experiments before the one in flight that status names


class ExperimentLike(Protocol):
    """What is read of an experiment (a journal `Experiment` or a ledger row)."""

    @property
    def number(self) -> int: ...

    @property
    def proposer(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class ProposedBy:
    """Who proposed one experiment. ``status`` is the experiment's, or ``proposing`` for the
    proposal in progress (``proposer`` is then the one being asked)."""

    experiment: int
    proposer: str | None
    model: str | None
    status: str

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "proposer": self.proposer,
            "model": self.model,
            "status": self.status,
        }

    @property
    def short(self) -> str:
        """``#4 built-in``, ``#5 LLM``: the ledger's way of naming a proposer."""
        name = names.label(self.proposer or None)
        return f"#{self.experiment} {name}"


# Why replies were unusable, in a word or two, for the status line.
SHORT_REASONS = {
    "echo": "echoing the prompt",
    "malformed": "not JSON",
    "not_found": "edits not found",
    "ambiguous": "ambiguous edits",
    "syntax": "syntax errors",
    "noop": "no-ops",
    "already_tried": "scripts tried before",
    "wrong_file": "edits of other files",
    "empty_search": "empty searches",
    "no_edits": "no edits",
    "overlap": "overlapping edits",
}


@dataclass(frozen=True)
class UnusableReplies:
    """The model's unusable replies since its last usable proposal (state ``agent_replies``)."""

    count: int
    reason: str
    message: str
    advice: str | None = None
    repeated: int = 0

    @classmethod
    def from_state(cls, value: Any) -> UnusableReplies | None:
        if not isinstance(value, Mapping) or not isinstance(value.get("count"), int):
            return None
        advice = value.get("advice")
        return cls(
            count=int(value["count"]),
            reason=str(value.get("reason") or ""),
            message=str(value.get("message") or ""),
            advice=str(advice) if advice else None,
            repeated=int(value.get("repeated") or 0),
        )

    @property
    def short_reason(self) -> str:
        """The most common reason in a word or two."""
        return SHORT_REASONS.get(self.reason, self.reason)


@dataclass(frozen=True)
class ModelPaused:
    """The model left alone for some proposals (state ``agent_paused``)."""

    proposals_left: int
    proposals: int
    reason: str

    @classmethod
    def from_state(cls, value: Any) -> ModelPaused | None:
        if not isinstance(value, Mapping) or not isinstance(value.get("proposals_left"), int):
            return None
        return cls(
            proposals_left=int(value["proposals_left"]),
            proposals=int(value.get("proposals") or value["proposals_left"]),
            reason=str(value.get("reason") or ""),
        )


def in_flight(
    state: EngineState,
    experiments: Mapping[int, ExperimentLike],
    *,
    running: bool,
) -> ProposedBy | None:
    """The experiment the engine works on, and who proposed it (None when it works on none).

    Once committed, its proposer is the journal's; while it is being proposed, the one being
    asked (state ``asking``), and no one between two requests or once the draft is done: who
    proposes next (state ``proposer``) is not asked for as long as the phase says proposing,
    and naming it as the one asked kept "asking optuna" on screen through a hang whose
    drafting had ended."""
    number = state.experiment
    if not running or state.phase not in IN_FLIGHT_PHASES or number is None:
        return None
    experiment = experiments.get(number)
    if experiment is not None:
        return ProposedBy(number, experiment.proposer, experiment.model, experiment.status)
    asking = state.asking
    return ProposedBy(number, asking, state.model if asking == names.LLM else None, "proposing")


def recent_proposers(
    experiments: Iterable[ExperimentLike],
    *,
    exclude: int | None = None,
    limit: int = RECENT_PROPOSERS,
) -> tuple[ProposedBy, ...]:
    """Who proposed the latest experiments, newest first (``exclude``: the one in flight)."""
    latest = sorted(
        (e for e in experiments if e.number != exclude), key=lambda e: e.number, reverse=True
    )
    return tuple(ProposedBy(e.number, e.proposer, e.model, e.status) for e in latest[:limit])


def describe_proposers(current: ProposedBy | None, recent: Iterable[ProposedBy]) -> str:
    """One line: ``#5 being proposed (asking the LLM), #4 built-in, #3 built-in, ...``."""
    parts = []
    if current is not None:
        if current.status == "proposing":
            asking = names.label(current.proposer or None, unknown="")
            asked = f" (asking the {asking} proposer)" if asking else ""
            parts.append(f"#{current.experiment} being proposed{asked}")
        else:
            parts.append(f"{current.short} (in flight)")
    parts += [proposed.short for proposed in recent]
    return ", ".join(parts)
