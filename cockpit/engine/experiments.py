"""An experiment in git: a commit whose parent is the best commit it was proposed on, under
its own ref ``refs/cockpit/<tag>/<number>`` so that a discarded experiment is never lost; and
the same change re-applied onto a newer best."""

from __future__ import annotations

import pygit2

from cockpit.engine.reapply import carry_change
from cockpit.engine.run_refs import RunRefs, experiment_refname
from cockpit.engine.script_commits import ScriptCommits, commit_message, short
from cockpit.engine.workspace_error import WorkspaceError


class Experiments:
    """The experiments of one workspace's runs."""

    def __init__(self, repo: pygit2.Repository, scripts: ScriptCommits, runs: RunRefs) -> None:
        self._repo = repo
        self._scripts = scripts
        self._runs = runs

    def commit(
        self, tag: str, number: int, script_text: str, message: str, parent: str | None
    ) -> tuple[str, str]:
        """Commit ``script_text`` as experiment ``number`` (see `Workspace.commit_experiment`)."""
        if number == 0:
            raise WorkspaceError(
                "experiment 0 is the baseline, the run's base commit; number experiments from 1"
            )
        refname = experiment_refname(tag, number)
        tip = self._runs.tip(tag) if parent is None else self._scripts.commit(parent)
        data = script_text.encode("utf-8")
        existing = self._repo.references.get(refname)
        if existing is not None:
            return self._reuse(refname, existing, tip, data), refname
        commit_id = self._scripts.commit_onto(
            tip, data, commit_message(message, f"Experiment {number}")
        )
        try:
            self._repo.references.create(refname, commit_id)
        except pygit2.AlreadyExistsError:
            # Another writer got there first; judge its ref as a restart would.
            existing = self._repo.references[refname]
            return self._reuse(refname, existing, tip, data), refname
        return str(commit_id), refname

    def _reuse(
        self, refname: str, reference: pygit2.Reference, tip: pygit2.Commit, data: bytes
    ) -> str:
        """The sha of an existing experiment ref that matches the request, else an error."""
        commit = reference.peel(pygit2.Commit)
        blob_id = self._scripts.blob_id(commit)
        same_script = blob_id is not None and self._scripts.blob_data(blob_id) == data
        on_best = bool(commit.parent_ids) and commit.parent_ids[0] == tip.id
        already_kept = commit.id == tip.id
        if same_script and (on_best or already_kept):
            return str(commit.id)
        raise WorkspaceError(
            f"{refname} already holds a different experiment ({short(commit.id)}); "
            "experiment numbers are never reused, so continue with the next number"
        )

    def sha(self, tag: str, number: int) -> str | None:
        """The sha of experiment ``number`` of the run, or None if it was never committed."""
        reference = self._repo.references.get(experiment_refname(tag, number))
        if reference is None:
            return None
        return str(reference.peel(pygit2.Commit).id)

    def reapply(self, tag: str, number: int, sha: str, rebase: int) -> str | None:
        """Re-apply experiment ``number``'s change onto the run's best commit (see
        `Workspace.reapply`); the new sha, or None when the change does not apply."""
        commit = self._scripts.commit(sha)
        if not commit.parents:
            raise WorkspaceError(f"commit {short(commit.id)} has no parent to re-apply from")
        tip = self._runs.tip(tag)
        carried = carry_change(
            self._scripts.text_at(str(commit.parent_ids[0])),
            self._scripts.text_at(sha),
            self._scripts.text_at(str(tip.id)),
        )
        if carried is None:
            return None
        message = f"{commit.message.rstrip()}\n\n(re-applied onto {short(tip.id)})\n"
        new_id = self._scripts.commit_onto(tip, carried.encode("utf-8"), message)
        refname = experiment_refname(tag, number)
        self._repo.references.create(f"{refname}-stale{rebase}", commit.id, force=True)
        self._repo.references.create(refname, new_id, force=True)
        return str(new_id)
