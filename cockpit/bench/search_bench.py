"""`cockpit bench search`: research yield per hour of compute, one proposer against another.

For each proposer named and each seed, a fresh default workspace (the shipped ``train.py``
and ``program.md``, as `cockpit init` makes it) runs the real engine headless for N
experiments of S seconds each, the seed being both the training seed and the proposer's.
The run's journal then gives its figures: the baseline's val_bpb, the best after the N
experiments, the gain (baseline minus best: positive is better), the keeps and the keep rate
(keeps over the experiments decided, the baseline left out, as `cockpit report` counts them),
and the running best after each experiment. The compute a run cost is its wall time (the
engine's whole run: proposing, training, evaluating, deciding) times its workers.

Prints one row per proposer (the mean gain over the seeds and its spread, the mean keep rate,
experiments and compute hours per run, gain per hour of compute), one line per run, and draws
every run's gain so far in one chart, ``search.png``.

The engine's other settings are the shipped defaults, so the noise runs, confirmations and
early aborts of a real night are in the figures (a ``COCKPIT_<SECTION>__<KEY>`` variable
still changes a setting). The test-split summary at the end of a run is off: it measures how
the keeps generalise, not the search, and would only add to the time counted.

The best of a run is a selected value: of many noisy trainings, the one that came out lowest
is kept, so it is luckier than its script (a CPU keep at 2.27 averaged 2.39 over four fresh
seeds). With ``--verify K`` the run's best script is trained again K times with seeds no run
used (the same seeds for every run, so that proposers are compared on the same luck), and the
verified gain, the baseline minus the mean of those trainings, is what the script is worth.

With ``--start tuned`` (or ``--start FILE``) every run begins from the template with the
constants found best at 20 s on a CPU (or from that file) instead of the template, so that
what is measured is what a proposer finds beyond the numbers a nudger reaches
(cockpit.bench.starts).

A proposer that needs the model (hybrid, llm) runs with the optimiser standing in while
Ollama cannot be reached, as the engine always does; the bench says so, and counts the
experiments the model actually proposed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import names
from agent.names import MODEL_PROPOSERS, PROPOSERS
from cockpit.bench.starts import StartError, start_script
from cockpit.config import Settings, load_settings
from cockpit.engine.workspace import Workspace
from cockpit.report.summary import summarize_experiments
from cockpit.store import verification
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.verification import FIRST_SEED

if TYPE_CHECKING:  # the engine loads only when a run starts, not to parse the options
    from cockpit.engine.agents import AgentSetup

# The proposers whose code changes come from the model through Ollama.
PLOT_NAME = "search.png"
SCRATCH = "cockpit-bench-search-"  # the prefix of the scratch folder used without --out
MATPLOTLIB_MISSING = f'matplotlib is needed for {PLOT_NAME}: pip install "research-cockpit[report]"'
FIGURE_INCHES = (11.0, 6.5)
FIGURE_DPI = 100
# One colour per proposer (matplotlib's tab10).
PROPOSER_COLORS = {
    names.BUILTIN: "#7f7f7f",
    names.OPTUNA: "#1f77b4",
    names.HYBRID: "#2ca02c",
    names.LLM: "#d62728",
}
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


# ---------------------------------------------------------------------------------------------
# printing


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _number(value: float | None, spec: str = ".6f") -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def headline(options: SearchOptions, settings: Settings) -> str:
    """The bench's first line: what each run does, and where."""
    seeds = _count(options.seeds, "seed")
    workers = _count(options.workers, "worker")
    trainer, engine = settings.trainer, settings.engine
    start = "the template" if options.start is None else options.start
    return (
        f"search benchmark: {', '.join(options.proposers)}; {seeds} each; "
        f"{_count(options.experiments, 'experiment')} of {options.budget_seconds:g} s per run on "
        f"{workers}, from {start} (device {trainer.device}, corpus {trainer.corpus}, noise "
        f"runs {engine.noise_runs}, keep runs {engine.keep_runs}, early abort "
        f"{'on' if engine.early_abort else 'off'})"
    )


