"""The engine's runner with real processes: kill_tree ends whole trees (SIGTERM first, SIGKILL
for what ignores it), a training that overruns its deadline is killed and reported as a
timeout, every harness exit code becomes its Outcome, a stop request interrupts the run, and
the metrics follower hands over complete lines only. And without processes: the job's command
line is the harness's options written out, and its deadline lies past every limit the harness
keeps itself."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

from cockpit.engine.runner import MetricsFollower, TrainingJob, TrainingProcess, kill_tree
from tests.conftest import SCRIPTS
from trainer import limits
from trainer.bounds import Bounds
from trainer.options import HarnessOptions
from trainer.outcomes import Outcome


def harness_options(script: Path, text_corpus: Path | str, **changes: Any) -> HarnessOptions:
    """A small CPU run of the script on the test corpus."""
    return HarnessOptions(
        script=script,
        device="cpu",
        corpus=f"text:{text_corpus}",
        seq_len=64,
        eval_tokens=4096,
        **changes,
    )


def dead(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting to be reaped (it runs no more code either way)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_dead(processes: Iterable[psutil.Process], timeout: float = 5.0) -> bool:
    """Whether every process is dead, waiting a little for the kernel to catch up."""
    processes = list(processes)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(dead(p) for p in processes):
            return True
        time.sleep(0.02)
    return all(dead(p) for p in processes)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def write_script(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


# --- kill_tree ------------------------------------------------------------------------------

# Ignores SIGTERM, and so does one of its children; the shell's background sleep is a
# grandchild of the root.
STUBBORN_TREE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
shell = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"])
ignorer = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
     " print('ready', flush=True); time.sleep(300)"],
    stdout=subprocess.PIPE,
)
ignorer.stdout.readline()
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.e2e
def test_kill_tree_kills_what_ignores_sigterm_down_to_the_grandchildren() -> None:
    """A root and a child that ignore SIGTERM, a shell and its background sleep: after the
    term timeout every one of them is gone, the stubborn ones by SIGKILL."""
    root = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_TREE], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert root.stdout is not None and root.stdout.readline() == b"ready\n"
        parent = psutil.Process(root.pid)

        def grandchildren_started() -> bool:
            return any(p.ppid() != root.pid for p in parent.children(recursive=True))

        wait_until(grandchildren_started, 10, "the shell's background sleep")
        tree = [parent, *parent.children(recursive=True)]
        assert len(tree) >= 4
        started = time.monotonic()
        kill_tree(root.pid, term_timeout=0.5)
        elapsed = time.monotonic() - started
        assert all_dead(tree), [p.pid for p in tree if not dead(p)]
        assert 0.4 < elapsed < 4.0  # it waited for SIGTERM to work, then escalated
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()


@pytest.mark.e2e
def test_kill_tree_ends_an_obedient_tree_with_sigterm_alone() -> None:
    """Processes that honour SIGTERM are gone without waiting out the term timeout."""
    root = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        parent = psutil.Process(root.pid)
        wait_until(lambda: len(parent.children()) == 2, 10, "two sleeps")
        tree = [parent, *parent.children(recursive=True)]
        started = time.monotonic()
        kill_tree(root.pid, term_timeout=30)
        assert time.monotonic() - started < 5  # no SIGKILL escalation was needed
        assert all_dead(tree)
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()


@pytest.mark.e2e
def test_kill_tree_leaves_the_exit_status_to_the_callers_popen() -> None:
    """The runner learns how its training ended from Popen; kill_tree must not take the exit
    status away from it."""
    child = subprocess.Popen(["sleep", "300"])
    try:
        kill_tree(child.pid, term_timeout=5)
        assert child.wait(timeout=5) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.e2e
def test_kill_tree_of_a_finished_process_is_harmless() -> None:
    """A pid that has already exited and been reaped is skipped without an error."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    kill_tree(done.pid, term_timeout=0.1)
    assert done.returncode == 0


