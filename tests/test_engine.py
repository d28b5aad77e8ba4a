"""The research loop end to end: real workspaces, real journals, real training processes with
tiny budgets, the real `cockpit` command in its own processes."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.space import values_of
from cockpit.engine.noise import pooled_spread
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal
from tests.conftest import REPO, SCRIPTS
from tests.helpers import (
    PLANNED_RESEARCH,
    cockpit,
    ended,
    experiments,
    git,
    git_env,
    make_workspace,
    spawn,
    state,
    wait_for,
)

# Commits without a git identity (conftest.py).
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes

TSV_ROW = re.compile(r"^[0-9a-f]{7}\t\d+\.\d{6}\t\d+\.\d\t(keep|discard|crash)\t[^\t]+$")


def test_a_headless_run_trains_the_baseline_and_each_experiment_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "3", "--proposer", "builtin"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = (root / "results.tsv").read_text().splitlines()
    assert rows[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert len(rows) == 5 and all(TSV_ROW.match(row) for row in rows[1:]), rows
    assert rows[1].endswith("\tkeep\tbaseline")

    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2, 3]
    assert len({e.script_hash for e in records}) == 4  # nothing trained twice
    (tag,) = {
        line.strip().removeprefix("cockpit/")
        for line in git(root, "branch", "--list", "cockpit/*", "--format=%(refname:short)").split()
    }
    kept = [e.commit_sha for e in records if e.decision == "keep" and e.number > 0]
    history = git(
        root, "rev-list", "--first-parent", f"cockpit/{tag}", f"^refs/cockpit/{tag}/base"
    ).split()
    assert history == list(reversed(kept))  # the branch holds exactly the kept experiments
    refs = git(root, "for-each-ref", "--format=%(refname)", f"refs/cockpit/{tag}").split()
    assert {f"refs/cockpit/{tag}/{n}" for n in range(4)} <= set(refs)
    git(root, "fsck", "--strict")
    for record in records[1:]:
        shown = git(root, "show", record.ref)
        assert record.description.split(" ")[0] in shown and "+" in shown  # its diff is there
        # Every experiment is a child of the best commit at its time.
        assert git(root, "rev-parse", f"{record.ref}^").strip() == record.parent_commit
    assert all(e.decision_reason for e in records)
    assert not git(root, "status", "--porcelain", "--untracked-files=no").strip()

    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["running"] is False and status["phase"] == "stopped"
    assert status["best_val_bpb"] <= status["baseline_val_bpb"]
    assert len(status["last_decisions"]) == 4
    # The trainings ran off the network (this kernel gives the namespaces), and status says so.
    assert status["confinement"]["enforced"] is True, status["confinement"]
    assert status["confinement"]["network"].startswith("a network namespace of its own")
    # With the bounds in force (the shipped defaults) and what enforces each.
    bounds = status["confinement"]["bounds"]
    assert bounds["processes"]["limit"] == 1024 and bounds["disk"]["limit_mb"] == 8192
    assert bounds["metrics"]["limit_mb"] == 64 and bounds["memory"]["limit_mb"] > 0
    assert all(bounds[name]["enforced_by"] for name in ("memory", "processes", "disk", "metrics"))
    text = cockpit("status", "--workspace", str(root)).stdout
    assert "  confinement: network: none beyond loopback, enforced by a network namespace" in text
    assert "  bounds: memory " in text and "processes 1024, disk 8192 MB, metrics 64 MB" in text


def test_user_changes_to_train_py_are_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    edited = (root / "train.py").read_text().replace("LEARNING_RATE = 0.1", "LEARNING_RATE = 0.2")
    (root / "train.py").write_text(edited)
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr and "--adopt" in result.stderr
    assert (root / "train.py").read_text() == edited


def test_a_baseline_that_crashes_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    broken = tmp_path / "broken.py"
    broken.write_text(
        "LEARNING_RATE = 0.1\n\ndef train(ctx):\n    raise RuntimeError('no model today')\n"
    )
    make_workspace(root, broken)
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "2")
    assert result.returncode == 1
    assert "the baseline failed" in result.stderr and "no model today" in result.stderr
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split("\t")[1:4] == ["0.000000", "0.0", "crash"]


def test_supervised_mode_waits_for_approval_and_a_veto_reaches_the_journal(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    engine = spawn(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--mode", "supervised"
    )
    try:
        wait_for(lambda: state(root, "phase") == "awaiting_approval", what="the first proposal")
        vetoed = state(root, "experiment")
        result = cockpit("veto", "--workspace", str(root), "--reason", "too risky tonight")
        assert result.returncode == 0 and "vetoed" in result.stdout, result.stdout + result.stderr
        wait_for(lambda: state(root, "phase") == "awaiting_approval" and state(root, "experiment") != vetoed,
                 what="the next proposal")  # fmt: skip
        result = cockpit("approve", "--workspace", str(root))
        assert result.returncode == 0 and "approved" in result.stdout
        assert engine.wait(timeout=120) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
    records = experiments(root)
    assert [e.status for e in records][:2] == ["keep", "vetoed"]
    assert records[1].decision_reason == "too risky tonight" and records[1].started_at is None
    assert records[2].decision in ("keep", "discard")
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        vetoes = journal.events(kinds=["veto"])
    assert any("too risky tonight" in event.message for event in vetoes)
    assert len((root / "results.tsv").read_text().splitlines()) == 3  # a veto is never trained


def test_kill_9_during_training_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    """Killed in the middle of experiment 1, the run resumes on the same budget only: the
    killed experiment trains again on its own script, nothing is lost or repeated, and the
    optimiser, its study rebuilt from the journal, proposes no point it already tried."""
    root = tmp_path / "ws"
    make_workspace(root, budget=4)
    run = ("run", "--headless", "--workspace", str(root), "--tag", "night", "--proposer", "optuna")
    engine = spawn(*run, "--experiments", "2")
    try:
        wait_for(
            lambda: state(root, "phase") == "training" and state(root, "experiment") == 1,
            what="experiment 1",
        )
        trainer_pid = state(root, "train_pid")
        killed_script = Workspace.open(root).script_at(experiments(root)[1].commit_sha or "")
        time.sleep(0.5)
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert isinstance(trainer_pid, int)
    # Another budget would set trainings of different lengths against each other in one run.
    other = cockpit(*run, "--budget", "2")
    assert other.returncode == 1, other.stdout + other.stderr
    assert "budget_seconds 4.0 -> 2.0" in other.stderr and "--budget 4.0" in other.stderr
    assert [e.status for e in experiments(root)][1] == "training"  # left for the resume
    result = cockpit(*run, "--experiments", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming run night" in result.stdout
    assert (
        not psutil.pid_exists(trainer_pid)
        or psutil.Process(trainer_pid).status() == psutil.STATUS_ZOMBIE
    )
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert records[1].attempt == 2 and records[1].is_final  # attempts count from 1
    assert [e.attempt for e in records] == [1, 2, 1]
    assert all(e.proposer == "optuna" for e in records[1:])
    scripts = [Workspace.open(root).script_at(e.commit_sha or "") for e in records]
    assert scripts[1] == killed_script  # trained again on its own point
    points = [tuple(values_of(s, "cpu", ["LEARNING_RATE", "BATCH_SIZE"]).values()) for s in scripts]
    assert len(set(points)) == len(points), points
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 4 and len({row.split("\t")[0] for row in rows[1:]}) == 3
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        interrupted = journal.events(kinds=["interrupted"])
    assert len(interrupted) == 1 and "experiment 1" in interrupted[0].message
    git(root, "fsck", "--strict")


def test_start_survives_the_terminal_closing_and_stop_ends_it(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    # A "terminal": a shell in a session of its own that runs `cockpit start`; closing it
    # sends SIGHUP to its whole process group.
    terminal = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -m cockpit start --workspace {root} --experiments 0; sleep 60"],
        cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A terminal's shell dies of SIGHUP, even where this test runs with it ignored (nohup).
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_for(lambda: json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)["running"],
                 what="the engine to start")  # fmt: skip
        os.killpg(terminal.pid, signal.SIGHUP)
        terminal.wait(timeout=30)
        time.sleep(1.0)
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert status["running"] is True, status

        assert cockpit("pause", "--workspace", str(root)).returncode == 0
        wait_for(lambda: state(root, "phase") == "paused", timeout=30, what="the pause")
        assert "noted" in cockpit("note", "--workspace", str(root), "try a wider model").stdout
        assert cockpit("resume", "--workspace", str(root)).returncode == 0

        result = cockpit("stop", "--workspace", str(root), "--now")
        assert result.returncode == 0 and "engine stopped" in result.stdout, result.stdout
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert status["running"] is False and status["phase"] == "stopped"
    finally:
        if terminal.poll() is None:
            os.killpg(terminal.pid, signal.SIGKILL)
        cockpit("stop", "--workspace", str(root), "--now")
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        messages = [event.message for event in journal.events(kinds=["engine", "note"])]
    assert "engine stopped" in messages and "try a wider model" in messages


def test_start_waits_for_the_engine_without_taking_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look that took the lock for an instant would make the engine starting in that
    instant find it taken and give up. `cockpit start` asks whether an engine runs from the
    kernel's lock table, never by taking the lock, and then waits for the engine's pid in it."""
    import fcntl

    from cockpit import commands
    from cockpit.config import load_settings
    from cockpit.engine.loop import EngineOptions
    from cockpit.store.lock import engine_lock_held

    root = tmp_path / "ws"
    make_workspace(root)
    settings = load_settings(root, overrides={"engine.experiments": 0})
    taken: list[int] = []
    flock = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: taken.append(op) or flock(fd, op))
    try:
        workspace = commands.open_workspace(root)
        assert commands.cmd_start(workspace, settings, EngineOptions(experiments=0)) == 0
        assert engine_lock_held(root) and commands.engine_running(commands.open_workspace(root))
        assert taken == []  # this process looked, and never took the lock
    finally:
        cockpit("stop", "--workspace", str(root), "--now")