def render_table(options: SearchOptions, runs: Sequence[SearchRun]) -> list[str]:
    """The table: one row per proposer, one line per run, and what stood in for a model."""
    header = (
        f"{'proposer':<9} {'gain mean':>10} {'gain min..max':>21} {'gain sd':>9} "
        f"{'keep rate':>9} {'exps/run':>8} {'compute h/run':>13} {'gain/h':>9}"
    )
    if options.verify:
        header += f" {'verified':>9} {'verified/h':>10} {'optimism':>9}"
    lines = [header]
    for row in figures(options, runs):
        spread = (
            "-"
            if row.gain_min is None or row.gain_max is None
            else f"{row.gain_min:.6f}..{row.gain_max:.6f}"
        )
        lines.append(
            f"{row.proposer:<9} {_number(row.gain_mean):>10} {spread:>21} "
            f"{_number(row.gain_stdev):>9} {_share(row.keep_rate_mean):>9} "
            f"{row.experiments_per_run:>8.1f} {row.compute_hours_per_run:>13.4f} "
            f"{_number(row.gain_per_hour, '.4f'):>9}"
            + (
                f" {_number(row.verified_gain_mean):>9} "
                f"{_number(row.verified_gain_per_hour, '.4f'):>10} {_number(row.optimism_mean):>9}"
                if options.verify
                else ""
            )
        )
    lines.append("")
    lines.extend(run_line(run) for run in runs)
    lines.extend(model_notes(options, runs))
    if options.verify:
        lines.append(
            f"verified: the baseline minus the mean val_bpb of each run's best script trained "
            f"again {_count(options.verify, 'time')} with seeds {VERIFY_SEED}.."
            f"{VERIFY_SEED + options.verify - 1}; optimism: the kept best's val_bpb below that "
            "mean"
        )
        lines.extend(verified_summary(options, runs))
    return lines


def verified_summary(options: SearchOptions, runs: Sequence[SearchRun]) -> list[str]:
    """The bench's verdict under --verify: the mean optimism over every run, and each
    proposer's verified gain per compute hour against the nudger's (builtin), when it ran."""
    optimism = [run.optimism for run in runs if run.optimism is not None]
    lines = []
    if optimism:
        lines.append(
            f"mean optimism {statistics.mean(optimism):.6f} over {_count(len(optimism), 'run')} "
            f"(largest {max(optimism):.6f})"
        )
    short = sum(run.verified_ran_short for run in runs)
    if short:
        lines.append(
            f"{_count(short, 'verification training')} ran short of the run's plan (the machine "
            "was slower than during the run): counted, and part of the optimism is the machine's"
        )
    rows = {row.proposer: row for row in figures(options, runs)}
    nudger = rows.get(names.BUILTIN)
    if nudger is None or not nudger.verified_gain_per_hour or nudger.verified_gain_per_hour <= 0:
        return lines
    ratios = [
        f"{row.proposer} {row.verified_gain_per_hour / nudger.verified_gain_per_hour:.2f}x"
        for row in rows.values()
        if row.proposer != names.BUILTIN and row.verified_gain_per_hour is not None
    ]
    if ratios:
        lines.append(f"verified gain per compute hour against builtin's: {', '.join(ratios)}")
    return lines


def model_notes(options: SearchOptions, runs: Sequence[SearchRun]) -> list[str]:
    """A line for each proposer that needs the model whose runs found Ollama unable to answer:
    why, and how many experiments the model proposed all the same."""
    notes = []
    for proposer in options.proposers:
        mine = [run for run in runs if run.proposer == proposer]
        unanswered = [run for run in mine if run.model_note is not None]
        if proposer not in MODEL_PROPOSERS or not unanswered:
            continue
        reasons = "; ".join(dict.fromkeys(str(run.model_note) for run in unanswered))
        seeds = ", ".join(str(run.seed) for run in unanswered)
        by_model = sum(run.model_experiments for run in mine)
        total = sum(run.experiments for run in mine)
        whose = (
            "these are the optimiser's figures, not the model's"
            if by_model == 0
            else "the optimiser proposed the others"
        )
        notes.append(
            f"note: {proposer}: {reasons} ({'seed' if len(unanswered) == 1 else 'seeds'} {seeds}); "
            f"the model proposed {by_model} of {total} experiments: {whose}"
        )
    return notes


def run_line(run: SearchRun) -> str:
    """One run's figures in a line."""
    where = f"{run.wall_seconds:.1f} s, {run.workspace}"
    if run.baseline_val_bpb is None:
        why = run.baseline_failure or "it did not finish"
        return f"  {run.proposer} seed {run.seed}: no baseline ({why}); {where}"
    verified = ""
    if run.verified:
        values = ", ".join(
            _number(value) + (" short" if run.ran_short(index) else "")
            for index, value in enumerate(run.verified)
        )
        verified = (
            f"; verified {_number(run.verified_best)} ({values}), gain {_number(run.verified_gain)}"
        )
        if run.verified_baseline_mean is not None:
            verified += (
                f" against the baseline trained again, {_number(run.verified_baseline_mean)}"
            )
    return (
        f"  {run.proposer} seed {run.seed}: baseline {run.baseline_val_bpb:.6f} -> best "
        f"{_number(run.best_val_bpb)}, gain {_number(run.gain_bpb)}{verified}; {run.keeps} of "
        f"{run.experiments} kept ({_share(run.keep_rate)}), {run.crashes} crashed; {where}"
    )


