"""The LLM proposer in the real loop: `cockpit run` against an Ollama-compatible server on
127.0.0.1 with scripted replies, real training processes, the real journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SCRIPTS
from tests.helpers import (
    VALID,
    agent_config,
    agent_events,
    cockpit,
    edit,
    ended,
    experiments,
    make_workspace,
    run_llm,
    spawn,
    spawn_supervised_llm,
    state,
    wait_for,
)
from tests.ollama_server import OllamaDouble, Reply

# Commits without a git identity (conftest.py).
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes


def test_rejected_replies_go_back_to_the_model_and_never_cost_a_training(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    served.script(
        VALID[0],
        Reply('{"description": "bigger model", "edits": [{"search": '),  # cut short
        VALID[1],
        edit("no such line", "LEARNING_RATE = 0.3", "LEARNING_RATE = 0.2"),
        VALID[2],
        edit("break the syntax", "def train(ctx):", "def train(ctx)"),
        VALID[3],
    )
    output = run_llm(root, 4)
    assert "Traceback" not in output

    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2, 3, 4]  # trained 5 times, no more
    assert [e.description for e in records[1:]] == [
        "halve the learning rate",
        "double the batch",
        "faster second moment",
        "small random init",
    ]
    assert all(e.proposer == "llm" and e.model == "qwen2.5-coder:7b" for e in records[1:])
    runs = sorted((root / ".cockpit" / "runs").glob("*/*/train.py"))
    assert len(runs) == 5, runs

    rejected = [e for e in agent_events(root) if (e.data or {}).get("type") == "rejected"]
    assert len(rejected) == 3, [e.message for e in agent_events(root)]
    reasons = [e.data["reason"] for e in rejected]
    assert "JSON" in reasons[0], reasons
    assert "LEARNING_RATE = 0.3" in reasons[1] and "not found" in reasons[1], reasons
    assert "not valid Python" in reasons[2], reasons
    assert output.count("reply rejected") == 3, output

    # Each reply that was rejected went back to the model with its reason.
    chats = served.requests_to("/api/chat")
    assert len(chats) == 7
    retried = chats[2].body["messages"]
    assert retried[-2]["role"] == "assistant" and retried[-1]["role"] == "user"
    assert "JSON" in retried[-1]["content"]

    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["agent"]["proposer"] == "llm"
    assert status["agent"]["model"] == "qwen2.5-coder:7b"


def test_the_optimiser_stands_in_while_ollama_is_down_and_hands_back(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    agent_config(root, "[agent]", "retry_seconds = 1")
    served.stop()  # the same address refuses connections until it starts again
    process = spawn(
        "run", "--headless", "--workspace", str(root), "--experiments", "12",
        "--budget", "1", "--proposer", "llm",
    )  # fmt: skip
    with ended(process):
        wait_for(lambda: state(root, "run") is not None, 60, "the engine to open its journal")
        wait_for(
            lambda: any(e.proposer == "optuna" for e in experiments(root)[1:]),
            90,
            "an experiment of the optimiser",
        )
        status = cockpit("status", "--workspace", str(root))
        assert "Optuna proposer standing in for qwen2.5-coder:7b" in status.stdout, status.stdout
        assert "ollama serve" in status.stdout, status.stdout
        as_json = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert as_json["agent"]["state"] == "server_down"

        served.script(*VALID)
        served.start()
        wait_for(
            lambda: any(e.proposer == "llm" for e in experiments(root)[1:]),
            90,
            "an experiment of the LLM proposer after Ollama came back",
        )
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert status["agent"]["proposer"] == "llm" and status["agent"]["state"] == "ready"
        cockpit("stop", "--workspace", str(root))
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    types = [(e.data or {}).get("type") for e in agent_events(root)]
    assert "fallback" in types and "resumed" in types
    assert types.index("fallback") < types.index("resumed")
    llm_made = [e for e in experiments(root)[1:] if e.proposer == "llm"]
    # The optimiser may have kept new values of the constants the first replies edit.
    assert llm_made[0].description in {reply_description(reply) for reply in VALID}
    assert "the LLM proposer is back" in output


def reply_description(reply: Reply) -> str:
    return str(json.loads(reply.content)["description"])


def test_an_unknown_model_is_one_line_that_says_ollama_pull(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    agent_config(root, "[agent]", 'model = "no-such-model:3b"')
    output = run_llm(root, 1)
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "ollama pull" in line]
    assert len(lines) == 1, output
    assert "`ollama pull no-such-model:3b`" in lines[0]
    records = experiments(root)
    assert records[1].proposer == "optuna"  # research went on
    assert not served.requests_to("/api/chat")


def test_a_crash_goes_back_to_the_model_with_its_traceback_and_the_fix_is_trained(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    crash = "        step += 1\n        if step == 3:\n            raise RuntimeError('boom at step 3')\n"
    served.script(
        edit("stop at step three", "        step += 1\n", crash),
        edit(
            "never stop early",
            "        if step == 3:\n",
            "        if step < 0:\n",
            hypothesis="the raise was a mistake",
        ),
    )
    run_llm(root, 2)
    records = experiments(root)
    assert [(e.number, e.status) for e in records[:2]] == [(0, "keep"), (1, "crash")]
    fix = records[2]
    assert fix.description == "never stop early" and fix.status in ("keep", "discard")
    assert fix.details["fixes"] == 1
    asked = served.requests_to("/api/chat")[1].body["messages"]
    assert "boom at step 3" in asked[-1]["content"]  # the traceback's tail went to the model
    assert "raise RuntimeError('boom at step 3')" in asked[-1]["content"]  # and the failed script


def test_the_model_leaves_the_gpu_before_a_gpu_training_only(
    tmp_path: Path, served: OllamaDouble
) -> None:
    from cockpit.config import load_settings
    from cockpit.engine.agents import build_agent

    root = tmp_path / "ws"
    make_workspace(root)
    settings = load_settings(root, overrides={"engine.proposer": "llm"})
    agent = build_agent(settings)
    try:
        agent.before_training(uses_gpu=False)
        assert not served.requests_to("/api/generate")
        agent.before_training(uses_gpu=True)
        (unload,) = served.requests_to("/api/generate")
        assert unload.body["keep_alive"] == 0 and unload.body["model"] == "qwen2.5-coder:7b"
        served.stop()
        agent.before_training(uses_gpu=True)  # a server that is down holds no GPU memory
    finally:
        agent.close()

    kept = load_settings(
        root, overrides={"engine.proposer": "llm", "agent.unload_before_training": False}
    )
    agent = build_agent(kept)
    served.start()
    served.clear_requests()
    agent.before_training(uses_gpu=True)
    assert not served.requests_to("/api/generate")
    agent.close()


SEED_ONLY = edit("a luckier seed", "torch.manual_seed(ctx.seed)", "torch.manual_seed(ctx.seed + 1)")


def test_a_flagged_proposal_is_refused_in_autonomous_mode_and_the_model_hears_why(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    served.script(SEED_ONLY, VALID[0])
    output = run_llm(root, 1)
    records = experiments(root)
    assert [e.description for e in records] == ["baseline", "halve the learning rate"]
    refused = [e for e in agent_events(root) if (e.data or {}).get("type") == "refused"]
    assert len(refused) == 1 and refused[0].data["flags"] == ["seed_only"], refused
    assert "refused before training (a luckier seed)" in output
    # The second request told the model what was refused and why.
    second = served.requests_to("/api/chat")[1].body["messages"][-1]["content"]
    assert "Proposals refused before training" in second and "a luckier seed" in second


def test_a_flagged_proposal_waits_for_the_researcher_in_supervised_mode(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    served.script(SEED_ONLY)
    process = spawn_supervised_llm(root, 1)
    with ended(process):
        wait_for(
            lambda: state(root, "phase") == "awaiting_approval",
            90,
            "the proposal to wait for approval",
        )
        status = cockpit("status", "--workspace", str(root))
        assert "waiting for approval: #1 a luckier seed" in status.stdout, status.stdout
        assert "[seed_only]" in status.stdout, status.stdout
        flagged = experiments(root)[1]
        assert flagged.details["flags"][0]["kind"] == "seed_only"
        veto = cockpit("veto", "--workspace", str(root), "--reason", "seed changes prove nothing")
        assert veto.returncode == 0, veto.stdout + veto.stderr
        wait_for(lambda: experiments(root)[1].status == "vetoed", 30, "the veto")
        cockpit("stop", "--workspace", str(root))  # a vetoed proposal does not count: stop here
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert experiments(root)[1].status == "vetoed"


def test_an_approved_seed_only_change_is_never_kept(tmp_path: Path, served: OllamaDouble) -> None:
    """Approved despite its flag, a change of nothing but the seed that measures far better
    is still discarded: another seed only re-rolls the noise."""
    root = tmp_path / "ws"
    make_workspace(root, SCRIPTS / "lucky_seed.py")
    served.script(SEED_ONLY)
    process = spawn_supervised_llm(root, 1)
    with ended(process):
        wait_for(lambda: state(root, "phase") == "awaiting_approval", 90, "the proposal")
        assert cockpit("approve", "--workspace", str(root)).returncode == 0
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    baseline, lucky = experiments(root)
    assert lucky.val_bpb < baseline.val_bpb - 0.1, (lucky.val_bpb, baseline.val_bpb)
    assert lucky.decision == "discard"
    assert "changes nothing but the random seed" in lucky.decision_reason


def test_a_model_whose_proposals_keep_being_refused_hands_one_experiment_to_the_stand_in(
    tmp_path: Path, served: OllamaDouble
) -> None:
    """Five proposals in a row that the integrity checks refuse: the run does not end, the
    optimiser makes that experiment, and the model is asked again after it."""
    root = tmp_path / "ws"
    make_workspace(root)
    spawns = edit("shell out", "import torch\n", "import subprocess\nimport torch\n")
    # The model's last edit touches no constant: the optimiser's experiment may be kept, and
    # then an edit of a constant it changed would no longer apply.
    served.script(VALID[0], *[spawns] * 5, VALID[3])
    run_llm(root, 3)
    records = experiments(root)
    assert [(e.number, e.proposer) for e in records] == [
        (0, "baseline"),
        (1, "llm"),
        (2, "optuna"),
        (3, "llm"),
    ], [(e.number, e.proposer, e.description) for e in records]
    assert records[1].description == "halve the learning rate"
    assert records[3].description == "small random init"
    events = agent_events(root)
    refused = [e for e in events if (e.data or {}).get("type") == "refused"]
    assert len(refused) == 5 and all("subprocess" in e.message for e in refused)
    (stand_in,) = [e for e in events if (e.data or {}).get("reason") == "turned_down"]
    assert "keeps repeating" in stand_in.message
    assert "stands in for this experiment" in stand_in.message
    assert len(served.requests_to("/api/chat")) == 7
