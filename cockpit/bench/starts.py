"""The script every run of `cockpit bench search --start` begins from.

Without ``--start`` a run begins from the bundled template, whose CPU constants are far from
their best at a budget of seconds: a nudger that halves ``WIDTH`` finds most of what there is
to find, and the bench cannot tell a better search from a worse one. ``--start tuned`` begins
from the template with the constants the searches found best on a CPU at 20 s
(`TUNED_CONSTANTS`), so what a proposer gains is what it finds beyond the numbers a nudger
reaches. ``--start FILE`` begins from any script.
"""

from __future__ import annotations

from pathlib import Path

from agent.space import values_of, write_values
from agent.syntax import parse

TUNED = "tuned"
TUNED_FILE = "start-tuned.py"  # where the tuned script is written, in the bench's folder
# The template's CPU constants that did best at 20 s on a 2-core CPU (the stdlib corpus): the
# best of an Optuna TPE study of 40 single trainings (seed 0) over the optimiser's own ranges
# of these nine constants (MLP_RATIO and BATCH_SIZE stayed at the template's 4), trained again
# on seeds 1000..1002: val_bpb 2.449, 2.389, 2.406 (mean 2.415) against the template's 2.786,
# 2.778, 2.898 (mean 2.821) on the same seeds, a verified gain of 0.41. The second and third
# of the study verified at 2.485 and 2.466.
# A constant written `A if CUDA else B` keeps its CUDA value; one without a CUDA branch takes
# its tuned value on a GPU too (the tuned start is for CPU budgets).
TUNED_CONSTANTS: dict[str, int | float] = {
    "DEPTH": 3,
    "WIDTH": 64,
    "HEAD_DIM": 64,
    "LEARNING_RATE": 0.00269,
    "EMBED_LR": 0.0303,
    "WEIGHT_DECAY": 0.0538,
    "WARMDOWN_FRACTION": 0.318,
}


class StartError(ValueError):
    """A --start that names no usable script; the message says what to give instead."""


def tuned_script(template: str) -> str:
    """The template with its CPU constants set to `TUNED_CONSTANTS`; raises StartError when
    the template lacks one of them (the constants and the template have drifted apart)."""
    found = values_of(template, "cpu", TUNED_CONSTANTS)
    missing = sorted(set(TUNED_CONSTANTS) - set(found))
    if missing:
        raise StartError(
            f"the template has no {', '.join(missing)}: the tuned start no longer fits it; "
            "give --start FILE instead"
        )
    return write_values(template, "cpu", TUNED_CONSTANTS)


def start_script(start: str | None, folder: Path) -> Path | None:
    """The script a run begins from: None for the template, the tuned script (written in
    ``folder``) for ``tuned``, or the file ``start`` names, read and parsed so that a typo
    stops the bench before its first run, not after an hour."""
    from trainer import template_path

    if start is None:
        return None
    if start == TUNED:
        path = folder / TUNED_FILE
        path.write_text(tuned_script(template_path().read_text(encoding="utf-8")), "utf-8")
        return path
    path = Path(start).expanduser().resolve()
    if not path.is_file():
        raise StartError(
            f"--start {start}: no such file; give a training script, or {TUNED} for the "
            "template with its tuned CPU constants"
        )
    try:
        parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError) as error:
        raise StartError(
            f"--start {start}: not a Python script the bench can train ({error}); fix it, "
            f"or give {TUNED}"
        ) from error
    return path
