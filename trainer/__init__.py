"""The research target: data, tokenizer, the fixed evaluator and the harness that runs a
training script under a wall-clock budget. Imports nothing of cockpit or agent."""

from __future__ import annotations

from pathlib import Path

from trainer.outcomes import Outcome


def template_path() -> Path:
    """The bundled default research script (found without importing torch)."""
    return Path(__file__).resolve().parent / "train.py"


__all__ = ["Outcome", "template_path"]
