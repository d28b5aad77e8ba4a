"""The workers' git worktrees: one checkout per worker under ``.cockpit/worktrees/``.

A training runs in its worker's worktree, checked out at the experiment's commit (detached),
so that trainings side by side never see each other's files and a command that runs the
workspace's own script (script mode) finds the experiment's version there. The user's own
working tree is never touched by a training. Worktrees are reused from run to run; one left
broken by a killed engine is pruned and made again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pygit2
from pygit2.enums import CheckoutStrategy

from cockpit.store.paths import WorkspacePaths


def _name(worker: int) -> str:
    return f"cockpit-worker-{worker}"


def checkout(repo: pygit2.Repository, paths: WorkspacePaths, worker: int, sha: str) -> Path:
    """The worker's worktree, created or repaired as needed, checked out at ``sha``."""
    path = paths.worktree(worker)
    tree = _open(repo, worker, path) or _create(repo, worker, path)
    found = tree.get(sha)
    if found is None:  # a worktree shares the repository's objects: this cannot happen
        raise ValueError(f"commit {sha} is not in the repository")
    commit = found.peel(pygit2.Commit)
    # FORCE: the worktree is the cockpit's own; whatever a training left there goes.
    tree.checkout_tree(
        commit.tree, strategy=CheckoutStrategy.FORCE | CheckoutStrategy.REMOVE_UNTRACKED
    )
    tree.set_head(commit.id)
    return path


def _open(repo: pygit2.Repository, worker: int, path: Path) -> pygit2.Repository | None:
    """The worker's worktree if it is registered and sound, else None (and it is cleared)."""
    name = _name(worker)
    if name in repo.list_worktrees():
        registered = repo.lookup_worktree(name)
        if Path(registered.path).resolve() == path.resolve() and (path / ".git").is_file():
            try:
                return pygit2.Repository(str(path))
            except pygit2.GitError:
                pass
        registered.prune(True)
    if path.exists():
        shutil.rmtree(path)
    return None


def _create(repo: pygit2.Repository, worker: int, path: Path) -> pygit2.Repository:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = _name(worker)
    # libgit2 makes a worktree only on a branch: a short-lived one, gone once the worktree's
    # HEAD is detached, so `git branch` never lists the workers.
    head = repo.head.peel(pygit2.Commit)
    branch = repo.branches.local.create(name, head, force=True)
    try:
        repo.add_worktree(name, str(path), branch)
        tree = pygit2.Repository(str(path))
        tree.set_head(head.id)
    finally:
        repo.branches.local.delete(name)
    return tree


def remove_all(repo: pygit2.Repository, paths: WorkspacePaths) -> None:
    """Remove every worker's worktree (their folders and git's records of them)."""
    for name in repo.list_worktrees():
        if name.startswith("cockpit-worker-"):
            repo.lookup_worktree(name).prune(True)
    shutil.rmtree(paths.worktrees, ignore_errors=True)