def test_start_hands_the_engine_the_settings_it_resolved_and_never_the_flags(
    tmp_path: Path,
) -> None:
    """A setting given only as a flag to `cockpit start` reaches the detached engine's run
    record, and the engine's own command line carries no flag: only the settings file that
    `cockpit start` wrote, which the engine takes."""
    from cockpit.store.lock import engine_lock_pid
    from cockpit.store.records import Run

    root = tmp_path / "ws"
    make_workspace(root)  # its config.toml trains 1 s on 64-token sequences
    try:
        started = cockpit(
            "start", "--workspace", str(root), "--experiments", "0", "--budget", "0.75"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        pid = engine_lock_pid(root)
        assert pid is not None
        command = psutil.Process(pid).cmdline()
        assert "--settings-file" in command, command
        assert not {"--budget", "--experiments"} & set(command), command

        def recorded_run() -> Run | None:
            with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
                return journal.latest_run()

        run = wait_for(recorded_run, what="the run's record")
        assert isinstance(run, Run)
        trainer = run.config["trainer"]
        assert trainer["budget_seconds"] == 0.75  # the flag
        assert trainer["seq_len"] == 64  # the workspace's config.toml, resolved with it
        assert not list((root / ".cockpit").glob("engine-start-*.json"))  # taken
    finally:
        cockpit("stop", "--workspace", str(root), "--now")


def test_run_in_a_terminal_runs_the_loop_detached_with_the_cockpit_on_it(tmp_path: Path) -> None:
    """Without --headless, at a terminal, `cockpit run` starts the loop as `cockpit start` does
    and shows the cockpit on it; `q` leaves the cockpit and the loop running."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    root = tmp_path / "ws"
    make_workspace(root)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "run", "--workspace", str(root), "--experiments", "0"],
        stdin=secondary, stdout=secondary, stderr=secondary, cwd=REPO, start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "110", "LINES": "30"},
    )  # fmt: skip
    os.close(secondary)
    screen = b""

    def drawn(text: bytes) -> bool:
        nonlocal screen
        while select.select([primary], [], [], 0.1)[0]:
            try:
                screen += os.read(primary, 65536)
            except OSError:
                break
        return text in screen

    try:
        wait_for(lambda: drawn(b"val_bpb"), timeout=60, what="the cockpit's ledger")
        assert "engine started" in screen.decode(errors="replace")
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert status["running"] is True, status
        os.write(primary, b"q")
        assert process.wait(timeout=30) == 0
        drawn(b"")
        assert "the engine keeps running" in screen.decode(errors="replace")
        status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
        assert status["running"] is True, status
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
        cockpit("stop", "--workspace", str(root), "--now")


def test_bench_loop_prints_the_engines_overhead(tmp_path: Path) -> None:
    result = cockpit("bench", "loop", "--experiments", "3", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["experiments"] == 3  # one gap before each experiment after the baseline
    assert (
        0
        < report["overhead_p50_seconds"]
        <= report["overhead_p95_seconds"]
        <= report["overhead_max_seconds"]
    )


def test_kill_9_during_evaluation_reruns_that_experiment_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    # The tiny script, with a model that is slow out of training: its export (part of the
    # evaluation phase) calls forward in eval mode.
    slow = tmp_path / "slow_eval.py"
    tiny = (SCRIPTS / "tiny_research.py").read_text()
    slow.write_text(
        tiny.replace("import torch\n", "import time\n\nimport torch\n", 1).replace(
            "        logits = self.table(idx)\n",
            "        if not self.training:\n            time.sleep(1.5)\n        logits = self.table(idx)\n",
        )
    )
    assert "time.sleep(1.5)" in slow.read_text()
    make_workspace(root, slow)
    engine = spawn(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "eval"
    )
    try:
        wait_for(lambda: state(root, "phase") == "evaluating" and state(root, "experiment") == 1,
                 timeout=90, what="experiment 1 to evaluate")  # fmt: skip
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--tag", "eval", "--experiments", "1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = experiments(root)
    assert [(e.number, e.attempt) for e in records] == [(0, 1), (1, 2)]
    assert all(e.decision in ("keep", "discard") for e in records)
    assert len((root / "results.tsv").read_text().splitlines()) == 3


def test_a_commit_that_never_reached_the_journal_is_adopted_not_repeated(tmp_path: Path) -> None:
    """The engine died between committing experiment 2 to git and journaling it."""
    root = tmp_path / "ws"
    workspace = make_workspace(root)
    first = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "gap"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    best = workspace.best_commit("gap")
    script = workspace.script_at(best).replace("BETA2 = 0.99", "BETA2 = 0.95")
    sha, ref = workspace.commit_experiment("gap", 2, script, "BETA2 0.99 -> 0.95\n\nleft behind\n")
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "2", "--tag", "gap"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert records[2].commit_sha == sha and records[2].ref == ref
    assert records[2].description == "BETA2 0.99 -> 0.95" and records[2].proposer == "recovered"
    assert records[2].decision in ("keep", "discard")
    git(root, "fsck", "--strict")


SELF_REPORTING_SCRIPT = '''"""Prints its own summary block, as an autoresearch train.py does."""
LEARNING_RATE = 0.1
BATCH_SIZE = 16
WIDTH = 64
score = 2.0 + abs(LEARNING_RATE - 0.07) + abs(WIDTH - 96) / 1000 + BATCH_SIZE / 10000
print("step 1 loss 2.5")
print("---")
print(f"val_bpb:          {score:.6f}")
print("training_seconds: 0.1")
print("peak_vram_mb:     1536.0")
'''


def test_script_mode_runs_the_workspace_command_and_marks_the_metric_self_reported(
    tmp_path: Path,
) -> None:
    script = tmp_path / "autoresearch_train.py"
    script.write_text(SELF_REPORTING_SCRIPT)
    root = tmp_path / "ws"
    make_workspace(root, script)
    config = (root / "config.toml").read_text()
    (root / "config.toml").write_text(
        config.replace(
            "[trainer]\n",
            f'[trainer]\ncommand = "{sys.executable} train.py"\nmetric = "val_bpb"\n',
            1,
        )
    )
    subprocess.run(
        ["git", "-C", str(root), "commit", "-qam", "script mode"], check=True, env=git_env()
    )
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    records = experiments(root)
    assert len(records) == 4
    for record in records:
        printed = subprocess.run(
            [sys.executable, "-c", Workspace.open(root).script_at(record.commit_sha)],
            capture_output=True,
            text=True,
        ).stdout
        assert record.val_bpb == pytest.approx(float(printed.split("val_bpb:")[1].split()[0]))
        assert record.summary["self_reported"] is True and record.peak_memory_mb == 1536.0
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 5 and rows[1].split("\t")[2] == "1.5"
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["self_reported"] is True and status["metric"] == "val_bpb"
    assert "(self-reported)" in cockpit("status", "--workspace", str(root)).stdout
    assert status["confinement"]["enforced"] is False  # the command is not the harness
    assert status["confinement"]["message"] == (
        "training is not confined: network and files: script mode runs the workspace's own "
        "command as it is, outside the harness"
    )
    # The working tree holds the best script again once the run is over.
    assert (root / "train.py").read_text() == Workspace.open(root).script_at(
        Workspace.open(root).best_commit(status["tag"])
    )


def test_overrides_keep_a_discarded_experiment_and_revert_a_kept_one(tmp_path: Path) -> None:
    """The researcher's keep/discard overrides move the branch and the journal together."""
    from agent.builtin import BuiltinProposer
    from cockpit.config import load_settings
    from cockpit.engine.loop import Engine, EngineOptions
    from cockpit.engine.monitor import ScriptedGpuSource
    from cockpit.store.steering import Kind, Steer

    root = tmp_path / "ws"
    workspace = make_workspace(root)
    settings = load_settings(root, overrides={"engine.keep_margin_bpb": 10.0})  # nothing beats it
    engine = Engine(
        workspace, settings, BuiltinProposer(seed=1), gpu_source=ScriptedGpuSource.no_gpu()
    )
    assert engine.run(EngineOptions(tag="ovr", experiments=1)) == 0
    records = experiments(root)
    assert records[1].decision == "discard"
    base = workspace.best_commit("ovr")

    with Journal.open(root / ".cockpit" / "journal.db") as journal:
        engine.journal = journal
        assert engine._apply(Steer(Kind.OVERRIDE_KEEP, experiment=1)) == "keep #1"
        assert workspace.best_commit("ovr") == records[1].commit_sha
        assert (root / "train.py").read_text() == workspace.script_at(records[1].commit_sha)
        run = journal.run_by_tag("ovr")
        assert run is not None and run.best_commit == records[1].commit_sha
        with pytest.raises(ValueError, match="only the current best"):
            engine._apply(Steer(Kind.OVERRIDE_DISCARD, experiment=0))
        assert engine._apply(Steer(Kind.OVERRIDE_DISCARD, experiment=1)) == "discard #1"
        assert workspace.best_commit("ovr") == base
        run = journal.run_by_tag("ovr")
        assert (
            run is not None and run.best_commit == base and run.best_val_bpb == records[0].val_bpb
        )
        kinds = [event.message for event in journal.events(kinds=["decision"])]
    assert sum("override" in message for message in kinds) == 2
    rows = (root / "results.tsv").read_text().splitlines()
    assert rows[2].split("\t")[3] == "discard"


# A self-reporting script whose score drops with every step away from its baseline constants:
# its first experiment is always kept, whatever the built-in proposer changes.
EVERY_CHANGE_WINS = """LEARNING_RATE = 0.1
BATCH_SIZE = 16
WIDTH = 64
distance = abs(LEARNING_RATE - 0.1) + abs(BATCH_SIZE - 16) / 100 + abs(WIDTH - 64) / 1000
print("---")
print(f"val_bpb:          {2.0 - min(distance, 0.5):.6f}")
print("peak_vram_mb:     512.0")
"""


@pytest.mark.parametrize("point", ["committed", "kept", "decided"])
def test_kill_9_at_each_step_of_a_decision_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """The engine dies (SIGKILL, from inside) right after committing, after moving the branch to
    a kept commit, and after journaling a decision; a restart finishes the run exactly."""
    script = tmp_path / "every_change_wins.py"
    script.write_text(EVERY_CHANGE_WINS)
    root = tmp_path / "ws"
    workspace = make_workspace(root, script)
    config = (root / "config.toml").read_text()
    (root / "config.toml").write_text(
        config.replace("[trainer]\n", f'[trainer]\ncommand = "{sys.executable} train.py"\n', 1)
    )
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "script"], check=True, env=git_env())

    monkeypatch.setenv("COCKPIT_FAILPOINT", point)
    died = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "2", "--tag", "t"
    )
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    monkeypatch.delenv("COCKPIT_FAILPOINT")
    before = experiments(root)
    assert len(before) == (1 if point == "committed" else 2)

    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "2", "--tag", "t"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert [e.attempt for e in records] == [1, 1, 1]  # nothing was trained twice
    assert records[1].decision == "keep"
    assert len({e.commit_sha for e in records}) == 3
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 4 and [row.split("\t")[0] for row in rows[1:]] == [
        e.commit_sha[:7] for e in records
    ]
    kept = [e.commit_sha for e in records if e.decision == "keep" and e.number > 0]
    history = git(root, "rev-list", "--first-parent", "cockpit/t", "^refs/cockpit/t/base").split()
    assert history == list(reversed(kept))
    assert workspace.best_commit("t") == kept[-1]
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.run_by_tag("t")
        assert run is not None and run.best_commit == kept[-1]
        decisions = journal.events(kinds=["decision"])
    assert len(decisions) == 3  # one per experiment, none repeated
    git(root, "fsck", "--strict")


