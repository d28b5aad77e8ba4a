"""The research target: data, tokenizer, the fixed evaluator and the harness that runs a
training script under a wall-clock budget. Imports nothing of cockpit or agent."""

from __future__ import annotations

from trainer.outcomes import Outcome

__all__ = ["Outcome"]
