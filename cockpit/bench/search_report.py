"""How `cockpit bench search` shows its figures: the table, the verified summary, one line per
run, the JSON report and the running-best chart ``search.png``."""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import names
from agent.names import MODEL_PROPOSERS
from cockpit.bench.search_runs import (
    VERIFY_SEED,
    SearchOptions,
    SearchRun,
    figures,
    running_gain,
)
from cockpit.config import Settings
from cockpit.store.atomic import write_atomic

PLOT_NAME = "search.png"
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


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _number(value: float | None, spec: str = ".6f") -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def headline(options: SearchOptions, settings: Settings) -> str:
    """The bench's first line: what each run does, and where."""
    seeds = plural(options.seeds, "seed")
    workers = plural(options.workers, "worker")
    trainer, engine = settings.trainer, settings.engine
    start = "the template" if options.start is None else options.start
    return (
        f"search benchmark: {', '.join(options.proposers)}; {seeds} each; "
        f"{plural(options.experiments, 'experiment')} of {options.budget_seconds:g} s per run on "
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
            f"again {plural(options.verify, 'time')} with seeds {VERIFY_SEED}.."
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
            f"mean optimism {statistics.mean(optimism):.6f} over {plural(len(optimism), 'run')} "
            f"(largest {max(optimism):.6f})"
        )
    short = sum(run.verified_ran_short for run in runs)
    if short:
        lines.append(
            f"{plural(short, 'verification training')} ran short of the run's plan (the machine "
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
        label = f"{row.proposer}: mean gain {_number(row.gain_mean, '.4f')} over " + plural(
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
        f"gain so far: {plural(options.experiments, 'experiment')} of "
        f"{options.budget_seconds:g} s, {plural(options.seeds, 'seed')} per proposer "
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
