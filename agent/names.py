"""Who proposes: the proposers' names, as the settings, the journal and the screen spell them,
how a person reads each, and which of them ask the local model. One owner for these."""

from __future__ import annotations

HYBRID = "hybrid"
LLM = "llm"
OPTUNA = "optuna"
BUILTIN = "builtin"
# The [engine] proposer choices, in the order the docs give them.
PROPOSERS = (HYBRID, LLM, OPTUNA, BUILTIN)
MODEL_PROPOSERS = (HYBRID, LLM)  # those that ask the local model
NUMBERS_ONLY = (OPTUNA, BUILTIN)  # those that change the script's numbers only
# How a person reads a proposer's name; the journal also names the baseline and the recovered
# experiments of a restart after the proposer that made them.
LABELS = {
    LLM: "LLM",
    HYBRID: "hybrid",
    OPTUNA: "Optuna",
    BUILTIN: "built-in",
    "baseline": "baseline",
    "recovered": "recovered",
}


def label(name: str | None, unknown: str = "?") -> str:
    """How a person reads the proposer ``name`` (an unknown name as it is; None as ``unknown``)."""
    if name is None:
        return unknown
    return LABELS.get(name, name)


def uses_model(name: str | None) -> bool:
    """Whether the proposer ``name`` asks the local model."""
    return name in MODEL_PROPOSERS
