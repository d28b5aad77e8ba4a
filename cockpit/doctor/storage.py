"""The checks of what the cockpit stores: free disk where the workspace, its runs and the
caches live, and whether the configured corpus is encoded in the cache yet."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cockpit.config import Settings
from cockpit.doctor.verdicts import FAIL, GB, PASS, WARN, Check, gb_text
from cockpit.store.paths import WorkspacePaths

WARN_FREE_GB = 5.0  # a night's runs, kept models and compiler caches take a few GB
FAIL_FREE_GB = 1.0
# Encoding a corpus reads and writes every byte once: tens of MB a second on one core.
ENCODE_BYTES_PER_SECOND = 20e6


@dataclass(frozen=True)
class DiskPlace:
    """A folder the cockpit writes to and the free space on its file system."""

    name: str
    path: Path
    free_bytes: int
    device: int = 0  # st_dev of the file system: places on one are reported together


def _existing(path: Path) -> Path:
    """The path, or its nearest ancestor that exists (what a folder will be made in)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def disk_place(name: str, path: Path) -> DiskPlace:
    """The free space where ``path`` is, or will be made."""
    existing = _existing(path.expanduser())
    return DiskPlace(name, path, shutil.disk_usage(existing).free, existing.stat().st_dev)


def check_disk(
    places: Sequence[DiskPlace],
    *,
    warn_bytes: float = WARN_FREE_GB * GB,
    fail_bytes: float = FAIL_FREE_GB * GB,
) -> Check:
    """Free disk where the workspace, its runs and the caches live; the tightest one counts."""
    groups: dict[int, list[DiskPlace]] = {}
    for place in places:
        groups.setdefault(place.device, []).append(place)
    parts = []
    for group in groups.values():
        named = [place.name for place in group]
        names = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
        parts.append(f"{gb_text(group[0].free_bytes)} free for the {names} ({group[0].path})")
    details = {
        "places": [
            {"name": place.name, "path": str(place.path), "free_bytes": place.free_bytes}
            for place in places
        ],
        "warn_bytes": warn_bytes,
        "fail_bytes": fail_bytes,
    }
    tightest = min(places, key=lambda place: place.free_bytes)
    summary = "; ".join(parts)
    fix = (
        f"free space on the disk of {tightest.path}, or move it: the workspace with "
        "--workspace, the caches with [paths] cache_dir"
    )
    if tightest.free_bytes < fail_bytes:
        status, summary = (
            FAIL,
            f"{summary}: under {gb_text(fail_bytes)}, trainings will fail to write",
        )
    elif tightest.free_bytes < warn_bytes:
        status, summary = (
            WARN,
            f"{summary}: under {gb_text(warn_bytes)}, a night's runs may fill it",
        )
    else:
        return Check("disk", PASS, summary, details=details)
    return Check("disk", status, summary, fix, details)


def disk_places(workspace: Path, cache_dir: Path) -> list[DiskPlace]:
    """The workspace, its runs and the caches, with the free space where each lives."""
    paths = WorkspacePaths(workspace)
    return [
        disk_place("workspace", workspace),
        disk_place("runs", paths.cockpit_dir / "runs"),
        disk_place("caches", cache_dir),
    ]


def cache_dir_of(settings: Settings) -> Path:
    """Where trainings cache corpora and compiled kernels: [paths] cache_dir when it is set,
    else what the trainer picks (COCKPIT_CACHE_DIR, else the user cache directory)."""
    from trainer.data import default_cache_dir

    configured = settings.paths.cache_dir
    return Path(configured).expanduser() if configured else default_cache_dir()


@dataclass(frozen=True)
class CorpusState:
    """Whether a corpus is already encoded in the cache, and how big it is."""

    name: str
    cached: bool
    files: int = 0
    size_bytes: int = 0
    directory: Path | None = None
    meta: dict[str, Any] | None = None
    error: str = ""


def read_corpus_state(name: str, cache_dir: Path) -> CorpusState:
    """Look the corpus up in the cache without encoding it (`trainer.data.CorpusSpec.cache_entry`
    names its folder from the files' names, sizes and times)."""
    from trainer.data import CorpusError, CorpusSpec

    try:
        spec = CorpusSpec.parse(name)
        files = spec.files()
    except (CorpusError, OSError) as exc:
        return CorpusState(name, False, error=str(exc))
    if not files:
        return CorpusState(name, False, error=f"no files found under {spec.root}")
    size = sum(path.stat().st_size for path in files)
    directory = spec.cache_entry(files, cache_dir)
    meta_path = directory / "meta.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
    return CorpusState(name, meta is not None, len(files), size, directory, meta)


def corpus_build_seconds(state: CorpusState) -> float:
    """About how long encoding the corpus takes (0 when it is cached)."""
    if state.cached:
        return 0.0
    return max(1.0, state.size_bytes / ENCODE_BYTES_PER_SECOND)


def check_corpus(state: CorpusState) -> Check:
    """The configured corpus: encoded in the cache already, or built by the first training."""
    details: dict[str, Any] = {
        "corpus": state.name,
        "cached": state.cached,
        "files": state.files,
        "size_bytes": state.size_bytes,
        "directory": None if state.directory is None else str(state.directory),
        "build_seconds": corpus_build_seconds(state),
    }
    if state.error:
        return Check(
            "corpus",
            FAIL,
            f"corpus {state.name}: {state.error}",
            "set [trainer] corpus to stdlib, text:DIR or parquet:DIR with files in DIR",
            details,
        )
    if state.cached and state.meta is not None:
        tokens = state.meta.get("train_tokens", 0) + state.meta.get("val_tokens", 0)
        return Check(
            "corpus",
            PASS,
            f"{state.name} encoded in the cache ({tokens / 1e6:.1f} M tokens, fingerprint "
            f"{state.meta.get('fingerprint')})",
            details=details,
        )
    seconds = corpus_build_seconds(state)
    return Check(
        "corpus",
        WARN,
        f"{state.name} ({state.files} files, {state.size_bytes / 1e6:.0f} MB) is not encoded "
        f"yet: the first training builds it (about {seconds:.0f} s)",
        'to build it now: python -c "from trainer.data import prepare_corpus; '
        f"prepare_corpus('{state.name}')\"",
        details,
    )
