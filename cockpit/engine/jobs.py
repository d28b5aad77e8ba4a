"""The training job of one experiment, built from the settings and the worker that runs it.

The engine owns this: it decides where a training runs (a worker's device and cores, its
folder, its step plans) and hands the job to an executor. `cockpit train` builds its single
job here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cockpit.config import Settings
from cockpit.engine.runner import TrainingJob
from trainer import template_path
from trainer.bounds import Bounds
from trainer.options import HarnessOptions


def resolve_corpus(corpus: str, base: Path) -> str:
    """A `text:DIR` or `parquet:DIR` corpus with DIR made absolute against base."""
    kind, sep, location = corpus.partition(":")
    if not sep or kind not in ("text", "parquet"):
        return corpus
    return f"{kind}:{(base / Path(location).expanduser()).resolve()}"


def device_placement(device: str) -> tuple[str, dict[str, str]]:
    """The harness's device and the environment that pins it: `cuda:N` trains on GPU N alone
    (CUDA_VISIBLE_DEVICES), so the training and everything it spawns see only that card."""
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        return "cuda", {"CUDA_VISIBLE_DEVICES": index}
    return device, {}


@dataclass(frozen=True)
class RunFiles:
    """Where one run's output lives."""

    directory: Path
    log: Path
    metrics: Path
    summary: Path

    @classmethod
    def under(cls, directory: Path) -> RunFiles:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            directory,
            directory / "log.txt",
            directory / "metrics.jsonl",
            directory / "summary.json",
        )


def script_for(settings: Settings, workspace: Path | None) -> Path:
    """The workspace's script, or the bundled template when there is no workspace."""
    if workspace is None:
        return template_path()
    return (workspace / settings.trainer.script).resolve()


def build_job(
    settings: Settings,
    script: Path,
    files: RunFiles,
    base: Path,
    env: Mapping[str, str] | None = None,
    pacing: Path | None = None,
    *,
    device: str | None = None,
    cpus: Sequence[int] = (),
    cwd: Path | None = None,
    plan_steps: int = 0,
) -> TrainingJob:
    """The harness job for one training; `pacing` is the file of step plans it shares with
    other trainings (None: the one in the cache folder, shared by every run on the machine).

    `device` and `cpus` place it on a worker's device and cores, standing in for the settings'
    device and (when they name none) threads; `cwd` is where it runs (a worker's worktree;
    default: base, against which relative corpus folders are resolved); `plan_steps` gives
    the script its step plan (0: the plan file's, or one from the pace)."""
    trainer = settings.trainer
    harness_device, placement = device_placement(device or trainer.device)
    cache_dir = settings.paths.cache_dir
    options = HarnessOptions(
        script=script,
        budget_seconds=trainer.budget_seconds,
        grace_seconds=trainer.grace_seconds,
        device=harness_device,
        seed=trainer.seed,
        corpus=resolve_corpus(trainer.corpus, base),
        seq_len=trainer.seq_len,
        eval_tokens=trainer.eval_tokens,
        threads=trainer.threads or len(cpus),
        cpus=tuple(cpus),
        cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
        pacing_path=pacing,
        plan_steps=plan_steps,
        metrics_path=files.metrics,
        summary_json=files.summary,
        confinement="require" if trainer.require_confinement else "auto",
        eval_memory_mb=trainer.eval_memory_mb,
        share_compile_cache=trainer.share_compile_cache,
        bounds=Bounds(
            memory_mb=trainer.memory_limit_mb,
            processes=trainer.max_processes,
            disk_mb=trainer.disk_limit_mb,
            metrics_mb=trainer.metrics_limit_mb,
        ),
    )
    return TrainingJob(
        options=options,
        log_path=files.log,
        cwd=cwd or base,
        env={**placement, **(env or {})},
    )
