"""Several workers training side by side: real engines, real trainings, real git."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from cockpit.config import load_settings
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.engine.workers import Worker
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment
from tests.helpers import (
    Scripted,
    cockpit,
    experiments,
    git,
    make_workspace,
    slow_script,
    spawn,
    state,
    trained_side_by_side,
    wait_for,
)

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e


def branch_holds_only_keeps(root: Path, tag: str, records: list[Experiment]) -> None:
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.run_by_tag(tag)
    assert run is not None
    kept = {e.commit_sha for e in records if e.decision == "keep"}
    chain = git(root, "rev-list", "--first-parent", f"cockpit/{tag}", f"^{run.base_commit}").split()
    assert set(chain) <= kept, (chain, kept)
    assert git(root, "rev-parse", f"cockpit/{tag}").strip() == run.best_commit


@pytest.mark.cores(2)  # two trainings never share a core
def test_two_workers_train_side_by_side_each_idea_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--workers", "2", "--experiments", "4",
        "--tag", "par",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workers: cpu 0, cpu 1" in result.stdout
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2, 3, 4]
    assert all(e.is_final for e in records)
    assert trained_side_by_side(records), "no two trainings ran at the same time"
    trained = [e.script_hash for e in records]
    assert len(set(trained)) == len(trained)  # no idea trained twice
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 6
    branch_holds_only_keeps(root, "par", records)
    # One worktree per worker, detached; no branch for them; a sound repository.
    listed = git(root, "worktree", "list", "--porcelain")
    assert listed.count("worktrees/worker-") == 2 and listed.count("detached") == 2
    assert set(git(root, "branch", "--format=%(refname:short)").split()) == {"main", "cockpit/par"}
    git(root, "fsck", "--strict")
    # Each training ran with its worker's share of the cores.
    share = len(os.sched_getaffinity(0)) // 2
    assert {(e.summary or {}).get("threads") for e in records} == {share}


def test_a_gain_on_a_best_that_moved_is_reapplied_and_confirmed_on_the_new_best(
    tmp_path: Path,
) -> None:
    # A script that learns too slowly, and two ideas that each speed it up; proposed on the
    # same best and trained side by side, the one that finishes second finds the best moved.
    slow = slow_script(tmp_path)
    root = tmp_path / "ws"
    workspace = make_workspace(root, slow)
    notices = tmp_path / "notices.txt"
    settings = load_settings(
        root,
        overrides={
            "notify.command": f'echo "$COCKPIT_NOTIFY_KIND" >> {notices}',
            "notify.min_interval_seconds": 0.0,
        },
    )
    proposer = Scripted(
        [
            ("raise the learning rate", "LEARNING_RATE = 0.001", "LEARNING_RATE = 0.05"),
            ("boost the learning rate", "LR_BOOST = 1.0", "LR_BOOST = 50.0"),
        ]
    )
    engine = Engine(
        workspace,
        settings,
        proposer,
        gpu_source=ScriptedGpuSource.no_gpu(),
        workers=[Worker(0, "cpu"), Worker(1, "cpu")],
    )
    assert engine.run(EngineOptions(tag="moved", experiments=2)) == 0
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    first, second = records[1], records[2]
    kept, moved = (
        (first, second) if first.details and not first.details.get("rebases") else (second, first)
    )
    assert kept.decision == "keep", kept.decision_reason
    assert moved.details and moved.details["rebases"] == 1
    stale = moved.details["stale"][0]
    assert "the best moved to" in stale["reason"] and "re-applied" in stale["reason"]
    assert stale["parent"] == records[0].commit_sha and len(stale["trials"]) == 1
    # Re-applied onto the keep, trained there, and decided against it.
    assert moved.parent_commit == kept.commit_sha and moved.is_final
    script = workspace.script_at(moved.commit_sha or "")
    assert "LEARNING_RATE = 0.05" in script and "LR_BOOST = 50.0" in script
    assert moved.log_path and "-on1" in Path(moved.log_path).parent.name
    assert moved.details["evidence"]["best_before"] == kept.val_bpb
    stale_ref = git(root, "rev-parse", f"refs/cockpit/moved/{moved.number}-stale1").strip()
    assert stale_ref == stale["commit"]
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        assert [e.experiment_id for e in journal.events(kinds=["reapply"])] == [moved.id]
    branch_holds_only_keeps(root, "moved", records)
    git(root, "fsck", "--strict")
    told = notices.read_text().split()
    assert "new_best" in told and told[-1] == "engine_stopped"


@pytest.mark.cores(2)  # two trainings never share a core
def test_kill_9_with_two_trainings_in_flight_runs_both_again_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, budget=6)
    engine = spawn(
        "run", "--headless", "--workspace", str(root), "--workers", "2", "--experiments", "2",
        "--tag", "kill",
    )  # fmt: skip
    try:
        pids = wait_for(
            lambda: (lambda p: p if isinstance(p, list) and len(p) == 2 else None)(
                state(root, "train_pids")
            ),
            timeout=90,
            what="two trainings in flight",
        )
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        workers = status["workers"]
        assert [w["device"] for w in workers] == ["cpu 0", "cpu 1"]
        assert {w["phase"] for w in workers} <= {"training", "evaluating"}
        assert sorted(w["experiment"] for w in workers) == [0, 1]
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert [e.status for e in experiments(root)][:2] == ["training", "training"]
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--workers", "2", "--tag", "kill",
        "--experiments", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert isinstance(pids, list)
    for pid in pids:  # the orphans were stopped, not left to train on
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert all(e.is_final for e in records)
    assert [e.attempt for e in records] == [2, 2, 1]
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        interrupted = journal.events(kinds=["interrupted"])
    assert sorted(event.message.split()[1] for event in interrupted) == ["0", "1"]
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 4 and len({row.split("\t")[0] for row in rows[1:]}) == 3
    listed = git(root, "worktree", "list", "--porcelain")
    assert listed.count("worktrees/worker-") == 2  # reused, not piled up
    git(root, "fsck", "--strict")


def test_devices_of_two_kinds_each_have_a_baseline_and_never_compare_across(
    tmp_path: Path,
) -> None:
    # Two workers whose devices are of different kinds (as NVML would name an H100 and an
    # H200), training on this machine's CPU.
    slow = slow_script(tmp_path)
    root = tmp_path / "ws"
    workspace = make_workspace(root, slow)
    kinds = ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    proposer = Scripted(
        [
            ("raise the learning rate", "LEARNING_RATE = 0.001", "LEARNING_RATE = 0.05"),
            ("boost the learning rate", "LR_BOOST = 1.0", "LR_BOOST = 20.0"),
            ("a smaller batch", "BATCH_SIZE = 16", "BATCH_SIZE = 8"),
        ]
    )
    engine = Engine(
        workspace,
        load_settings(root),
        proposer,
        gpu_source=ScriptedGpuSource.no_gpu(),
        workers=[Worker(0, "cpu", kind=kinds[0]), Worker(1, "cpu", kind=kinds[1])],
    )
    assert engine.run(EngineOptions(tag="kinds", experiments=3)) == 0
    records = experiments(root)
    assert all(e.is_final for e in records)

    def trials(e: Experiment) -> list[dict[str, object]]:
        return list((e.details or {}).get("trials") or [])

    baseline = records[0]
    assert sorted(str(t["kind"]) for t in trials(baseline)) == sorted(kinds)  # one each
    decided = [e for e in records[1:] if e.decision in ("keep", "discard") and trials(e)]
    assert decided
    compared_on_own_kind = 0
    for e in decided:
        own = {str(t["kind"]) for t in trials(e) if not t.get("reference")}
        assert len(own) == 1, own  # every training of an experiment on one kind
        (kind,) = own
        if "evidence" not in (e.details or {}):
            # Which worker ends first varies: an experiment made from a script that has no
            # result on its kind yet is discarded for that, with nothing compared.
            assert f"no result on {kind}" in str(e.decision_reason) or (
                f"never measured on {kind}" in str(e.decision_reason)
            ), (e.number, e.decision_reason)
            continue
        same = {float(t["val_bpb"]) for r in records for t in trials(r) if t.get("kind") == kind}
        other = {float(t["val_bpb"]) for r in records for t in trials(r) if t.get("kind") != kind}
        compared = float((e.details or {})["evidence"]["compared_with"])
        compared_on_own_kind += 1
        # Compared with a training on its own kind. Not "and never a value seen on the other":
        # on this one CPU a script that runs the same number of steps on both kinds measures
        # the same bits there, so a value may be in both sets.
        assert compared in same, (e.number, compared, same, other)
    # At least the first, made from the baseline that both kinds measured, was compared.
    assert compared_on_own_kind >= 1
    # A keep measured on the other kind when an experiment there was compared with it.
    kept = [e for e in records[1:] if e.decision == "keep"]
    for keep in kept:
        measured = {str(t["kind"]) for t in trials(keep)}
        against = {
            str(trials(e)[0]["kind"])
            for e in decided
            if (e.details or {})["evidence"].get("best_before") == keep.val_bpb
            or (e.details or {})["evidence"].get("parent") == keep.number
        }
        assert against <= measured, (keep.number, against, measured)
    git(root, "fsck", "--strict")
