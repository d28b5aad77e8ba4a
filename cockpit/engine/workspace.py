"""The research workspace: a git repository that holds the script the agent edits.

A workspace holds ``train.py`` (the only file the agent may change), ``program.md`` (the
human's research strategy), ``config.toml`` (this workspace's settings), ``results.tsv``
and ``.cockpit/`` (both git-ignored). Its history is the research record:

- a run tag names a branch ``cockpit/<tag>`` that always points at the best kept commit,
  and a ref ``refs/cockpit/<tag>/base`` that remembers where the run started;
- every experiment is a commit whose parent is the best commit at the time, with its own
  ref ``refs/cockpit/<tag>/<number>``, so a discarded experiment is never lost;
- keep = the branch advances to the experiment; discard = nothing happens;
- the user's uncommitted work is never overwritten: the methods refuse and explain.

Git is driven through pygit2 only, and everything written stays valid for the git
command line (``git log``, ``git show``, ``git fsck``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path, PurePosixPath

import pygit2
from pygit2.enums import CheckoutStrategy, FileMode, RepositoryOpenFlag

from cockpit.engine.reapply import carry_change
from cockpit.store.paths import WorkspacePaths

__all__ = [
    "DEFAULT_SCRIPT",
    "Workspace",
    "WorkspaceError",
    "default_tag",
    "lines_of_code",
]

DEFAULT_SCRIPT = "train.py"
INITIAL_BRANCH = "main"
INITIAL_MESSAGE = "Research workspace"
ADOPT_MESSAGE = "Adopt local changes to train.py as the baseline"

# Used when neither the repository nor the user's git configuration names anyone: a
# fresh machine must be able to run the loop without `git config user.name` first.
FALLBACK_NAME = "Research Cockpit"
FALLBACK_EMAIL = "cockpit@localhost"

_APP_NAME = "research-cockpit"
_DATA_DIR_ENV = "COCKPIT_DATA_DIR"
_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "template"
# Template file -> name in the workspace. "gitignore" is shipped without its dot so that
# packaging tools and git do not treat it as the project's own ignore file.
_TEMPLATE_FILES = {
    "program.md": "program.md",
    "config.toml": "config.toml",
    "gitignore": ".gitignore",
}

_BRANCH_PREFIX = "cockpit/"
_RUN_REFS = "refs/cockpit/"
_BASE_REF = "base"
# One path component, so that refs/cockpit/<tag>/<n> of two runs can never collide.
_TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Fixed rather than strftime("%b"), which follows the locale.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class WorkspaceError(Exception):
    """A problem with the workspace; ``str(error)`` says what happened and what to do."""


def default_tag(today: date | None = None) -> str:
    """The run tag for a day: the lower-case month abbreviation and the day, e.g. ``nov26``."""
    day = today or date.today()
    return f"{_MONTHS[day.month - 1]}{day.day}"


def lines_of_code(text: str) -> int:
    """Count the lines that are neither blank nor comments (the simplicity tie-break)."""
    count = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            count += 1
    return count


def _normalize_script_name(script_name: str) -> str:
    """``script_name`` as a clean relative POSIX path inside the workspace, or an error."""
    posix = PurePosixPath(script_name.replace("\\", "/"))
    parts = posix.parts
    if not parts or posix.is_absolute() or ".." in parts or parts[0] in (".git", "."):
        raise WorkspaceError(
            f"the training script {script_name!r} must be a path relative to the workspace "
            "(for example train.py); fix trainer.script in config.toml"
        )
    return posix.as_posix()


def _message(text: str, fallback: str) -> str:
    """A commit message in git's usual shape: no surrounding blank space, one final newline."""
    return (text.strip() or fallback) + "\n"


def _short(oid: pygit2.Oid | str) -> str:
    return str(oid)[:10]


