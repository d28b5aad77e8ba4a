"""The LLM proposer: asks a local model for one experiment as SEARCH/REPLACE edits.

One proposal is a short conversation. The model gets the prompt of `agent.prompt` and
answers with a JSON object (``format=`` holds the schema); the reply is validated and its
edits applied to the script. A reply that cannot be used (malformed JSON, an edit that does
not match, a syntax error, a script tried before) goes back to the model with the reason,
up to ``attempts`` replies in all; none of them costs a training run. A reply the same as
one already refused for the same script (in this proposal or an earlier one) would be
refused again for the same reason (an echo of the answer's shape or a reply that is not the
JSON asked for, whatever the script): the model is not asked again for this proposal. When
every reply was unusable, `ProposalFailed` says why. When the model server itself is in
trouble the backend's `AgentUnavailable` goes through untouched, for `FallbackProposer` to
handle.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from agent import names
from agent.edits import Edit, EditRejected, apply_proposal, describe_edits
from agent.ollama_backend import ChatReply
from agent.prompt import (
    ECHO,
    PromptTooLarge,
    ReplyRejected,
    add_feedback,
    build_messages,
    parse_reply,
    reply_schema,
)
from agent.proposal import AgentEvent, EventSink, NoProposal, Proposal, ProposalContext
from agent.replies import Refusal, reason_words
from agent.space import numbers_only

REPLY_SHOWN_CHARS = 2000  # how much of a rejected reply an event carries
REFUSED_REMEMBERED = 64  # refused replies kept to recognise a repeat


class ProposalFailed(NoProposal):
    """The model gave no usable proposal; the message gives the last reason.

    ``refusals``: each refused reply, in order; ``repeated``: the model was not asked again
    because a reply repeated one already refused."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        attempts: int,
        refusals: Sequence[Refusal] = (),
        repeated: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.refusals = tuple(refusals)
        self.repeated = repeated

    @property
    def model_failed(self) -> bool:
        """Whether the model was asked and gave nothing usable (every reply refused, a repeat
        included); False when it was not asked (the prompt did not fit its context)."""
        return bool(self.refusals)


# Kinds of refusal that depend on the reply alone, not on the script it was meant for.
REFUSED_WHATEVER_THE_SCRIPT = frozenset({ECHO, "malformed"})


def reply_fingerprint(reply: str, script: str = "") -> str:
    """The identity of a reply (to a script, when given): the same reply to the same script
    is refused for the same reason."""
    text = " ".join(reply.split())
    return hashlib.sha256(f"{script}\0{text}".encode()).hexdigest()


class ChatBackend(Protocol):
    """What the proposer needs of a model server (`agent.ollama_backend.OllamaBackend`)."""

    @property
    def model(self) -> str:
        """The model's name, for the ledger."""
        ...

    @property
    def num_ctx(self) -> int:
        """The model's context window in tokens."""
        ...

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        schema: dict[str, Any],
        on_token: Callable[[str], None] | None = None,
    ) -> ChatReply:
        """One reply to ``messages``, constrained to ``schema``."""
        ...


