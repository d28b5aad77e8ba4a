"""The cockpit's status line: who proposed the experiment in flight and those before it, apart
from the model server's state, the hybrid's split, and what the model's unusable replies came
to."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.bench.ui_bench import build_workspace
from cockpit.store.journal import Journal
from cockpit.store.state import PendingStop
from cockpit.ui.app import create_app
from cockpit.ui.status_line import StatusLine
from cockpit.views.readmodel import journal_file
from tests.helpers import ECHOED_REPLIES

WIDE = (160, 50)
NARROW = (80, 24)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workspace is ~/ws, as a short label."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))


def echoing_model(tmp_path: Path, **state: Any) -> Path:
    """A run whose experiment in training (#25) the built-in proposer made, the model's
    replies being echoing the prompt; ``state``: more engine state."""
    root = build_workspace(
        tmp_path / "home" / "ws", experiments=24, engine_pid=os.getpid(), phase="training"
    )
    with Journal.open(journal_file(root)) as journal:
        run = journal.latest_run()
        assert run is not None
        for number in (23, 24, 25):
            experiment = journal.experiment(run.id, number)
            assert experiment is not None
            journal.update_experiment(experiment.id, proposer="builtin", model=None)
        journal.set_state(**{"proposer": "llm", "agent_replies": ECHOED_REPLIES, **state})
    return root


async def status_line(root: Path, size: tuple[int, int]) -> str:
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = app.query_one(StatusLine).render()
        return str(getattr(result, "plain", result))


async def test_the_experiment_in_flight_is_named_by_who_proposed_it(tmp_path: Path) -> None:
    line = await status_line(echoing_model(tmp_path), WIDE)
    second = line.splitlines()[1]
    assert "  #25 builtin  before: builtin, builtin, " in second, second
    assert "· qwen2.5-coder:7b" not in second  # the model made none of the three
    assert "● Ollama ready  ⚠ 6 unusable replies: echoing the prompt" in second, second


async def test_a_paused_model_is_said_and_a_narrow_line_keeps_the_proposer_and_the_trouble(
    tmp_path: Path,
) -> None:
    paused = {"proposals_left": 4, "proposals": 5, "reason": ECHOED_REPLIES["message"]}
    root = echoing_model(tmp_path, proposer="builtin", agent_paused=paused)
    second = (await status_line(root, NARROW)).splitlines()[1]
    assert (
        second == "~/ws  #25 builtin  ● Ollama ready  ⚠ model paused (4 more): echoing the prompt"
    )


async def test_the_line_names_as_many_proposers_before_as_cockpit_status_does(
    tmp_path: Path,
) -> None:
    """The README promises the five before the one in flight, as `cockpit status` has them."""
    root = echoing_model(tmp_path)
    with Journal.open(journal_file(root), readonly=True) as journal:
        run = journal.latest_run()
        assert run is not None
        before = [journal.experiment(run.id, number) for number in range(24, 24 - 5, -1)]
    names = [experiment.proposer for experiment in before if experiment is not None]
    second = (await status_line(root, (220, 50))).splitlines()[1]
    assert f"  #25 builtin  before: {', '.join(names)}  ●" in second, second
    assert len(names) == 5


async def test_while_proposing_the_one_being_asked_is_named(tmp_path: Path) -> None:
    root = echoing_model(tmp_path, phase="proposing", experiment=26, asking="llm", time_left=None)
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  #26 asking llm · qwen2.5-coder:7b  ● Ollama ready  ⚠ 6 unusable" in second, second
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(asking="builtin")
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  #26 asking builtin  before: builtin, builtin, builtin, " in second, second


async def test_asking_is_said_only_while_someone_is_asked(tmp_path: Path) -> None:
    """The draft is done (``asking`` cleared) but not committed yet, as through the hang of
    issue 23: the optimiser standing in proposes next, yet no one is being asked for #26."""
    root = echoing_model(
        tmp_path, phase="proposing", experiment=26, asking=None, proposer="optuna", time_left=None
    )
    line = await status_line(root, WIDE)
    first, second = line.splitlines()
    assert first.startswith(" PROPOSING  #26 "), first
    assert "asking" not in second, second
    assert "~/ws  branch cockpit/nov26  optuna · qwen2.5-coder:7b  before: builtin, " in second
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(asking="optuna")
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  #26 asking optuna  before: builtin, builtin, builtin, " in second, second


async def test_with_nothing_in_flight_the_latest_proposers_are_named(tmp_path: Path) -> None:
    root = echoing_model(tmp_path, phase="stopped", proposer="builtin", time_left=None)
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  builtin · qwen2.5-coder:7b  latest: builtin, builtin, builtin, " in second, second


async def test_a_stop_the_engine_accepted_is_said_until_it_is_carried_out(tmp_path: Path) -> None:
    root = echoing_model(tmp_path)
    assert "stopping" not in (await status_line(root, WIDE)).splitlines()[0]
    for now, said in ((False, "stopping after the trainings in flight"), (True, "stopping now")):
        with Journal.open(journal_file(root)) as journal:
            journal.set_state(**PendingStop(now=now, asked_at=time.time()).to_state())
        first = (await status_line(root, WIDE)).splitlines()[0]
        assert first.startswith(" TRAINING  #25 ") and f"  {said}" in first, first


async def test_a_training_that_was_not_confined_is_said_first_and_stays(tmp_path: Path) -> None:
    """The latest training ran unconfined: the line says so first, at any width."""
    unconfined = {"network": None, "enforced": False, "reason": "user namespaces are off"}
    root = echoing_model(tmp_path, confinement=unconfined)
    for size in (WIDE, NARROW):
        second = (await status_line(root, size)).splitlines()[1]
        assert second.startswith(
            "⚠ training is not confined: network and files: user namespaces are off"
        ), second
    confined = {"network": "a network namespace", "files": "Landlock", "enforced": True}
    root = echoing_model(tmp_path / "confined", confinement=confined)
    assert "not confined" not in await status_line(root, WIDE)


async def test_a_degraded_confinement_is_said_first_though_both_parts_hold(
    tmp_path: Path,
) -> None:
    """The device probe chose a weaker layer: network and files are confined, yet the line
    says which layer and why, first, at any width."""
    degraded = {
        "network": "a network namespace",
        "files": "Landlock",
        "enforced": True,
        "layer": "proc-wide",
        "reason": "cuda: device failed (CUDA error 304) inside the confinement",
    }
    root = echoing_model(tmp_path, confinement=degraded)
    for size in (WIDE, NARROW):
        second = (await status_line(root, size)).splitlines()[1]
        assert second.startswith(
            "⚠ confinement degraded to proc-wide: cuda: device failed (CUDA error 304)"
        ), second


def proposing_with(tmp_path: Path, **state: Any) -> Path:
    """A run training #25, which the LLM proposed; ``state``: who proposes next, and how."""
    root = build_workspace(
        tmp_path / "home" / "ws", experiments=24, engine_pid=os.getpid(), phase="training"
    )
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(**state)
    return root


async def test_the_hybrids_split_follows_the_model_servers_state_and_fits_80_columns(
    tmp_path: Path,
) -> None:
    split = {"llm": 0.35, "optuna": 0.65}
    root = proposing_with(tmp_path, proposer="hybrid", search_split=split)
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  ● Ollama ready  hybrid: LLM 35% · Optuna 65%  margin 0.0015" in second, second
    second = (await status_line(root, NARROW)).splitlines()[1]
    assert (
        second == "~/ws  #25 llm · qwen2.5-coder:7b  ● Ollama ready  hybrid: LLM 35% · Optuna 65%"
    )
    assert len(second) <= NARROW[0]
    # Optuna stands in while Ollama is away: the hybrid's split is not in effect, not shown.
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(proposer="optuna", agent_state="server_down")
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "● Ollama unreachable" in second and "hybrid" not in second, second


async def test_optuna_or_the_built_in_proposer_alone_is_named_as_itself(tmp_path: Path) -> None:
    """Without a model, the line names the proposer that works alone, whatever a run before
    left of the model server's state."""
    root = proposing_with(tmp_path, proposer="optuna", model=None)
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  Optuna proposer (no LLM)" in second and "Ollama" not in second, second
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(proposer="builtin", agent_state=None)
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  built-in proposer (no LLM)" in second and "Ollama" not in second, second
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(proposer="hybrid", model="qwen2.5-coder:7b")
    second = (await status_line(root, WIDE)).splitlines()[1]
    assert "  Ollama: no word yet" in second and "hybrid:" not in second, second
