"""The flags the checks raise: their kinds, and why each kind is refused (the second half of
every message the model and the researcher read)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

FILE_ACCESS = "file_access"
VALIDATION_DATA = "validation_data"
HARNESS_TAMPER = "harness_tamper"
SEED_ONLY = "seed_only"
FIXED_SEED = "fixed_seed"
EVAL_SETTINGS = "eval_settings"
SUMMARY_WRITE = "summary_write"
SLEEP = "sleep"
PROCESS = "process"
SYNTAX = "syntax"
FLAG_KINDS = (
    FILE_ACCESS,
    VALIDATION_DATA,
    HARNESS_TAMPER,
    SEED_ONLY,
    FIXED_SEED,
    EVAL_SETTINGS,
    SUMMARY_WRITE,
    SLEEP,
    PROCESS,
    SYNTAX,
)


@dataclass(frozen=True)
class Flag:
    """One finding: its kind, the line of the new script it points at, and a one-line message
    that says what was found and why it is not allowed."""

    kind: str
    line: int | None
    message: str


class Findings:
    """The flags a pass has raised, in the order found; a flag found twice is kept once."""

    def __init__(self) -> None:
        self.flags: list[Flag] = []
        self._seen: set[tuple[str, int | None, str]] = set()

    def flag(self, kind: str, node: ast.AST | None, message: str) -> None:
        """Raise a flag at the node's line (or at none)."""
        line = getattr(node, "lineno", None) if node is not None else None
        key = (kind, line, message)
        if key not in self._seen:
            self._seen.add(key)
            self.flags.append(Flag(kind, line, message))


# --- why each kind is refused (the second half of every message) ----------------------------------

WHY_FILES = (
    "train.py gets its data from ctx and may touch files only inside its workspace, "
    "named by literal relative paths"
)
WHY_DATA = (
    "the corpus, its cache and the held-out split belong to the harness; "
    "train.py trains only on ctx.batch()"
)
WHY_FIXED = (
    "the harness, the evaluator and the data are fixed; "
    "train.py may change how the model is trained, nothing else"
)
WHY_CTX = (
    "ctx belongs to the harness: call its methods and read its public fields, never change them"
)
WHY_BUDGET = "a run must stop when its budget is spent (ctx.time_left() <= 0)"
WHY_EVAL = "the evaluation settings are fixed by the harness for every run"
WHY_ENV = (
    "the harness's settings (COCKPIT_*) and the environment are fixed for a run; only "
    "PyTorch and compiler tuning variables (PYTORCH_*, TORCHINDUCTOR_*, OMP_*, ...) may be set"
)
WHY_PROBE = (
    "the evaluator probes the model on one batch and then scores it on others, so the model "
    "must behave the same on every call"
)
WHY_SUMMARY = "the summary and the metrics stream are written by the harness alone"
WHY_SLEEP = "a run spends its budget training; waiting changes nothing but the clock"
WHY_PROCESS = "a run is one offline process: no subprocesses, signals, threads or network"
WHY_SEED = (
    "a new seed only re-rolls the noise, it does not improve the model; change the training itself"
)
WHY_FIXED_SEED = (
    "the harness gives every training its seed (ctx.seed): a script that seeds itself otherwise "
    "draws the same luck on every seed, and neither a confirmation nor a verification on fresh "
    "seeds can measure it; seed from ctx.seed (ctx.seed + 1 for a second generator)"
)
