"""What the engine tells a proposer: the run's trials for the optimiser, the plateau setting,
and which crashes go back to the model to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.proposal import RUNNING
from cockpit.config import load_settings
from cockpit.engine.agents import build_agent
from cockpit.engine.proposing import Basis, Drafting
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run


@pytest.fixture
def journal(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Journal.open(tmp_path / "journal.db") as opened:
        yield opened


def drafting(journal: Journal, tmp_path: Path) -> Drafting:
    settings = load_settings(tmp_path, overrides={"engine.proposer": "optuna"}, environ={})
    return Drafting(journal, settings, build_agent(settings), tmp_path / "program.md", print, [])


def basis(run: Run, reads: list[str]) -> Basis:
    def script_at(sha: str) -> str:
        reads.append(sha)
        return f"LEARNING_RATE = 0.{len(sha)}\n# {sha}\n"

    return Basis(run, "b" * 40, "LEARNING_RATE = 0.1\n", "autonomous", script_at)


def add(
    journal: Journal, run: Run, number: int, status: str, proposer: str, **fields: object
) -> Experiment:
    """An experiment of ``proposer``; one of a final status is decided so."""
    final = status in ("keep", "discard", "crash", "vetoed")
    experiment = journal.add_experiment(
        run.id,
        number,
        status="training" if final else status,
        proposer=proposer,
        commit_sha=f"{number:040d}",
        description=f"#{number}",
        **fields,
    )
    if final:
        decision = "veto" if status == "vetoed" else status
        experiment = journal.record_decision(experiment.id, decision, "test")
    return experiment


def test_the_optimiser_is_told_every_trained_and_running_script_once(
    journal: Journal, tmp_path: Path
) -> None:
    run = journal.create_run("t", "cockpit/t", "0" * 40, "autonomous", "optuna", {}, "fp")
    add(journal, run, 0, "keep", "baseline", val_bpb=2.0)
    add(journal, run, 1, "discard", "optuna", val_bpb=2.1)
    add(journal, run, 2, "crash", "optuna")
    add(journal, run, 3, "vetoed", "llm")  # never trained: no trial
    add(journal, run, 4, "training", "optuna")
    reads: list[str] = []
    desk = drafting(journal, tmp_path)
    context = desk.context(basis(run, reads))
    trials = [(t.number, t.status, t.val_bpb, t.proposer) for t in context.trials]
    assert trials == [
        (0, "keep", 2.0, "baseline"),
        (1, "discard", 2.1, "optuna"),
        (2, "crash", None, "optuna"),
        (4, RUNNING, None, "optuna"),
    ]
    assert context.trials[1].script == f"LEARNING_RATE = 0.40\n# {1:040d}\n"
    assert context.plateau_after == 8
    assert [e.proposer for e in context.ledger] == ["baseline", "optuna", "optuna", "llm"]
    desk.context(basis(run, reads))
    assert len(reads) == 4  # scripts are read from git once


def test_a_crash_of_the_optimiser_is_a_result_and_one_of_the_model_goes_back_to_it(
    journal: Journal, tmp_path: Path
) -> None:
    run = journal.create_run("t", "cockpit/t", "0" * 40, "autonomous", "hybrid", {}, "fp")
    add(journal, run, 0, "keep", "baseline", val_bpb=2.0)
    crashed = add(journal, run, 1, "crash", "optuna", ended_at=1.0)
    desk = drafting(journal, tmp_path)
    assert desk.crash_to_fix(basis(run, [])) is None
    journal.update_experiment(crashed.id, proposer="llm")
    wanted = desk.crash_to_fix(basis(run, []))
    assert wanted is not None and wanted[0].number == 1