# --- jobs and their outcomes ------------------------------------------------------------------


def test_the_job_command_runs_the_harness_with_its_options(tmp_path: Path) -> None:
    """The command is `python -m trainer` and the options' own flags, which the harness reads
    back as the same options; budget and grace are the options'."""
    options = HarnessOptions(
        script=tmp_path / "train.py",
        budget_seconds=300,
        grace_seconds=10,
        device="cpu",
        metrics_path=tmp_path / "m.jsonl",
        summary_json=tmp_path / "s.json",
    )
    job = TrainingJob(options)
    command = job.command()
    assert command[:3] == [sys.executable, "-m", "trainer"]
    assert HarnessOptions.parse(command[3:]) == options
    assert (job.budget_seconds, job.grace_seconds) == (300, 10)
    script_mode = TrainingJob(options, command_line=["/bin/sh", "-c", "make train"])
    assert script_mode.command() == ["/bin/sh", "-c", "make train"]


def test_the_harness_options_survive_their_command_line(tmp_path: Path) -> None:
    """parse(argv()) gives back the options, every field set away from its default, with the
    metrics going to a file or to a descriptor."""
    root = tmp_path.resolve()
    options = HarnessOptions(
        script=root / "train.py",
        budget_seconds=1.5,
        grace_seconds=0.25,
        device="cuda",
        seed=7,
        corpus=f"parquet:{root / 'corpus'}",
        seq_len=128,
        eval_tokens=8192,
        threads=3,
        cpus=(2, 5),
        cache_dir=root / "cache",
        pacing_path=root / "pacing.json",
        plan_steps=480,
        metrics_path=root / "metrics.jsonl",
        summary_json=root / "summary.json",
        work_dir=root / "work",
        program_path=root / "model.program",
        confinement="require",
        eval_memory_mb=512,
        share_compile_cache=True,
        bounds=Bounds(memory_mb=2048, processes=64, disk_mb=100, metrics_mb=2),
    )
    assert HarnessOptions.parse(options.argv()) == options
    to_descriptor = dataclasses.replace(options, metrics_path=None, metrics_fd=9)
    assert HarnessOptions.parse(to_descriptor.argv()) == to_descriptor
    defaults = HarnessOptions(script=root / "train.py")
    assert HarnessOptions.parse(defaults.argv()) == defaults


def test_the_engine_builds_the_harness_options_from_the_settings_and_the_worker(
    tmp_path: Path,
) -> None:
    """build_job: the settings' trainer section, the worker's device and cores, the cache
    folder, the step plans and the run's files, as options that survive the command line."""
    from cockpit.config import Settings, TrainerSettings
    from cockpit.engine.jobs import RunFiles, build_job

    root = tmp_path.resolve()
    settings = Settings(
        trainer=TrainerSettings(
            budget_seconds=20,
            grace_seconds=5,
            corpus="text:corpus",
            seq_len=128,
            require_confinement=True,
            share_compile_cache=True,
            memory_limit_mb=4096,
        )
    )
    files = RunFiles.under(root / "run")
    job = build_job(
        settings,
        root / "train.py",
        files,
        root,
        pacing=root / "pacing.json",
        device="cuda:2",
        cpus=(4, 5),
        cwd=root / "worktree",
    )
    options = job.options
    assert (options.budget_seconds, options.grace_seconds) == (20, 5)
    assert (options.device, job.env["CUDA_VISIBLE_DEVICES"]) == ("cuda", "2")
    assert (options.cpus, options.threads) == ((4, 5), 2)  # a thread per core it was given
    assert options.corpus == f"text:{root / 'corpus'}"  # resolved against the workspace
    assert options.confinement == "require" and options.share_compile_cache
    assert options.bounds.memory_mb == 4096
    assert (options.metrics_path, options.summary_json) == (files.metrics, files.summary)
    assert options.pacing_path == root / "pacing.json"
    assert (job.log_path, job.cwd) == (files.log, root / "worktree")
    assert HarnessOptions.parse(job.command()[3:]) == options


