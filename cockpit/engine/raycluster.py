"""Trainings on a Ray cluster, one GPU each.

Each training is a Ray actor placed by Ray's own scheduler (one GPU when the trainer trains on
one, one core otherwise). On its node the actor runs the same harness process tree a local
worker runs, in a folder of its own there: the script travels with the request, and the live
metrics, the log, the summary and the exported program come back through Ray, so the nodes
need no storage shared with the engine (only the corpus, which the default one is on every
machine). The journal stays with the engine. ``[executor] ray_address = ""`` starts a Ray
cluster on this machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cockpit.config import ExecutorSettings
from cockpit.engine.programs import PROGRAM_NAME
from cockpit.engine.runner import RunResult, TrainingJob, TrainingProcess, result_of
from cockpit.errors import EngineError
from trainer.outcomes import Outcome

INSTALL_HINT = 'pip install "research-cockpit[ray]"'
DRAIN_SECONDS = 0.5  # how often the engine asks a node for the metrics written since


class NodeTraining:
    """The actor's body: one training on the node it was placed on."""

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process: TrainingProcess | None = None
        self._stopped = False

    def run(self, job: TrainingJob, script: str) -> dict[str, Any]:
        """Train, and hand back how it ended with the files the engine keeps."""
        folder = Path(tempfile.mkdtemp(prefix="cockpit-ray-"))
        try:
            summary, log = folder / "summary.json", folder / "log.txt"
            options = dataclasses.replace(
                job.options,
                script=folder / job.options.script.name,
                metrics_path=folder / "metrics.jsonl",
                summary_json=summary,
            )
            local = dataclasses.replace(
                job,
                options=options,
                log_path=log,
                cwd=job.cwd if job.cwd is not None and job.cwd.is_dir() else folder,
            )
            options.script.write_text(script)
            process = TrainingProcess(local)
            with self._lock:
                if self._stopped:
                    return {"result": result_of(local, None, False, True, 0.0)}
                self._process = process
                process.start()
            result = process.wait(on_metric=self._keep)
            program = folder / PROGRAM_NAME
            return {
                "result": result,
                "summary": _read(summary),
                "log": _read(log),
                "program": _read(program) if program.is_file() else None,
            }
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _keep(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)

    def drain(self) -> list[dict[str, Any]]:
        """The metrics written since the last call."""
        with self._lock:
            records, self._records = self._records, []
        return records

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._process is not None:
                self._process.stop()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class RayTraining:
    """A training on the cluster: polled through Ray, never waited on."""

    pid = None  # it runs on a node, not here

    def __init__(self, ray: Any, job: TrainingJob, actor: Any, done: Any) -> None:
        self.ray = ray
        self.job = job
        self.actor = actor
        self.done = done  # the ObjectRef of run()
        self.started_at = time.monotonic()
        self.stop_requested = False
        self.result: RunResult | None = None
        self._drain: Any = None
        self._last_drain = 0.0

    def poll(self, on_metric: Callable[[dict[str, Any]], None] | None = None) -> RunResult | None:
        if self.result is not None:
            return self.result
        ray = self.ray
        finished = bool(ray.wait([self.done], timeout=0)[0])
        if not finished and time.monotonic() > self.started_at + self.job.deadline_seconds:
            # Past every allowance of the training: stuck, or never placed on a node.
            ray.kill(self.actor)
            wall = time.monotonic() - self.started_at
            self.result = result_of(self.job, None, True, False, wall)
            self.result.reason = (
                f"the Ray training did not end by its deadline ({wall:.0f} s); if it never "
                "started, the cluster lacks what it asks for (`ray status` shows it)"
            )
            return self.result
        if self._drain is None and (
            finished or time.monotonic() - self._last_drain >= DRAIN_SECONDS
        ):
            self._drain, self._last_drain = self.actor.drain.remote(), time.monotonic()
        if self._drain is not None and (finished or ray.wait([self._drain], timeout=0)[0]):
            records = ray.get(self._drain)
            self._drain = None
            for record in records:
                if on_metric is not None:
                    on_metric(record)
        if not finished:
            return None
        if self._drain is not None:  # the last metrics, asked for before the end was seen
            for record in ray.get(self._drain):
                if on_metric is not None:
                    on_metric(record)
        wall = time.monotonic() - self.started_at
        try:
            out = ray.get(self.done)
        except Exception as exc:  # the actor or its node died
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.result = result_of(self.job, None, False, self.stop_requested, wall)
            if self.result.outcome is not Outcome.INTERRUPTED:
                self.result.reason = f"the Ray training failed: {first}"
        else:
            self._keep_files(out)
            self.result = out["result"]
        if self.stop_requested and self.result.outcome is not Outcome.INTERRUPTED:
            self.result = result_of(self.job, self.result.exit_code, False, True, wall)
        ray.kill(self.actor)
        return self.result

    def _keep_files(self, out: dict[str, Any]) -> None:
        """Write what the node sent back where a local training leaves it."""
        job = self.job
        summary = job.options.summary_json
        for path, data in ((summary, out.get("summary")), (job.log_path, out.get("log"))):
            if path is not None and data is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        if out.get("program") is not None and summary is not None:
            (summary.parent / PROGRAM_NAME).write_bytes(out["program"])

    def stop(self) -> None:
        self.stop_requested = True
        self.actor.stop.remote()


class RayExecutor:
    """Runs each training as an actor on a Ray cluster."""

    name = "ray"

    def __init__(self, settings: ExecutorSettings, *, gpus: bool | None) -> None:
        """``gpus``: a GPU per training (True), none (False), or one where the cluster has
        GPUs (None, for device "auto")."""
        try:
            import ray
        except ImportError:
            raise EngineError(f'[executor] kind = "ray" needs Ray: {INSTALL_HINT}') from None
        self.ray = ray
        self.connected_here = False  # whether this executor joined (or started) Ray
        if not ray.is_initialized():
            self.connected_here = True
            try:
                ray.init(
                    address=settings.ray_address or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EngineError(
                    f"cannot reach the Ray cluster at {settings.ray_address!r}: {exc}; check "
                    '[executor] ray_address ("" starts a cluster on this machine)'
                ) from None
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus is None:  # device "auto": a GPU each where the cluster has them
            gpus = cluster_gpus > 0
        elif gpus and cluster_gpus == 0:
            raise EngineError(
                "the Ray cluster has no GPU, and each training asks for one; set [trainer] "
                'device = "cpu" (or "auto") to train on its CPUs'
            )
        self.options = {
            "num_gpus": 1 if gpus else 0,
            "num_cpus": max(1, settings.cpus_per_job),
            "max_concurrency": 3,  # run(), drain() and stop() side by side
        }
        self._actor_class = ray.remote(NodeTraining)

    def close(self) -> None:
        """Leave the cluster this executor joined; one it started on this machine stops."""
        if self.connected_here and self.ray.is_initialized():
            self.ray.shutdown()

    def start(self, job: TrainingJob) -> RayTraining:
        actor: Any = self._actor_class.options(**self.options).remote()
        done = actor.run.remote(job, job.options.script.read_text())
        return RayTraining(self.ray, job, actor, done)