FAILING_BASELINES = {
    "timeout": "import time\n\ndef train(ctx):\n    signal_proof = 0\n    while True:\n"
    "        try:\n            time.sleep(0.05)\n        except BaseException:\n"
    "            signal_proof += 1\n",
    "crash": "def train(ctx):\n    helper()\n\ndef helper():\n"
    "    raise ValueError('shape mismatch in layer 3')\n",
    "oom": "def train(ctx):\n    raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB "
    "(GPU 0; 79.35 GiB total capacity)')\n",
}


@pytest.mark.parametrize("outcome", sorted(FAILING_BASELINES))
def test_failed_trainings_are_classified_in_the_journal(tmp_path: Path, outcome: str) -> None:
    """A hang is killed within budget + grace and recorded as timeout, a crash keeps its
    traceback's tail, an out-of-memory error is classified oom."""
    script = tmp_path / "failing.py"
    script.write_text("LEARNING_RATE = 0.1\n\n" + FAILING_BASELINES[outcome])
    root = tmp_path / "ws"
    make_workspace(root, script)
    started = time.monotonic()
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and "the baseline failed" in result.stderr
    (baseline,) = experiments(root)
    assert baseline.outcome == outcome
    assert baseline.status == ("timeout" if outcome == "timeout" else "crash")
    if outcome == "timeout":
        # budget 1 s + grace 2 s, plus start-up: far from hanging.
        assert elapsed < 30 and "timeout" in (baseline.decision_reason or "")
    if outcome == "crash":
        assert baseline.crash_tail is not None
        assert "shape mismatch in layer 3" in baseline.crash_tail
        assert "helper" in baseline.crash_tail  # the traceback, not just the message
    if outcome == "oom":
        assert "out of memory" in (baseline.decision_reason or "").lower()
    assert (root / "results.tsv").read_text().splitlines()[1].split("\t")[3] == "crash"