@pytest.mark.parametrize(
    ("budget", "grace", "deadline"),
    [
        # probe 300 + startup 60 + script (budget + grace + 10 + export) + evaluation and its
        # 10 + kill 30
        (1.5, 1.5, 300 + 60 + (1.5 + 1.5 + 10 + 60) + (60 + 10) + 30),
        (1.5, 10, 300 + 60 + (1.5 + 10 + 10 + 60) + (60 + 10) + 30),
        (20, 10, 300 + 60 + (20 + 10 + 10 + 60) + (60 + 10) + 30),
        (300, 10, 300 + 60 + (300 + 10 + 10 + 75) + (300 + 10) + 30),
        (3600, 60, 300 + 60 + (3600 + 60 + 10 + 900) + (3600 + 10) + 30),
    ],
)
def test_the_engine_kills_a_run_only_past_every_limit_the_harness_keeps(
    budget: float, grace: float, deadline: float
) -> None:
    """Each phase of a run has a clock in the harness (trainer.limits): the device probe where
    no verdict is cached (a first run on a machine), the training process's start-up, its script (the soft stop at budget + grace, the watchdog's margin, the export)
    and the evaluation (its soft stop and its watchdog). The engine's kill comes only after
    the longest run all of them allow, and its margin on top."""
    job = TrainingJob(HarnessOptions(Path("/w/train.py"), budget, grace))
    startup = max(limits.PROBE_TIMEOUT_SECONDS.values()) + limits.STARTUP_ALLOWANCE_SECONDS
    soft_stop = budget + grace
    hard_stop = soft_stop + limits.HARD_STOP_MARGIN_SECONDS
    export = limits.export_limit_seconds(budget)
    script = limits.script_limit_seconds(budget, grace)
    evaluation = limits.evaluation_limit_seconds(budget) + limits.HARD_STOP_MARGIN_SECONDS
    assert export >= budget / 4 and limits.evaluation_limit_seconds(budget) >= budget
    assert script >= hard_stop + export
    longest = startup + script + evaluation
    assert limits.harness_limit_seconds(budget, grace) >= longest
    assert job.deadline_seconds >= longest + limits.KILL_MARGIN_SECONDS
    assert job.deadline_seconds == pytest.approx(deadline)
    # A shorter evaluation moves the deadline with it, and never below the rest.
    shorter = limits.kill_deadline_seconds(budget, grace, evaluation=0)
    assert shorter == pytest.approx(deadline - limits.evaluation_limit_seconds(budget))


def test_every_outcome_has_its_exit_code_and_unknown_codes_have_none() -> None:
    """The table the runner classifies by: each Outcome round-trips through its code; codes
    the harness never uses (Python's 1, argparse's 2, signals) map to None."""
    for outcome in Outcome:
        assert Outcome.from_exit_code(int(outcome)) is outcome
    for code in (None, 1, 2, 11, -9, -15):
        assert Outcome.from_exit_code(code) is None


STUBBORN_SCRIPT = """
import os, subprocess, time
from pathlib import Path

MARKER = Path.cwd() / "started.txt"  # the training's own folder: all it may write


def train(ctx):
    child = subprocess.Popen(["sleep", "300"])
    staging = MARKER.with_suffix(".tmp")
    staging.write_text(f"{os.getpid()} {child.pid}")
    staging.rename(MARKER)
    while True:  # deaf to the harness's soft stop and to SIGTERM
        try:
            time.sleep(0.05)
        except BaseException:
            pass
"""


