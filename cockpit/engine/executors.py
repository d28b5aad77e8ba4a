"""Which executor runs the trainings: this machine's processes, SLURM or Ray."""

from __future__ import annotations

from cockpit.config import Settings
from cockpit.engine.runner import Executor, LocalExecutor
from cockpit.store.paths import WorkspacePaths


def executor_for(settings: Settings, paths: WorkspacePaths) -> Executor:
    """The executor `[executor] kind` names, ready to start trainings (EngineError when its
    engine is not installed or cannot be reached)."""
    kind = settings.executor.kind
    device = settings.trainer.device
    gpus = None if device == "auto" else device != "cpu"  # None: where the cluster has them
    if kind == "slurm":
        from cockpit.engine.slurm import SubmititExecutor

        return SubmititExecutor(
            settings.executor, paths.cockpit_dir / "submitit", gpus=gpus is not False
        )
    if kind == "ray":
        from cockpit.engine.raycluster import RayExecutor

        return RayExecutor(settings.executor, gpus=gpus)
    return LocalExecutor()
