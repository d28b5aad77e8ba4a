"""results.tsv: autoresearch's five-column ledger of a run, exported from the journal.

One row per experiment decided keep, discard or crash (a timeout or any other failure is
decided crash), in number order: the commit's first 7 characters, val_bpb to 6 decimals,
peak memory in GB to 1 decimal, the decision, and the description on one line.

A row without a measurement keeps autoresearch's ``0.000000`` (and ``0.0`` GB), so that its
tools read the file as they always have; the description then says why there is none, for
example a training that early abort stopped: ``... (no val_bpb: stopped early at 65% of the
budget, loss +2.2% against the best run's)``. A crash says so in its status column already.
"""

from __future__ import annotations

from pathlib import Path

from cockpit.engine.early_abort import ledger_note
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.records import LEDGER_DECISIONS, Experiment

RESULTS_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"


def unmeasured_reason(experiment: Experiment) -> str | None:
    """Why a trained experiment that was not a crash has no val_bpb; None when it has one."""
    if experiment.val_bpb is not None or experiment.decision == "crash":
        return None
    evidence = (experiment.details or {}).get("early_abort")
    if isinstance(evidence, dict):
        return ledger_note(evidence)
    return "not measured"


def results_row(experiment: Experiment) -> str:
    """The experiment's line of results.tsv (without its newline)."""
    crashed = experiment.decision == "crash"
    val_bpb = 0.0 if crashed or experiment.val_bpb is None else experiment.val_bpb
    memory = experiment.peak_memory_mb
    memory_gb = 0.0 if crashed or memory is None else memory / 1024
    description = experiment.description
    reason = unmeasured_reason(experiment)
    if reason is not None:
        description = f"{description} (no val_bpb: {reason})"
    for character in "\t\r\n":
        description = description.replace(character, " ")
    return (
        f"{experiment.short_commit}\t{val_bpb:.6f}\t{memory_gb:.1f}\t"
        f"{experiment.decision}\t{description}"
    )


def export_results_tsv(journal: Journal, run_id: int, path: Path) -> int:
    """Write the ledger of run ``run_id`` to ``path`` atomically; how many rows."""
    ledger = sorted(
        (e for e in journal.experiments(run_id) if e.decision in LEDGER_DECISIONS),
        key=lambda e: e.number,
    )
    lines = [RESULTS_HEADER, *(results_row(experiment) for experiment in ledger)]
    write_atomic(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))
    return len(ledger)
