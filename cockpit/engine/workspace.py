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
command line (``git log``, ``git show``, ``git fsck``). The workspace delegates: the script's
commits and the user's copy of it to `script_commits`, a run's branch and refs to `run_refs`,
experiment commits to `experiments`, the workers' checkouts to `worktrees`.
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path, PurePosixPath

import pygit2
from pygit2.enums import RepositoryOpenFlag

from cockpit.engine.experiments import Experiments
from cockpit.engine.run_refs import RunRefs, branch_name, experiment_refname
from cockpit.engine.script_commits import ScriptCommits, commit_message, short
from cockpit.engine.workspace_error import WorkspaceError
from cockpit.store.paths import WorkspacePaths

__all__ = [
    "DEFAULT_SCRIPT",
    "Workspace",
    "default_tag",
    "lines_of_code",
]

DEFAULT_SCRIPT = "train.py"
INITIAL_BRANCH = "main"
INITIAL_MESSAGE = "Research workspace"
ADOPT_MESSAGE = "Adopt local changes to train.py as the baseline"

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
# Fixed rather than strftime("%b"), which follows the locale.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


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
        self._scripts = ScriptCommits(self._repo, self._path, self._script_name)
        self._runs = RunRefs(self._repo, self._scripts)
        self._experiments = Experiments(self._repo, self._scripts, self._runs)

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
            signature = workspace._scripts.signature()
            workspace.repo.create_commit(
                "HEAD",
                signature,
                signature,
                commit_message(INITIAL_MESSAGE, ""),
                index.write_tree(),
                [],
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
            head = workspace._scripts.head_or_none()
            if head is not None and workspace._scripts.blob_id(head) is not None:
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
        return self._scripts.is_dirty()

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
        return self._scripts.adopt(commit_message(message, ADOPT_MESSAGE))

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
        return branch_name(tag)

    def unique_tag(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, … : the first tag no run has used yet."""
        return self._runs.unique_tag(base)

    def start_run(self, tag: str) -> str:
        """Create the run's branch at the current HEAD commit; return the branch name.

        The working tree is not touched (see :meth:`checkout_run`). Callers that must not
        start from an unrecorded script call :meth:`require_clean_script` first.
        """
        return self._runs.start(tag)

    def best_commit(self, tag: str) -> str:
        """The sha of the run's best commit (its branch tip)."""
        return str(self._runs.tip(tag).id)

    def base_commit(self, tag: str) -> str:
        """The sha of the commit the run started from."""
        return str(self._runs.kept_and_base(tag)[1].id)

    def checkout_run(self, tag: str) -> None:
        """Point HEAD at the run's branch and update the working tree to its best commit.

        Refused, with nothing changed, when the user's script has uncommitted changes.
        """
        self._runs.checkout(tag)

    # ------------------------------------------------------------------------------
    # Experiments

    @staticmethod
    def experiment_refname(tag: str, number: int) -> str:
        """The ref of experiment ``number`` of a run: ``refs/cockpit/<tag>/<number>``."""
        return experiment_refname(tag, number)

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
        return self._experiments.commit(tag, number, script_text, message, parent)

    def experiment_ref(self, tag: str, number: int) -> str | None:
        """The sha of experiment ``number`` of the run, or None if it was never committed."""
        return self._experiments.sha(tag, number)

    def reapply(self, tag: str, number: int, sha: str, rebase: int) -> str | None:
        """Re-apply experiment ``number``'s change (``sha`` against its parent) onto the run's
        best commit (see `reapply.carry_change`); the new commit takes the experiment's ref,
        and the commit it replaces keeps one of its own (``<number>-stale<rebase>``), so its
        diff is never lost. Returns the new sha, or None when the change does not apply to
        the best (or is in it already)."""
        return self._experiments.reapply(tag, number, sha, rebase)

    # ------------------------------------------------------------------------------
    # Decisions

    def keep(self, tag: str, sha: str) -> None:
        """Advance the run's branch to experiment ``sha``, a child of its best commit.

        When HEAD is on the run, the working tree follows, but only if the user's script
        is unchanged from the old best; otherwise WorkspaceError and nothing moves.
        Keeping the current best again does nothing (so a restart can repeat it).
        """
        tip = self._runs.tip(tag)
        commit = self._scripts.commit(sha)
        if commit.id == tip.id:
            return
        if not commit.parent_ids or commit.parent_ids[0] != tip.id:
            raise WorkspaceError(
                f"commit {short(commit.id)} cannot be kept in run {tag}: it is not a child of "
                f"the run's best commit {short(tip.id)} (it was proposed against another "
                "best); commit its script again as a new experiment instead"
            )
        self._runs.move(tag, tip, commit, f"keeping {short(commit.id)}")

    def revert_to(self, tag: str, sha: str) -> None:
        """Move the run's branch back to ``sha``, the run's base or a commit it kept.

        Used to override a keep; the commits left behind keep their experiment refs. The
        working tree follows under the same rule as :meth:`keep`.
        """
        tip = self._runs.tip(tag)
        commit = self._scripts.commit(sha)
        kept, base = self._runs.kept_and_base(tag)
        allowed = {kept_commit.id for kept_commit in kept} | {base.id}
        if commit.id not in allowed:
            raise WorkspaceError(
                f"commit {short(commit.id)} is not in the kept history of run {tag} (from "
                f"its base {short(base.id)} to its best {short(tip.id)}); only a commit the "
                "run kept, or its base, can be restored"
            )
        self._runs.move(tag, tip, commit, f"reverting to {short(commit.id)}")

    # ------------------------------------------------------------------------------
    # Reading

    def script_at(self, sha: str) -> str:
        """The script's text in a commit (a sha, short sha or ref name)."""
        return self._scripts.text_at(sha)

    def diff(self, sha: str) -> str:
        """The unified diff (git's format) of the script from the commit's parent to it.

        Empty when the commit leaves the script unchanged; a root commit is diffed against
        nothing.
        """
        return self._scripts.diff(sha)

    def kept_history(self, tag: str) -> list[str]:
        """The run's kept commits, newest (the best) first; the base is not included.

        These are the first-parent ancestors of the branch tip down to the run's base.
        """
        return [str(commit.id) for commit in self._runs.kept_and_base(tag)[0]]
