"""The engine's state in the journal: what it says about itself for the screens and `cockpit
status` to read (its phase, pid, heartbeat, the training it follows, the agent, the noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STOPPING_KEY = "stopping"  # the engine's state key of the stop it has accepted


@dataclass(frozen=True)
class PendingStop:
    """A stop the engine has accepted and not carried out yet (state ``stopping``): at once,
    or once the trainings in flight are done. The engine writes it when it applies the command
    and clears it when it starts and when it stops; it is shown only while an engine runs."""

    now: bool
    asked_at: float  # Unix time the engine accepted it

    @property
    def message(self) -> str:
        return "stopping now" if self.now else "stopping after the trainings in flight"

    def to_state(self) -> dict[str, Any]:
        """The state key and its value, for ``Journal.set_state``."""
        return {STOPPING_KEY: {"now": self.now, "asked_at": self.asked_at}}

    @staticmethod
    def cleared() -> dict[str, Any]:
        """The state key saying that no stop is pending, for ``Journal.set_state``."""
        return {STOPPING_KEY: None}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PendingStop | None:
        value = state.get(STOPPING_KEY)
        if not isinstance(value, Mapping) or not isinstance(value.get("asked_at"), (int, float)):
            return None
        return cls(now=bool(value.get("now")), asked_at=float(value["asked_at"]))

    def as_json(self) -> dict[str, Any]:
        return {"now": self.now, "asked_at": self.asked_at, "message": self.message}
