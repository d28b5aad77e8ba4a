"""The runs of `cockpit bench search` and their figures: what was asked for (`SearchOptions`),
each run's figures as read from its journal (`SearchRun`), and each proposer's over its seeds
(`ProposerFigures`): the gain, the keep rate, the compute, the verified gain."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent import names
from agent.names import PROPOSERS
from cockpit.report.summary import summarize_experiments
from cockpit.store import verification
from cockpit.store.journal import Journal
from cockpit.store.verification import FIRST_SEED

SECONDS_PER_HOUR = 3600.0
# Verification trainings use seeds 1000, 1001, ... (cockpit.store.verification owns it).
VERIFY_SEED = FIRST_SEED


def parse_proposers(text: str) -> tuple[str, ...]:
    """The proposers a comma-separated list names, in its order; a ValueError that says what
    to write instead for a name that is not one, or a list that names one twice."""
    names = tuple(name.strip() for name in text.split(","))
    choices = ", ".join(PROPOSERS)
    if not any(names) or not all(names):
        raise ValueError(
            f"{text!r} is not a comma-separated list of proposers; name one or more of "
            f"{choices}, e.g. --proposer builtin,optuna"
        )
    for name in names:
        if name not in PROPOSERS:
            raise ValueError(
                f"unknown proposer {name!r}; choose from {choices} (comma-separated, e.g. "
                "--proposer builtin,optuna)"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"{', '.join(repeated)} named twice; name each proposer once (--seeds sets how "
            "many runs each gets)"
        )
    return names


@dataclass(frozen=True)
class SearchOptions:
    """What `cockpit bench search` was asked for."""

    proposers: tuple[str, ...] = (names.BUILTIN, names.OPTUNA)
    experiments: int = 24
    budget_seconds: float = 20.0
    seeds: int = 2
    workers: int = 1
    device: str | None = None  # None: the settings' trainer.device
    out: Path | None = None  # None: a scratch folder, removed at the end
    verify: int = 0  # trainings of each run's best with fresh seeds, for its verified gain
    start: str | None = None  # the script every run begins from: None (the template),
    # "tuned" (the template with its tuned CPU constants) or a file (cockpit.bench.starts)


@dataclass(frozen=True)
class SearchRun:
    """The figures of one run (one proposer, one seed), read from its journal."""

    proposer: str
    seed: int
    workspace: str
    tag: str
    baseline_val_bpb: float | None  # None: the baseline crashed
    best_val_bpb: float | None
    gain_bpb: float | None  # baseline minus best: positive is better
    experiments: int  # decided after the baseline (keep, discard, crash)
    keeps: int
    crashes: int
    keep_rate: float | None  # keeps / experiments
    wall_seconds: float
    workers: int
    # The best val_bpb after each experiment, by number (index 0: the baseline).
    running_best: tuple[float | None, ...]
    # Who proposed the experiments after the baseline, and how many each.
    proposed_by: dict[str, int] = field(default_factory=dict)
    # Why the model could not propose (hybrid, llm without Ollama); None when it could.
    model_note: str | None = None
    baseline_failure: str | None = None
    # The best script's val_bpb trained again with fresh seeds (--verify); None for a
    # training that gave none. Not counted in the compute, which is the search's.
    verified: tuple[float | None, ...] = ()
    # Per verification training, whether it ran short of its plan: the machine was slower
    # than during the run (cockpit.store.trials.FULL_SHARE).
    verified_short: tuple[bool, ...] = ()
    # The baseline's script trained beside the best on each of those seeds (empty: nothing
    # was kept, so the best is the baseline, or the verification trained it alone).
    verified_baseline: tuple[float | None, ...] = ()

    def ran_short(self, index: int) -> bool:
        """Whether verification training ``index`` ran short of its plan."""
        return index < len(self.verified_short) and self.verified_short[index]

    @property
    def verified_best(self) -> float | None:
        """The mean of the verification trainings that gave a val_bpb, as `cockpit verify`
        records it (`verification.verified_mean`; None: none did)."""
        return verification.verified_mean(self.verified)

    @property
    def verified_ran_short(self) -> int:
        """Verification trainings with a val_bpb that ran short of the run's plan: the machine
        was slower than during the run, and part of the optimism is the machine's."""
        return sum(
            value is not None and self.ran_short(index) for index, value in enumerate(self.verified)
        )

    @property
    def verified_gain(self) -> float | None:
        """What the search found, without the luck of the training that made it the best
        (`verification.verified_gain`: against the baseline trained beside it on the same
        seeds, where it was). Nothing kept: the best is the baseline's own script, and the
        search found nothing (0; its fresh seeds measure the baseline's luck, no gain)."""
        gain = verification.verified_gain(
            self.baseline_val_bpb, self.verified, self.verified_baseline
        )
        if gain is None:
            return None
        return gain if self.keeps else 0.0

    @property
    def optimism(self) -> float | None:
        """How much the kept best's promise exceeds what its fresh trainings show: the luck
        the ledger's best holds (`verification.optimism`; positive: the ledger promises more
        than the script gives)."""
        return verification.optimism(
            self.best_val_bpb, self.baseline_val_bpb, self.verified, self.verified_baseline
        )

    @property
    def verified_baseline_mean(self) -> float | None:
        """The baseline's script trained again beside the best (None: it was not)."""
        return verification.verified_mean(self.verified_baseline)

    @property
    def compute_hours(self) -> float:
        """The run's wall time times its workers, in hours."""
        return self.wall_seconds * self.workers / SECONDS_PER_HOUR

    @property
    def model_experiments(self) -> int:
        """Experiments the model proposed (its label is ``llm`` or ``llm (model)``)."""
        return sum(
            count for label, count in self.proposed_by.items() if label.split(" ")[0] == names.LLM
        )

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "running_best": list(self.running_best),
            "running_gain": running_gain(self),
            "verified": list(self.verified),
            "verified_short": list(self.verified_short),
            "verified_best": self.verified_best,
            "verified_gain": self.verified_gain,
            "verified_baseline": list(self.verified_baseline),
            "verified_baseline_mean": self.verified_baseline_mean,
            "optimism": self.optimism,
            "compute_hours": self.compute_hours,
            "model_experiments": self.model_experiments,
        }


