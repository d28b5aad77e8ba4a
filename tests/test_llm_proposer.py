"""The LLM proposer and its fallback, with the real `ollama` client against a scripted server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.builtin import BuiltinProposer
from agent.fallback import FallbackProposer
from agent.llm import LLMProposer, ProposalFailed
from agent.ollama_backend import AgentState, AgentUnavailable, Backoff, OllamaBackend
from agent.options import OllamaOptions
from agent.prompt import reply_schema
from agent.proposal import AgentEvent, CrashReport, NoProposal, ProposalContext, script_hash
from tests.conftest import REPO
from tests.ollama_server import EchoExample, ErrorReply, Hang, OllamaDouble, Reply

SCRIPT = (REPO / "trainer" / "train.py").read_text()
PROGRAM = (REPO / "cockpit" / "template" / "program.md").read_text()
MODEL = "qwen2.5-coder:7b"
RAISE_LR = {"search": "LEARNING_RATE = 0.003", "replace": "LEARNING_RATE = 0.004"}


def answer(*edits: dict[str, str], description: str = "raise the learning rate to 0.004") -> str:
    return json.dumps(
        {
            "description": description,
            "hypothesis": "The loss still falls steeply at the end, so a higher rate helps.",
            "edits": list(edits) or [RAISE_LR],
        }
    )


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend(ollama_server: OllamaDouble) -> Iterator[OllamaBackend]:
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model=MODEL, timeout_seconds=5.0)
    )
    yield backend
    backend.close()


@pytest.fixture
def events() -> list[AgentEvent]:
    return []


def proposer(backend: OllamaBackend, events: list[AgentEvent], attempts: int = 3) -> LLMProposer:
    return LLMProposer(backend, attempts=attempts, on_event=events.append)


def chats(server: OllamaDouble) -> list[dict[str, Any]]:
    return [request.body for request in server.requests_to("/api/chat")]


def of_kind(events: list[AgentEvent], kind: str) -> list[AgentEvent]:
    return [event for event in events if event.kind == kind]


CONTEXT = ProposalContext(best_script=SCRIPT, program=PROGRAM)


# --- the LLM proposer ------------------------------------------------------------------------


def test_a_valid_reply_becomes_a_proposal_with_its_edit_applied(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    ollama_server.script(Reply(answer(), chunk_size=16))
    proposal = proposer(backend, events).propose(CONTEXT)
    assert proposal.script == SCRIPT.replace("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.004")
    assert proposal.description == "raise the learning rate to 0.004"
    assert proposal.hypothesis.startswith("The loss still falls steeply")
    assert (proposal.proposer, proposal.model) == ("llm", MODEL)
    assert proposal.details["edits"] == 1 and proposal.details["attempts"] == 1
    assert "+LEARNING_RATE = 0.004" in str(proposal.details["diff"])
    assert int(str(proposal.details["prompt_tokens"])) > 1000  # the whole script went out
    [request] = chats(ollama_server)
    assert request["model"] == MODEL and request["format"] == reply_schema()
    assert request["options"]["num_ctx"] == 16384
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert SCRIPT.rstrip("\n") in request["messages"][1]["content"]
    assert of_kind(events, "rejected") == []


def test_tokens_are_streamed_as_events(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    content = answer()
    ollama_server.script(Reply(content, chunk_size=10))
    proposer(backend, events).propose(CONTEXT)
    tokens = [event.message for event in of_kind(events, "token")]
    assert len(tokens) == -(-len(content) // 10)  # one event per streamed piece
    assert "".join(tokens) == content
    # The reply event comes after the last token.
    kinds = [event.kind for event in events]
    assert kinds.index("reply") > max(i for i, kind in enumerate(kinds) if kind == "token")


def test_malformed_json_is_sent_back_and_the_next_reply_is_used(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    broken = answer()[:-2]  # cut short: no closing brackets
    ollama_server.script(Reply(broken), Reply(answer()))
    proposal = proposer(backend, events).propose(CONTEXT)
    assert proposal.details["attempts"] == 2
    [rejected] = of_kind(events, "rejected")
    assert rejected.details["kind"] == "malformed" and rejected.details["attempt"] == 1
    assert rejected.details["reply"] == broken
    assert "not valid JSON" in rejected.message
    first, second = chats(ollama_server)
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": broken}
    assert rejected.message in second["messages"][3]["content"]


def test_a_search_that_matches_nothing_goes_back_to_the_model(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    missing = {"search": "LEARNING_RATE = 0.01", "replace": "LEARNING_RATE = 0.02"}
    ollama_server.script(Reply(answer(missing)), Reply(answer()))
    proposal = proposer(backend, events).propose(CONTEXT)
    assert "LEARNING_RATE = 0.004" in proposal.script
    [rejected] = of_kind(events, "rejected")
    assert rejected.details["kind"] == "not_found"
    assert "was not found in train.py" in rejected.message
    feedback = chats(ollama_server)[1]["messages"][-1]
    assert feedback["role"] == "user"
    assert rejected.message in feedback["content"]
    assert "LEARNING_RATE = 0.003" in feedback["content"]  # the closest real line is shown


def test_an_edit_that_breaks_the_syntax_is_rejected(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    breaking = {"search": "def train(ctx):", "replace": "def train(ctx)"}
    ollama_server.script(Reply(answer(breaking)), Reply(answer()))
    proposal = proposer(backend, events).propose(CONTEXT)
    assert "def train(ctx):" in proposal.script
    [rejected] = of_kind(events, "rejected")
    assert rejected.details["kind"] == "syntax"
    assert "not valid Python" in chats(ollama_server)[1]["messages"][-1]["content"]


def test_a_script_tried_before_is_rejected(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    tried = SCRIPT.replace("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.004")
    context = ProposalContext(best_script=SCRIPT, tried_hashes=frozenset({script_hash(tried)}))
    lower = {"search": "LEARNING_RATE = 0.003", "replace": "LEARNING_RATE = 0.002"}
    ollama_server.script(Reply(answer()), Reply(answer(lower, description="lower the rate")))
    proposal = proposer(backend, events).propose(context)
    assert "LEARNING_RATE = 0.002" in proposal.script
    assert [e.details["kind"] for e in of_kind(events, "rejected")] == ["already_tried"]


def test_unusable_replies_until_the_attempts_run_out(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    noop = {"search": "LEARNING_RATE = 0.003", "replace": "LEARNING_RATE = 0.003"}
    ollama_server.script(Reply("not json at all"), Reply(answer(noop)), Reply(answer()))
    with pytest.raises(ProposalFailed) as caught:
        proposer(backend, events, attempts=2).propose(CONTEXT)
    assert isinstance(caught.value, NoProposal)
    assert str(caught.value).startswith("the model gave no usable edit in 2 replies: ")
    assert "unchanged" in str(caught.value)  # the last reason: a no-op
    assert [e.details["attempt"] for e in of_kind(events, "rejected")] == [1, 2]
    assert len(chats(ollama_server)) == 2 and ollama_server.pending == 1


def test_a_context_window_too_small_for_the_script_asks_nothing_and_says_why(
    ollama_server: OllamaDouble, events: list[AgentEvent]
) -> None:
    small = OllamaBackend(OllamaOptions(host=ollama_server.host, model=MODEL, num_ctx=4096))
    with pytest.raises(ProposalFailed, match=r"num_ctx = 4096.*raise num_ctx"):
        proposer(small, events).propose(CONTEXT)
    small.close()
    assert chats(ollama_server) == []


def test_fix_mode_edits_the_crashed_script_and_shows_its_log(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    crashed = SCRIPT.replace("x = rms_norm(self.embed(idx))", "x = rms_norm(self.embedding(idx))")
    tail = "AttributeError: 'GPT' object has no attribute 'embedding'"
    context = ProposalContext(
        best_script=SCRIPT,
        program=PROGRAM,
        fix=CrashReport(7, "rename the embedding", crashed, "crash", tail),
    )
    fix = {
        "search": "x = rms_norm(self.embedding(idx))",
        "replace": "x = rms_norm(self.embed(idx))",
    }
    ollama_server.script(Reply(answer(fix, description="fix: the embedding's name")))
    proposal = proposer(backend, events).propose(context)
    assert proposal.script == SCRIPT
    assert proposal.description == "fix: the embedding's name"
    user = chats(ollama_server)[0]["messages"][1]["content"]
    assert tail in user and "Fix the crash of experiment #7" in user
    assert crashed.rstrip("\n") in user


def test_a_server_that_is_down_is_reported_not_hidden(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    ollama_server.stop()
    with pytest.raises(AgentUnavailable) as caught:
        proposer(backend, events).propose(CONTEXT)
    assert caught.value.health.state == AgentState.SERVER_DOWN


# --- the fallback ----------------------------------------------------------------------------


def fallback(
    backend: OllamaBackend, events: list[AgentEvent], clock: FakeClock, attempts: int = 3
) -> FallbackProposer:
    return FallbackProposer(
        proposer(backend, events, attempts),
        BuiltinProposer(seed=1),
        backend,
        backoff=Backoff(60.0, clock=clock),
        clock=clock,
        on_event=events.append,
    )


def test_the_builtin_stands_in_while_the_server_is_down_and_the_llm_resumes_after_it(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    clock = FakeClock()
    chooser = fallback(backend, events, clock)
    ollama_server.stop()
    first = chooser.propose(CONTEXT)
    assert first.proposer == "builtin" and chooser.active == "builtin"
    assert chooser.health is not None and chooser.health.state == AgentState.SERVER_DOWN
    [health] = of_kind(events, "health")
    assert health.details["state"] == "server_down"
    [fell_back] = of_kind(events, "fallback")
    assert "ollama serve" in fell_back.message
    assert "the built-in proposer stands in" in fell_back.message
    # Only the model can fix a crash.
    crash = CrashReport(1, "x", SCRIPT, "crash", "Traceback")
    with pytest.raises(NoProposal, match="no model available to fix the crash"):
        chooser.propose(ProposalContext(best_script=SCRIPT, fix=crash))

    ollama_server.start()  # the same port
    ollama_server.script(Reply(answer()))
    # Before the backoff's wait is over, nobody asks the server.
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert ollama_server.requests == []
    clock.now += 2.5
    resumed_proposal = chooser.propose(CONTEXT)
    assert resumed_proposal.proposer == "llm" and chooser.active == "llm"
    assert chooser.health is not None and chooser.health.state == AgentState.READY
    [resumed] = of_kind(events, "resumed")
    assert resumed.details["state"] == "ready" and "LLM proposer is back" in resumed.message
    assert [e.details["state"] for e in of_kind(events, "health")] == ["server_down", "ready"]


def test_an_unknown_model_is_reported_with_the_command_to_pull_it(
    ollama_server: OllamaDouble, events: list[AgentEvent]
) -> None:
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model="mystery:1b", timeout_seconds=5.0)
    )
    chooser = fallback(backend, events, FakeClock())
    proposal = chooser.propose(CONTEXT)
    backend.close()
    assert proposal.proposer == "builtin"
    assert chooser.health is not None and chooser.health.state == AgentState.MODEL_MISSING
    assert "ollama pull mystery:1b" in chooser.health.message
    [fell_back] = of_kind(events, "fallback")
    assert fell_back.details["state"] == "model_missing"
    assert "ollama pull mystery:1b" in fell_back.message
    assert chats(ollama_server) == []


def test_unusable_replies_fall_back_for_one_proposal_only(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    chooser = fallback(backend, events, FakeClock(), attempts=1)
    ollama_server.script(Reply("{}"), Reply(answer()))
    stand_in = chooser.propose(CONTEXT)
    assert stand_in.proposer == "builtin"
    [fell_back] = of_kind(events, "fallback")
    assert "no usable edit in 1 reply" in fell_back.message
    assert "for this experiment" in fell_back.message
    assert chooser.active == "llm"  # the model is healthy: it makes the next one
    assert chooser.propose(CONTEXT).proposer == "llm"
    assert of_kind(events, "resumed") == []


def test_a_server_error_during_a_reply_hands_over_to_the_builtin(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    chooser = fallback(backend, events, FakeClock())
    ollama_server.script(ErrorReply(500, "llama runner process has terminated"))
    proposal = chooser.propose(CONTEXT)
    assert proposal.proposer == "builtin" and chooser.active == "builtin"
    assert chooser.health is not None and chooser.health.state == AgentState.ERROR
    assert "llama runner process has terminated" in of_kind(events, "fallback")[0].message
    assert [e.details["state"] for e in of_kind(events, "health")] == ["ready", "error"]


def test_replies_that_keep_timing_out_are_tried_less_and_less_often(
    ollama_server: OllamaDouble, events: list[AgentEvent]
) -> None:
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model=MODEL, timeout_seconds=0.3)
    )
    clock = FakeClock()
    chooser = fallback(backend, events, clock)
    ollama_server.script(Hang(2.0), Hang(2.0))
    assert chooser.propose(CONTEXT).proposer == "builtin"  # the first reply timed out
    assert chooser.health is not None and chooser.health.state == AgentState.TIMEOUT
    assert "timeout_seconds" in chooser.health.message
    clock.now += 2.5  # the first wait (2 s) is over: the probe passes, the reply times out
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert len(chats(ollama_server)) == 2
    clock.now += 2.5  # the second wait is 4 s: the model is left alone
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert len(chats(ollama_server)) == 2
    clock.now += 2.0
    ollama_server.script(Reply(answer()))
    assert chooser.propose(CONTEXT).proposer == "llm"
    backend.close()


# --- replies that echo the example or repeat themselves ---------------------------------------

SMALL_MODEL = "gemma3:270m"


@pytest.fixture
def small_backend(ollama_server: OllamaDouble) -> Iterator[OllamaBackend]:
    """A model too small for the task: every reply is the prompt's example, copied."""
    ollama_server.models.append(SMALL_MODEL)
    ollama_server.default_reply = EchoExample(quoted=True)
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model=SMALL_MODEL, timeout_seconds=5.0)
    )
    yield backend
    backend.close()


