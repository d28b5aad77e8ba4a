"""The researcher's steering commands: one vocabulary for the command line, the cockpit and
the engine.

A command travels through the journal as a kind and a JSON payload; `Steer` is its one typed
form. The CLI and the cockpit build a `Steer` and post it; the engine reads it back with
`Steer.parse`, which refuses a malformed one with a message that says what was wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Kind(str, enum.Enum):
    """What the researcher asks of the engine."""

    PAUSE = "pause"  # start nothing new; what trains goes on
    RESUME = "resume"
    STOP_RUN = "stop_run"  # stop a training now (one experiment, or every one in flight)
    STOP_ENGINE = "stop_engine"  # after the trainings in flight, or now
    SET_MODE = "set_mode"  # autonomous or supervised
    NOTE = "note"  # a note for the agent
    APPROVE = "approve"  # a proposal waiting in supervised mode
    VETO = "veto"
    OVERRIDE_KEEP = "override_keep"  # keep a discarded experiment
    OVERRIDE_DISCARD = "override_discard"  # revert the kept experiment that is the best

    def __str__(self) -> str:
        return self.value


# The run modes (one owner: the settings, the journal, the CLI and the screen use these):
# autonomous trains every proposal, supervised waits for the researcher's approval.
AUTONOMOUS, SUPERVISED = "autonomous", "supervised"
MODES = (AUTONOMOUS, SUPERVISED)
# Kinds that name an experiment: required for overrides, optional (the waiting one, or every
# one in flight) for the others.
_NEEDS_EXPERIMENT = {Kind.OVERRIDE_KEEP, Kind.OVERRIDE_DISCARD}
_MAY_NAME_EXPERIMENT = {Kind.APPROVE, Kind.VETO, Kind.STOP_RUN, *_NEEDS_EXPERIMENT}


@dataclass(frozen=True)
class Steer:
    """One steering command."""

    kind: Kind
    experiment: int | None = None  # its number
    reason: str = ""  # a veto's reason, for the agent
    text: str = ""  # a note
    mode: str = ""  # set_mode's mode
    now: bool = False  # stop_engine: at once, interrupting the trainings in flight

    def __post_init__(self) -> None:
        if self.kind in _NEEDS_EXPERIMENT and self.experiment is None:
            raise ValueError(f"{self.kind} needs an experiment number")
        if self.experiment is not None and self.kind not in _MAY_NAME_EXPERIMENT:
            raise ValueError(f"{self.kind} does not take an experiment")
        if self.kind is Kind.SET_MODE and self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use {' or '.join(MODES)}")
        if self.kind is Kind.NOTE and not self.text.strip():
            raise ValueError("a note needs text")

    def payload(self) -> dict[str, Any]:
        """The journal's JSON form (what `parse` reads back)."""
        payload: dict[str, Any] = {}
        if self.experiment is not None:
            payload["experiment"] = self.experiment
        if self.kind is Kind.VETO:
            payload["reason"] = self.reason
        if self.kind is Kind.NOTE:
            payload["text"] = self.text
        if self.kind is Kind.SET_MODE:
            payload["mode"] = self.mode
        if self.kind is Kind.STOP_ENGINE:
            payload["now"] = self.now
        return payload

    @classmethod
    def parse(cls, kind: str, payload: Mapping[str, Any]) -> Steer:
        """The command a journal row holds; ValueError says what is wrong with it."""
        try:
            known = Kind(kind)
        except ValueError:
            names = ", ".join(k.value for k in Kind)
            raise ValueError(f"unknown command {kind!r}; the commands are {names}") from None
        experiment = payload.get("experiment")
        if experiment is not None and (
            isinstance(experiment, bool) or not isinstance(experiment, int)
        ):
            raise ValueError(f"{kind}: the experiment must be a number, got {experiment!r}")
        return cls(
            known,
            experiment=experiment,
            reason=str(payload.get("reason", "")).strip(),
            text=str(payload.get("text", "")).strip(),
            mode=str(payload.get("mode", "")),
            now=bool(payload.get("now", False)),
        )
