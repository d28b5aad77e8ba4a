"""Trainings as SLURM jobs, submitted through submitit.

Each training is one job: on its node it runs the same harness process tree a local worker
runs, under a time limit derived from the budget, the grace and the evaluation's allowance.
The workspace lives on storage the nodes share, so the job's live metrics, log and summary
are written where the engine follows them, as for a local training; the journal stays with
the engine. submitit does the scheduling: its local executor runs the same path on this
machine (``[executor] slurm_local = true``), to try it out or to test it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit.config import ExecutorSettings
from cockpit.engine.runner import (
    MetricsFollower,
    RunResult,
    TrainingJob,
    TrainingProcess,
    result_of,
)
from cockpit.errors import EngineError
from trainer.outcomes import Outcome

if TYPE_CHECKING:
    import submitit

INSTALL_HINT = 'pip install "research-cockpit[slurm]"'


def run_on_node(job: TrainingJob) -> RunResult:
    """What a job runs on its node: the training as a process tree there. A cancel (SLURM's
    SIGTERM, submitit's local SIGINT) stops the tree, not just this process."""
    process = TrainingProcess(job)

    def stop(signum: int, frame: object) -> None:
        process.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(signum, stop)
    process.start()
    return process.wait()


class SubmititJob:
    """A training submitted as a job: followed through the shared files, ended by cancelling."""

    pid = None  # it runs on a node, not here

    def __init__(
        self, job: TrainingJob, submitted: submitit.Job[RunResult], *, local: bool = False
    ) -> None:
        self.job = job
        self.submitted = submitted
        self.local = local  # submitit's local executor: the job id is its controller's pid
        self.started_at = time.monotonic()
        self.stop_requested = False
        metrics = job.options.metrics_path
        self.follower = MetricsFollower(metrics) if metrics is not None else None
        self.result: RunResult | None = None

    def poll(self, on_metric: Callable[[dict[str, Any]], None] | None = None) -> RunResult | None:
        if self.result is not None:
            return self.result
        done = self.submitted.done()
        if self.follower is not None:
            for record in self.follower.read_new():
                if on_metric is not None:
                    on_metric(record)
        if not done:
            return None
        wall = time.monotonic() - self.started_at
        try:
            self.result = self.submitted.result()
        except Exception as exc:  # the job failed, timed out or was cancelled
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            self.result = result_of(self.job, None, False, self.stop_requested, wall)
            if self.result.outcome is not Outcome.INTERRUPTED:
                self.result.reason = f"the SLURM job {self.submitted.job_id} failed: {first}"
        if self.stop_requested and self.result.outcome is not Outcome.INTERRUPTED:
            self.result = result_of(self.job, self.result.exit_code, False, True, wall)
        return self.result

    def stop(self) -> None:
        self.stop_requested = True
        self.submitted.cancel(check=False)
        if self.local:
            # A local cancel is a SIGINT to the job's controller, which never sees it when it
            # started with SIGINT ignored (as everything started in the background by a shell
            # without job control does): the training would run its whole budget. The
            # controller passes a SIGTERM on to the job, whose handler stops the tree.
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(self.submitted.job_id), signal.SIGTERM)


class SubmititExecutor:
    """Runs each training as a SLURM job (or, for `slurm_local`, a local submitit job)."""

    name = "slurm"

    def __init__(self, settings: ExecutorSettings, folder: Path, *, gpus: bool) -> None:
        try:
            import submitit
        except ImportError:
            raise EngineError(f'[executor] kind = "slurm" needs submitit: {INSTALL_HINT}') from None
        self.settings = settings
        self.gpus = gpus
        folder.mkdir(parents=True, exist_ok=True)
        cluster = "local" if settings.slurm_local else "slurm"
        try:
            self._executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        except RuntimeError as exc:  # no sbatch on this machine
            raise EngineError(
                f"cannot submit SLURM jobs from this machine ({exc}); run the engine on a "
                "login node, or set [executor] slurm_local = true to try it here"
            ) from None

    def start(self, job: TrainingJob) -> SubmititJob:
        settings = self.settings
        self._executor.update_parameters(
            name="cockpit-training",
            timeout_min=max(1, math.ceil(job.deadline_seconds / 60)),
            gpus_per_node=settings.gpus_per_job if self.gpus else 0,
            cpus_per_task=max(1, settings.cpus_per_job),
            slurm_partition=settings.partition or None,
        )
        submitted = self._executor.submit(run_on_node, job)
        return SubmititJob(job, submitted, local=self.settings.slurm_local)

    def close(self) -> None:
        """Nothing to let go of: submitit holds no connection, and each job ends with its
        training (the engine stops those still in flight before it leaves)."""