def test_a_reply_that_repeats_one_refused_in_the_same_proposal_ends_the_retries(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    missing = answer({"search": "LEARNING_RATE = 0.3", "replace": "LEARNING_RATE = 0.2"})
    ollama_server.script(Reply(missing), Reply(missing), Reply(answer()))
    with pytest.raises(ProposalFailed) as caught:
        proposer(backend, events, attempts=3).propose(CONTEXT)
    failed = caught.value
    assert failed.repeated and failed.kind == "not_found" and failed.attempts == 2
    assert [(r.kind, r.repeated) for r in failed.refusals] == [
        ("not_found", False),
        ("not_found", True),
    ]
    assert failed.model_failed
    assert "already refused" in str(failed)
    assert len(chats(ollama_server)) == 2 and ollama_server.pending == 1  # not asked a third time
    second = of_kind(events, "rejected")[1]
    assert second.details["repeated"] is True
    assert "not asked again" in second.message


def test_a_reply_refused_in_an_earlier_proposal_is_not_sent_back_again(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    llm = proposer(backend, events, attempts=3)
    ahead = answer({"search": "LEARNING_RATE = 0.004", "replace": "LEARNING_RATE = 0.005"})
    ollama_server.script(Reply(ahead), Reply(answer()))
    assert llm.propose(CONTEXT).details["attempts"] == 2  # "not found", then a usable one
    ollama_server.script(Reply(ahead), Reply(answer()))
    with pytest.raises(ProposalFailed) as caught:
        llm.propose(CONTEXT)
    assert caught.value.repeated and caught.value.attempts == 1
    assert len(chats(ollama_server)) == 3 and ollama_server.pending == 1  # not asked again
    # Once 0.004 was kept, the same reply applies: it is judged afresh, not by the past. (The
    # reply left over comes first, and is not found in that script.)
    kept = SCRIPT.replace("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.004")
    ollama_server.script(Reply(ahead))
    proposal = llm.propose(ProposalContext(best_script=kept, program=PROGRAM))
    assert "LEARNING_RATE = 0.005" in proposal.script and proposal.details["attempts"] == 2


def test_varied_unusable_replies_are_a_failure_of_the_model(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    ollama_server.script(Reply("not json"), Reply(answer({"search": "nope", "replace": "x"})))
    with pytest.raises(ProposalFailed) as caught:
        proposer(backend, events, attempts=2).propose(CONTEXT)
    assert caught.value.model_failed and not caught.value.repeated


def test_a_prompt_too_large_is_no_failure_of_the_model(
    ollama_server: OllamaDouble, events: list[AgentEvent]
) -> None:
    tiny = OllamaBackend(OllamaOptions(host=ollama_server.host, model=MODEL, num_ctx=512))
    with pytest.raises(ProposalFailed) as caught:
        proposer(tiny, events).propose(CONTEXT)
    tiny.close()
    assert caught.value.kind == "prompt_too_large" and not caught.value.model_failed


def test_a_model_that_fails_in_varied_ways_is_paused_after_three_proposals(
    ollama_server: OllamaDouble, events: list[AgentEvent]
) -> None:
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model=MODEL, timeout_seconds=0.5)
    )
    clock = FakeClock()
    chooser = fallback(backend, events, clock, attempts=1)
    ollama_server.script(
        Reply("not json"),
        Reply(answer({"search": "LEARNING_RATE = 0.3", "replace": "LEARNING_RATE = 0.2"})),
        Hang(3.0),
    )
    for _ in range(3):
        assert chooser.propose(CONTEXT).proposer == "builtin"
        clock.now += 10.0  # past the backoff after the timeout
    [paused] = of_kind(events, "paused")
    assert "the last 3 replies were unusable" in paused.message
    assert "not asked for the next 5 proposals" in paused.message
    assert chooser.status()["agent_paused"] is not None
    asked = len(chats(ollama_server))
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert len(chats(ollama_server)) == asked == 3
    backend.close()


def test_a_reply_with_raw_newlines_in_its_strings_is_read(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    # What a model writing code into a string sends, and llama.cpp's servers let through.
    embed = "EMBED_LR = 0.01  # learning rate of the embedding and the output head"
    raw = answer(
        {
            "search": f"{embed}\nWEIGHT_DECAY = 0.1",
            "replace": f"{embed.replace('0.01', '0.02')}\nWEIGHT_DECAY = 0.1",
        }
    ).replace("\\n", "\n")
    assert "\n" in raw and "\\n" not in raw
    ollama_server.script(Reply(raw))
    proposal = proposer(backend, events, attempts=1).propose(CONTEXT)
    assert "EMBED_LR = 0.02  #" in proposal.script


@pytest.mark.parametrize(
    "search",
    ["<lines copied from the script>,", "# <lines copied from train.py>", " <lines copied>. "],
)
def test_a_near_echo_of_the_answers_shape_is_an_echo(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent], search: str
) -> None:
    ollama_server.script(Reply(answer({"search": search, "replace": "LEARNING_RATE = 0.004"})))
    with pytest.raises(ProposalFailed) as caught:
        proposer(backend, events, attempts=1).propose(CONTEXT)
    assert [r.kind for r in caught.value.refusals] == ["echo"]


def test_a_json_error_is_said_without_a_doubled_word(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    ollama_server.script(Reply('{"description": "raise the rate'))
    with pytest.raises(ProposalFailed) as caught:
        proposer(backend, events, attempts=1).propose(CONTEXT)
    assert "Unterminated string starting at line 1" in str(caught.value)
    assert " at at " not in str(caught.value)


def test_a_model_that_echoes_the_example_is_named_paused_and_asked_again_later(
    ollama_server: OllamaDouble, small_backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    chooser = fallback(small_backend, events, FakeClock())
    asked: list[int] = []
    for _ in range(3):
        before = len(chats(ollama_server))
        assert chooser.propose(CONTEXT).proposer == "builtin"
        asked.append(len(chats(ollama_server)) - before)
    # The first proposal stops at the second reply (the same echo); later ones at the first.
    assert asked == [2, 1, 1]
    rejected = of_kind(events, "rejected")
    assert [e.details["kind"] for e in rejected] == ["echo"] * 4
    assert "placeholders" in rejected[0].message
    replies = chooser.status()["agent_replies"]
    assert isinstance(replies, dict)
    assert replies["count"] == 4 and replies["reason"] == "echo" and replies["repeated"] == 3
    assert replies["message"] == (
        "the last 4 replies were unusable: they repeat the prompt's example; "
        "3 were the same as a reply already refused"
    )
    advice = str(replies["advice"])
    assert "too small or not instruction-tuned" in advice and "try qwen2.5-coder:7b" in advice

    [paused] = of_kind(events, "paused")
    assert "they repeat the prompt's example" in paused.message
    assert "try qwen2.5-coder:7b" in paused.message
    assert "not asked for the next 5 proposals" in paused.message
    assert chooser.active == "builtin"
    assert chooser.status()["agent_paused"] == {
        "proposals_left": 5,
        "proposals": 5,
        "reason": replies["message"],
    }
    # Paused: five proposals of the built-in proposer, and no request to the model.
    before = len(chats(ollama_server))
    for left in (4, 3, 2, 1):
        assert chooser.propose(CONTEXT).proposer == "builtin"
        assert chooser.status()["agent_paused"]["proposals_left"] == left  # type: ignore[index]
    assert of_kind(events, "resumed") == []
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert len(chats(ollama_server)) == before
    [resumed] = of_kind(events, "resumed")
    assert "asked again from the next proposal" in resumed.message
    assert chooser.active == "llm" and chooser.status()["agent_paused"] is None
    # Asked again, the model echoes again: one request, and a pause twice as long.
    assert chooser.propose(CONTEXT).proposer == "builtin"
    assert len(chats(ollama_server)) == before + 1
    assert len(of_kind(events, "paused")) == 2
    assert chooser.status()["agent_paused"]["proposals"] == 10  # type: ignore[index]
    # Only the model can fix a crash, and a paused one is not asked.
    crash = CrashReport(1, "x", SCRIPT, "crash", "Traceback")
    with pytest.raises(NoProposal, match="the model is paused"):
        chooser.propose(ProposalContext(best_script=SCRIPT, fix=crash))
    assert len(chats(ollama_server)) == before + 1


def test_a_usable_proposal_clears_what_the_unusable_replies_said(
    ollama_server: OllamaDouble, backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    chooser = fallback(backend, events, FakeClock(), attempts=1)
    ollama_server.script(Reply(json.dumps({**json.loads(answer()), "hypothesis": "..."})))
    assert chooser.propose(CONTEXT).proposer == "builtin"
    replies = chooser.status()["agent_replies"]
    assert isinstance(replies, dict) and replies["message"] == (
        "the last reply was unusable: it repeats the prompt's example"
    )
    ollama_server.script(Reply(answer()))
    assert chooser.propose(CONTEXT).proposer == "llm"
    assert chooser.status() == {"asking": None, "agent_replies": None, "agent_paused": None}


def test_an_echo_is_known_again_whatever_the_script(
    ollama_server: OllamaDouble, small_backend: OllamaBackend, events: list[AgentEvent]
) -> None:
    llm = proposer(small_backend, events, attempts=3)
    with pytest.raises(ProposalFailed) as caught:
        llm.propose(CONTEXT)
    assert caught.value.attempts == 2  # the echo, and the same echo again
    kept = SCRIPT.replace("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.004")
    with pytest.raises(ProposalFailed) as caught:
        llm.propose(ProposalContext(best_script=kept, program=PROGRAM))
    assert caught.value.repeated and caught.value.attempts == 1
    assert len(chats(ollama_server)) == 3
