"""The workspace: real git repositories in temporary folders, checked with the git CLI too.

No git configuration exists for any test: HOME points at an empty folder, the system file
is off for the git CLI, and pygit2's configuration search paths point at that folder too
(libgit2 fixes them when it loads, so changing HOME alone would not reach it).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import ConfigLevel

from cockpit.engine.script_commits import FALLBACK_EMAIL, FALLBACK_NAME
from cockpit.engine.workspace import Workspace, default_tag, lines_of_code
from cockpit.engine.workspace_error import WorkspaceError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cockpit" / "template"
BASE_SCRIPT = "LEARNING_RATE = 0.003\nDEPTH = 4\n\n\ndef train(ctx):\n    return None\n"
_CONFIG_LEVELS = (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL, ConfigLevel.PROGRAMDATA)


@pytest.fixture(autouse=True)
def no_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HOME and no system git configuration, for pygit2 and the git CLI alike."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    saved = {level: pygit2.settings.search_path[level] for level in _CONFIG_LEVELS}
    for level in _CONFIG_LEVELS:
        pygit2.settings.search_path[level] = str(home)
    yield home
    for level, value in saved.items():
        pygit2.settings.search_path[level] = value


def git(workspace: Workspace | Path, *args: str) -> str:
    """Run the git CLI on a workspace; fail the test on a non-zero exit."""
    path = workspace.path if isinstance(workspace, Workspace) else workspace
    completed = subprocess.run(
        ["git", "-C", str(path), *args], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def assert_git_valid(workspace: Workspace) -> None:
    """The repository passes `git fsck --strict` and `git log --all` reads it."""
    completed = subprocess.run(
        ["git", "-C", str(workspace.path), "fsck", "--strict", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "warning" not in completed.stderr + completed.stdout
    git(workspace, "log", "--all", "--oneline")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.py"
    path.write_text(BASE_SCRIPT)
    return path


@pytest.fixture
def ws(tmp_path: Path, source: Path) -> Workspace:
    return Workspace.init(tmp_path / "ws", script_source=source)


def variant(rate: str) -> str:
    return BASE_SCRIPT.replace("0.003", rate)


# ----------------------------------------------------------------------------------
# init and open


@pytest.mark.e2e
def test_init_creates_the_workspace_with_one_commit_on_main(tmp_path: Path) -> None:
    from trainer import template_path

    ws = Workspace.init(tmp_path / "new" / "ws")
    assert ws.path == (tmp_path / "new" / "ws").resolve()
    assert ws.script_path.read_bytes() == template_path().read_bytes()
    assert (ws.path / "program.md").read_bytes() == (TEMPLATE_DIR / "program.md").read_bytes()
    assert (ws.path / "config.toml").read_bytes() == (TEMPLATE_DIR / "config.toml").read_bytes()
    assert (ws.path / ".gitignore").read_bytes() == (TEMPLATE_DIR / "gitignore").read_bytes()

    assert ws.repo.references["HEAD"].target == "refs/heads/main"
    log = git(ws, "log", "--format=%H|%P|%an <%ae>|%s").splitlines()
    assert len(log) == 1
    sha, parents, author, subject = log[0].split("|")
    assert parents == ""
    assert author == f"{FALLBACK_NAME} <{FALLBACK_EMAIL}>"
    assert subject == "Research workspace"
    assert sha == str(ws.repo.head.target)
    files = git(ws, "ls-tree", "--name-only", "HEAD").split()
    assert sorted(files) == [".gitignore", "config.toml", "program.md", "train.py"]
    assert git(ws, "status", "--porcelain") == ""
    assert not ws.script_is_dirty()
    assert_git_valid(ws)


@pytest.mark.e2e
def test_the_workspace_ignores_its_private_files(ws: Workspace) -> None:
    (ws.path / "results.tsv").write_text("commit\tval_bpb\n")
    (ws.cockpit_dir / "journal.db").write_text("x")
    (ws.path / "__pycache__").mkdir()
    (ws.path / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert ws.cockpit_dir == ws.path / ".cockpit"
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""


def test_workspace_config_template_is_valid_for_the_settings_loader(ws: Workspace) -> None:
    from cockpit.config import Settings, load_settings

    assert load_settings(ws.path, environ={}) == load_settings(None, environ={})
    assert load_settings(ws.path, environ={}) == Settings()


def test_init_accepts_an_empty_directory_and_refuses_anything_else(
    tmp_path: Path, source: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    Workspace.init(empty, script_source=source)
    assert (empty / "train.py").read_text() == BASE_SCRIPT

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not empty"):
        Workspace.init(busy, script_source=source)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    with pytest.raises(WorkspaceError, match="is a file"):
        Workspace.init(busy / "notes.txt", script_source=source)
    with pytest.raises(WorkspaceError, match="does not exist"):
        Workspace.init(tmp_path / "other", script_source=tmp_path / "missing.py")
    assert not (tmp_path / "other").exists()


def test_open_finds_the_workspace_and_explains_what_is_wrong(ws: Workspace, tmp_path: Path) -> None:
    again = Workspace.open(ws.path)
    assert again.path == ws.path
    assert again.script_name == "train.py"
    assert again.script_path == ws.path / "train.py"

    with pytest.raises(WorkspaceError, match="cockpit init DIR"):
        Workspace.open(tmp_path / "absent")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceError, match="cockpit init DIR"):
        Workspace.open(plain)
    # A folder inside a workspace is not a workspace of its own.
    (ws.path / "sub").mkdir()
    with pytest.raises(WorkspaceError, match="cockpit init DIR"):
        Workspace.open(ws.path / "sub")
    bare_repo = tmp_path / "repo"
    pygit2.init_repository(str(bare_repo))
    with pytest.raises(WorkspaceError, match="cockpit init DIR"):
        Workspace.open(bare_repo)

    ws.script_path.unlink()
    with pytest.raises(WorkspaceError, match=r"checkout -- train\.py"):
        Workspace.open(ws.path)


def test_a_bad_script_name_is_refused(ws: Workspace) -> None:
    for name in ("../train.py", "/etc/train.py", ".git/config", ""):
        with pytest.raises(WorkspaceError, match="relative to the workspace"):
            Workspace(ws.path, script_name=name)


@pytest.mark.e2e
def test_the_default_workspace_lives_under_cockpit_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCKPIT_DATA_DIR", str(tmp_path / "data"))
    assert Workspace.default_path() == tmp_path / "data" / "workspace"

    first, created = Workspace.open_or_create_default()
    assert created
    assert first.path == (tmp_path / "data" / "workspace").resolve()
    assert first.script_path.is_file()
    second, created = Workspace.open_or_create_default()
    assert not created
    assert second.path == first.path
    assert git(second, "rev-list", "--count", "HEAD").strip() == "1"


def test_the_default_workspace_without_override_uses_the_user_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platformdirs

    monkeypatch.delenv("COCKPIT_DATA_DIR", raising=False)
    expected = platformdirs.user_data_path("research-cockpit") / "workspace"
    assert Workspace.default_path() == expected


# ----------------------------------------------------------------------------------
# the user's own changes


@pytest.mark.e2e
def test_dirty_detection_edit_delete_stage_and_untracked(ws: Workspace) -> None:
    assert not ws.script_is_dirty()
    ws.require_clean_script()

    ws.script_path.write_text(variant("0.01"))
    assert ws.script_is_dirty()
    with pytest.raises(WorkspaceError) as refused:
        ws.require_clean_script()
    assert str(refused.value) == (
        "train.py has uncommitted changes; commit them (git commit -am ...) "
        "or run with --adopt to make them the new baseline"
    )

    ws.script_path.write_text(BASE_SCRIPT)
    assert not ws.script_is_dirty()

    ws.script_path.unlink()
    assert ws.script_is_dirty()
    ws.script_path.write_text(BASE_SCRIPT)

    # Staged, then undone in the file: the index still holds the user's change.
    ws.script_path.write_text(variant("0.02"))
    git(ws, "add", "train.py")
    ws.script_path.write_text(BASE_SCRIPT)
    assert ws.script_is_dirty()
    git(ws, "reset", "-q", "train.py")
    assert not ws.script_is_dirty()

    other = Workspace(ws.path, script_name="other.py")
    (ws.path / "other.py").write_text("print('untracked')\n")
    assert other.script_is_dirty()


@pytest.mark.e2e
def test_adopt_commits_the_script_on_the_current_branch(ws: Workspace) -> None:
    head = str(ws.repo.head.target)
    assert ws.adopt_script() == head  # nothing to adopt

    ws.script_path.write_text(variant("0.01"))
    (ws.path / "program.md").write_text("my own notes, not to be committed\n")
    sha = ws.adopt_script()
    assert sha != head
    assert not ws.script_is_dirty()
    assert str(ws.repo.head.target) == sha
    assert ws.repo.references["HEAD"].target == "refs/heads/main"
    assert git(ws, "log", "-1", "--format=%P|%an|%s", sha).strip() == (
        f"{head}|{FALLBACK_NAME}|Adopt local changes to train.py as the baseline"
    )
    assert ws.script_at(sha) == variant("0.01")
    # Only the script went in; program.md stays a local change.
    assert git(ws, "status", "--porcelain").splitlines() == [" M program.md"]
    assert_git_valid(ws)


@pytest.mark.e2e
def test_adopt_uses_the_configured_signature_when_there_is_one(ws: Workspace) -> None:
    ws.repo.config["user.name"] = "Ada Lovelace"
    ws.repo.config["user.email"] = "ada@example.org"
    ws.script_path.write_text(variant("0.01"))
    sha = ws.adopt_script("Use my learning rate")
    assert git(ws, "log", "-1", "--format=%an <%ae>|%s", sha).strip() == (
        "Ada Lovelace <ada@example.org>|Use my learning rate"
    )


def test_adopt_refuses_a_missing_script(ws: Workspace) -> None:
    ws.script_path.unlink()
    with pytest.raises(WorkspaceError, match="missing"):
        ws.adopt_script()


# ----------------------------------------------------------------------------------
# runs and tags


def test_tags() -> None:
    assert default_tag(date(2024, 11, 26)) == "nov26"
    assert default_tag(date(2025, 3, 5)) == "mar5"
    assert Workspace.default_tag(date(2025, 12, 31)) == "dec31"
    assert default_tag() == default_tag(date.today())
    assert Workspace.branch_name("nov26") == "cockpit/nov26"
    for bad in ("", "a/b", "-x", "a..b", "x.lock", "with space"):
        with pytest.raises(WorkspaceError, match="cannot name a run"):
            Workspace.branch_name(bad)


@pytest.mark.e2e
def test_start_run_and_unique_tag(ws: Workspace) -> None:
    head = str(ws.repo.head.target)
    assert ws.unique_tag("nov26") == "nov26"
    assert ws.start_run("nov26") == "cockpit/nov26"
    assert ws.best_commit("nov26") == head
    assert ws.base_commit("nov26") == head
    assert ws.kept_history("nov26") == []
    assert ws.repo.references["HEAD"].target == "refs/heads/main"  # HEAD stays put
    assert git(ws, "rev-parse", "cockpit/nov26").strip() == head

    with pytest.raises(WorkspaceError, match="already exists"):
        ws.start_run("nov26")
    assert ws.unique_tag("nov26") == "nov26-2"
    ws.start_run("nov26-2")
    assert ws.unique_tag("nov26") == "nov26-3"

    # Experiments left behind by a deleted run still block their tag.
    ws.commit_experiment("nov26-2", 1, variant("0.01"), "try")
    ws.repo.branches.local.delete("cockpit/nov26-2")
    assert ws.unique_tag("nov26") == "nov26-3"
    with pytest.raises(WorkspaceError, match="another tag"):
        ws.start_run("nov26-2")

    with pytest.raises(WorkspaceError, match="no run named"):
        ws.best_commit("dec1")
    assert_git_valid(ws)


# ----------------------------------------------------------------------------------
# experiments


@pytest.mark.e2e
def test_commit_experiment_is_a_child_of_the_best_and_leaves_the_branch(ws: Workspace) -> None:
    ws.start_run("t")
    best = ws.best_commit("t")
    assert ws.experiment_ref("t", 1) is None

    sha, refname = ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate")
    assert refname == "refs/cockpit/t/1"
    assert ws.experiment_ref("t", 1) == sha
    assert ws.best_commit("t") == best  # not kept yet
    assert git(ws, "log", "-1", "--format=%P|%s", sha).strip() == f"{best}|raise the learning rate"
    assert ws.script_at(sha) == variant("0.01")
    assert ws.script_path.read_text() == BASE_SCRIPT  # the working tree is untouched
    assert git(ws, "status", "--porcelain") == ""
    # The rest of the tree is the best commit's.
    assert git(ws, "diff", "--name-only", best, sha).split() == ["train.py"]

    shown = git(ws, "show", "refs/cockpit/t/1")
    assert "raise the learning rate" in shown
    assert "-LEARNING_RATE = 0.003" in shown
    assert "+LEARNING_RATE = 0.01" in shown
    assert_git_valid(ws)


@pytest.mark.e2e
def test_commit_experiment_is_idempotent_and_refuses_a_different_reuse(ws: Workspace) -> None:
    ws.start_run("t")
    first = ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate")
    assert ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate") == first
    assert len(git(ws, "rev-list", "--all").split()) == 2  # no second commit was made

    with pytest.raises(WorkspaceError, match="different experiment"):
        ws.commit_experiment("t", 1, variant("0.02"), "something else")
    assert ws.experiment_ref("t", 1) == first[0]

    # After a keep, the same request is still recognised (a crash between keep and journal).
    ws.keep("t", first[0])
    assert ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate") == first

    # Same script, but proposed on an older best: not the same experiment.
    second = ws.commit_experiment("t", 2, variant("0.02"), "more")
    ws.keep("t", second[0])
    with pytest.raises(WorkspaceError, match="different experiment"):
        ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate")

    with pytest.raises(WorkspaceError, match="experiment 0 is the baseline"):
        ws.commit_experiment("t", 0, variant("0.01"), "zero")
    with pytest.raises(WorkspaceError, match="start at 0"):
        ws.commit_experiment("t", -1, variant("0.01"), "negative")


# ----------------------------------------------------------------------------------
# decisions


@pytest.mark.e2e
def test_keep_fast_forwards_and_updates_the_working_tree_on_the_run(ws: Workspace) -> None:
    ws.start_run("t")
    ws.checkout_run("t")
    assert ws.repo.references["HEAD"].target == "refs/heads/cockpit/t"
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "raise the learning rate")
    (ws.path / "program.md").write_text("the user's strategy, being edited\n")

    ws.keep("t", sha)
    assert ws.best_commit("t") == sha
    assert ws.script_path.read_text() == variant("0.01")
    assert str(ws.repo.head.target) == sha
    # Only the script follows; the user's other edits stay as they are.
    assert (ws.path / "program.md").read_text() == "the user's strategy, being edited\n"
    assert git(ws, "status", "--porcelain").splitlines() == [" M program.md"]
    assert not ws.script_is_dirty()
    ws.keep("t", sha)  # keeping the best again changes nothing
    assert ws.best_commit("t") == sha
    assert_git_valid(ws)


def test_keep_leaves_the_working_tree_alone_when_head_is_elsewhere(ws: Workspace) -> None:
    main = str(ws.repo.head.target)
    ws.start_run("t")
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "raise")
    ws.script_path.write_text("user edits\n")  # on main: not the run's business

    ws.keep("t", sha)
    assert ws.best_commit("t") == sha
    assert ws.script_path.read_text() == "user edits\n"
    assert str(ws.repo.head.target) == main


def test_keep_refuses_to_overwrite_the_users_edits(ws: Workspace) -> None:
    ws.start_run("t")
    ws.checkout_run("t")
    best = ws.best_commit("t")
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "raise")
    ws.script_path.write_text("my precious edit\n")

    with pytest.raises(WorkspaceError, match="uncommitted changes"):
        ws.keep("t", sha)
    assert ws.script_path.read_text() == "my precious edit\n"
    assert ws.best_commit("t") == best


def test_keep_follows_a_detached_head_on_the_best(ws: Workspace) -> None:
    ws.start_run("t")
    ws.repo.set_head(pygit2.Oid(hex=ws.best_commit("t")))
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "raise")
    ws.keep("t", sha)
    assert ws.repo.head_is_detached
    assert str(ws.repo.head.target) == sha
    assert ws.script_path.read_text() == variant("0.01")


def test_keep_of_a_commit_that_is_not_a_child_of_the_best_is_refused(ws: Workspace) -> None:
    ws.start_run("t")
    one, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    two, _ = ws.commit_experiment("t", 2, variant("0.02"), "two")  # also on the base
    ws.keep("t", one)
    with pytest.raises(WorkspaceError, match="not a child"):
        ws.keep("t", two)
    assert ws.best_commit("t") == one
    with pytest.raises(WorkspaceError, match="names no commit"):
        ws.keep("t", "0" * 40)


@pytest.mark.e2e
def test_revert_to_and_kept_history(ws: Workspace) -> None:
    ws.start_run("t")
    base = ws.best_commit("t")
    ws.checkout_run("t")
    one, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    ws.keep("t", one)
    discarded, _ = ws.commit_experiment("t", 2, variant("0.02"), "two")
    three, _ = ws.commit_experiment("t", 3, variant("0.03"), "three")
    ws.keep("t", three)
    assert ws.kept_history("t") == [three, one]
    assert ws.base_commit("t") == base

    with pytest.raises(WorkspaceError, match="kept history"):
        ws.revert_to("t", discarded)

    ws.revert_to("t", one)
    assert ws.best_commit("t") == one
    assert ws.script_path.read_text() == variant("0.01")
    assert ws.kept_history("t") == [one]
    assert ws.experiment_ref("t", 3) == three  # the reverted keep is not lost

    ws.script_path.write_text("edited\n")
    with pytest.raises(WorkspaceError, match="uncommitted changes"):
        ws.revert_to("t", base)
    assert ws.best_commit("t") == one
    ws.script_path.write_text(variant("0.01"))

    ws.revert_to("t", base)
    assert ws.best_commit("t") == base
    assert ws.kept_history("t") == []
    assert ws.script_path.read_text() == BASE_SCRIPT
    assert git(ws, "status", "--porcelain") == ""
    assert_git_valid(ws)


def test_kept_history_without_the_base_ref_stops_below_the_experiments(ws: Workspace) -> None:
    ws.script_path.write_text(variant("0.5"))
    ws.adopt_script()  # main has two commits before the run
    ws.start_run("t")
    base = ws.best_commit("t")
    one, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    ws.keep("t", one)
    ws.repo.references.delete("refs/cockpit/t/base")
    assert ws.kept_history("t") == [one]
    assert ws.base_commit("t") == base


@pytest.mark.e2e
def test_checkout_run_refuses_a_dirty_script(ws: Workspace) -> None:
    ws.start_run("t")
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    ws.keep("t", sha)
    ws.script_path.write_text("edited\n")
    with pytest.raises(WorkspaceError, match="uncommitted changes"):
        ws.checkout_run("t")
    assert ws.repo.references["HEAD"].target == "refs/heads/main"
    assert ws.script_path.read_text() == "edited\n"

    ws.script_path.write_text(BASE_SCRIPT)
    ws.checkout_run("t")
    assert ws.repo.references["HEAD"].target == "refs/heads/cockpit/t"
    assert ws.script_path.read_text() == variant("0.01")
    assert git(ws, "status", "--porcelain") == ""


# ----------------------------------------------------------------------------------
# reading


@pytest.mark.e2e
def test_diff_is_a_unified_diff_of_the_script(ws: Workspace) -> None:
    ws.start_run("t")
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    text = ws.diff(sha)
    lines = text.splitlines()
    assert lines[0] == "diff --git a/train.py b/train.py"
    assert "--- a/train.py" in lines
    assert "+++ b/train.py" in lines
    assert "-LEARNING_RATE = 0.003" in lines
    assert "+LEARNING_RATE = 0.01" in lines
    assert any(line.startswith("@@ -1,") for line in lines)
    # The same text git itself would apply: it goes onto the base's script cleanly.
    patch = ws.path.parent / "exp.patch"
    patch.write_text(text)
    git(ws, "apply", "--check", str(patch))

    root = str(ws.repo.head.target)
    assert "+++ b/train.py" in ws.diff(root)
    same, _ = ws.commit_experiment("t", 2, BASE_SCRIPT, "no change")
    assert ws.diff(same) == ""
    with pytest.raises(WorkspaceError, match="names no commit"):
        ws.script_at("nonsense")


def test_lines_of_code_counts_code_only() -> None:
    text = "# a comment\n\nimport math\n    # indented comment\nx = 1  # trailing\n\n   \n"
    assert lines_of_code(text) == 2
    assert Workspace.lines_of_code("") == 0


@pytest.mark.e2e
def test_a_script_in_a_subdirectory(tmp_path: Path, source: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", script_source=source, script_name="src/train.py")
    assert ws.script_path == ws.path / "src" / "train.py"
    ws.start_run("t")
    ws.checkout_run("t")
    sha, _ = ws.commit_experiment("t", 1, variant("0.01"), "one")
    assert "+++ b/src/train.py" in ws.diff(sha)
    ws.keep("t", sha)
    assert ws.script_path.read_text() == variant("0.01")
    assert git(ws, "status", "--porcelain") == ""
    assert_git_valid(ws)


def test_a_branch_in_the_way_of_the_run_is_explained(ws: Workspace) -> None:
    ws.repo.branches.local.create("cockpit", ws.repo.head.peel(pygit2.Commit))
    with pytest.raises(WorkspaceError, match="cannot create the branch cockpit/t"):
        ws.start_run("t")