def report_json(
    options: SearchOptions, settings: Settings, runs: Sequence[SearchRun], plot: Path | None
) -> dict[str, Any]:
    """What `--json` prints: the options, the settings the runs trained with, each proposer's
    figures and each run's."""
    trainer, engine = settings.trainer, settings.engine
    return {
        "experiments": options.experiments,
        "budget_seconds": options.budget_seconds,
        "seeds": options.seeds,
        "workers": options.workers,
        "verify": options.verify,
        "verify_seeds": list(range(VERIFY_SEED, VERIFY_SEED + options.verify)),
        "start": options.start,
        "settings": {
            "device": trainer.device,
            "corpus": trainer.corpus,
            "seq_len": trainer.seq_len,
            "eval_tokens": trainer.eval_tokens,
            "noise_runs": engine.noise_runs,
            "confirm_multiple": engine.confirm_multiple,
            "keep_runs": engine.keep_runs,
            "short_reruns": engine.short_reruns,
            "early_abort": engine.early_abort,
        },
        "out": None if options.out is None else str(options.out.expanduser().resolve()),
        "plot": None if plot is None else str(plot),
        "proposers": [row.as_json() for row in figures(options, runs)],
        "runs": [run.as_json() for run in runs],
    }


# ---------------------------------------------------------------------------------------------
# search.png


