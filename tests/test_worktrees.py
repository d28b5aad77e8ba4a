"""The workers' git worktrees, and a change re-applied onto a best that moved."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest

from cockpit.engine import worktrees
from cockpit.engine.workspace import Workspace

BASE = "LEARNING_RATE = 0.003\nDEPTH = 4\nWIDTH = 64\n\n\ndef train(ctx):\n    return None\n"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    source = tmp_path / "source.py"
    source.write_text(BASE)
    workspace = Workspace.init(tmp_path / "ws", script_source=source)
    workspace.start_run("night")
    workspace.checkout_run("night")
    return workspace


@pytest.mark.e2e
def test_each_worker_trains_in_a_checkout_of_its_own(ws: Workspace) -> None:
    one, _ = ws.commit_experiment("night", 1, BASE.replace("0.003", "0.01"), "one")
    two, _ = ws.commit_experiment("night", 2, BASE.replace("DEPTH = 4", "DEPTH = 6"), "two")
    first = worktrees.checkout(ws.repo, ws.paths, 0, one)
    second = worktrees.checkout(ws.repo, ws.paths, 1, two)
    assert first == ws.paths.worktree(0) and second == ws.paths.worktree(1)
    assert "0.01" in (first / "train.py").read_text()
    assert "DEPTH = 6" in (second / "train.py").read_text()
    assert (ws.path / "train.py").read_text() == BASE  # the user's tree is never touched
    # Whatever a training left in a worktree goes with the next checkout.
    (first / "train.py").write_text("broken")
    (first / "left_behind.bin").write_bytes(b"x")
    again = worktrees.checkout(ws.repo, ws.paths, 0, two)
    assert (again / "train.py").read_text() == ws.script_at(two)
    assert not (again / "left_behind.bin").exists()
    # Detached, and no branch is left behind for them; git sees a sound repository.
    assert git(ws.path, "branch", "--format=%(refname:short)").split() == ["cockpit/night", "main"]
    listed = git(ws.path, "worktree", "list", "--porcelain")
    assert listed.count("detached") == 2
    assert git(ws.path, "status", "--porcelain") == ""
    git(ws.path, "fsck", "--strict")


@pytest.mark.e2e
def test_a_worktree_a_killed_engine_left_broken_is_made_again(ws: Workspace) -> None:
    one, _ = ws.commit_experiment("night", 1, BASE.replace("0.003", "0.01"), "one")
    path = worktrees.checkout(ws.repo, ws.paths, 0, one)
    (path / ".git").unlink()  # half-removed
    repaired = worktrees.checkout(ws.repo, ws.paths, 0, one)
    assert (repaired / "train.py").read_text() == ws.script_at(one)
    git(ws.path, "worktree", "list")
    import shutil

    shutil.rmtree(path)  # gone altogether, still registered
    assert (worktrees.checkout(ws.repo, ws.paths, 0, one) / "train.py").is_file()
    worktrees.remove_all(ws.repo, ws.paths)
    assert not ws.paths.worktrees.exists()
    assert [n for n in ws.repo.list_worktrees() if n.startswith("cockpit-")] == []
    git(ws.path, "fsck", "--strict")


@pytest.mark.e2e
def test_a_change_made_on_an_old_best_is_reapplied_onto_the_new_one(ws: Workspace) -> None:
    base = ws.best_commit("night")
    faster, _ = ws.commit_experiment("night", 1, BASE.replace("0.003", "0.01"), "faster")
    deeper, _ = ws.commit_experiment(
        "night", 2, BASE.replace("DEPTH = 4", "DEPTH = 6"), "deeper", parent=base
    )
    ws.keep("night", faster)
    moved = ws.reapply("night", 2, deeper, rebase=1)
    assert moved is not None
    commit = ws.repo[moved].peel(pygit2.Commit)
    assert str(commit.parent_ids[0]) == faster  # a child of the new best: it can be kept
    script = ws.script_at(moved)
    assert "LEARNING_RATE = 0.01" in script and "DEPTH = 6" in script
    assert ws.experiment_ref("night", 2) == moved
    stale = ws.repo.references["refs/cockpit/night/2-stale1"].peel(pygit2.Commit)
    assert str(stale.id) == deeper  # the change as it was trained is kept
    ws.keep("night", moved)
    assert ws.best_commit("night") == moved
    git(ws.path, "fsck", "--strict")


def test_a_change_that_conflicts_with_the_new_best_is_not_reapplied(ws: Workspace) -> None:
    base = ws.best_commit("night")
    one, _ = ws.commit_experiment("night", 1, BASE.replace("0.003", "0.01"), "one")
    two, _ = ws.commit_experiment("night", 2, BASE.replace("0.003", "0.02"), "two", parent=base)
    ws.keep("night", one)
    assert ws.reapply("night", 2, two, rebase=1) is None
    assert ws.experiment_ref("night", 2) == two  # nothing moved


def test_changes_to_neighbouring_lines_combine_and_a_clash_does_not() -> None:
    from cockpit.engine.reapply import carry_change

    faster = BASE.replace("0.003", "0.01")
    deeper = BASE.replace("DEPTH = 4", "DEPTH = 6")
    combined = carry_change(BASE, deeper, onto=faster)
    assert combined == faster.replace("DEPTH = 4", "DEPTH = 6")
    assert carry_change(BASE, BASE.replace("0.003", "0.02"), onto=faster) is None  # same line
    assert carry_change(BASE, deeper, onto=deeper) is None  # already there
    added = BASE.replace("WIDTH = 64\n", "WIDTH = 64\nHEADS = 8\n")
    assert "HEADS = 8" in (carry_change(BASE, added, onto=faster) or "")
    removed = BASE.replace("WIDTH = 64\n", "")
    assert "WIDTH" not in (carry_change(BASE, removed, onto=faster) or "WIDTH")
