"""The engine's state in the journal: what it says about itself for the screens and `cockpit
status` to read. `EngineState` is the one owner of the state's keys: the engine writes them
with ``Journal.set_state(key=value, ...)``, which refuses a key it does not name, and every
reader parses them once, through `EngineState.from_state`, into typed fields.

Whether an engine runs is not in the state: it is one question with one answer, whether the
workspace's lock is held (`cockpit.store.lock.engine_lock_held`). A pid in the state is not
enough: a killed engine leaves its pid behind, and the system may give that pid to another
process; the lock dies with the engine.
"""

from __future__ import annotations

import dataclasses
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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number else None


def _text(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class EngineState:
    """Everything the engine says about itself, one field per state key. Values that do not
    have their field's type (a journal written by another version, a hand edit) read as the
    field's default: a reader never fails on the state."""

    # The engine: its pid, its run's tag, its phase and when it last said it was alive.
    pid: int | None = None
    run: str | None = None
    phase: str | None = None  # starting, proposing, training, evaluating, paused, stopped...
    heartbeat: float | None = None
    # The training it follows (the latest started): its experiment and seconds left.
    experiment: int | None = None
    time_left: float | None = None
    train_pid: int | None = None
    train_pids: tuple[int, ...] = ()
    # One entry per worker: worker, device, experiment, phase, started_at, budget_seconds, pid.
    workers: tuple[Mapping[str, Any], ...] = ()
    stopping: PendingStop | None = None  # a stop it accepted and has not carried out yet
    # The agent: who proposes, with which model, how its server is, who is asked right now.
    proposer: str | None = None
    model: str | None = None
    agent_state: str | None = None
    agent_message: str | None = None
    asking: str | None = None
    agent_replies: Mapping[str, Any] | None = None  # the model's unusable replies, summed up
    agent_paused: Mapping[str, Any] | None = None  # the model's pause, while it lasts
    agent_stream: str = ""  # the reply being streamed, its last characters
    search_split: Mapping[str, Any] | None = None  # the hybrid's shares of the next proposals
    # The noise: the margin a keep must clear, and the spread and runs it came from (the runs
    # of noise_scripts scripts; noise_left_out more lay too far apart to pool).
    keep_margin_bpb: float | None = None
    noise_spread_bpb: float | None = None
    noise_runs: int | None = None
    noise_scripts: int | None = None
    noise_left_out: int | None = None
    # The spread of the difference between scripts of the same shapes on one seed, and the
    # pairs of them it was measured on (a keep of such a script is judged with it).
    noise_paired_bpb: float | None = None
    noise_pairs: int | None = None
    # The run's own spread, and the one the workspace's comparable runs measured that it is
    # pooled with (noise_spread_bpb is the pooled one), from how many runs.
    noise_measured_bpb: float | None = None
    noise_prior_bpb: float | None = None
    noise_prior_runs: int | None = None
    # What confined the latest training (trainer.confine.Confinement.to_dict()).
    confinement: Mapping[str, Any] | None = None

    @classmethod
    def from_state(cls, values: Mapping[str, Any]) -> EngineState:
        """The state from the journal's keys and values (``Journal.all_state()``)."""
        get = values.get
        return cls(
            pid=_int(get("pid")),
            run=_text(get("run")),
            phase=_text(get("phase")),
            heartbeat=_float(get("heartbeat")),
            experiment=_int(get("experiment")),
            time_left=_float(get("time_left")),
            train_pid=_int(get("train_pid")),
            train_pids=tuple(p for p in get("train_pids") or () if _int(p) is not None),
            workers=tuple(w for w in get("workers") or () if isinstance(w, Mapping)),
            stopping=PendingStop.from_state(values),
            proposer=_text(get("proposer")),
            model=_text(get("model")),
            agent_state=_text(get("agent_state")),
            agent_message=_text(get("agent_message")),
            asking=_text(get("asking")),
            agent_replies=_mapping(get("agent_replies")),
            agent_paused=_mapping(get("agent_paused")),
            agent_stream=str(get("agent_stream") or ""),
            search_split=_mapping(get("search_split")),
            keep_margin_bpb=_float(get("keep_margin_bpb")),
            noise_spread_bpb=_float(get("noise_spread_bpb")),
            noise_runs=_int(get("noise_runs")),
            noise_scripts=_int(get("noise_scripts")),
            noise_left_out=_int(get("noise_left_out")),
            noise_paired_bpb=_float(get("noise_paired_bpb")),
            noise_pairs=_int(get("noise_pairs")),
            noise_measured_bpb=_float(get("noise_measured_bpb")),
            noise_prior_bpb=_float(get("noise_prior_bpb")),
            noise_prior_runs=_int(get("noise_prior_runs")),
            confinement=_mapping(get("confinement")),
        )


# The state's keys: those `Journal.set_state` accepts.
KEYS = frozenset(field.name for field in dataclasses.fields(EngineState))
