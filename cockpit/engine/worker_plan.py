"""The engine's workers, planned from `[engine] workers`, the executor and this machine.

On a cluster (SLURM, Ray) the workers are slots the cluster's engine places; here they are
this machine's visible GPUs (each by its model's name) or shares of its CPU cores.
"""

from __future__ import annotations

import os

from cockpit.config import Settings
from cockpit.engine.monitor import GpuSource, default_gpu_source
from cockpit.engine.runner import Executor
from cockpit.engine.workers import Worker, WorkerError, cluster_workers, plan_workers, visible_gpus
from cockpit.errors import EngineError


def plan_engine_workers(
    settings: Settings, executor: Executor, gpu_source: GpuSource | None
) -> list[Worker]:
    """The workers of an engine that trains through ``executor`` (EngineError when the
    settings ask for workers this machine or cluster cannot give)."""
    trainer = settings.trainer
    try:
        if executor.name != "local":
            return cluster_workers(
                settings.engine.workers,
                trainer.device,
                executor.name,
                threads=max(1, settings.executor.cpus_per_job),
            )
        gpus: list[str] = []
        names: dict[str, str] = {}
        if trainer.device != "cpu" and not trainer.command:
            snapshot = (gpu_source or default_gpu_source()).read(())
            gpus = visible_gpus(len(snapshot.gpus) if snapshot.available else 0)
            if gpus:  # each GPU's model, by the names CUDA_VISIBLE_DEVICES may give it
                for reading in snapshot.gpus:
                    names[str(reading.index)] = reading.name
                    if reading.uuid:
                        names[reading.uuid] = reading.name
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return plan_workers(
            settings.engine.workers,
            trainer.device,
            gpus,
            cores,
            reserved=settings.agent.reserved_gpus,
            names=names,
        )
    except WorkerError as exc:
        raise EngineError(str(exc)) from None