def test_keep_and_discard_from_the_command_line_override_a_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    workspace = make_workspace(root)
    monkeypatch.setenv("COCKPIT_ENGINE__KEEP_MARGIN_BPB", "10.0")  # nothing beats the baseline
    first = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "o"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    discarded = experiments(root)[1]
    assert discarded.decision == "discard"

    sent = cockpit("keep", "1", "--workspace", str(root))
    assert sent.returncode == 0 and "waits for the next start" in sent.stdout
    resumed = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "o"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert workspace.best_commit("o") == discarded.commit_sha
    assert experiments(root)[1].decision_reason == "kept by the researcher (override)"
    assert (root / "results.tsv").read_text().splitlines()[2].split("\t")[3] == "keep"

    cockpit("discard", "1", "--workspace", str(root))
    resumed = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "o"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert workspace.best_commit("o") == experiments(root)[0].commit_sha
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        assert not journal.pending_commands()


def test_the_noise_floor_trains_the_baseline_with_two_seeds_and_derives_the_margin(
    tmp_path: Path, private_cache: Path
) -> None:
    script = tmp_path / "planned_research.py"
    script.write_text(PLANNED_RESEARCH)
    assert "ctx.plan_steps" in PLANNED_RESEARCH
    root = tmp_path / "ws"
    make_workspace(root, script)
    config = (root / "config.toml").read_text().replace("noise_runs = 1", "noise_runs = 2")
    (root / "config.toml").write_text(config)
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "noise"], check=True, env=git_env())
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    baseline, first = experiments(root)
    trials = baseline.details["trials"]
    assert [trial["seed"] for trial in trials] == [42, 43]
    # Both seeds built the same weights: the harness's fingerprint of them agrees.
    (shapes,) = {trial["shapes"] for trial in trials}
    assert re.fullmatch("[0-9a-f]{16}", shapes) and baseline.summary["shapes"] == shapes
    values = [trial["val_bpb"] for trial in trials]
    assert values[0] != values[1]  # another seed, another run
    assert baseline.val_bpb == pytest.approx(sum(values) / 2)
    # The standard deviation of two values; pooled with the experiment's pair when it came
    # within a standard error of a keep and was trained again.
    again = [trial["val_bpb"] for trial in first.details["trials"]]
    groups_first = [values, again] if len(again) > 1 else [values]
    squares = sum((v - sum(group) / len(group)) ** 2 for group in groups_first for v in group)
    spread = math.sqrt(squares / sum(len(group) - 1 for group in groups_first))
    runs = sum(len(group) for group in groups_first)
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["noise_spread_bpb"] == pytest.approx(spread)
    assert status["noise_runs"] == runs
    assert status["keep_margin_bpb"] == pytest.approx(max(0.001, 2 * spread))
    assert status["baseline_val_bpb"] == pytest.approx(baseline.val_bpb)
    # The experiment after it was decided against that margin, and against the baseline's
    # run with its own seed (the same batches and initial weights), not the mean of both.
    evidence = first.details["evidence"]
    assert evidence["margin"] == pytest.approx(status["keep_margin_bpb"])
    if len(again) == 1:  # against the baseline's run with its own seed
        assert evidence["paired_seeds"] == [42]
        assert evidence["compared_with"] == pytest.approx(values[0])
        assert "run with seed 42" in first.decision_reason, first.decision_reason
    else:  # trained on the baseline's seeds and more: against the mean of both of its
        assert evidence["paired_seeds"] == [] and evidence["runs"] == again
        assert evidence["compared_with"] == pytest.approx(baseline.val_bpb)
    # Of the baseline's shapes and on its seeds, the two scripts are a pair that measures
    # how much of a seed's luck they share.
    same = {trial.get("shapes") for trial in first.details["trials"]} == {shapes}
    seeds = {trial["seed"] for trial in first.details["trials"]}
    assert evidence["paired"] is (same and seeds <= {42, 43})  # a third seed: unpaired
    assert status["noise_pairs"] == (1 if same and len(again) > 1 else 0)
    text = cockpit("status", "--workspace", str(root)).stdout
    assert "keep margin" in text and f"{runs} repeated runs" in text
    rows = (root / "results.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].split("\t")[1] == f"{baseline.val_bpb:.6f}"
    seeds = sorted(p.name for p in (root / ".cockpit" / "runs").glob("*/0000*"))
    assert seeds == ["0000", "0000-seed43"]  # each training has its own folder
    # Step plans live with the run: the second seed did the first one's planned work, and no
    # plan of this run went to (or came from) the machine-wide cache.
    (run_folder,) = (root / ".cockpit" / "runs").iterdir()
    plans = json.loads((run_folder / "pacing.json").read_text())
    summaries = [json.loads((run_folder / name / "summary.json").read_text()) for name in seeds]
    # The baseline's script and the experiment's; the baseline's plan is dropped when its
    # second run trained in under 80 % of the first one's time (a sub-second training on a
    # shared machine can), as it should be.
    # So is the experiment's, when it was trained again.
    seconds = [json.loads(path.read_text()) for path in run_folder.glob("*-seed43/summary.json")]
    stale = sum(summary.get("plan_settled") == "stale" for summary in seconds)
    assert len(plans) == 2 - stale, (plans, seconds)
    assert [summary["plan_reused"] for summary in summaries] == [False, True]
    assert summaries[0]["planned_steps"] == summaries[1]["planned_steps"]
    # From the plan on, the live metrics carry it: early abort compares schedules with it.
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        points = [m for m in journal.metrics(baseline.id) if m.get("seed") == 42 and "step" in m]
    assert {m.get("planned_steps") for m in points if m["step"] < 20} == {None}
    planned = {m.get("planned_steps") for m in points if m["step"] >= 20}
    assert planned == {summaries[0]["planned_steps"]}
    machine_wide = private_cache / "pacing.json"
    if machine_wide.exists():
        assert not set(plans) & set(json.loads(machine_wide.read_text()))
    assert status["noise_prior_bpb"] is None  # the workspace's first run: nothing to borrow

    # A second run in the workspace, with the same settings on the same machine: its first
    # pair is pooled with the spread the first run measured, weighed as its degrees of freedom
    # (three at most).
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "1", "--tag", "second"
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["noise_prior_runs"] == 1
    assert status["noise_prior_bpb"] == pytest.approx(spread)
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        second = journal.run_by_tag("second")
        assert second is not None
        groups = [
            [trial["val_bpb"] for trial in e.details["trials"]]
            for e in journal.experiments(second.id)
            if len(e.details.get("trials") or []) > 1
        ]
    own, _, values = pooled_spread(groups)
    freedom = values - len(groups)
    assert status["noise_measured_bpb"] == pytest.approx(own)
    weight = min(3, runs - len(groups_first))  # the first run's degrees of freedom, at most 3
    shrunk = math.sqrt((weight * spread**2 + freedom * own**2) / (weight + freedom))
    assert status["noise_spread_bpb"] == pytest.approx(shrunk)
    assert status["keep_margin_bpb"] == pytest.approx(max(0.001, 2 * shrunk))
    assert (
        "that 1 earlier run of these settings measured"
        in cockpit("status", "--workspace", str(root)).stdout
    )


def test_a_small_gain_is_confirmed_with_another_seed_before_it_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "every_change_wins.py"
    script.write_text(EVERY_CHANGE_WINS)
    root = tmp_path / "ws"
    make_workspace(root, script)
    config = (root / "config.toml").read_text()
    config = config.replace("[trainer]\n", f'[trainer]\ncommand = "{sys.executable} train.py"\n', 1)
    # Every gain counts as small: the first kept experiment must be confirmed.
    config = config.replace("confirm_multiple = 0", "confirm_multiple = 1000000.0")
    (root / "config.toml").write_text(config)
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "script"], check=True, env=git_env())
    result = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    baseline, first = experiments(root)
    assert len(baseline.details.get("trials", [])) == 1  # noise_runs = 1: measured once
    assert [trial["seed"] for trial in first.details["trials"]] == [42, 43]
    assert first.decision == "keep" and "mean of 2 runs" in first.decision_reason
    evidence = first.details["evidence"]
    assert evidence["runs"] == [t["val_bpb"] for t in first.details["trials"]]
    assert evidence["source"] == "self-reported" and evidence["margin"] == 0.001
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        confirmations = journal.events(kinds=["noise"])
    assert len(confirmations) == 1 and "confirming" in confirmations[0].message
    assert len((root / "results.tsv").read_text().splitlines()) == 3