class LLMProposer:
    """Proposes experiments with a local LLM, retrying rejected replies with the reason."""

    name = names.LLM

    def __init__(
        self,
        backend: ChatBackend,
        *,
        attempts: int,
        filename: str = "train.py",
        on_event: EventSink | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be 1 or more, not {attempts}")
        self.backend = backend
        self.attempts = attempts
        self.filename = filename
        self.on_event = on_event
        # Replies refused so far (fingerprint: kind and reason), the oldest forgotten first.
        self._refused: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def _emit(self, kind: str, message: str, details: Mapping[str, object] | None = None) -> None:
        if self.on_event is not None:
            self.on_event(AgentEvent(kind, message, dict(details or {})))

    def _on_token(self, chunk: str) -> None:
        if chunk:
            self._emit("token", chunk)

    def propose(self, context: ProposalContext) -> Proposal:
        """The model's next experiment, with its edits applied to the script.

        In fix mode the edits apply to the script that failed, else to the best script.
        Raises `ProposalFailed` when no reply was usable, and lets `AgentUnavailable` through.
        """
        try:
            build = build_messages(context, num_ctx=self.backend.num_ctx, filename=self.filename)
        except PromptTooLarge as exc:
            raise ProposalFailed(str(exc), kind="prompt_too_large", attempts=0) from exc
        schema = reply_schema()
        messages: list[dict[str, str]] = build.messages
        prompt_tokens = reply_tokens = 0
        seconds = 0.0
        kind, reason = "", ""
        refusals: list[Refusal] = []
        for attempt in range(1, self.attempts + 1):
            reply = self.backend.chat(messages, schema=schema, on_token=self._on_token)
            prompt_tokens += reply.prompt_tokens or 0
            reply_tokens += reply.reply_tokens or 0
            seconds += reply.seconds
            self._emit(
                "reply",
                f"reply {attempt} of at most {self.attempts}: {reply.reply_tokens or '?'} "
                f"tokens in {reply.seconds:.1f} s",
                {
                    "attempt": attempt,
                    "prompt_tokens": reply.prompt_tokens,
                    "reply_tokens": reply.reply_tokens,
                    "seconds": reply.seconds,
                },
            )
            fingerprint = reply_fingerprint(reply.content, build.script)
            seen = self._refused.get(fingerprint) or self._refused.get(
                reply_fingerprint(reply.content)
            )
            if seen is not None:
                kind, reason = seen
                refusals.append(Refusal(kind, repeated=True))
                self._emit(
                    "rejected",
                    f"the same reply as one already refused ({reason_words(kind, 1)}); "
                    "the model is not asked again for this proposal",
                    {
                        "kind": kind,
                        "attempt": attempt,
                        "repeated": True,
                        "reply": reply.content[:REPLY_SHOWN_CHARS],
                    },
                )
                raise ProposalFailed(
                    f"the model sent again a reply already refused ({reason_words(kind, 1)}), "
                    "so it was not asked again",
                    kind=kind,
                    attempts=attempt,
                    refusals=refusals,
                    repeated=True,
                )
            try:
                parsed = parse_reply(reply.content)
                edits = [Edit(block.search, block.replace) for block in parsed.edits]
                script = apply_proposal(
                    build.script,
                    edits,
                    filename=self.filename,
                    tried_hashes=context.tried_hashes,
                )
                numbers = numbers_only(script, context)
                if numbers is not None:
                    raise EditRejected("numbers_only", numbers)
            except (ReplyRejected, EditRejected) as exc:
                kind, reason = exc.kind, exc.message
            else:
                return Proposal(
                    description=parsed.description,
                    hypothesis=parsed.hypothesis,
                    script=script,
                    proposer=self.name,
                    model=self.backend.model,
                    details={
                        "edits": len(edits),
                        "attempts": attempt,
                        "prompt_tokens": prompt_tokens,
                        "reply_tokens": reply_tokens,
                        "seconds": round(seconds, 3),
                        "estimated_prompt_tokens": build.estimated_tokens,
                        "left_out": dict(build.left_out),
                        "diff": describe_edits(build.script, script),
                    },
                )
            refusals.append(Refusal(kind))
            if kind in REFUSED_WHATEVER_THE_SCRIPT:
                fingerprint = reply_fingerprint(reply.content)
            self._remember(fingerprint, kind, reason)
            self._emit(
                "rejected",
                reason,
                {"kind": kind, "attempt": attempt, "reply": reply.content[:REPLY_SHOWN_CHARS]},
            )
            messages = add_feedback(build, reply.content, reason)
        replies = "1 reply" if self.attempts == 1 else f"{self.attempts} replies"
        raise ProposalFailed(
            f"the model gave no usable edit in {replies}: {reason}",
            kind=kind,
            attempts=self.attempts,
            refusals=refusals,
        )

    def _remember(self, fingerprint: str, kind: str, reason: str) -> None:
        self._refused[fingerprint] = (kind, reason)
        self._refused.move_to_end(fingerprint)
        while len(self._refused) > REFUSED_REMEMBERED:
            self._refused.popitem(last=False)
