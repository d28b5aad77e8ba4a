"""The LLM when it can, a stand-in when it cannot: research goes on without a model.

`FallbackProposer` asks the model server for its health before the first proposal and,
while it is unhealthy, again whenever the backoff allows. While the server is down, the
model is not pulled or replies time out, the stand-in (the built-in proposer, which needs
no model) proposes instead, and events say so. When the model gave no usable edit for one
proposal, the stand-in makes that one, as it does when the engine turned down the model's
proposals too often in a row (scripts already trained, or refused by the integrity checks). A
crash can only be fixed by the model: without one, `NoProposal` lets the engine record the
crash as it is.

A model that gives nothing usable, proposal after proposal (echoes of the answer's shape,
malformed replies, edits that do not apply, repeats, replies that do not come in time), is
paused (`agent.replies.ModelPause`): the stand-in makes the next proposals, an event says why
and what to do, and then the model is asked again. Only proposals the model was asked for
count: in the hybrid, the optimiser's own turns neither clear the model's record nor end its
count. `replies` keeps what the model's unusable replies came to, for `cockpit status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from agent import names
from agent.llm import LLMProposer, ProposalFailed
from agent.ollama_backend import AgentState, AgentUnavailable, Backoff, Health
from agent.proposal import AgentEvent, EventSink, NoProposal, Proposal, ProposalContext, Proposer
from agent.replies import ModelPause, Refusal, ReplyLog

DEFAULT_RETRY_SECONDS = 60.0


class HealthProbe(Protocol):
    """What the fallback needs of a model server: whether it can answer now."""

    def check(self) -> Health:
        """The server's state now; never raises."""
        ...


def _state_name(state: AgentState) -> str:
    return str(state.value)


def _label(proposer: Proposer) -> str:
    return names.label(proposer.name)