class Workspace:
    """A research workspace on disk; see the module docstring for the layout in git.

    The constructor opens the git repository at ``path`` (exactly there: a repository in
    a parent directory does not count). :meth:`open` also checks that the script exists,
    :meth:`init` creates a new workspace.
    """

    def __init__(self, path: Path, *, script_name: str = DEFAULT_SCRIPT) -> None:
        self._path = Path(path).expanduser().resolve()
        self._script_name = _normalize_script_name(script_name)
        try:
            # NO_SEARCH: a directory inside some other repository is not a workspace.
            self._repo = pygit2.Repository(str(self._path), RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError as exc:
            raise WorkspaceError(
                f"{self._path} is not a research workspace (no git repository there); "
                "create one with `cockpit init DIR`"
            ) from exc
        if self._repo.is_bare:
            raise WorkspaceError(
                f"{self._path} is a bare git repository, not a research workspace; "
                "create one with `cockpit init DIR`"
            )

    # ------------------------------------------------------------------------------
    # Creating and opening

    @classmethod
    def init(
        cls,
        path: Path,
        *,
        script_source: Path | None = None,
        script_name: str = DEFAULT_SCRIPT,
    ) -> Workspace:
        """Create a workspace at ``path`` (absent or empty) with its first commit on ``main``.

        ``train.py`` is copied from ``script_source`` (default: the bundled template);
        ``program.md``, ``config.toml`` and ``.gitignore`` come from the cockpit's template.
        """
        path = Path(path).expanduser().resolve()
        name = _normalize_script_name(script_name)
        if script_source is None:
            # Imported here: the harness pulls in torch, which reading a workspace never needs.
            from trainer import template_path

            script_source = template_path()
        if not Path(script_source).is_file():
            raise WorkspaceError(
                f"the script {script_source} to start the workspace from does not exist; "
                "check the path"
            )
        if path.exists() and not path.is_dir():
            raise WorkspaceError(
                f"{path} is a file; choose a new or empty directory for the workspace"
            )
        created = not path.exists()
        if not created and any(path.iterdir()):
            raise WorkspaceError(
                f"{path} is not empty; choose a new or empty directory for the workspace "
                "(or, if it already is a workspace, open it with --workspace)"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            pygit2.init_repository(str(path), initial_head=INITIAL_BRANCH)
            workspace = cls(path, script_name=name)
            files = {name: Path(script_source)}
            files.update(
                {target: _TEMPLATE_DIR / source for source, target in _TEMPLATE_FILES.items()}
            )
            for target, source in files.items():
                destination = path / target
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(source.read_bytes())
            # Through the index, so that `git status` is clean from the start.
            index = workspace.repo.index
            for target in files:
                index.add(target)
            index.write()
            signature = workspace._signature()
            workspace.repo.create_commit(
                "HEAD", signature, signature, _message(INITIAL_MESSAGE, ""), index.write_tree(), []
            )
        except BaseException:
            # Leave no half-made workspace behind: a retry would then find a non-empty dir.
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        return workspace

    @classmethod
    def open(cls, path: Path, *, script_name: str = DEFAULT_SCRIPT) -> Workspace:
        """Open an existing workspace; WorkspaceError if it is none or has no script."""
        path = Path(path).expanduser().resolve()
        if not path.is_dir():
            raise WorkspaceError(
                f"there is no workspace at {path} (no such directory); "
                "create one with `cockpit init DIR`"
            )
        workspace = cls(path, script_name=script_name)
        if not workspace.script_path.is_file():
            head = workspace._head_commit_or_none()
            if head is not None and workspace._script_blob_id(head) is not None:
                raise WorkspaceError(
                    f"{workspace.script_path} is missing from the workspace; restore it with "
                    f"`git -C {path} checkout -- {workspace.script_name}`, or create a new "
                    "workspace with `cockpit init DIR`"
                )
            raise WorkspaceError(
                f"{path} has no {workspace.script_name}, so it is not a research workspace; "
                "create one with `cockpit init DIR` (or set trainer.script in its config.toml)"
            )
        return workspace

    @staticmethod
    def default_path() -> Path:
        """Where the default workspace lives: ``<user data dir>/workspace``.

        ``COCKPIT_DATA_DIR`` replaces the user data directory (tests, or several setups).
        """
        configured = os.environ.get(_DATA_DIR_ENV, "")
        if configured:
            return Path(configured).expanduser() / "workspace"
        # Imported here so that merely importing the engine does not need platformdirs.
        import platformdirs

        return platformdirs.user_data_path(_APP_NAME) / "workspace"

    @classmethod
    def open_or_create_default(cls, *, script_name: str = DEFAULT_SCRIPT) -> tuple[Workspace, bool]:
        """Open the default workspace, creating it first if needed; the bool says "created"."""
        path = cls.default_path()
        if path.is_dir() and any(path.iterdir()):
            return cls.open(path, script_name=script_name), False
        return cls.init(path, script_name=script_name), True

    # ------------------------------------------------------------------------------
    # Properties

    @property
    def path(self) -> Path:
        """The workspace's directory (absolute)."""
        return self._path

    @property
    def repo(self) -> pygit2.Repository:
        """The workspace's git repository."""
        return self._repo

    @property
    def script_name(self) -> str:
        """The script's path relative to the workspace, in POSIX form (``train.py``)."""
        return self._script_name

    @property
    def script_path(self) -> Path:
        """The script in the working tree."""
        return self._path / self._script_name

    @property
    def paths(self) -> WorkspacePaths:
        """Where the cockpit's own files of this workspace are (``.cockpit/`` is created)."""
        return WorkspacePaths(self.cockpit_dir.parent)

    @property
    def cockpit_dir(self) -> Path:
        """``.cockpit/``: journal, logs and lock; created on first use."""
        directory = WorkspacePaths(self._path).cockpit_dir
        directory.mkdir(exist_ok=True)
        ignore = directory / ".gitignore"
        if not ignore.exists():
            # The workspace's .gitignore already lists .cockpit/, but a user may have edited
            # it; this keeps `git status` quiet whatever it says.
            ignore.write_text("*\n")
        return directory

    # ------------------------------------------------------------------------------
    # The user's own changes to the script

    def script_is_dirty(self) -> bool:
        """Whether the script differs from HEAD's, in the working tree or staged in the index.

        A script that is missing, untracked, or in a repository with no commit is dirty.
        """
        head = self._head_commit_or_none()
        return head is None or not self._script_matches(head)

    def require_clean_script(self) -> None:
        """Raise WorkspaceError if the user has uncommitted changes to the script."""
        if self.script_is_dirty():
            raise WorkspaceError(
                f"{self._script_name} has uncommitted changes; commit them (git commit -am ...) "
                "or run with --adopt to make them the new baseline"
            )

    def adopt_script(self, message: str = ADOPT_MESSAGE) -> str:
        """Commit the working tree's script onto the current HEAD; return the commit's sha.

        Only the script is committed, whatever else is changed or staged. When the script
        has no changes, nothing is committed and HEAD's sha is returned.
        """
        head = self._head_commit()
        if not self.script_path.is_file():
            raise WorkspaceError(
                f"{self._script_name} is missing from the workspace, so there is nothing to "
                f"adopt; restore it with `git -C {self._path} checkout -- {self._script_name}`"
            )
        if not self.script_is_dirty():
            return str(head.id)
        # Staged first, so that the index (and `git status`) agree with the new commit, and
        # the commit takes exactly the bytes the index recorded.
        index = self._repo.index
        index.read()
        index.add(self._script_name)
        index.write()
        tree = self._tree_with_blob(head.tree, index[self._script_name].id)
        signature = self._signature()
        commit_id = self._repo.create_commit(
            "HEAD", signature, signature, _message(message, ADOPT_MESSAGE), tree, [head.id]
        )
        return str(commit_id)

    # ------------------------------------------------------------------------------
    # Runs

    @staticmethod
    def default_tag(today: date | None = None) -> str:
        """See :func:`default_tag`."""
        return default_tag(today)

    @staticmethod
    def lines_of_code(text: str) -> int:
        """See :func:`lines_of_code`."""
        return lines_of_code(text)

    @staticmethod
    def branch_name(tag: str) -> str:
        """The run's branch: ``cockpit/<tag>``."""
        return _BRANCH_PREFIX + _check_tag(tag)

    def unique_tag(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, … : the first tag no run has used yet."""
        candidate = _check_tag(base)
        suffix = 2
        while self._tag_taken(candidate):
            candidate = f"{base}-{suffix}"
            suffix += 1
        return candidate

    def start_run(self, tag: str) -> str:
        """Create the run's branch at the current HEAD commit; return the branch name.

        The working tree is not touched (see :meth:`checkout_run`). Callers that must not
        start from an unrecorded script call :meth:`require_clean_script` first.
        """
        branch = self.branch_name(tag)
        head = self._head_commit()
        if self._branch_ref(tag) in self._repo.references:
            raise WorkspaceError(
                f"a run named {tag} already exists (branch {branch}); resume it, or start "
                "one with another tag"
            )
        if self._run_refnames(tag):
            raise WorkspaceError(
                f"experiments of an earlier run named {tag} are still recorded under "
                f"{_RUN_REFS}{tag}/; start the run with another tag"
            )
        try:
            self._repo.create_reference_direct(
                self._branch_ref(tag), head.id, False, message=f"cockpit: start run {tag}"
            )
        # A branch named plain "cockpit" blocks the path; libgit2 reports it as an OSError.
        except (pygit2.GitError, OSError) as exc:
            raise WorkspaceError(
                f"cannot create the branch {branch}: {exc}; start the run with another tag, "
                "or rename the branch in the way"
            ) from exc
        # Created after the branch: a crash in between leaves a run whose base kept_history
        # can still infer, while the reverse order would leave a tag that blocks itself.
        self._repo.references.create(self._base_refname(tag), head.id, force=True)
        return branch

    def best_commit(self, tag: str) -> str:
        """The sha of the run's best commit (its branch tip)."""
        return str(self._tip(tag).id)

    def base_commit(self, tag: str) -> str:
        """The sha of the commit the run started from."""
        return str(self._kept_and_base(tag)[1].id)

    def checkout_run(self, tag: str) -> None:
        """Point HEAD at the run's branch and update the working tree to its best commit.

        Refused, with nothing changed, when the user's script has uncommitted changes.
        """
        tip = self._tip(tag)
        refname = self._branch_ref(tag)
        if self.script_is_dirty():
            raise WorkspaceError(
                f"{self._script_name} has uncommitted changes that switching to run {tag} "
                "would overwrite; commit them (git commit -am ...) or set them aside "
                "(git stash), then try again"
            )
        if self._head_refname() == refname:
            return
        self._checkout(tip, f"switching to run {tag}")
        self._repo.set_head(refname)

    # ------------------------------------------------------------------------------
    # Experiments

    @staticmethod
    def experiment_refname(tag: str, number: int) -> str:
        """The ref of experiment ``number`` of a run: ``refs/cockpit/<tag>/<number>``."""
        # 0 is the baseline: its ref names the run's base commit itself.
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise WorkspaceError(f"experiment numbers start at 0 (the baseline), not {number!r}")
        return f"{_RUN_REFS}{_check_tag(tag)}/{number}"

    def commit_experiment(
        self, tag: str, number: int, script_text: str, message: str, parent: str | None = None
    ) -> tuple[str, str]:
        """Commit ``script_text`` as experiment ``number``, a child of ``parent`` (the best
        commit the proposal was made on; default: the run's best commit now).

        The branch does not move; the commit gets the ref ``refs/cockpit/<tag>/<number>``.
        Returns ``(sha, refname)``. Safe to repeat after a crash: when the ref already
        holds the same script on that parent (or has been kept since), it is returned;
        when it holds anything else, WorkspaceError.
        """
        if number == 0:
            raise WorkspaceError(
                "experiment 0 is the baseline, the run's base commit; number experiments from 1"
            )
        refname = self.experiment_refname(tag, number)
        tip = self._tip(tag) if parent is None else self._commit(parent)
        data = script_text.encode("utf-8")
        existing = self._repo.references.get(refname)
        if existing is not None:
            return self._reuse_experiment(refname, existing, tip, data), refname
        tree = self._tree_with_blob(tip.tree, self._repo.create_blob(data))
        signature = self._signature()
        commit_id = self._repo.create_commit(
            None, signature, signature, _message(message, f"Experiment {number}"), tree, [tip.id]
        )
        try:
            self._repo.references.create(refname, commit_id)
        except pygit2.AlreadyExistsError:
            # Another writer got there first; judge its ref as a restart would.
            existing = self._repo.references[refname]
            return self._reuse_experiment(refname, existing, tip, data), refname
        return str(commit_id), refname

    def experiment_ref(self, tag: str, number: int) -> str | None:
        """The sha of experiment ``number`` of the run, or None if it was never committed."""
        reference = self._repo.references.get(self.experiment_refname(tag, number))
        if reference is None:
            return None
        return str(reference.peel(pygit2.Commit).id)

    def reapply(self, tag: str, number: int, sha: str, rebase: int) -> str | None:
        """Re-apply experiment ``number``'s change (``sha`` against its parent) onto the run's
        best commit (see `reapply.carry_change`); the new commit takes the experiment's ref,
        and the commit it replaces keeps one of its own (``<number>-stale<rebase>``), so its
        diff is never lost. Returns the new sha, or None when the change does not apply to
        the best (or is in it already)."""
        commit = self._commit(sha)
        if not commit.parents:
            raise WorkspaceError(f"commit {_short(commit.id)} has no parent to re-apply from")
        tip = self._tip(tag)
        carried = carry_change(
            self.script_at(str(commit.parent_ids[0])),
            self.script_at(sha),
            self.script_at(str(tip.id)),
        )
        if carried is None:
            return None
        tree = self._tree_with_blob(tip.tree, self._repo.create_blob(carried.encode("utf-8")))
        signature = self._signature()
        message = f"{commit.message.rstrip()}\n\n(re-applied onto {_short(tip.id)})\n"
        new_id = self._repo.create_commit(None, signature, signature, message, tree, [tip.id])
        refname = self.experiment_refname(tag, number)
        self._repo.references.create(f"{refname}-stale{rebase}", commit.id, force=True)
        self._repo.references.create(refname, new_id, force=True)
        return str(new_id)

    # ------------------------------------------------------------------------------
    # Decisions

    def keep(self, tag: str, sha: str) -> None:
        """Advance the run's branch to experiment ``sha``, a child of its best commit.

        When HEAD is on the run, the working tree follows, but only if the user's script
        is unchanged from the old best; otherwise WorkspaceError and nothing moves.
        Keeping the current best again does nothing (so a restart can repeat it).
        """
        tip = self._tip(tag)
        commit = self._commit(sha)
        if commit.id == tip.id:
            return
        if not commit.parent_ids or commit.parent_ids[0] != tip.id:
            raise WorkspaceError(
                f"commit {_short(commit.id)} cannot be kept in run {tag}: it is not a child of "
                f"the run's best commit {_short(tip.id)} (it was proposed against another "
                "best); commit its script again as a new experiment instead"
            )
        self._move_run(tag, tip, commit, f"keeping {_short(commit.id)}")

    def revert_to(self, tag: str, sha: str) -> None:
        """Move the run's branch back to ``sha``, the run's base or a commit it kept.

        Used to override a keep; the commits left behind keep their experiment refs. The
        working tree follows under the same rule as :meth:`keep`.
        """
        tip = self._tip(tag)
        commit = self._commit(sha)
        kept, base = self._kept_and_base(tag)
        allowed = {kept_commit.id for kept_commit in kept} | {base.id}
        if commit.id not in allowed:
            raise WorkspaceError(
                f"commit {_short(commit.id)} is not in the kept history of run {tag} (from "
                f"its base {_short(base.id)} to its best {_short(tip.id)}); only a commit the "
                "run kept, or its base, can be restored"
            )
        self._move_run(tag, tip, commit, f"reverting to {_short(commit.id)}")

    # ------------------------------------------------------------------------------
    # Reading

    def script_at(self, sha: str) -> str:
        """The script's text in a commit (a sha, short sha or ref name)."""
        commit = self._commit(sha)
        blob_id = self._script_blob_id(commit)
        if blob_id is None:
            raise WorkspaceError(f"commit {_short(commit.id)} has no {self._script_name}")
        # Never fail to show a script: a stray byte becomes U+FFFD rather than an error.
        return self._blob_data(blob_id).decode("utf-8", errors="replace")

    def diff(self, sha: str) -> str:
        """The unified diff (git's format) of the script from the commit's parent to it.

        Empty when the commit leaves the script unchanged; a root commit is diffed against
        nothing.
        """
        commit = self._commit(sha)
        if commit.parents:
            changes = commit.parents[0].tree.diff_to_tree(commit.tree)
        else:
            changes = commit.tree.diff_to_tree(swap=True)
        for patch in changes:
            if patch is None:  # libgit2 makes no patch for some deltas (binary, unchanged)
                continue
            delta = patch.delta
            if self._script_name in (delta.new_file.path, delta.old_file.path):
                return patch.text or ""
        return ""

    def kept_history(self, tag: str) -> list[str]:
        """The run's kept commits, newest (the best) first; the base is not included.

        These are the first-parent ancestors of the branch tip down to the run's base.
        """
        return [str(commit.id) for commit in self._kept_and_base(tag)[0]]

    # ------------------------------------------------------------------------------
    # Internals

    def _signature(self) -> pygit2.Signature:
        try:
            return self._repo.default_signature
        except (KeyError, pygit2.GitError):  # no user.name / user.email configured anywhere
            return pygit2.Signature(FALLBACK_NAME, FALLBACK_EMAIL)

    def _head_commit_or_none(self) -> pygit2.Commit | None:
        if self._repo.head_is_unborn:
            return None
        return self._repo.head.peel(pygit2.Commit)

    def _head_commit(self) -> pygit2.Commit:
        head = self._head_commit_or_none()
        if head is None:
            raise WorkspaceError(
                f"the workspace {self._path} has no commit yet; commit {self._script_name} "
                "first (git add ... && git commit), or create the workspace with `cockpit init DIR`"
            )
        return head

    def _head_refname(self) -> str | None:
        """The branch HEAD is attached to, or None when it is detached."""
        if self._repo.head_is_detached:
            return None
        return str(self._repo.references["HEAD"].target)

    def _commit(self, revision: str) -> pygit2.Commit:
        try:
            return self._repo.revparse_single(revision).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise WorkspaceError(
                f"{revision!r} names no commit in the workspace {self._path}"
            ) from exc

    def _script_blob_id(self, commit: pygit2.Commit) -> pygit2.Oid | None:
        try:
            entry = commit.tree[self._script_name]
        except KeyError:
            return None
        return entry.id if entry.type_str == "blob" else None

    def _blob_data(self, blob_id: pygit2.Oid) -> bytes:
        blob = self._repo[blob_id]
        assert isinstance(blob, pygit2.Blob), "a script entry is always a blob"
        return blob.data

    def _script_matches(self, commit: pygit2.Commit) -> bool:
        """Whether the working tree's and the index's script are exactly ``commit``'s."""
        expected = self._script_blob_id(commit)
        if expected is None or not self.script_path.is_file():
            return False
        # Hashed from the bytes, not judged from file times: a same-second edit still counts.
        if pygit2.hashfile(str(self.script_path)) != expected:
            return False
        # The index too: a change the user staged and then undid in the file is still theirs.
        index = self._repo.index
        index.read()
        return self._script_name in index and index[self._script_name].id == expected

    def _tree_with_blob(self, tree: pygit2.Tree, blob_id: pygit2.Oid) -> pygit2.Oid:
        """A tree like ``tree`` with the script replaced by the blob ``blob_id``."""
        # An in-memory index handles a script in a subdirectory as easily as at the top.
        index = pygit2.Index()
        index.read_tree(tree)
        mode = FileMode.BLOB
        try:
            if tree[self._script_name].filemode == FileMode.BLOB_EXECUTABLE:
                mode = FileMode.BLOB_EXECUTABLE
        except KeyError:
            pass
        index.add(pygit2.IndexEntry(self._script_name, blob_id, mode))
        return index.write_tree(self._repo)

    def _reuse_experiment(
        self, refname: str, reference: pygit2.Reference, tip: pygit2.Commit, data: bytes
    ) -> str:
        """The sha of an existing experiment ref that matches the request, else an error."""
        commit = reference.peel(pygit2.Commit)
        blob_id = self._script_blob_id(commit)
        same_script = blob_id is not None and self._blob_data(blob_id) == data
        on_best = bool(commit.parent_ids) and commit.parent_ids[0] == tip.id
        already_kept = commit.id == tip.id
        if same_script and (on_best or already_kept):
            return str(commit.id)
        raise WorkspaceError(
            f"{refname} already holds a different experiment ({_short(commit.id)}); "
            "experiment numbers are never reused, so continue with the next number"
        )

    def _branch_ref(self, tag: str) -> str:
        return "refs/heads/" + self.branch_name(tag)

    @staticmethod
    def _base_refname(tag: str) -> str:
        return f"{_RUN_REFS}{_check_tag(tag)}/{_BASE_REF}"

    def _run_refnames(self, tag: str) -> list[str]:
        """Every ref under ``refs/cockpit/<tag>/`` (experiments and the base)."""
        prefix = f"{_RUN_REFS}{_check_tag(tag)}/"
        return [name for name in self._repo.references if name.startswith(prefix)]

    def _tag_taken(self, tag: str) -> bool:
        return self._branch_ref(tag) in self._repo.references or bool(self._run_refnames(tag))

    def _tip(self, tag: str) -> pygit2.Commit:
        reference = self._repo.references.get(self._branch_ref(tag))
        if reference is None:
            raise WorkspaceError(
                f"there is no run named {tag} (no branch {self.branch_name(tag)}); start one first"
            )
        return reference.peel(pygit2.Commit)

    def _first_parents(self, commit: pygit2.Commit) -> Iterator[pygit2.Commit]:
        while True:
            yield commit
            if not commit.parents:
                return
            commit = commit.parents[0]

    def _kept_and_base(self, tag: str) -> tuple[list[pygit2.Commit], pygit2.Commit]:
        """The run's kept commits (newest first) and the commit the run started from."""
        tip = self._tip(tag)
        base_ref = self._repo.references.get(self._base_refname(tag))
        base_id = base_ref.peel(pygit2.Commit).id if base_ref is not None else None
        walked: list[pygit2.Commit] = []
        for commit in self._first_parents(tip):
            if commit.id == base_id:
                return walked, commit
            walked.append(commit)
        # The base ref is gone, or the branch was rewritten by hand: the run then starts
        # below its newest run of experiment commits.
        experiments = {
            self._repo.references[name].peel(pygit2.Commit).id
            for name in self._run_refnames(tag)
            if name.rsplit("/", 1)[1].isdigit()
        }
        for position, commit in enumerate(walked):
            if commit.id not in experiments:
                return walked[:position], commit
        return walked[:-1], walked[-1]  # all experiments down to the root: call the root the base

    def _checkout(self, commit: pygit2.Commit, action: str) -> None:
        """Update the working tree and index from HEAD's tree to ``commit``'s.

        SAFE: a file the user changed is never overwritten; libgit2 refuses instead.
        """
        try:
            self._repo.checkout_tree(commit.tree, strategy=CheckoutStrategy.SAFE)
        except pygit2.GitError as exc:
            raise WorkspaceError(
                f"{action} would overwrite changes in the working tree ({exc}); commit them "
                "(git commit -am ...) or set them aside (git stash), then try again"
            ) from exc

    def _move_run(self, tag: str, tip: pygit2.Commit, target: pygit2.Commit, action: str) -> None:
        """Point the run's branch at ``target``; the working tree follows when it is on the run."""
        refname = self._branch_ref(tag)
        attached = self._head_refname() == refname
        detached_on_tip = self._repo.head_is_detached and self._repo.head.target == tip.id
        if attached or detached_on_tip:
            if not self._script_matches(tip):
                raise WorkspaceError(
                    f"{self._script_name} has uncommitted changes that {action} in run {tag} "
                    "would overwrite, so nothing was changed; commit them (git commit -am ...) "
                    "or set them aside (git stash), then try again"
                )
            # Before the branch moves, so that libgit2 compares the files against the old tip.
            self._checkout(target, action)
        self._repo.references[refname].set_target(target.id, f"cockpit: {action}")
        if detached_on_tip:
            self._repo.set_head(target.id)


def _check_tag(tag: str) -> str:
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
