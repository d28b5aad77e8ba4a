"""Every check of `cockpit doctor`, in order, from readings taken now (`run_doctor`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cockpit.config import Settings
from cockpit.doctor.confinement import (
    check_landlock,
    check_probe,
    check_userns,
    read_userns_settings,
    run_probe,
    try_userns,
)
from cockpit.doctor.gpu import check_gpus, check_torch, read_driver, read_torch_build
from cockpit.doctor.model_server import check_ollama, read_ollama_state
from cockpit.doctor.storage import (
    FAIL_FREE_GB,
    WARN_FREE_GB,
    cache_dir_of,
    check_corpus,
    check_disk,
    disk_places,
    read_corpus_state,
)
from cockpit.doctor.terminal import check_terminal, terminal_size
from cockpit.doctor.verdicts import GB, Check
from cockpit.engine.monitor import GpuSource, default_gpu_source


def run_doctor(
    settings: Settings,
    workspace: Path,
    *,
    device: str | None = None,
    refresh: bool = False,
    fail_free_gb: float = FAIL_FREE_GB,
    gpu_source: GpuSource | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every check, in order, for the workspace at ``workspace`` (which need not exist yet)
    with its ``settings``. ``device`` is the one the probe tries (default: trainer.device);
    ``gpu_source`` replaces NVML (tests); a check fails below ``fail_free_gb`` of free disk."""
    from trainer import landlock

    source = gpu_source if gpu_source is not None else default_gpu_source()
    try:
        snapshot = source.read(())
    finally:
        source.close()
    driver = read_driver() if snapshot.available else None
    required = settings.trainer.require_confinement
    cache_dir = cache_dir_of(settings)
    torch_build = read_torch_build()
    probe, probe_error = run_probe(
        settings, device or settings.trainer.device, refresh, torch_build
    )
    warn_bytes = max(WARN_FREE_GB, fail_free_gb) * GB
    return [
        check_torch(torch_build, snapshot, driver),
        check_gpus(snapshot, driver),
        check_probe(probe, probe_error),
        check_landlock(landlock.abi_version(), landlock.unavailable_reason(), required=required),
        check_userns(try_userns(), read_userns_settings(), required=required),
        check_disk(
            disk_places(workspace, cache_dir), warn_bytes=warn_bytes, fail_bytes=fail_free_gb * GB
        ),
        check_corpus(read_corpus_state(settings.trainer.corpus, cache_dir)),
        check_ollama(read_ollama_state(settings), snapshot, settings.engine.proposer),
        check_terminal(terminal_size(), os.environ if environ is None else environ),
    ]
