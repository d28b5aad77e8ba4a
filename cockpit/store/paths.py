"""Where a workspace keeps what the cockpit writes: the one owner of those paths.

Everything lives under ``<workspace>/.cockpit/`` (git-ignored): the journal, the engine's lock
and log, the folders of each run's trainings and the workers' git worktrees. Readers that
must not touch the repository (a report, the cockpit attaching to an engine) find them here
without opening it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

COCKPIT_DIRNAME = ".cockpit"


@dataclass(frozen=True)
class WorkspacePaths:
    """The cockpit's files of the workspace at ``root``; nothing is created by asking."""

    root: Path

    @property
    def cockpit_dir(self) -> Path:
        return self.root / COCKPIT_DIRNAME

    @property
    def journal(self) -> Path:
        """The journal (SQLite): the single source of truth of every run."""
        return self.cockpit_dir / "journal.db"

    @property
    def lock(self) -> Path:
        """Held by the engine while it runs; it holds the engine's pid."""
        return self.cockpit_dir / "engine.lock"

    @property
    def engine_log(self) -> Path:
        """What an engine started in the background prints."""
        return self.cockpit_dir / "engine.log"

    @property
    def worktrees(self) -> Path:
        """The workers' git worktrees, one folder each."""
        return self.cockpit_dir / "worktrees"

    def worktree(self, worker: int) -> Path:
        return self.worktrees / f"worker-{worker}"

    def runs(self, tag: str) -> Path:
        """The folders of the run's trainings, one per training."""
        return self.cockpit_dir / "runs" / tag

    def pacing(self, tag: str, worker: int = 0) -> Path:
        """The step plans of the run's scripts on one worker's device: a plan is made under
        the conditions of the device that trains it, never borrowed from another."""
        name = "pacing.json" if worker == 0 else f"pacing-worker-{worker}.json"
        return self.runs(tag) / name

    def training(
        self,
        tag: str,
        number: int,
        *,
        attempt: int = 1,
        seed: int | None = None,
        rebase: int = 0,
        kind: str = "",
    ) -> Path:
        """The folder of one training of experiment ``number``: a rerun after an interruption
        (attempt), a training with another seed than the run's (seed) and a training of its
        change re-applied onto a newer best (rebase), and a training on another kind of device
        (kind) each get a folder of their own."""
        name = f"{number:04d}"
        if attempt > 1:
            name += f"-{attempt}"
        if rebase:
            name += f"-on{rebase}"
        if seed is not None:
            name += f"-seed{seed}"
        if kind:
            name += "-" + "".join(c if c.isalnum() else "_" for c in kind.lower()).strip("_")
        return self.runs(tag) / name
