"""The engine's side of the agent: which proposer runs, and what it reports, into the journal.

A proposer reports `AgentEvent`s while it works. `AgentRecorder` turns them into journal
events (kind ``agent``, with ``data.type`` = rejected, fallback, resumed, paused, missed, health, ...)
and journal state, where `cockpit status` and the cockpit UI read them:

- ``proposer`` (who proposes next: ``llm``, or ``builtin`` while it stands in), ``model``;
- ``agent_state``, ``agent_message``: the model server's health;
- ``asking``: who is being asked for the proposal in progress (None between proposals);
- ``agent_replies``: what the model's unusable replies since its last usable proposal came to
  (`agent.replies.ReplyLog.summary`), ``agent_paused``: the model's pause, if it is paused;
- ``agent_stream``: the streamed reply so far;
- ``search_split``: the hybrid's current shares of the experiments (``{"llm": 0.3, "optuna":
  0.7}``), when the hybrid proposes.

Who proposed each experiment is not state: it is the experiment's ``proposer`` in the journal.
Streamed tokens are many and small: they are written at most a few times a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import names
from agent.builtin import BuiltinProposer
from agent.optimiser import OptunaProposer
from agent.proposal import AgentEvent, Proposer
from cockpit.config import Settings
from cockpit.store.journal import Journal

if TYPE_CHECKING:  # the Ollama client loads only for a run that uses it
    from agent.hybrid import HybridProposer
    from agent.ollama_backend import OllamaBackend

STREAM_FLUSH_SECONDS = 0.25
STREAM_KEEP_CHARS = 4000  # the tail of a reply that is kept in the state for the UI
# The events a headless engine prints, one line each (health changes show in `cockpit status`).
ECHOED = {
    "rejected": "  reply rejected: {message}",
    "fallback": "agent: {message}",
    "resumed": "agent: {message}",
    "paused": "agent: {message}",
}
# Kept in the state as long as nothing newer is said, and cleared between proposals.
AGENT_STATUS_KEYS = ("asking", "agent_replies", "agent_paused")
MISSES_READ = 500  # the latest agent events searched for the hybrid's missed turns


class AgentRecorder:
    """An `EventSink` that writes what a proposer reports into the journal."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.journal: Journal | None = None
        self.run_id: int | None = None
        # Where a headless engine says what the researcher should know (fallbacks, rejections).
        self.echo: Callable[[str], None] | None = None
        self._clock = clock
        self._stream: list[str] = []
        self._streamed = ""
        self._last_flush = 0.0

    def attach(self, journal: Journal, run_id: int) -> None:
        """Start recording into this journal, for this run."""
        self.journal, self.run_id = journal, run_id

    def __call__(self, event: AgentEvent) -> None:
        journal = self.journal
        if journal is None:
            return
        if event.kind == "token":
            self._stream.append(event.message)
            if self._clock() - self._last_flush >= STREAM_FLUSH_SECONDS:
                self.flush()
            return
        if event.kind == "reply":
            self.flush()
            return
        if event.kind == "asking":
            self.flush()
            journal.set_state(asking=event.details.get("proposer"))
            return
        if event.kind == "split":  # the hybrid's shares: state, not an event
            journal.set_state(search_split=event.details.get("split"))
            return
        self.flush()
        data = {"type": event.kind, **dict(event.details)}
        if event.kind == "rejected":
            data.setdefault("reason", event.message)
        journal.add_event("agent", event.message, run_id=self.run_id, data=data)
        if self.echo is not None and event.kind in ECHOED:
            self.echo(ECHOED[event.kind].format(message=event.message))
        if event.kind in ("health", "fallback", "resumed"):
            state = event.details.get("state")
            journal.set_state(
                agent_message=event.message,
                **({"agent_state": str(state)} if state is not None else {}),
            )
        active = event.details.get("active")
        if active is not None:  # who proposes from now on changed
            journal.set_state(proposer=str(active))

    def start_reply(self) -> None:
        """A new reply begins: the streamed text starts empty."""
        self._stream.clear()
        self._streamed = ""
        if self.journal is not None:
            self.journal.set_state(agent_stream="")

    def flush(self) -> None:
        """Write the streamed text that arrived since the last write."""
        if self.journal is None or not self._stream:
            return
        self._streamed = (self._streamed + "".join(self._stream))[-STREAM_KEEP_CHARS:]
        self._stream.clear()
        self._last_flush = self._clock()
        self.journal.set_state(agent_stream=self._streamed)