class FallbackProposer:
    """Proposes with ``preferred`` while its backend is healthy, else with ``standin``."""

    def __init__(
        self,
        preferred: Proposer,
        standin: Proposer,
        backend: HealthProbe,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventSink | None = None,
    ) -> None:
        self.preferred = preferred
        self.standin = standin
        self.backend = backend
        self.backoff = backoff if backoff is not None else Backoff(DEFAULT_RETRY_SECONDS)
        self.clock = clock
        self.on_event = on_event
        self.name = preferred.name
        self.health: Health | None = None  # the last health seen; None before the first check
        self.active = preferred.name  # who proposes next: the preferred, or the stand-in
        self.asking: str | None = None  # who is being asked for a proposal right now
        self.model: str | None = getattr(backend, "model", None)
        self.replies = ReplyLog(self.model)
        self.pause = ModelPause()

    # --- events ----------------------------------------------------------------------------

    def _emit(self, kind: str, message: str, details: Mapping[str, object] | None = None) -> None:
        if self.on_event is not None:
            self.on_event(AgentEvent(kind, message, dict(details or {})))

    def _record(self, health: Health) -> None:
        """Keep ``health``; say so when the state changed."""
        previous = self.health
        self.health = health
        if previous is None or previous.state != health.state:
            self._emit("health", health.message, {"state": _state_name(health.state)})

    def _stand_in(self, health: Health) -> None:
        """The stand-in takes over until the model server is healthy again."""
        if self.active != self.standin.name:
            self.active = self.standin.name
            self._emit(
                "fallback",
                f"{health.message}; the {_label(self.standin)} proposer stands in until it is back",
                {
                    "state": _state_name(health.state),
                    "proposer": self.standin.name,
                    "active": self.standin.name,
                },
            )

    def _resume(self, health: Health) -> None:
        if self.active != self.preferred.name:
            self.active = self.preferred.name
            self._emit(
                "resumed",
                f"{health.message}; the {_label(self.preferred)} proposer is back",
                {
                    "state": _state_name(health.state),
                    "proposer": self.preferred.name,
                    "active": self.preferred.name,
                },
            )

    # --- health ----------------------------------------------------------------------------

    def _healthy(self) -> bool:
        """Whether the preferred proposer should be asked now (probing when it is time)."""
        now = self.clock()
        health = self.health
        if health is not None and health.state == AgentState.READY:
            return True
        if health is not None and not self.backoff.ready_to_retry(now):
            return False
        health = self.backend.check()
        self._record(health)
        if health.state == AgentState.READY:
            # The backoff is reset by a reply, not by a probe: a server that answers probes
            # but times out on every reply is still tried less and less often.
            self._resume(health)
            return True
        self.backoff.failed(now)
        self._stand_in(health)
        return False

    def refresh(self) -> Health | None:
        """Check the server now when it is time to (at start, after the backoff); the health."""
        self._healthy()
        return self.health

    # --- proposing -------------------------------------------------------------------------

    def _ask(self, proposer: Proposer, context: ProposalContext) -> Proposal:
        """``proposer``'s proposal, with who is being asked said while it works."""
        self.asking = proposer.name
        self._emit("asking", f"asking the {_label(proposer)} proposer", {"proposer": proposer.name})
        try:
            return proposer.propose(context)
        finally:
            self.asking = None

    def propose(self, context: ProposalContext) -> Proposal:
        """A proposal of the preferred proposer when it can make one, else of the stand-in."""
        if self.pause.active:
            return self._paused(context)
        if self._healthy():
            try:
                proposal = self._ask(self.preferred, context)
            except AgentUnavailable as exc:
                self._record(exc.health)
                self.backoff.failed(self.clock())
                self._stand_in(exc.health)
                if exc.state == AgentState.TIMEOUT:
                    # The server is there; the model did not write its reply in time.
                    self.replies.refused([Refusal("timeout")])
                    self._model_failed()
            except ProposalFailed as exc:
                self.backoff.succeeded()  # the server answered; the replies were the trouble
                self.replies.refused(exc.refusals)
                paused = exc.model_failed and self._model_failed()
                if context.fix is not None:
                    raise
                if not paused:
                    self._emit(
                        "fallback",
                        f"{exc}; the {_label(self.standin)} proposer stands in for this experiment",
                        {"proposer": self.standin.name, "reason": exc.kind},
                    )
                return self._ask(self.standin, context)
            else:
                if proposal.proposer == LLMProposer.name:
                    # Only the model's own proposals speak of it: the hybrid's optimiser turns
                    # neither clear its record nor end its count towards a pause.
                    self.backoff.succeeded()
                    self.replies.usable()
                    self.pause.usable()
                return proposal
        if context.fix is not None:
            reason = self.health.message if self.health is not None else "no health check yet"
            raise NoProposal(f"no model available to fix the crash ({reason})")
        return self._ask(self.standin, context)

    def propose_instead(self, context: ProposalContext, reason: str) -> Proposal:
        """A proposal of the stand-in for this one experiment, for a reason of the engine's
        (the preferred proposer's proposals kept being turned down)."""
        self._emit(
            "fallback",
            f"{reason}; the {_label(self.standin)} proposer stands in for this experiment",
            {"proposer": self.standin.name, "reason": "turned_down"},
        )
        return self._ask(self.standin, context)

    # --- the pause -------------------------------------------------------------------------

    def _model_failed(self) -> bool:
        """The model gave nothing usable for this proposal: count it towards a pause; whether
        the model is paused from now on."""
        summary = self.replies.summary()
        reason = str(summary["message"]) if summary is not None else "its replies were unusable"
        if not self.pause.failed(reason):
            return False
        self._start_pause()
        return True

    def _start_pause(self) -> None:
        """The model gave nothing usable, proposal after proposal: leave it alone a while."""
        self.active = self.standin.name
        summary = self.replies.summary() or {}
        pause = self.pause
        advice = f"; {summary['advice']}" if summary.get("advice") else ""
        self._emit(
            "paused",
            f"{pause.reason}{advice}. "
            f"The model is not asked for the next {pause.length} proposals: the "
            f"{_label(self.standin)} proposer stands in, then the model is asked again",
            {
                "proposer": self.standin.name,
                "active": self.standin.name,
                "reason": str(summary.get("reason") or ""),
                "proposals": pause.length,
            },
        )

    def _paused(self, context: ProposalContext) -> Proposal:
        """A proposal while the model is paused: the stand-in's (a crash stays unfixed)."""
        if context.fix is not None:
            raise NoProposal(f"the model is paused ({self.pause.reason})")
        model = f"the model ({self.model})" if self.model else "the model"
        length = self.pause.length
        proposal = self._ask(self.standin, context)
        if self.pause.skip():
            self.active = self.preferred.name
            self._emit(
                "resumed",
                f"{model} is asked again from the next proposal, after {length} proposals of "
                f"the {_label(self.standin)} proposer",
                {"proposer": self.preferred.name, "active": self.preferred.name},
            )
        return proposal

    def status(self) -> dict[str, object]:
        """What `cockpit status` shows of the proposing beyond the server's health: who is
        being asked now, what the model's unusable replies came to, and its pause."""
        return {
            "asking": self.asking,
            "agent_replies": self.replies.summary(),
            "agent_paused": self.pause.summary(),
        }
