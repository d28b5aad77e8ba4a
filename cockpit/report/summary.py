"""The figures of a run (`RunSummary`), read from its experiments in the journal.

The counts agree with ``results.tsv``: its rows are the experiments decided keep, discard or
crash. Row one is the baseline (experiment 0), the reference everything is measured against,
so ``experiments``, ``kept``, ``discarded`` and ``crashed`` count the rows after it, and the
keep rate is ``kept / experiments``. Vetoed proposals never trained, have no row, and are
counted apart. ``ProposerGain`` says how much each proposer's keeps lowered the best.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent import names
from cockpit.store.journal import Journal
from cockpit.store.records import LEDGER_DECISIONS, Experiment, Run
from cockpit.store.verification import latest_verification


class ReportError(Exception):
    """A report cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class ProgressPoint:
    """One results.tsv row as the chart draws it (val_bpb is None for a crash)."""

    number: int
    decision: str
    status: str
    val_bpb: float | None
    description: str


@dataclass(frozen=True)
class KeptChange:
    """A kept experiment and what it gained over the best before it.

    ``delta_bpb`` is ``val_bpb - previous_best_bpb``: negative is an improvement (a tie kept
    for being simpler is 0 or a hair above; a researcher's override may be worse)."""

    number: int
    commit: str
    description: str
    val_bpb: float
    previous_best_bpb: float | None
    delta_bpb: float | None
    proposer: str


@dataclass(frozen=True)
class ProposerGain:
    """What one proposer's experiments came to (the baseline's is not a proposer's).

    ``experiments`` counts its results.tsv rows (decided keep, discard or crash; a vetoed
    proposal never trained and is not counted), ``keep_rate`` is ``kept / experiments``.
    ``gained_bpb`` is the sum over its keeps of how much each lowered the best at the time, in
    the run's order (a keep that lowered nothing adds 0): the gains of all proposers add up to
    the run's total gain. ``best_gain_bpb`` is its largest single gain and ``best_gain_number``
    the keep that made it (None when none of its keeps lowered the best)."""

    proposer: str  # as the journal records it: llm, optuna, builtin, recovered
    name: str  # as the ledger names it: LLM, Optuna, built-in, recovered
    experiments: int
    kept: int
    keep_rate: float
    gained_bpb: float
    best_gain_bpb: float | None
    best_gain_number: int | None


@dataclass(frozen=True)
class Crash:
    """An experiment that did not produce a metric: crashed, timed out or was interrupted."""

    number: int
    commit: str
    description: str
    status: str
    reason: str


