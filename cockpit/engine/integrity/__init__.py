"""Integrity guards: static checks that keep a proposed train.py from gaming the metric.

The harness already owns the clock, the data and the evaluation, and probes the returned
model for honest per-token losses. What it cannot see at run time is a script that reaches
around it: reading the held-out split from the cache, patching the evaluator or the loss,
changing its own settings, writing a summary of its own, swallowing the stop at the end of
the budget, or a model whose answers differ between the probe and the evaluation. Before
every training the engine runs `inspect_script` on the proposed script and the current best
one; every flag is one line that goes back to the model and to the researcher.

The checks read the syntax tree only; nothing is imported or run. They are heuristics that
name what they found, so an honest edit that trips one can be reworded, and an attempt that
slips past them still meets the harness's own checks.

By concern: `flags` (the kinds of flag, why each is refused, and the flags a pass has
raised), `rules` (what is looked for), `syntax` (helpers over the tree), `names` (what a name
refers to, and which names hold the harness's context), `paths` (where a file call points),
`scanner` (the pass over a script, which hands each node to the checks): `references`
(modules, names and attributes reached), `strings` (what strings name), `files` (file
access), `tampering` (changes to ctx, modules and the environment), `budget` (the stop and
the clock) and `model` (the returned model's classes); `seed` (changes of nothing but the
seed) and `checks` (the public entry points).
"""

from __future__ import annotations

from cockpit.engine.integrity.checks import describe_flags, inspect_script
from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    FILE_ACCESS,
    FIXED_SEED,
    FLAG_KINDS,
    HARNESS_TAMPER,
    PROCESS,
    SEED_ONLY,
    SLEEP,
    SUMMARY_WRITE,
    SYNTAX,
    VALIDATION_DATA,
    Flag,
)

__all__ = [
    "EVAL_SETTINGS",
    "FILE_ACCESS",
    "FIXED_SEED",
    "FLAG_KINDS",
    "HARNESS_TAMPER",
    "PROCESS",
    "SEED_ONLY",
    "SLEEP",
    "SUMMARY_WRITE",
    "SYNTAX",
    "VALIDATION_DATA",
    "Flag",
    "describe_flags",
    "inspect_script",
]