class AgentSetup:
    """The proposer a run uses, the recorder of what it reports, and its model server.

    `build_agent` makes one from the settings: the hybrid (the LLM and the optimiser, sharing
    the experiments), the LLM alone, the optimiser alone or the built-in nudger. With a model,
    the optimiser proposes while Ollama cannot answer; without Optuna, the nudger does.
    """

    def __init__(
        self,
        proposer: Proposer,
        recorder: AgentRecorder,
        backend: OllamaBackend | None = None,
        *,
        unload_before_training: bool = False,
        hybrid: HybridProposer | None = None,
    ) -> None:
        self.proposer = proposer
        self.recorder = recorder
        self.backend = backend
        self.unload_before_training = unload_before_training
        self.hybrid = hybrid

    def attach(self, journal: Journal, run_id: int) -> None:
        """Record into this journal, for this run, and take up what the journal says of the
        proposing so far: the hybrid's record of the model's missed turns."""
        self.recorder.attach(journal, run_id)
        if self.hybrid is None:
            return
        events = journal.events(run_id, kinds=["agent"], limit=MISSES_READ, latest=True)
        self.hybrid.restore(
            [
                int(data["ledger"])
                for data in (event.data or {} for event in events)
                if data.get("type") == "missed" and isinstance(data.get("ledger"), int)
            ]
        )

    @property
    def model(self) -> str | None:
        return self.backend.model if self.backend is not None else None

    @property
    def active(self) -> str:
        """The proposer that makes the next proposal (the stand-in while Ollama is away)."""
        return str(getattr(self.proposer, "active", self.proposer.name))

    def state(self) -> dict[str, object]:
        """What `cockpit status` and the UI show of the agent (the journal state keys of the
        module's docstring)."""
        values: dict[str, object] = {"proposer": self.active, "model": self.model}
        values.update(dict.fromkeys(AGENT_STATUS_KEYS))
        status = getattr(self.proposer, "status", None)
        if callable(status):
            values.update(status())
        health = getattr(self.proposer, "health", None)
        if health is not None:
            values["agent_state"] = str(health.state.value)
            values["agent_message"] = str(health.message)
        return values

    def start(self) -> None:
        """Ask the model server for its health now, so a missing model is said at once rather
        than after the baseline's training."""
        refresh = getattr(self.proposer, "refresh", None)
        if callable(refresh):
            refresh()

    def before_training(self, uses_gpu: bool) -> None:
        """Free the GPU of the model (keep_alive=0) before a training that needs it."""
        if self.backend is None or not self.unload_before_training or not uses_gpu:
            return
        from agent.ollama_backend import AgentUnavailable

        try:
            self.backend.unload()
        except AgentUnavailable:
            pass  # a server that is down holds no GPU memory

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def build_agent(settings: Settings, *, seed: int | None = None) -> AgentSetup:
    """The proposer named by ``engine.proposer``, ready to record into a journal."""
    recorder = AgentRecorder()
    seed = settings.trainer.seed if seed is None else seed
    search = settings.search
    builtin = BuiltinProposer(seed=seed, overrides=search.space)
    kind = settings.engine.proposer
    if kind == names.BUILTIN:
        return AgentSetup(builtin, recorder)
    optimiser = OptunaProposer(
        sampler=search.sampler,
        seed=seed,
        overrides=search.space,
        startup_trials=search.startup_trials,
        per_point=search.constants_per_point,
        last_resort=builtin,
        on_event=recorder,
    )
    if kind == names.OPTUNA:
        return AgentSetup(optimiser, recorder)
    from agent.fallback import FallbackProposer
    from agent.hybrid import Bandit, HybridProposer
    from agent.llm import LLMProposer
    from agent.ollama_backend import Backoff, OllamaBackend
    from agent.options import OllamaOptions

    agent = settings.agent
    backend = OllamaBackend(
        OllamaOptions(
            host=agent.host,
            model=agent.model,
            temperature=agent.temperature,
            num_ctx=agent.num_ctx,
            seed=agent.seed,
            timeout_seconds=agent.timeout_seconds,
            unload_before_training=agent.unload_before_training,
            retry_seconds=agent.retry_seconds,
            on_cpu=agent.on_cpu,
        )
    )
    llm = LLMProposer(backend, attempts=agent.attempts, on_event=recorder)
    hybrid = None
    if kind == names.HYBRID:
        hybrid = HybridProposer(
            llm,
            optimiser,
            optimiser.space,
            bandit=Bandit(floor=search.floor, window=search.window),
            on_event=recorder,
        )
    proposer = FallbackProposer(
        hybrid or llm, optimiser, backend, backoff=Backoff(agent.retry_seconds), on_event=recorder
    )
    return AgentSetup(
        proposer,
        recorder,
        backend,
        unload_before_training=agent.unload_before_training,
        hybrid=hybrid,
    )