@dataclass(frozen=True)
class RunSummary:
    """The figures of one run, as its results.tsv rows tell them (see the module docstring
    for what is counted). Times are unix seconds; bpb figures are val_bpb units."""

    tag: str
    branch: str
    run_status: str
    baseline_val_bpb: float | None
    baseline_commit: str
    # Set when the baseline itself crashed: why (no later experiment runs then).
    baseline_failure: str | None
    best_val_bpb: float | None
    best_commit: str | None
    best_number: int | None
    # What the run's branch points at per the engine; differs from best_commit only after a
    # researcher kept a worse experiment by hand.
    branch_commit: str | None
    total_gain_bpb: float | None
    total_gain_percent: float | None
    # results.tsv rows after the baseline's: kept + discarded + crashed == experiments.
    experiments: int
    kept: int
    discarded: int
    crashed: int
    # Discarded without a val_bpb (stopped early): counted in discarded, drawn nowhere.
    stopped_early: int
    # Proposals vetoed before training: no results.tsv row, not in the counts above.
    vetoed: int
    keep_rate: float | None  # kept / experiments; None before the first experiment
    kept_changes: tuple[KeptChange, ...]
    crashes: tuple[Crash, ...]
    started_at: float | None
    ended_at: float | None
    wall_clock_seconds: float | None
    training_seconds: float
    # Proposer (with its model, if any) -> how many experiments after the baseline it proposed.
    proposers: dict[str, int]
    points: tuple[ProgressPoint, ...]
    # One per proposer of the experiments after the baseline, the largest gain first.
    proposer_gains: tuple[ProposerGain, ...]
    # The best trained again on fresh seeds (`cockpit verify`); None until it has been.
    verified_best: float | None = None
    verified_gain: float | None = None
    verify_seeds: tuple[int, ...] | None = None
    verified_message: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data (tuples become lists of objects)."""
        return dataclasses.asdict(self)


def summarize(journal: Journal, run_id: int) -> RunSummary:
    """The summary of run ``run_id``, read from the journal (nothing is written)."""
    run = journal.run(run_id)
    if run is None:
        tags = ", ".join(r.tag for r in journal.runs()) or "none"
        raise ReportError(
            f"no run with id {run_id} in the journal at {journal.path} (runs: {tags}); "
            "name one of them by its tag"
        )
    summary = summarize_experiments(journal.experiments(run_id), run=run)
    verified = latest_verification(journal, run_id)
    if verified is None:
        return summary
    return dataclasses.replace(
        summary,
        verified_best=verified.mean,
        verified_gain=verified.verified_gain,
        verify_seeds=verified.seeds,
        verified_message=verified.headline(),
    )


def summarize_experiments(
    experiments: Iterable[Experiment], *, run: Run | None = None
) -> RunSummary:
    """The summary of a run's experiments (its record, if given, supplies tag and branch)."""
    records = list(experiments)
    ledger = sorted((e for e in records if e.decision in LEDGER_DECISIONS), key=lambda e: e.number)
    vetoed = sum(1 for e in records if e.decision == "veto")
    baseline = next((e for e in ledger if e.number == 0), None)
    later = [e for e in ledger if e.number > 0]
    baseline_value = (
        baseline.val_bpb if baseline is not None and baseline.decision == "keep" else None
    )

    kept_changes: list[KeptChange] = []
    running_best = baseline_value
    for experiment in later:
        if experiment.decision != "keep" or experiment.val_bpb is None:
            continue
        delta = None if running_best is None else experiment.val_bpb - running_best
        kept_changes.append(
            KeptChange(
                number=experiment.number,
                commit=experiment.short_commit,
                description=one_line(experiment.description),
                val_bpb=experiment.val_bpb,
                previous_best_bpb=running_best,
                delta_bpb=delta,
                proposer=_proposer_label(experiment),
            )
        )
        running_best = (
            experiment.val_bpb if running_best is None else min(running_best, experiment.val_bpb)
        )

    kept_values = [e for e in ledger if e.decision == "keep" and e.val_bpb is not None]
    best = min(kept_values, key=lambda e: (e.val_bpb, e.number), default=None)
    best_value = None if best is None else best.val_bpb
    gain = None
    gain_percent = None
    if baseline_value is not None and best_value is not None:
        gain = baseline_value - best_value
        gain_percent = 100.0 * gain / baseline_value if baseline_value else None

    crashes = tuple(
        Crash(
            number=e.number,
            commit=e.short_commit,
            description=one_line(e.description),
            status=e.status,
            reason=one_line(e.decision_reason or e.outcome or "no reason recorded"),
        )
        for e in later
        if e.decision == "crash"
    )
    kept = sum(1 for e in later if e.decision == "keep")
    discarded = sum(1 for e in later if e.decision == "discard")
    stopped_early = sum(1 for e in later if e.decision == "discard" and e.val_bpb is None)

    starts = [e.started_at if e.started_at is not None else e.created_at for e in ledger]
    ends = [e.ended_at for e in ledger if e.ended_at is not None]
    started_at = min(starts, default=None)
    ended_at = max(ends, default=None)
    wall_clock = None if started_at is None or ended_at is None else max(0.0, ended_at - started_at)

    proposers = Counter(_proposer_label(e) for e in later)
    baseline_failure = None
    if baseline is not None and baseline.decision == "crash":
        baseline_failure = one_line(baseline.decision_reason or baseline.outcome or "crashed")
    return RunSummary(
        tag="" if run is None else run.tag,
        branch="" if run is None else run.branch,
        run_status="" if run is None else run.status,
        baseline_val_bpb=baseline_value,
        baseline_commit="" if baseline is None else baseline.short_commit,
        baseline_failure=baseline_failure,
        best_val_bpb=best_value,
        best_commit=None if best is None else best.short_commit,
        best_number=None if best is None else best.number,
        branch_commit=None if run is None or run.best_commit is None else run.best_commit[:7],
        total_gain_bpb=gain,
        total_gain_percent=gain_percent,
        experiments=len(later),
        kept=kept,
        discarded=discarded,
        crashed=len(crashes),
        stopped_early=stopped_early,
        vetoed=vetoed,
        keep_rate=kept / len(later) if later else None,
        kept_changes=tuple(kept_changes),
        crashes=crashes,
        started_at=started_at,
        ended_at=ended_at,
        wall_clock_seconds=wall_clock,
        training_seconds=sum(e.training_seconds or 0.0 for e in ledger),
        proposers=dict(proposers.most_common()),
        points=tuple(
            ProgressPoint(
                number=e.number,
                decision=str(e.decision),
                status=e.status,
                val_bpb=None if e.decision == "crash" else e.val_bpb,
                description=one_line(e.description),
            )
            for e in ledger
        ),
        proposer_gains=proposer_gains(later, kept_changes),
    )


def proposer_gains(
    experiments: Iterable[Experiment], kept_changes: Iterable[KeptChange]
) -> tuple[ProposerGain, ...]:
    """The gain by proposer of a run's decided experiments after the baseline, given the kept
    changes with their deltas against the best before each: the largest gain first."""
    gains = {
        change.number: max(0.0, -change.delta_bpb)
        for change in kept_changes
        if change.delta_bpb is not None
    }
    by_proposer: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        proposer = experiment.proposer or "unknown"
        decided = experiment.decision in LEDGER_DECISIONS
        if decided and experiment.number > 0 and proposer != "baseline":
            by_proposer.setdefault(proposer, []).append(experiment)
    rows = []
    for proposer, made in by_proposer.items():
        keeps = [e.number for e in made if e.decision == "keep"]
        best = max(keeps, key=lambda number: (gains.get(number, 0.0), -number), default=None)
        best_gain = None if best is None else gains.get(best, 0.0)
        improved = best_gain is not None and best_gain > 0
        rows.append(
            ProposerGain(
                proposer=proposer,
                name=names.label(proposer),
                experiments=len(made),
                kept=len(keeps),
                keep_rate=len(keeps) / len(made),
                gained_bpb=sum(gains.get(number, 0.0) for number in keeps),
                best_gain_bpb=best_gain if improved else None,
                best_gain_number=best if improved else None,
            )
        )
    rows.sort(key=lambda row: (-row.gained_bpb, -row.experiments, row.name))
    return tuple(rows)


def _proposer_label(experiment: Experiment) -> str:
    proposer = experiment.proposer or "unknown"
    return f"{proposer} ({experiment.model})" if experiment.model else proposer


def one_line(text: str) -> str:
    """The text on one line, its runs of whitespace made single spaces."""
    return " ".join(text.split())
