"""Kinds of device: which trainings go where, and when the best must be measured again."""

from __future__ import annotations

from typing import Any

from cockpit.engine.kinds import references_needed, wanted_kind
from cockpit.store.records import Experiment

KINDS = ("H100", "H200")


def experiment(number: int, status: str = "keep", **details: Any) -> Experiment:
    return Experiment(
        id=number + 1, run_id=1, number=number, parent_commit=None, commit_sha=f"{number:040d}",
        ref=None, proposer=None, model=None, description="", hypothesis="", diff="",
        script_hash=None, status=status, outcome="ok", exit_code=0, val_bpb=1.0,
        peak_memory_mb=None, training_seconds=None, total_seconds=None, num_steps=None,
        attempt=1, created_at=0.0, started_at=None, ended_at=None, decision=None,
        decision_reason=None, summary=None, log_path=None, crash_tail=None, lines_of_code=None,
        details=details,
    )  # fmt: skip


def test_the_baseline_trains_on_each_kind_noise_runs_times() -> None:
    baseline = experiment(0, "committed")
    assert wanted_kind(baseline, KINDS, noise_runs=2) == "H100"
    one = experiment(0, "committed", trials=[{"seed": 42, "val_bpb": 2.0, "kind": "H100"}])
    assert wanted_kind(one, KINDS, noise_runs=1) == "H200"
    assert wanted_kind(one, KINDS, noise_runs=2) == "H100"
    both = experiment(
        0, trials=[{"seed": 42, "val_bpb": 2.0, "kind": k} for k in KINDS]
    )  # fmt: skip
    assert wanted_kind(both, KINDS, noise_runs=1) is None


def test_an_experiment_stays_on_the_kind_it_first_trained_on() -> None:
    fresh = experiment(3, "committed")
    assert wanted_kind(fresh, KINDS, noise_runs=2) is None  # any worker
    confirming = experiment(3, "committed", trials=[{"seed": 42, "val_bpb": 1.9, "kind": "H200"}])
    assert wanted_kind(confirming, KINDS, noise_runs=2) == "H200"
    assert wanted_kind(confirming, ("",), noise_runs=2) is None  # one kind: anywhere
    # Its first training ran short of its plan and waits to be trained again: where it ran.
    short = {"seed": 42, "val_bpb": 2.1, "kind": "H200", "num_steps": 150, "planned": 200}
    rerun = experiment(3, "committed", trials=[], short=[short])
    assert wanted_kind(rerun, KINDS, noise_runs=2) == "H200"


def test_the_best_is_measured_on_a_kind_where_an_experiment_waits_for_it() -> None:
    best = experiment(2, trials=[{"seed": 42, "val_bpb": 1.8, "kind": "H100"}])
    waiting = [
        experiment(4, "evaluating", training_kind="H200"),
        experiment(5, "evaluating", training_kind="H200"),
        experiment(6, "evaluating", training_kind="H100"),
        experiment(7, "training", training_kind="H200"),
    ]
    assert references_needed(best, waiting, KINDS, under_way=()) == ["H200"]
    assert references_needed(best, waiting, KINDS, under_way={"H200"}) == []
    failed = experiment(2, trials=best.details["trials"], reference_failed=["H200"])
    assert references_needed(failed, waiting, KINDS, under_way=()) == []
    measured = experiment(
        2, trials=[*best.details["trials"], {"seed": 42, "val_bpb": 1.7, "kind": "H200"}]
    )
    assert references_needed(measured, waiting, KINDS, under_way=()) == []
    assert references_needed(best, waiting, ("",), under_way=()) == []
