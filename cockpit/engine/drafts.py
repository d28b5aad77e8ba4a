"""The proposals on their way: drafted on threads beside the engine, committed on its thread.

A draft is made off the engine's thread (the model can take a while) on the best of the
moment; when it is ready it is committed to git as a child of that best and journaled, to
wait for a worker. Two drafts made side by side can be the same idea: the later one goes back
to the proposer as a repeat. An experiment committed to git but never journaled (the engine
died in between) is adopted instead of drafted again.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import pygit2

from agent.proposal import Proposal
from cockpit.engine.failpoints import failpoint
from cockpit.engine.proposing import Basis, Draft, Drafting
from cockpit.engine.workspace import Workspace, lines_of_code
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.steering import SUPERVISED


class DraftDesk:
    """The run's drafts in progress, and the commits of those that are ready."""

    def __init__(
        self,
        journal: Journal,
        workspace: Workspace,
        drafting: Drafting,
        say: Callable[[str], None],
        marks: list[tuple[Any, ...]],
        *,
        max_drafting: int,
    ) -> None:
        self.journal = journal
        self.workspace = workspace
        self.drafting = drafting
        self.say = say
        self.marks = marks
        self.max_drafting = max_drafting
        self.pending: list[concurrent.futures.Future[Draft | None]] = []
        self.exhausted = False  # the proposer has nothing left to propose
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def order(self, run: Run, mode: str) -> None:
        """Start drafting a proposal on the run's best now."""
        best = self.workspace.best_commit(run.tag)
        basis = Basis(
            run=run,
            best_commit=best,
            best_script=self.workspace.script_at(best),
            mode=mode,
            script_at=self._script_at,
        )
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.max_drafting, thread_name_prefix="cockpit-draft"
            )
        self.pending.append(self._pool.submit(self.drafting.draft, basis))

    def collect(self, run: Run, mode: str) -> None:
        """Commit the drafts that are ready, each on the best it was made on."""
        journal = self.journal
        for future in [f for f in self.pending if f.done()]:
            self.pending.remove(future)
            draft = future.result()  # the proposer's own failures surface here
            if draft is None:
                self.exhausted = True
                continue
            proposal = draft.proposal
            if journal.has_script_hash(run.id, proposal.script_hash):
                # Drafted side by side with the same idea: the later one goes back.
                self.drafting.reject_repeat(run, proposal)
                continue
            number = journal.next_number(run.id)
            sha, _ = self.workspace.commit_experiment(
                run.tag,
                number,
                proposal.script,
                f"{proposal.description}\n\n{proposal.hypothesis}\n",
                parent=draft.parent_commit,
            )
            failpoint("committed")
            self._journal(run, mode, number, proposal, sha, draft.parent_commit, draft.details)

    def adopt_orphan(self, run: Run, mode: str) -> bool:
        """Journal an experiment committed to git but never journaled (the engine died in
        between); whether there was one."""
        workspace = self.workspace
        number = self.journal.next_number(run.id)
        orphan = workspace.experiment_ref(run.tag, number)
        if orphan is None:
            return False
        commit = workspace.repo[orphan].peel(pygit2.Commit)
        lines = commit.message.strip().splitlines()
        proposal = Proposal(
            lines[0] if lines else f"experiment {number}",
            "",
            workspace.script_at(orphan),
            "recovered",
        )
        parent = str(commit.parent_ids[0]) if commit.parent_ids else None
        self._journal(run, mode, number, proposal, orphan, parent, None)
        return True

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # A draft in progress is the model's time, not the run's: it is not waited for.
            pool.shutdown(wait=False, cancel_futures=True)
        self.pending.clear()

    def _journal(
        self,
        run: Run,
        mode: str,
        number: int,
        proposal: Proposal,
        sha: str,
        parent: str | None,
        details: dict[str, Any] | None,
    ) -> Experiment:
        experiment = self.journal.add_experiment(
            run.id,
            number,
            parent_commit=parent,
            commit_sha=sha,
            ref=self.workspace.experiment_refname(run.tag, number),
            proposer=proposal.proposer,
            model=proposal.model,
            description=proposal.description,
            hypothesis=proposal.hypothesis,
            diff=self.workspace.diff(sha),
            script_hash=proposal.script_hash,
            lines_of_code=lines_of_code(proposal.script),
            status="awaiting_approval" if mode == SUPERVISED else "committed",
            details=details,
        )
        self.marks.append(("ready", time.perf_counter(), number))
        self.say(f"#{number} {proposal.description} ({proposal.proposer})")
        return experiment

    def _script_at(self, sha: str) -> str:
        # Read for a drafting thread: a repository object of its own, never shared.
        repo = pygit2.Repository(str(self.workspace.path))
        commit = repo.revparse_single(sha).peel(pygit2.Commit)
        entry = commit.tree[self.workspace.script_name]
        blob = repo[entry.id]
        assert isinstance(blob, pygit2.Blob)
        return blob.data.decode("utf-8", errors="replace")
