"""`cockpit bench early-abort`: what the early-abort rule would have saved on a recorded run.

Replays the loss curves of a journal's experiments in the order they ran. For each trained
experiment the margin is calibrated on the keeps recorded before it (as the engine would
have), and the rule is run over its curve against its parent's, the best run at its time, as
far as the loss the harness measured for that run backs it (`trials.trusted_reference`, as
the engine builds it). Prints the share of the training time of discarded experiments that stopping them
early would have saved, and the share of keeps that would have been stopped (lost); and,
stricter, how many runs that ended better than their parent (kept, or within the noise;
set against the parent's training with the same seed, as decisions are) would have been
stopped.

Record the journal with early abort off (``[engine] early_abort = false``), so that every
curve runs to the end of its budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cockpit.engine.early_abort import (
    SAME_PLAN_TOLERANCE,
    Margin,
    calibrate,
    first_verdict,
    plans_apart,
)
from cockpit.store.curves import Reference, Trace
from cockpit.store.journal import Journal
from cockpit.store.paths import WorkspacePaths
from cockpit.store.records import Experiment
from cockpit.store.trials import paired_trace, trial_results, trusted_reference

SAVED_TARGET = 0.30
KEEPS_LOST_TARGET = 0.05


@dataclass(frozen=True)
class Replayed:
    number: int
    decision: str
    seconds: float
    stopped_at: float | None  # share of the budget where the rule would have stopped it
    margin: Margin
    improved: bool  # it ended better than the best at its time (kept or not: within the noise)
    # Its step plan is more than SAME_PLAN_TOLERANCE longer or shorter than its parent's.
    other_plan: bool = False
    # What its parent's reports were scaled by to answer to the loss measured for it.
    reference_scale: float = 1.0


def replay(
    journal: Journal, run_id: int, *, after: float, floor: float
) -> tuple[list[Replayed], int]:
    """Each trained experiment of a run with the rule's verdict; and how many were left out
    (no curve, stopped early when recorded, or a parent with no measured curve)."""
    experiments = sorted(journal.experiments(run_id), key=lambda e: e.number)
    by_commit: dict[str, Experiment] = {e.commit_sha: e for e in experiments if e.commit_sha}
    read: dict[int, list[dict[str, Any]]] = {}
    references: dict[int, Reference | None] = {}

    def metrics_of(experiment: Experiment) -> list[dict[str, Any]]:
        if experiment.id not in read:
            read[experiment.id] = journal.metrics(experiment.id)
        return read[experiment.id]

    def reference_of(parent: Experiment) -> Reference | None:
        if parent.id not in references:
            references[parent.id] = trusted_reference(parent, experiments, metrics_of)
        return references[parent.id]

    kept: list[tuple[Trace, Reference]] = []
    results: list[Replayed] = []
    skipped = 0
    for experiment in experiments:
        if experiment.number == 0 or experiment.decision not in ("keep", "discard"):
            continue
        parent = by_commit.get(experiment.parent_commit or "")
        early = (experiment.details or {}).get("early_abort")
        live = paired_trace(metrics_of(experiment))
        reference = reference_of(parent) if parent is not None else None
        if early or not live.points or reference is None or not reference.best.trace.points:
            skipped += 1
            continue
        margin = calibrate(kept, after, floor)
        verdict = first_verdict(live, reference, after, margin)
        seconds = float(experiment.training_seconds or 0.0)
        reference_bpb = None if parent is None else _same_seed_bpb(parent, experiment)
        improved = (
            experiment.val_bpb is not None
            and reference_bpb is not None
            and experiment.val_bpb < reference_bpb
        )
        results.append(
            Replayed(
                experiment.number,
                str(experiment.decision),
                seconds,
                None if verdict is None else verdict.progress,
                margin,
                bool(improved),
                plans_apart(live, reference.best.trace),
                reference.best.scale,
            )
        )
        if experiment.decision == "keep":
            kept.append((live, reference))
    return results, skipped


def _same_seed_bpb(parent: Experiment, experiment: Experiment) -> float | None:
    """The parent's val_bpb from its training with the experiment's seed, as the decisions
    pair them; its recorded value where it has no such training."""
    seed = (experiment.details or {}).get("seed")
    return (
        dict(trial_results(parent)).get(seed, parent.val_bpb)
        if seed is not None
        else parent.val_bpb
    )


def figures(results: list[Replayed]) -> dict[str, Any]:
    discarded = [r for r in results if r.decision == "discard"]
    keeps = [r for r in results if r.decision == "keep"]
    discarded_seconds = sum(r.seconds for r in discarded)
    saved_seconds = sum(r.seconds * (1.0 - r.stopped_at) for r in discarded if r.stopped_at)
    lost = [r for r in keeps if r.stopped_at is not None]
    improvements = [r for r in results if r.improved]
    improvements_lost = [r for r in improvements if r.stopped_at is not None]
    return {
        "experiments": len(results),
        "discarded": len(discarded),
        "discarded_stopped": sum(1 for r in discarded if r.stopped_at is not None),
        "keeps": len(keeps),
        "keeps_lost": len(lost),
        "discarded_training_seconds": round(discarded_seconds, 1),
        "saved_training_seconds": round(saved_seconds, 1),
        "saved_share": round(saved_seconds / discarded_seconds, 4) if discarded_seconds else 0.0,
        "keeps_lost_share": round(len(lost) / len(keeps), 4) if keeps else 0.0,
        "improvements": len(improvements),
        "improvements_lost": len(improvements_lost),
        # Plans more than SAME_PLAN_TOLERANCE apart from their parent's: compared point of plan
        # against point of plan (see cockpit.engine.early_abort).
        "other_plans": sum(1 for r in results if r.other_plan),
        "keeps_with_other_plans": sum(1 for r in keeps if r.other_plan),
        "keeps_with_other_plans_lost": sum(1 for r in lost if r.other_plan),
        "final_margin": results[-1].margin.value if results else None,
        # The most a parent's reports were scaled up to answer to its measured loss (1: taken
        # as reported; see cockpit.engine.early_abort, "What it trusts").
        "widest_reference_scale": max((r.reference_scale for r in results), default=None),
    }


def run_early_abort_bench(
    workspace: Path, tag: str | None, *, after: float, floor: float, as_json: bool
) -> int:
    path = WorkspacePaths(workspace).journal
    if not path.exists():
        print(f"error: {workspace} has no journal; record a run there first (cockpit run)")
        return 2
    with Journal.open(path, readonly=True) as journal:
        run = journal.run_by_tag(tag) if tag else journal.latest_run()
        if run is None:
            print(f"error: no run {tag or ''} in {path}".replace("  ", " "))
            return 2
        results, skipped = replay(journal, run.id, after=after, floor=floor)
    report = {
        "workspace": str(workspace),
        "run": run.tag,
        "after": after,
        "margin_floor": floor,
        "left_out": skipped,
        **figures(results),
        "saved_target": SAVED_TARGET,
        "keeps_lost_target": KEEPS_LOST_TARGET,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"early abort replayed on run {run.tag} ({report['experiments']} trained experiments, "
        f"{report['left_out']} left out), stopping from {after:.0%} of the budget:"
    )
    print(
        f"  compute saved on discarded runs: {report['saved_share']:.1%} "
        f"({report['saved_training_seconds']:.0f} of {report['discarded_training_seconds']:.0f} "
        f"training seconds; {report['discarded_stopped']} of {report['discarded']} discards "
        f"stopped; target >= {SAVED_TARGET:.0%})"
    )
    print(
        f"  keeps that would have been stopped: {report['keeps_lost_share']:.1%} "
        f"({report['keeps_lost']} of {report['keeps']}; target <= {KEEPS_LOST_TARGET:.0%})"
    )
    print(
        f"  runs that ended better than the best at their time (kept or within the noise) "
        f"that would have been stopped: {report['improvements_lost']} of {report['improvements']}"
    )
    print(
        f"  plans more than {SAME_PLAN_TOLERANCE:.0%} longer or shorter than their parent's: "
        f"{report['other_plans']} of {report['experiments']} experiments, "
        f"{report['keeps_with_other_plans']} of the keeps "
        f"({report['keeps_with_other_plans_lost']} of those stopped)"
    )
    if report["widest_reference_scale"] is not None:
        print(
            "  parents' reports scaled to answer to their measured loss: at most times "
            f"{report['widest_reference_scale']:.3f}"
        )
    return 0