@pytest.mark.e2e
def test_a_run_past_its_deadline_is_killed_as_a_timeout(
    tmp_path: Path, text_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script that swallows every stop and has a child of its own: once the runner's
    deadline has passed, the runner kills the whole tree and reports TIMEOUT with killed=True.
    The engine's allowances are shrunk to nothing here (its deadline under 2 s), while the
    harness, another process, keeps its own: its watchdog would end the script only at budget
    + grace + 10 s, so it is the runner's kill that ends this run."""
    for name in (
        "STARTUP_ALLOWANCE_SECONDS",
        "HARD_STOP_MARGIN_SECONDS",
        "EXPORT_TIMEOUT_MIN_SECONDS",
        "EVAL_TIMEOUT_MIN_SECONDS",
        "KILL_MARGIN_SECONDS",
    ):
        monkeypatch.setattr(limits, name, 0.0)
    monkeypatch.setattr(limits, "PROBE_TIMEOUT_SECONDS", {"cpu": 0.0, "cuda": 0.0})
    script = write_script(tmp_path / "stubborn.py", STUBBORN_SCRIPT)
    job = TrainingJob(
        harness_options(
            script,
            text_corpus,
            budget_seconds=0.5,
            grace_seconds=0.5,
            summary_json=tmp_path / "summary.json",
            metrics_path=tmp_path / "metrics.jsonl",
        ),
        log_path=tmp_path / "run.log",
        cwd=tmp_path,
    )
    assert job.deadline_seconds == 0.5 + 0.5 + 0.5 / 4 + 0.5  # script, export, evaluation
    process = TrainingProcess(job)
    process.start()
    marker = tmp_path / "training" / "started.txt"
    try:
        assert process.process is not None

        def script_running() -> bool:
            if process.process is not None and process.process.poll() is not None:
                pytest.fail(f"the harness ended early:\n{(tmp_path / 'run.log').read_text()}")
            return marker.exists()

        wait_until(script_running, 60, "the script to start training")
        # The tree as the host sees it (in a PID namespace the script sees other numbers): the
        # harness, the training and its child, and where there is one, the namespace's init.
        harness = psutil.Process(process.pid)
        tree = [harness, *harness.children(recursive=True)]
        assert any(member.name() == "sleep" for member in tree), tree
        result = process.wait(poll_seconds=0.05)
    finally:
        process.stop()
    assert result.outcome is Outcome.TIMEOUT
    assert result.killed is True
    assert "did not end by its deadline" in result.reason
    # The harness is not the stubborn script: it answers the SIGTERM and may write its summary.
    assert result.summary.get("status") in (None, "interrupted"), result.summary
    assert all_dead(tree)


SIMPLE_SCRIPTS = {
    "crash": 'def train(ctx):\n    raise RuntimeError("boom in the schedule")\n',
    "bad_model": "def train(ctx):\n    return None\n",
    # The harness itself killed (its training may signal it only with confinement off).
    "killed": "import os, signal\ndef train(ctx):\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "killed_itself": "import os, signal\ndef train(ctx):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
}


@pytest.mark.e2e
def test_exit_codes_and_signals_become_outcomes(tmp_path: Path, text_corpus: Path) -> None:
    """Seven runs at once: a good run is OK with its val_bpb and live metrics; a raise is
    CRASH with the script's reason; None is BAD_MODEL; a bad corpus is SETUP; a usage error
    (exit 2), the harness's death by SIGKILL and the training process's are CRASH with a
    reason that says so."""
    jobs: dict[str, TrainingJob] = {}

    def job(name: str, script: Path, budget: float = 2.0, **changes: Any) -> TrainingJob:
        folder = tmp_path / name
        folder.mkdir()
        options = harness_options(
            script,
            text_corpus,
            budget_seconds=budget,
            grace_seconds=2.0,
            metrics_path=folder / "metrics.jsonl",
            summary_json=folder / "summary.json",
        )
        jobs[name] = TrainingJob(
            dataclasses.replace(options, **changes), log_path=folder / "run.log", cwd=folder
        )
        return jobs[name]

    job("ok", SCRIPTS / "tiny_research.py", budget=1.0)
    for name, source in SIMPLE_SCRIPTS.items():
        changes = {"confinement": "off"} if name == "killed" else {}
        job(name, write_script(tmp_path / f"{name}.py", source), **changes)
    job("setup", SCRIPTS / "tiny_research.py", corpus="text:/nonexistent/corpus")
    # A flag the harness refuses: its command line, one flag longer than the options write.
    usage = job("usage", SCRIPTS / "tiny_research.py")
    jobs["usage"] = dataclasses.replace(usage, command_line=[*usage.command(), "--no-such-flag"])

    processes = {name: TrainingProcess(j) for name, j in jobs.items()}
    for process in processes.values():
        process.start()
    metrics: list[dict[str, Any]] = []
    try:
        results = {
            name: process.wait(on_metric=metrics.append if name == "ok" else None)
            for name, process in processes.items()
        }
    finally:
        for process in processes.values():
            process.stop()

    def log(name: str) -> str:
        path = jobs[name].log_path
        assert path is not None
        return path.read_text()

    ok = results["ok"]
    assert (ok.outcome, ok.exit_code, ok.reason, ok.killed) == (Outcome.OK, 0, "", False), log("ok")
    assert ok.val_bpb is not None and 0 < ok.val_bpb < 8.0
    assert ok.summary["status"] == "ok" and ok.wall_seconds > 1.0
    assert metrics[0]["event"] == "start" and metrics[-1]["event"] == "end"
    assert any(m["event"] == "metric" and "loss" in m for m in metrics)
    assert metrics[-1]["val_bpb"] == ok.val_bpb

    crash = results["crash"]
    assert (crash.outcome, crash.exit_code) == (Outcome.CRASH, 3), log("crash")
    assert crash.reason == "RuntimeError: boom in the schedule"
    assert "Traceback" in log("crash") and crash.val_bpb is None

    bad = results["bad_model"]
    assert (bad.outcome, bad.exit_code) == (Outcome.BAD_MODEL, 7), log("bad_model")
    assert "returned None" in bad.reason

    setup = results["setup"]
    assert (setup.outcome, setup.exit_code) == (Outcome.SETUP, 9), log("setup")
    assert "is not a directory" in setup.reason

    killed = results["killed"]
    assert (killed.outcome, killed.exit_code) == (Outcome.CRASH, -signal.SIGKILL), log("killed")
    assert "SIGKILL" in killed.reason and killed.summary == {} and not killed.killed

    itself = results["killed_itself"]
    assert (itself.outcome, itself.exit_code) == (Outcome.CRASH, 3), log("killed_itself")
    assert itself.reason == "the training process was killed by SIGKILL"
    assert itself.summary["status"] == "crash"

    usage = results["usage"]
    assert (usage.outcome, usage.exit_code) == (Outcome.CRASH, 2), log("usage")
    assert "exited with code 2 and no summary" in usage.reason
    assert "--no-such-flag" in log("usage")


@pytest.mark.e2e
def test_a_stop_request_interrupts_the_run(tmp_path: Path, text_corpus: Path) -> None:
    """should_stop turning true once training has begun stops the tree: INTERRUPTED, with
    the harness's own summary (it got SIGTERM and wrote it) and its last metrics line."""
    script = write_script(
        tmp_path / "forever.py",
        "import time\ndef train(ctx):\n    while True:\n        time.sleep(0.05)\n",
    )
    job = TrainingJob(
        harness_options(
            script,
            text_corpus,
            budget_seconds=60,
            grace_seconds=5,
            metrics_path=tmp_path / "metrics.jsonl",
            summary_json=tmp_path / "summary.json",
        ),
        log_path=tmp_path / "run.log",
    )
    records: list[dict[str, Any]] = []
    process = TrainingProcess(job)
    try:
        result = process.wait(
            on_metric=records.append,
            poll_seconds=0.05,
            should_stop=lambda: any(r.get("phase") == "training" for r in records),
        )
    finally:
        process.stop()
    assert result.outcome is Outcome.INTERRUPTED
    assert result.killed is True and result.reason == "stopped on request"
    assert result.summary["status"] == "interrupted"  # the harness ended itself on SIGTERM
    assert "SIGTERM" in result.summary["reason"]
    assert records[-1]["event"] == "end" and records[-1]["status"] == "interrupted"
    assert result.wall_seconds < 30
    assert process.pid is not None and not psutil.pid_exists(process.pid)


@pytest.mark.e2e
def test_stop_then_wait_records_the_run_as_interrupted(tmp_path: Path, text_corpus: Path) -> None:
    """stop() says the run will be recorded as interrupted; wait() afterwards must not turn it
    into a success."""
    job = TrainingJob(
        harness_options(
            SCRIPTS / "tiny_research.py",
            text_corpus,
            budget_seconds=30,
            grace_seconds=5,
            summary_json=tmp_path / "summary.json",
        ),
        log_path=tmp_path / "run.log",
    )
    process = TrainingProcess(job)
    process.start()
    try:
        process.stop()
        result = process.wait()
    finally:
        process.stop()
    assert result.outcome is not Outcome.OK
    assert result.outcome is Outcome.INTERRUPTED


# --- the metrics follower ---------------------------------------------------------------------


def test_the_follower_hands_over_complete_lines_only(tmp_path: Path) -> None:
    """A line without its newline waits for the next read, even split inside a UTF-8
    character; blank and malformed lines are skipped; a missing file reads as nothing."""
    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(path)
    assert list(follower.read_new()) == []

    accented = json.dumps({"step": 2, "note": "é"}, ensure_ascii=False).encode()
    cut = accented.index("é".encode()) + 1  # inside the two-byte character
    with open(path, "wb") as stream:
        stream.write(b'{"step": 1, "loss": 5.5}\n\n' + accented[:cut])
    assert list(follower.read_new()) == [{"step": 1, "loss": 5.5}]
    assert list(follower.read_new()) == []

    with open(path, "ab") as stream:
        stream.write(accented[cut:] + b"\nnot json at all\n" + b'{"step": 3')
    assert list(follower.read_new()) == [{"step": 2, "note": "é"}]

    with open(path, "ab") as stream:
        stream.write(b', "loss": 4.0}\n')
    assert list(follower.read_new()) == [{"step": 3, "loss": 4.0}]
    assert list(follower.read_new()) == []


def test_a_chosen_gpu_is_pinned_with_cuda_visible_devices() -> None:
    """cuda:N trains on GPU N alone: the harness sees one card, as `cuda`."""
    from cockpit.config import Settings, TrainerSettings
    from cockpit.engine.jobs import RunFiles, build_job, device_placement

    assert device_placement("cuda:3") == ("cuda", {"CUDA_VISIBLE_DEVICES": "3"})
    assert device_placement("cuda") == ("cuda", {})
    assert device_placement("cpu") == ("cpu", {})
    settings = Settings(trainer=TrainerSettings(device="cuda:1"))
    job = build_job(
        settings, Path("train.py"), RunFiles.under(Path(tempfile.mkdtemp())), Path.cwd()
    )
    assert job.env["CUDA_VISIBLE_DEVICES"] == "1"
    command = job.command()
    assert command[command.index("--device") + 1] == "cuda"


@pytest.mark.e2e
def test_the_local_executor_starts_a_training_and_hands_back_its_handle(
    tmp_path: Path, text_corpus: Path
) -> None:
    from cockpit.engine.runner import LocalExecutor

    job = TrainingJob(
        harness_options(
            SCRIPTS / "tiny_research.py",
            text_corpus,
            budget_seconds=1.5,
            grace_seconds=2,
            summary_json=tmp_path / "summary.json",
        ),
        log_path=tmp_path / "run.log",
    )
    process = LocalExecutor().start(job)
    assert process.pid is not None and psutil.pid_exists(process.pid)
    result = process.wait()
    assert result.outcome is Outcome.OK and result.val_bpb is not None