def plot_search(options: SearchOptions, runs: Sequence[SearchRun], path: Path) -> None:
    """Draw every run's gain over its baseline after each experiment (a step line per seed, a
    colour per proposer) to ``path``. Raises RuntimeError when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise RuntimeError(MATPLOTLIB_MISSING) from error
    figure = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = ("-", "--", ":", "-.")
    for row in figures(options, runs):
        mine = [run for run in runs if run.proposer == row.proposer]
        label = f"{row.proposer}: mean gain {_number(row.gain_mean, '.4f')} over " + _count(
            row.runs, "run"
        )
        for position, run in enumerate(mine):
            measured = [(n, gain) for n, gain in enumerate(running_gain(run)) if gain is not None]
            if not measured:
                continue
            numbers = [n for n, _ in measured]
            values = [gain for _, gain in measured]
            color = PROPOSER_COLORS.get(row.proposer, "black")
            # The gain after experiment n holds until n + 1: the last one is drawn half a step
            # on, so that it shows.
            axes.step(
                [*numbers, numbers[-1] + 0.5],
                [*values, values[-1]],
                where="post",
                color=color,
                linestyle=styles[position % len(styles)],
                linewidth=1.8,
                alpha=0.85,
                label=label if position == 0 else None,
            )
            axes.plot(numbers, values, linestyle="none", marker="o", markersize=3, color=color)
    axes.axhline(0.0, color="#555555", linewidth=0.8, linestyle=":")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(-0.25, max(options.experiments, 1) + 0.5)
    axes.set_xlabel("experiment #")
    axes.set_ylabel("gain over the baseline so far (val_bpb, higher is better)")
    axes.set_title(
        f"gain so far: {_count(options.experiments, 'experiment')} of "
        f"{options.budget_seconds:g} s, {_count(options.seeds, 'seed')} per proposer "
        "(line style: seed)",
        loc="left",
    )
    axes.grid(True, color="#e6e6e6", linewidth=0.8)
    axes.set_axisbelow(True)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=FIGURE_DPI)
    write_atomic(path, image.getvalue())


def matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# running


def run_settings(
    options: SearchOptions,
    workspace: Path | None,
    proposer: str,
    seed: int,
    **trainer: object,
) -> Settings:
    """The settings of one run: the workspace's (a fresh one's are the shipped defaults, and
    the environment's), with the bench's, and any other ``trainer`` settings given."""
    return load_settings(
        workspace,
        overrides={
            **{f"trainer.{key}": value for key, value in trainer.items()},
            "engine.proposer": proposer,
            "engine.experiments": options.experiments,
            "engine.workers": options.workers,
            "engine.test_split_summary": False,
            # The bench verifies each run's best itself (--verify), outside the time it counts.
            "engine.verify_seeds": 0,
            "trainer.budget_seconds": options.budget_seconds,
            "trainer.seed": seed,
            "trainer.device": options.device,
        },
    )


def _model_note(agent: AgentSetup) -> str | None:
    """Why the model cannot propose now (Ollama down, the model not pulled); None when it can."""
    from agent.ollama_backend import AgentState

    backend = agent.backend
    if backend is None:
        return None
    health = backend.check()
    if health.state == AgentState.READY:
        return None
    return str(health.message)


def run_one(
    options: SearchOptions,
    root: Path,
    proposer: str,
    seed: int,
    progress: TextIO,
    start: Path | None = None,
) -> SearchRun:
    """One run: a fresh default workspace (its script ``start``, or the template), the real
    engine headless to the end, its figures."""
    from cockpit.engine.agents import build_agent
    from cockpit.engine.executors import executor_for
    from cockpit.engine.loop import Engine, EngineOptions

    path = root / f"{proposer}-seed{seed}"
    workspace = Workspace.init(path, script_source=start)
    settings = run_settings(options, workspace.path, proposer, seed)
    executor = executor_for(settings, workspace.paths)
    agent = build_agent(settings)
    try:
        # The engine says so as well when the model is first asked, after the baseline.
        note = _model_note(agent)
        if note is not None:
            print(
                f"{note}; the optimiser proposes in the model's place until it answers",
                file=progress,
                flush=True,
            )
        engine = Engine(
            workspace, settings, agent.proposer, out=progress, agent=agent, executor=executor
        )
        started = time.monotonic()
        engine.run(EngineOptions(experiments=options.experiments))
        wall = time.monotonic() - started
    finally:
        agent.close()
    with Journal.open(workspace.paths.journal, readonly=True) as journal:
        run = read_run(
            journal,
            proposer=proposer,
            seed=seed,
            workspace=workspace.path,
            wall_seconds=wall,
            workers=options.workers,
            model_note=note,
        )
    if not options.verify:
        return run
    from cockpit.engine.verification import verify_best

    with Journal.open(workspace.paths.journal) as journal:
        record = journal.run_by_tag(run.tag)
        if record is None or record.best_commit is None:
            return run
        verified = verify_best(
            workspace,
            journal,
            record,
            settings,
            options.verify,
            say=lambda line: print(line, file=progress, flush=True),
        )
    if verified is None:
        return run
    return dataclasses.replace(
        run,
        verified=verified.values,
        verified_short=verified.short,
        verified_baseline=verified.baseline_values,
    )


def run_search_bench(options: SearchOptions, *, as_json: bool) -> int:
    """Run every proposer on every seed, print the figures, draw search.png under --out."""
    from cockpit.engine.workspace_error import WorkspaceError
    from cockpit.errors import EngineError
    from cockpit.store.records import JournalError

    progress = sys.stderr if as_json else sys.stdout
    root = None if options.out is None else options.out.expanduser().resolve()
    if root is not None:
        taken = [
            root / f"{proposer}-seed{seed}"
            for proposer in options.proposers
            for seed in range(options.seeds)
            if (root / f"{proposer}-seed{seed}").exists()
        ]
        if taken:
            print(
                f"error: {taken[0]} exists; give --out a new or empty folder (each run's "
                "workspace is made there), or remove the runs of an earlier bench",
                file=sys.stderr,
            )
            return 2
    # A fresh workspace's settings are those of no workspace: read them once, before any run,
    # so that a bad setting stops the bench at once and the headline can say what runs.
    settings = run_settings(options, None, options.proposers[0], 0)
    print(headline(options, settings), file=progress, flush=True)
    if root is not None and matplotlib_missing():
        print(f"{MATPLOTLIB_MISSING}; the figures are printed without it", file=progress)
    runs: list[SearchRun] = []
    interrupted = False
    with contextlib.ExitStack() as scratch:
        base = root or Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=SCRATCH)))
        base.mkdir(parents=True, exist_ok=True)
        try:
            start = start_script(options.start, base)
        except StartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        total = len(options.proposers) * options.seeds
        for proposer, seed in itertools.product(options.proposers, range(options.seeds)):
            print(
                f"[{len(runs) + 1}/{total}] {proposer}, seed {seed}: "
                f"{_count(options.experiments, 'experiment')} of {options.budget_seconds:g} s",
                file=progress,
                flush=True,
            )
            try:
                run = run_one(options, base, proposer, seed, progress, start)
            except (EngineError, WorkspaceError, JournalError, ValueError) as exc:
                print(f"error: {proposer}, seed {seed}: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                if not runs:
                    raise
                # An hour of runs is not thrown away for the one cut short: their figures.
                print(
                    f"interrupted: the figures of the {_count(len(runs), 'run')} that finished",
                    file=sys.stderr,
                )
                interrupted = True
                break
            runs.append(run)
            print(run_line(run).strip(), file=progress, flush=True)
        plot = None
        if root is not None:
            try:
                plot_search(options, runs, root / PLOT_NAME)
                plot = root / PLOT_NAME
            except RuntimeError as exc:
                print(f"no plot: {exc}", file=progress)
    code = 130 if interrupted else 0
    if as_json:
        print(json.dumps(report_json(options, settings, runs, plot), indent=2))
        return code
    print("")
    print(headline(options, settings))
    for line in render_table(options, runs):
        print(line)
    if plot is not None:
        print(f"wrote {plot}")
    else:
        print(f"no plot kept: --out DIR keeps DIR/{PLOT_NAME} and each run's workspace")
    return code
