"""The script in the workspace's git repository: the commits that hold it, new commits of it,
and whether the user's copy (in the working tree and the index) is a commit's."""

from __future__ import annotations

from pathlib import Path

import pygit2
from pygit2.enums import CheckoutStrategy, FileMode

from cockpit.engine.workspace_error import WorkspaceError

# Used when neither the repository nor the user's git configuration names anyone: a
# fresh machine must be able to run the loop without `git config user.name` first.
FALLBACK_NAME = "Research Cockpit"
FALLBACK_EMAIL = "cockpit@localhost"


def commit_message(text: str, fallback: str) -> str:
    """A commit message in git's usual shape: no surrounding blank space, one final newline."""
    return (text.strip() or fallback) + "\n"


def short(oid: pygit2.Oid | str) -> str:
    """A commit's sha, shortened for a message."""
    return str(oid)[:10]


class ScriptCommits:
    """The script ``script_name`` of the workspace at ``path``, as git holds it."""

    def __init__(self, repo: pygit2.Repository, path: Path, script_name: str) -> None:
        self._repo = repo
        self._path = path
        self._script_name = script_name

    @property
    def script_name(self) -> str:
        return self._script_name

    @property
    def script_path(self) -> Path:
        return self._path / self._script_name

    # ------------------------------------------------------------------------------
    # Commits

    def signature(self) -> pygit2.Signature:
        try:
            return self._repo.default_signature
        except (KeyError, pygit2.GitError):  # no user.name / user.email configured anywhere
            return pygit2.Signature(FALLBACK_NAME, FALLBACK_EMAIL)

    def head_or_none(self) -> pygit2.Commit | None:
        if self._repo.head_is_unborn:
            return None
        return self._repo.head.peel(pygit2.Commit)

    def head(self) -> pygit2.Commit:
        head = self.head_or_none()
        if head is None:
            raise WorkspaceError(
                f"the workspace {self._path} has no commit yet; commit {self._script_name} "
                "first (git add ... && git commit), or create the workspace with `cockpit init DIR`"
            )
        return head

    def head_refname(self) -> str | None:
        """The branch HEAD is attached to, or None when it is detached."""
        if self._repo.head_is_detached:
            return None
        return str(self._repo.references["HEAD"].target)

    def commit(self, revision: str) -> pygit2.Commit:
        """The commit a sha, short sha or ref name names."""
        try:
            return self._repo.revparse_single(revision).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise WorkspaceError(
                f"{revision!r} names no commit in the workspace {self._path}"
            ) from exc

    def commit_onto(self, parent: pygit2.Commit, data: bytes, message: str) -> pygit2.Oid:
        """A new commit, child of ``parent``, whose script is ``data``; no ref moves."""
        tree = self.tree_with_blob(parent.tree, self._repo.create_blob(data))
        signature = self.signature()
        return self._repo.create_commit(None, signature, signature, message, tree, [parent.id])

    def tree_with_blob(self, tree: pygit2.Tree, blob_id: pygit2.Oid) -> pygit2.Oid:
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

    # ------------------------------------------------------------------------------
    # Reading

    def blob_id(self, commit: pygit2.Commit) -> pygit2.Oid | None:
        """The script's blob in a commit; None when the commit has no script."""
        try:
            entry = commit.tree[self._script_name]
        except KeyError:
            return None
        return entry.id if entry.type_str == "blob" else None

    def blob_data(self, blob_id: pygit2.Oid) -> bytes:
        blob = self._repo[blob_id]
        assert isinstance(blob, pygit2.Blob), "a script entry is always a blob"
        return blob.data

    def text_at(self, sha: str) -> str:
        """The script's text in a commit (a sha, short sha or ref name)."""
        commit = self.commit(sha)
        blob_id = self.blob_id(commit)
        if blob_id is None:
            raise WorkspaceError(f"commit {short(commit.id)} has no {self._script_name}")
        # Never fail to show a script: a stray byte becomes U+FFFD rather than an error.
        return self.blob_data(blob_id).decode("utf-8", errors="replace")

    def diff(self, sha: str) -> str:
        """The unified diff of the script from the commit's parent (or from nothing) to it."""
        commit = self.commit(sha)
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

    # ------------------------------------------------------------------------------
    # The user's copy

    def matches(self, commit: pygit2.Commit) -> bool:
        """Whether the working tree's and the index's script are exactly ``commit``'s."""
        expected = self.blob_id(commit)
        if expected is None or not self.script_path.is_file():
            return False
        # Hashed from the bytes, not judged from file times: a same-second edit still counts.
        if pygit2.hashfile(str(self.script_path)) != expected:
            return False
        # The index too: a change the user staged and then undid in the file is still theirs.
        index = self._repo.index
        index.read()
        return self._script_name in index and index[self._script_name].id == expected

    def is_dirty(self) -> bool:
        """Whether the script differs from HEAD's (missing, untracked and no commit count)."""
        head = self.head_or_none()
        return head is None or not self.matches(head)

    def adopt(self, message: str) -> str:
        """Commit the working tree's script onto HEAD (see `Workspace.adopt_script`)."""
        head = self.head()
        if not self.script_path.is_file():
            raise WorkspaceError(
                f"{self._script_name} is missing from the workspace, so there is nothing to "
                f"adopt; restore it with `git -C {self._path} checkout -- {self._script_name}`"
            )
        if not self.is_dirty():
            return str(head.id)
        # Staged first, so that the index (and `git status`) agree with the new commit, and
        # the commit takes exactly the bytes the index recorded.
        index = self._repo.index
        index.read()
        index.add(self._script_name)
        index.write()
        tree = self.tree_with_blob(head.tree, index[self._script_name].id)
        signature = self.signature()
        commit_id = self._repo.create_commit("HEAD", signature, signature, message, tree, [head.id])
        return str(commit_id)

    def checkout(self, commit: pygit2.Commit, action: str) -> None:
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
