"""A model too small for the task, in the real loop: `cockpit run` against the Ollama test
server answering every request with the prompt's example, real trainings, the real journal,
and what `cockpit status` says of it while the run goes on and after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import (
    agent_config,
    agent_events,
    cockpit,
    ended,
    experiments,
    make_workspace,
    spawn_supervised_llm,
    state,
    wait_for,
)
from tests.ollama_server import EchoExample, OllamaDouble

# Commits without a git identity (conftest.py).
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes

SMALL_MODEL = "gemma3:270m"
ECHOES = "they repeat the prompt's example"
ADVICE = "the model seems too small or not instruction-tuned for this task; try qwen2.5-coder:7b"


def status_of(root: Path) -> tuple[str, dict]:
    text = cockpit("status", "--workspace", str(root))
    as_json = cockpit("status", "--workspace", str(root), "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    return text.stdout, json.loads(as_json.stdout)


def test_a_model_that_only_echoes_the_example_is_named_and_paused_and_status_says_who_proposed(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    agent_config(root, "[agent]", f'model = "{SMALL_MODEL}"')
    served.models.append(SMALL_MODEL)
    served.default_reply = EchoExample(quoted=True)  # as a model held to the schema copies it
    process = spawn_supervised_llm(root, 4)
    with ended(process):
        # Supervised: the first proposal waits for approval, and status can be read at rest.
        wait_for(lambda: state(root, "phase") == "awaiting_approval", 120, "the first proposal")
        text, report = status_of(root)
        assert report["in_flight"] == {
            "experiment": 1,
            "proposer": "optuna",
            "model": None,
            "status": "awaiting_approval",
        }
        assert [p["proposer"] for p in report["recent_proposers"]] == ["baseline"]
        agent = report["agent"]
        assert agent["proposer"] == "llm" and agent["model"] == SMALL_MODEL
        assert agent["state"] == "ready"  # the server is fine: its model's replies are not
        replies = agent["replies"]
        assert replies["reason"] == "echo" and replies["count"] == 2
        assert replies["message"] == (
            f"the last 2 replies were unusable: {ECHOES}; 1 was the same as a reply already refused"
        )
        assert ADVICE in replies["advice"]
        assert "  proposers: #1 Optuna (in flight), #0 baseline\n" in text, text
        assert f"  agent: LLM proposer ({SMALL_MODEL})\n" in text, text
        assert f"  model's replies: {replies['message']}\n" in text, text
        assert ADVICE in text, text
        assert cockpit("mode", "autonomous", "--workspace", str(root)).returncode == 0
        output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    assert "Traceback" not in output

    records = experiments(root)
    assert [(e.number, e.proposer) for e in records] == [
        (0, "baseline"),
        (1, "optuna"),
        (2, "optuna"),
        (3, "optuna"),
        (4, "optuna"),
    ], [(e.number, e.proposer, e.description) for e in records]
    # #1: the echo, then the same echo again, and no third request; #2 and #3: one request
    # each (the echo was refused before); then the model is paused: #4 asks nothing.
    assert len(served.requests_to("/api/chat")) == 4
    events = agent_events(root)
    [paused] = [e for e in events if (e.data or {}).get("type") == "paused"]
    assert ECHOES in paused.message and ADVICE in paused.message
    assert "not asked for the next 5 proposals" in paused.message
    assert f"agent: {paused.message}" in output

    text, report = status_of(root)
    assert report["in_flight"] is None  # the run is over
    assert [(p["experiment"], p["proposer"]) for p in report["recent_proposers"]] == [
        (4, "optuna"),
        (3, "optuna"),
        (2, "optuna"),
        (1, "optuna"),
        (0, "baseline"),
    ]
    agent = report["agent"]
    assert agent["proposer"] == "optuna" and agent["paused"]["proposals_left"] == 4
    assert agent["replies"]["count"] == 4 and agent["replies"]["by_reason"] == {"echo": 4}
    assert "  proposers: #4 Optuna, #3 Optuna, #2 Optuna, #1 Optuna, #0 baseline\n" in text, text
    assert (
        f"  agent: Optuna proposer standing in for {SMALL_MODEL}: it is not asked for 4 more "
        "proposals\n" in text
    ), text
    assert (
        f"  model's replies: the last 4 replies were unusable: {ECHOES}; 3 were the same as a "
        "reply already refused\n" in text
    ), text
    assert ADVICE in text, text


def test_a_model_that_fails_in_varied_ways_is_paused_in_the_real_loop(
    tmp_path: Path, served: OllamaDouble
) -> None:
    """Malformed replies, then echoes, then a reply that does not come in time: three
    proposals in a row in which the model gave nothing usable, each a different way, pause it
    as an echoing model is paused; the optimiser stands in for each and then alone."""
    from tests.helpers import run_llm
    from tests.ollama_server import Hang, Reply

    root = tmp_path / "ws"
    make_workspace(root)
    agent_config(root, "[agent]", f'model = "{SMALL_MODEL}"', "timeout_seconds = 3.0")
    served.models.append(SMALL_MODEL)
    cut_short = [
        Reply(f'{{"description": "bigger model {n}", "edits": [{{"search": ') for n in range(3)
    ]
    served.script(
        *cut_short,  # #1: three malformed replies, each its own (the same again is a repeat)
        EchoExample(quoted=True), EchoExample(quoted=True),  # #2: an echo, then the same again
        Hang(30.0),  # #3: nothing within the 3 s the model is given
    )  # fmt: skip
    output = run_llm(root, 4)
    assert "Traceback" not in output

    records = experiments(root)
    assert [(e.number, e.proposer) for e in records] == [
        (0, "baseline"), (1, "optuna"), (2, "optuna"), (3, "optuna"), (4, "optuna"),
    ], [(e.number, e.proposer, e.description) for e in records]  # fmt: skip
    # The model was asked 3 + 2 + 1 times; once paused, #4 asks it nothing.
    assert len(served.requests_to("/api/chat")) == 6
    [paused] = [e for e in agent_events(root) if (e.data or {}).get("type") == "paused"]
    assert "not asked for the next 5 proposals" in paused.message
    _, report = status_of(root)
    agent = report["agent"]
    assert agent["paused"]["proposals_left"] == 4
    assert agent["replies"]["by_reason"] == {"malformed": 3, "echo": 2, "timeout": 1}