def test_a_changed_evaluator_stops_the_run_before_the_next_training(tmp_path: Path) -> None:
    """The harness and evaluator are fingerprinted when a run starts; an edit of them under a
    running engine stops it with a message, and no result is measured on the changed code."""
    import shutil

    packages = tmp_path / "packages"
    shutil.copytree(
        REPO / "trainer", packages / "trainer", ignore=shutil.ignore_patterns("__pycache__")
    )
    root = tmp_path / "ws"
    make_workspace(root)
    # The engine and its trainings import this copy of the trainer package.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(packages), str(REPO)])}
    process = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "run", "--headless", "--workspace", str(root),
         "--experiments", "1", "--mode", "supervised"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    with ended(process):
        wait_for(lambda: state(root, "phase") == "awaiting_approval", 90, "the first proposal")
        evaluator = packages / "trainer" / "evaluate.py"
        evaluator.write_text(evaluator.read_text() + "\nBITS_PER_BYTE_SCALE = 0.5\n")
        assert cockpit("approve", "--workspace", str(root)).returncode == 0
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 1, output
    assert "the harness, evaluator or corpus changed since this run started" in output
    assert "Traceback" not in output
    records = experiments(root)
    assert records[1].status == "committed" and records[1].val_bpb is None  # never trained
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        (event,) = journal.events(kinds=["integrity"])
        assert "cockpit run --tag NEW" in event.message