@dataclass(frozen=True)
class ProposerFigures:
    """One proposer's figures over its seeds. The gains are those of the runs whose baseline
    trained; every run's compute counts."""

    proposer: str
    runs: int
    gain_mean: float | None
    gain_min: float | None
    gain_max: float | None
    gain_stdev: float | None  # the sample standard deviation; None with fewer than two runs
    keep_rate_mean: float | None
    experiments_per_run: float
    compute_hours: float  # all its runs together
    compute_hours_per_run: float
    gain_per_hour: float | None  # bpb gained per hour of compute: mean gain / mean hours
    verified_gain_mean: float | None = None  # over the runs with a verified gain (--verify)
    # The verified gains over the compute hours of their runs: what the search banks per hour.
    verified_gain_per_hour: float | None = None
    optimism_mean: float | None = None  # the mean of the runs' optimism (--verify)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def running_best(points: Iterable[tuple[int, str, float | None]]) -> tuple[float | None, ...]:
    """The best val_bpb after each experiment number, from the decided experiments as
    ``(number, decision, val_bpb)``: the baseline's value, lowered by each keep. A number with
    no decision (none was recorded) carries the best before it."""
    decided = {number: (decision, value) for number, decision, value in points}
    if not decided:
        return ()
    best: float | None = None
    curve: list[float | None] = []
    for number in range(max(decided) + 1):
        decision, value = decided.get(number, ("", None))
        if decision == "keep" and value is not None:
            best = value if best is None or number == 0 else min(best, value)
        curve.append(best)
    return tuple(curve)


def running_gain(run: SearchRun) -> list[float | None]:
    """The gain over the baseline after each experiment (0 until the first keep beats it)."""
    baseline = run.baseline_val_bpb
    return [
        None if baseline is None or best is None else baseline - best for best in run.running_best
    ]


def read_run(
    journal: Journal,
    *,
    proposer: str,
    seed: int,
    workspace: Path,
    wall_seconds: float,
    workers: int,
    model_note: str | None = None,
) -> SearchRun:
    """The figures of the latest run in a journal."""
    run = journal.latest_run()
    if run is None:
        raise ValueError(f"no run recorded in {journal.path}")
    summary = summarize_experiments(journal.experiments(run.id), run=run)
    return SearchRun(
        proposer=proposer,
        seed=seed,
        workspace=str(workspace),
        tag=run.tag,
        baseline_val_bpb=summary.baseline_val_bpb,
        best_val_bpb=summary.best_val_bpb,
        gain_bpb=summary.total_gain_bpb,
        experiments=summary.experiments,
        keeps=summary.kept,
        crashes=summary.crashed,
        keep_rate=summary.keep_rate,
        wall_seconds=wall_seconds,
        workers=workers,
        running_best=running_best((p.number, p.decision, p.val_bpb) for p in summary.points),
        proposed_by=dict(summary.proposers),
        model_note=model_note,
        baseline_failure=summary.baseline_failure,
    )


def proposer_figures(proposer: str, runs: Sequence[SearchRun]) -> ProposerFigures:
    """A proposer's figures over its runs (see ProposerFigures)."""
    gains = [run.gain_bpb for run in runs if run.gain_bpb is not None]
    verified = [run.verified_gain for run in runs if run.verified_gain is not None]
    hours_verified = sum(run.compute_hours for run in runs if run.verified_gain is not None)
    optimism = [run.optimism for run in runs if run.optimism is not None]
    rates = [run.keep_rate for run in runs if run.keep_rate is not None]
    hours = sum(run.compute_hours for run in runs)
    hours_with_gain = sum(run.compute_hours for run in runs if run.gain_bpb is not None)
    count = len(runs)
    return ProposerFigures(
        proposer=proposer,
        runs=count,
        gain_mean=statistics.mean(gains) if gains else None,
        gain_min=min(gains, default=None),
        gain_max=max(gains, default=None),
        gain_stdev=statistics.stdev(gains) if len(gains) > 1 else None,
        keep_rate_mean=statistics.mean(rates) if rates else None,
        experiments_per_run=sum(run.experiments for run in runs) / count if count else 0.0,
        compute_hours=hours,
        compute_hours_per_run=hours / count if count else 0.0,
        gain_per_hour=sum(gains) / hours_with_gain if gains and hours_with_gain > 0 else None,
        verified_gain_mean=statistics.mean(verified) if verified else None,
        verified_gain_per_hour=(
            sum(verified) / hours_verified if verified and hours_verified > 0 else None
        ),
        optimism_mean=statistics.mean(optimism) if optimism else None,
    )


def figures(options: SearchOptions, runs: Sequence[SearchRun]) -> list[ProposerFigures]:
    """Each proposer's figures, in the order they were asked for."""
    return [
        proposer_figures(name, [run for run in runs if run.proposer == name])
        for name in options.proposers
    ]
