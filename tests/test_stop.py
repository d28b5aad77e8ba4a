"""A stop always ends the engine, whatever is in flight: here a model that is still writing its
reply (the Ollama test server holds it back) when `cockpit stop` or SIGTERM comes, with the
LLM proposer and with the hybrid. The engine ends within seconds, not when the model would
have finished, and nothing it had is lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import agent_config, cockpit, ended, make_workspace, spawn, state, wait_for
from tests.ollama_server import Hang, OllamaDouble

# Commits without a git identity (conftest.py).
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes

MODEL_HOLDS_SECONDS = 120.0  # far longer than a stop may take
STOP_WITHIN_SECONDS = 20.0


@pytest.mark.parametrize("how", ["cockpit stop", "SIGTERM"])
@pytest.mark.parametrize("proposer", ["llm", "hybrid"])
def test_a_stop_ends_the_engine_while_the_model_is_still_writing(
    tmp_path: Path, served: OllamaDouble, proposer: str, how: str
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    # The model's replies never come in time: the engine must not wait for them.
    agent_config(root, "[agent]", f"timeout_seconds = {MODEL_HOLDS_SECONDS * 2:g}")
    served.script(*[Hang(MODEL_HOLDS_SECONDS)] * 8)
    engine = spawn(
        "run", "--headless", "--workspace", str(root), "--experiments", "8",
        "--proposer", proposer,
    )  # fmt: skip
    with ended(engine):
        wait_for(lambda: served.requests_to("/api/chat"), timeout=180, what="the model to be asked")
        time.sleep(0.5)  # the reply is being waited for
        asked = time.monotonic()
        if how == "SIGTERM":
            engine.send_signal(signal.SIGTERM)
        else:
            stop = cockpit("stop", "--workspace", str(root))
            assert stop.returncode == 0, stop.stdout + stop.stderr
        try:
            code = engine.wait(timeout=STOP_WITHIN_SECONDS)
        except Exception:
            pytest.fail(f"the engine was still running {STOP_WITHIN_SECONDS:g} s after {how}")
        seconds = time.monotonic() - asked
        output = engine.stdout.read() if engine.stdout else ""
    assert code == 0, output
    assert "Traceback" not in output, output
    assert seconds < STOP_WITHIN_SECONDS
    assert state(root, "phase") == "stopped"
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["running"] is False and status["stopping"] is None
    # The baseline was trained and kept: what the engine had is in the journal.
    assert status["baseline_val_bpb"] is not None
