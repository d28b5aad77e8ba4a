"""Runs one training as its own process tree and follows it until it ends.

The training (the trainer harness running a script) gets a session of its own, so that it
and everything it spawns (compiler workers, data loaders) can be stopped as one. Its live
metrics are a JSON-lines file that this side follows while the run goes on. The harness
stops a script that overruns by itself; as a last resort, past every limit of the harness's
own (trainer.limits), the whole tree gets SIGTERM and then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import psutil

from trainer import limits
from trainer.options import HarnessOptions
from trainer.outcomes import Outcome

TERM_TO_KILL_SECONDS = 5.0


@dataclass(frozen=True)
class TrainingJob:
    """What to run and where its output goes: the harness's run (its options: the script, the
    budget and grace, the metrics and summary files, the rest of its flags), the log, and the
    folder and environment it runs in."""

    options: HarnessOptions
    log_path: Path | None = None  # None: the output goes to this process's stdout
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Script mode: run this instead of the harness; it prints its own summary block, and its
    # exit code means only success (0) or failure.
    command_line: Sequence[str] | None = None

    @property
    def budget_seconds(self) -> float:
        return self.options.budget_seconds

    @property
    def grace_seconds(self) -> float:
        return self.options.grace_seconds

    @property
    def deadline_seconds(self) -> float:
        """Seconds after its start at which the run's whole tree is killed: past every limit
        the harness keeps on its own clocks (trainer.limits)."""
        return limits.kill_deadline_seconds(self.budget_seconds, self.grace_seconds)

    def command(self) -> list[str]:
        if self.command_line is not None:
            return list(self.command_line)
        return [sys.executable, "-m", "trainer", *self.options.argv()]


@dataclass
class RunResult:
    """How a training ended, from the harness's exit code and summary."""

    outcome: Outcome
    exit_code: int | None
    summary: dict[str, Any]
    reason: str
    killed: bool = False
    wall_seconds: float = 0.0

    @property
    def val_bpb(self) -> float | None:
        value = self.summary.get("val_bpb")
        return float(value) if isinstance(value, (int, float)) else None


def _exited_child(pid: int) -> bool | None:
    """Whether our own child has exited, without reaping it (its Popen still wants the
    status); None when pid is not our child."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return None


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have exited; return those still alive after the timeout.

    psutil would reap a process that is our own child and so steal its exit status from
    the Popen that started it; our children are polled with WNOWAIT instead."""
    deadline = time.monotonic() + timeout
    children = [p for p in processes if _exited_child(p.pid) is not None]
    others = [p for p in processes if p not in children]
    while True:
        children = [p for p in children if not _exited_child(p.pid)]
        _, others = psutil.wait_procs(others, timeout=0)
        if not children and not others:
            return []
        if time.monotonic() >= deadline:
            return children + list(others)
        time.sleep(0.02)


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def kill_tree(pid: int, term_timeout: float = TERM_TO_KILL_SECONDS) -> None:
    """SIGTERM a process and all its descendants, then SIGKILL whatever is left.

    The exit status of a process that is our own child is left for its Popen to collect."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _signal_all(processes, signal.SIGTERM)
    alive = _wait_gone(processes, term_timeout)
    if alive:
        _signal_all(alive, signal.SIGKILL)
        _wait_gone(alive, term_timeout)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class MetricsFollower:
    """Reads the JSON lines appended to a file so far; call again for the new ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next read
        for line in lines:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


