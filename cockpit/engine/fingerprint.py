"""The fingerprint of a run's fixed parts: the trainer modules (harness, evaluator, data)
and the corpus, so that a run whose evaluator or data changed under it is noticed rather than
compared."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint_fixed_parts(trainer_dir: Path, corpus_fingerprint: str) -> str:
    """A sha256 (hex) over the fixed trainer modules (every *.py in trainer_dir but train.py,
    by name, names included) and the corpus fingerprint: equal fingerprints mean the same
    harness, evaluator and data. Raises FileNotFoundError when trainer_dir holds no module."""
    modules = sorted(
        (path for path in trainer_dir.glob("*.py") if path.name != "train.py"),
        key=lambda path: path.name,
    )
    if not modules:
        raise FileNotFoundError(
            f"{trainer_dir} holds no trainer modules (*.py besides train.py); point at the "
            "installed trainer package's folder"
        )
    digest = hashlib.sha256(b"cockpit-fixed-parts:1\0")
    for path in modules:
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    digest.update(f"corpus\0{corpus_fingerprint}".encode())
    return digest.hexdigest()


def describe_fingerprint_change(old: str, new: str) -> str:
    """What to tell the researcher when the fixed parts changed under a run."""
    return (
        f"the harness, evaluator or corpus changed since this run started (fixed parts "
        f"{old[:12]} -> {new[:12]}): the results would not be comparable. Start a new run "
        "with `cockpit run --tag NEW` or restore the files."
    )
