"""A run in git: the branch ``cockpit/<tag>`` that points at its best commit, the ref
``refs/cockpit/<tag>/base`` that remembers where it started, and the names of its
experiments' refs; starting a run, moving its branch, checking it out, and the history it
kept."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pygit2

from cockpit.engine.script_commits import ScriptCommits
from cockpit.engine.workspace_error import WorkspaceError

_BRANCH_PREFIX = "cockpit/"
RUN_REFS = "refs/cockpit/"
_BASE_REF = "base"
# One path component, so that refs/cockpit/<tag>/<n> of two runs can never collide.
_TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_tag(tag: str) -> str:
    """``tag`` if it can name a run, else WorkspaceError."""
    if (
        not isinstance(tag, str)
        or not _TAG_PATTERN.fullmatch(tag)
        or tag.endswith(".lock")
        or ".." in tag
    ):
        raise WorkspaceError(
            f"{tag!r} cannot name a run: use letters, digits, '.', '_' and '-', starting "
            "with a letter or digit (for example nov26)"
        )
    return tag


def branch_name(tag: str) -> str:
    """The run's branch: ``cockpit/<tag>``."""
    return _BRANCH_PREFIX + check_tag(tag)


def experiment_refname(tag: str, number: int) -> str:
    """The ref of experiment ``number`` of a run: ``refs/cockpit/<tag>/<number>``."""
    # 0 is the baseline: its ref names the run's base commit itself.
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise WorkspaceError(f"experiment numbers start at 0 (the baseline), not {number!r}")
    return f"{RUN_REFS}{check_tag(tag)}/{number}"


def _branch_ref(tag: str) -> str:
    return "refs/heads/" + branch_name(tag)


def _base_refname(tag: str) -> str:
    return f"{RUN_REFS}{check_tag(tag)}/{_BASE_REF}"


def _first_parents(commit: pygit2.Commit) -> Iterator[pygit2.Commit]:
    while True:
        yield commit
        if not commit.parents:
            return
        commit = commit.parents[0]


class RunRefs:
    """The runs of one workspace's repository; the script's commits come from ``scripts``."""

    def __init__(self, repo: pygit2.Repository, scripts: ScriptCommits) -> None:
        self._repo = repo
        self._scripts = scripts

    def run_refnames(self, tag: str) -> list[str]:
        """Every ref under ``refs/cockpit/<tag>/`` (experiments and the base)."""
        prefix = f"{RUN_REFS}{check_tag(tag)}/"
        return [name for name in self._repo.references if name.startswith(prefix)]

    def unique_tag(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, … : the first tag no run has used yet."""
        candidate = check_tag(base)
        suffix = 2
        while self._taken(candidate):
            candidate = f"{base}-{suffix}"
            suffix += 1
        return candidate

    def _taken(self, tag: str) -> bool:
        return _branch_ref(tag) in self._repo.references or bool(self.run_refnames(tag))

    def start(self, tag: str) -> str:
        """Create the run's branch at the current HEAD commit; return the branch name."""
        branch = branch_name(tag)
        head = self._scripts.head()
        if _branch_ref(tag) in self._repo.references:
            raise WorkspaceError(
                f"a run named {tag} already exists (branch {branch}); resume it, or start "
                "one with another tag"
            )
        if self.run_refnames(tag):
            raise WorkspaceError(
                f"experiments of an earlier run named {tag} are still recorded under "
                f"{RUN_REFS}{tag}/; start the run with another tag"
            )
        try:
            self._repo.create_reference_direct(
                _branch_ref(tag), head.id, False, message=f"cockpit: start run {tag}"
            )
        # A branch named plain "cockpit" blocks the path; libgit2 reports it as an OSError.
        except (pygit2.GitError, OSError) as exc:
            raise WorkspaceError(
                f"cannot create the branch {branch}: {exc}; start the run with another tag, "
                "or rename the branch in the way"
            ) from exc
        # Created after the branch: a crash in between leaves a run whose base kept_history
        # can still infer, while the reverse order would leave a tag that blocks itself.
        self._repo.references.create(_base_refname(tag), head.id, force=True)
        return branch

    def tip(self, tag: str) -> pygit2.Commit:
        """The run's best commit, where its branch points."""
        reference = self._repo.references.get(_branch_ref(tag))
        if reference is None:
            raise WorkspaceError(
                f"there is no run named {tag} (no branch {branch_name(tag)}); start one first"
            )
        return reference.peel(pygit2.Commit)

    def kept_and_base(self, tag: str) -> tuple[list[pygit2.Commit], pygit2.Commit]:
        """The run's kept commits (newest first) and the commit the run started from."""
        tip = self.tip(tag)
        base_ref = self._repo.references.get(_base_refname(tag))
        base_id = base_ref.peel(pygit2.Commit).id if base_ref is not None else None
        walked: list[pygit2.Commit] = []
        for commit in _first_parents(tip):
            if commit.id == base_id:
                return walked, commit
            walked.append(commit)
        # The base ref is gone, or the branch was rewritten by hand: the run then starts
        # below its newest run of experiment commits.
        experiments = {
            self._repo.references[name].peel(pygit2.Commit).id
            for name in self.run_refnames(tag)
            if name.rsplit("/", 1)[1].isdigit()
        }
        for position, commit in enumerate(walked):
            if commit.id not in experiments:
                return walked[:position], commit
        return walked[:-1], walked[-1]  # all experiments down to the root: call the root the base

    def checkout(self, tag: str) -> None:
        """Point HEAD at the run's branch and the working tree at its best commit; refused,
        with nothing changed, when the user's script has uncommitted changes."""
        tip = self.tip(tag)
        refname = _branch_ref(tag)
        if self._scripts.is_dirty():
            raise WorkspaceError(
                f"{self._scripts.script_name} has uncommitted changes that switching to run "
                f"{tag} would overwrite; commit them (git commit -am ...) or set them aside "
                "(git stash), then try again"
            )
        if self._scripts.head_refname() == refname:
            return
        self._scripts.checkout(tip, f"switching to run {tag}")
        self._repo.set_head(refname)

    def move(self, tag: str, tip: pygit2.Commit, target: pygit2.Commit, action: str) -> None:
        """Point the run's branch at ``target``; the working tree follows when it is on the run."""
        refname = _branch_ref(tag)
        attached = self._scripts.head_refname() == refname
        detached_on_tip = self._repo.head_is_detached and self._repo.head.target == tip.id
        if attached or detached_on_tip:
            if not self._scripts.matches(tip):
                raise WorkspaceError(
                    f"{self._scripts.script_name} has uncommitted changes that {action} in run "
                    f"{tag} would overwrite, so nothing was changed; commit them (git commit "
                    "-am ...) or set them aside (git stash), then try again"
                )
            # Before the branch moves, so that libgit2 compares the files against the old tip.
            self._scripts.checkout(target, action)
        self._repo.references[refname].set_target(target.id, f"cockpit: {action}")
        if detached_on_tip:
            self._repo.set_head(target.id)