class TrainingProcess:
    """One running training: start it, follow it, stop it."""

    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.stop_requested = False
        self.result: RunResult | None = None
        self._log: IO[bytes] | None = None
        metrics = job.options.metrics_path
        self.follower = MetricsFollower(metrics) if metrics is not None else None

    def start(self) -> None:
        job = self.job
        for path in (job.options.metrics_path, job.options.summary_json):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)
        env = {**os.environ, **job.env, "PYTHONUNBUFFERED": "1"}
        stdout: IO[bytes] | None = None
        if job.log_path is not None:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = stdout = open(job.log_path, "wb")  # noqa: SIM115
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            job.command(),
            cwd=job.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,  # its own process group: stopped as one, deaf to our SIGHUP
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        """Stop the whole tree now (the run will be recorded as interrupted)."""
        self.stop_requested = True
        if self.process is not None and self.process.poll() is None:
            kill_tree(self.process.pid)

    def wait(
        self,
        on_metric: Callable[[dict[str, Any]], None] | None = None,
        poll_seconds: float = 0.1,
        should_stop: Callable[[], bool] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> RunResult:
        """Follow the run until it ends, is stopped, or overruns its deadline.

        on_tick runs before each metric check (about every poll_seconds)."""
        while True:
            if on_tick is not None:
                on_tick()
            result = self.poll(on_metric)
            if result is not None:
                return result
            if should_stop is not None and should_stop():
                self.stop()
                return self.poll(on_metric) or self._finish(on_metric, killed=False)
            assert self.process is not None
            try:  # wakes the moment the process exits, so no poll interval is lost
                self.process.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                pass

    def poll(self, on_metric: Callable[[dict[str, Any]], None] | None = None) -> RunResult | None:
        """Hand on the metrics written since the last call; how the run ended, once it has
        (None while it runs). A run past its deadline is killed here."""
        if self.process is None:
            self.start()
        assert self.process is not None
        if self.result is not None:
            return self.result
        self._drain(on_metric)
        if self.process.poll() is not None:
            return self._finish(on_metric, killed=False)
        if time.monotonic() > self.started_at + self.job.deadline_seconds:
            kill_tree(self.process.pid)
            return self._finish(on_metric, killed=True)
        return None

    def _finish(
        self, on_metric: Callable[[dict[str, Any]], None] | None, *, killed: bool
    ) -> RunResult:
        assert self.process is not None
        exit_code = self.process.wait()
        self._drain(on_metric)
        if self._log is not None:
            self._log.close()
        self.result = self._result(exit_code, killed, self.stop_requested)
        return self.result

    def _drain(self, on_metric: Callable[[dict[str, Any]], None] | None) -> None:
        if self.follower is None:
            return
        for record in self.follower.read_new():
            if on_metric is not None:
                on_metric(record)

    def _result(self, exit_code: int, killed: bool, interrupted: bool) -> RunResult:
        return result_of(
            self.job, exit_code, killed, interrupted, time.monotonic() - self.started_at
        )


def result_of(
    job: TrainingJob, exit_code: int | None, killed: bool, interrupted: bool, wall: float
) -> RunResult:
    """How a training ended, from its exit code and the summary its harness wrote."""
    summary: dict[str, Any] = {}
    if job.options.summary_json is not None:
        try:
            summary = json.loads(job.options.summary_json.read_text())
        except (OSError, ValueError):
            summary = {}
    if killed:
        reason = f"killed after {wall:.0f} s: the run did not end by its deadline"
        return RunResult(Outcome.TIMEOUT, exit_code, summary, reason, True, wall)
    if interrupted:
        return RunResult(Outcome.INTERRUPTED, exit_code, summary, "stopped on request", True, wall)
    if exit_code is None:
        return RunResult(Outcome.CRASH, None, summary, "the training did not report how it ended")
    outcome = Outcome.from_exit_code(exit_code)
    if job.command_line is not None and exit_code != 0:
        outcome = None  # a command's own exit codes say nothing about why it failed
    if outcome is None:
        if exit_code < 0:
            reason = f"the training process died from {_signal_name(-exit_code)}"
        else:
            reason = f"the training process exited with code {exit_code} and no summary"
        return RunResult(Outcome.CRASH, exit_code, summary, reason, False, wall)
    reason = str(summary.get("reason", "")) if outcome is not Outcome.OK else ""
    return RunResult(outcome, exit_code, summary, reason, False, wall)


class JobHandle(Protocol):
    """One training started by an executor: followed by polling, never by blocking."""

    @property
    def pid(self) -> int | None:
        """The training's process on this machine (None when it runs elsewhere)."""
        ...

    started_at: float  # time.monotonic() when it started

    def poll(self, on_metric: Callable[[dict[str, Any]], None] | None = None) -> RunResult | None:
        """Hand on its new live metrics; how it ended once it has (None while it runs)."""
        ...

    def stop(self) -> None:
        """Stop it now; it then ends as interrupted."""
        ...


class Executor(Protocol):
    """Where trainings run: this machine's processes, or a cluster's engine (SLURM through
    submitit, Ray). Start a job, get a handle to follow and stop."""

    name: str  # "local", or the cluster engine's name

    def start(self, job: TrainingJob) -> JobHandle:
        """Start the job and return its handle."""
        ...

    def close(self) -> None:
        """Let go of what the executor holds for the engine (a cluster it started stops with
        it); the engine calls it once, when it leaves, after its trainings have ended."""
        ...


class LocalExecutor:
    """Runs each training on this machine as its own process tree."""

    name = "local"

    def start(self, job: TrainingJob) -> TrainingProcess:
        process = TrainingProcess(job)
        process.start()
        return process

    def close(self) -> None:
        """Nothing to let go of: each training's process tree ends with it."""


def log_tail(path: Path, lines: int) -> str:
    """The last lines of a run's log (empty when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def is_training_process(pid: int) -> bool:
    """Whether pid is still a trainer harness (and not a recycled pid)."""
    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "trainer" in command and "-m" in command
