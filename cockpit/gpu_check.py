"""`cockpit doctor --gpu-check`: one command for a first GPU, done within ten minutes.

It prints its plan with the time each part should take, then runs, in order:

1. the doctor's checks (`cockpit.doctor`), the confined device probe on the GPU included;
2. one training of the default script under confinement, as `cockpit train` runs it
   (`cockpit.training.run_training`): val_bpb, MFU, tokens per second, peak memory and the
   confinement it ran under;
3. the trainer benchmark (`cockpit.bench.trainer_bench.run_trainer_bench`): the default script
   against a plain GPT of the same size, for a shorter budget each;
4. a short research loop: the real engine on a fresh scratch workspace, the optimiser
   proposing (no model needed), as `cockpit bench search` runs it
   (`cockpit.bench.search_bench.run_one`);

and ends with one block of figures to paste into a report. Each part's budget is an option.
The defaults fit ten minutes on one GPU: a training costs its budget plus about
`OVERHEAD_SECONDS` (the training process's start, the export, the separate evaluation), so the
five-minute default training takes most of them, and the bench (10 s each) and the loop (the
baseline and one experiment of 15 s) show that those paths work on the GPU rather than what
they measure in a night; three one-minute experiments and 30 s bench runs would take about
fifteen. The loop trains its baseline once and confirms no keep with a second seed: a night
measures the noise first, ten minutes cannot.

Without a GPU it says so and stops; ``--device cpu`` runs the same pipeline on the CPU (small
budgets make it a test).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import names
from cockpit.config import Settings, load_settings
from cockpit.doctor.checkup import run_doctor
from cockpit.doctor.storage import (
    FAIL_FREE_GB,
    cache_dir_of,
    corpus_build_seconds,
    read_corpus_state,
)
from cockpit.doctor.verdicts import FAIL, Check

if TYPE_CHECKING:
    from cockpit.bench.search_runs import SearchRun

LIMIT_SECONDS = 600.0
# What one training costs beyond its budget: the training process's start (torch, CUDA,
# confinement), the export of the model and the confined evaluation. About 15 s on a small CPU
# with a small evaluation, 25 s with the CPU's default; a GPU adds CUDA's start and evaluates
# 4 M tokens. Estimates for the plan; the block gives the times measured.
OVERHEAD_SECONDS = {"cuda": 40.0, "cpu": 25.0}
DOCTOR_SECONDS = 30.0  # the device probe on a cold cache, the user-namespace trial, Ollama
ENGINE_SECONDS = 15.0  # a fresh workspace, the engine's start, its proposals and its end
LOOP_PROPOSER = names.OPTUNA
# A night measures the run-to-run noise with a second baseline, trains a keep on two seeds and
# verifies its best at the end; the loop of a ten-minute check does none of it (a variable
# already set wins).
LOOP_ENVIRONMENT = {
    "COCKPIT_ENGINE__NOISE_RUNS": "1",
    "COCKPIT_ENGINE__KEEP_RUNS": "1",
    "COCKPIT_ENGINE__CONFIRM_MULTIPLE": "0",
    "COCKPIT_ENGINE__VERIFY_SEEDS": "0",
}
# Checks whose failure means no training can run: the check stops after the doctor.
BLOCKING_CHECKS = ("torch", "probe", "disk", "corpus")
BLOCK_START = "----- cockpit GPU check: paste from here -----"
BLOCK_END = "----- end of the GPU check -----"


@dataclass(frozen=True)
class GpuCheckOptions:
    """What `cockpit doctor --gpu-check` was asked for; the defaults fit ten minutes."""

    device: str = "cuda"
    # The five-minute default training is the point: it has the most of the ten minutes.
    train_budget: float = 300.0
    bench_budget: float = 10.0
    loop_budget: float = 15.0
    loop_experiments: int = 1
    out: Path | None = None  # None: a scratch folder, removed at the end
    refresh: bool = False  # run the device probe again rather than read its cached result
    fail_free_gb: float = FAIL_FREE_GB


@dataclass(frozen=True)
class PlanStep:
    """One part of the check and the seconds it should take."""

    name: str
    what: str
    seconds: float


def overhead_seconds(device: str) -> float:
    """The estimated cost of one training beyond its budget on this kind of device."""
    return OVERHEAD_SECONDS["cpu" if device == "cpu" else "cuda"]


def make_plan(options: GpuCheckOptions, corpus_seconds: float = 0.0) -> list[PlanStep]:
    """The parts of the check with their estimated times; ``corpus_seconds`` is the time the
    first training spends encoding the corpus when the cache does not hold it yet."""
    overhead = overhead_seconds(options.device)
    trainings = options.loop_experiments + 1
    experiments = (
        f"{options.loop_experiments} experiment{'s' if options.loop_experiments != 1 else ''}"
    )
    return [
        PlanStep("doctor", "the checks, the confined device probe included", DOCTOR_SECONDS),
        PlanStep(
            "training",
            f"the default script for {options.train_budget:g} s under confinement",
            corpus_seconds + options.train_budget + overhead,
        ),
        PlanStep(
            "bench",
            f"the default script, then the plain GPT, {options.bench_budget:g} s each",
            2 * (options.bench_budget + overhead),
        ),
        PlanStep(
            "loop",
            f"a fresh workspace: the baseline and {experiments} of {options.loop_budget:g} s "
            f"({LOOP_PROPOSER} proposing)",
            ENGINE_SECONDS + trainings * (options.loop_budget + overhead),
        ),
    ]


def duration(seconds: float) -> str:
    """ "9 min 41 s", or "41 s" under a minute."""
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def render_plan(options: GpuCheckOptions, steps: Sequence[PlanStep]) -> list[str]:
    """The plan as printed first: each part with its time, the total against ten minutes."""
    total = sum(step.seconds for step in steps)
    lines = [
        f"GPU check on {options.device}: about {duration(total)} (estimated with "
        f"{overhead_seconds(options.device):g} s per training beyond its budget)"
    ]
    lines += [f"  {step.name:<9} ~{duration(step.seconds):>11}  {step.what}" for step in steps]
    if total > LIMIT_SECONDS:
        lines.append(
            f"  over {duration(LIMIT_SECONDS)}: lower --train-budget, --bench-budget, "
            "--loop-budget or --loop-experiments to fit"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# the figures of each part


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TrainingFigures:
    """One training's figures, from the harness's summary."""

    status: str
    reason: str
    budget_seconds: float
    device: str
    device_name: str
    torch_version: str
    val_bpb: float | None
    mfu_percent: float | None
    tokens_per_second: float | None
    peak_memory_mb: float | None
    memory_kind: str  # "VRAM" on a GPU, "RSS" (the process's memory) on the CPU
    confinement: str
    total_seconds: float | None


def confinement_label(report: Any) -> str:
    """The summary's confinement in a few words: its layer ("full"), or what is missing."""
    from trainer.confine import FULL, Confinement

    confinement = Confinement.from_dict(report)
    if confinement is None:
        return "not reported"
    if confinement.layer != FULL.name:
        return f"{confinement.layer} (degraded: {confinement.reason})"
    if confinement.enforced:
        return "full"
    return f"degraded, not confined: {confinement.missing} ({confinement.reason})"


def training_figures(
    summary: Mapping[str, Any], status: str, reason: str, budget: float
) -> TrainingFigures:
    """The figures of a training's summary (the keys the harness writes)."""
    device = str(summary.get("device", "?"))
    on_gpu = device.startswith("cuda")
    return TrainingFigures(
        status=status,
        reason=reason,
        budget_seconds=budget,
        device=device,
        device_name=str(summary.get("device_name", "?")),
        torch_version=str(summary.get("torch_version", "?")),
        val_bpb=_number(summary.get("val_bpb")),
        mfu_percent=_number(summary.get("mfu_percent")),
        tokens_per_second=_number(summary.get("tokens_per_second")),
        peak_memory_mb=_number(summary.get("peak_vram_mb" if on_gpu else "peak_rss_mb")),
        memory_kind="VRAM" if on_gpu else "RSS",
        confinement=confinement_label(summary.get("confinement")),
        total_seconds=_number(summary.get("total_seconds")),
    )


@dataclass(frozen=True)
class BenchFigures:
    """The trainer benchmark's figures: both scripts' speed and their ratio."""

    status: str
    reason: str
    budget_seconds: float
    script_tokens_per_second: float | None = None
    script_mfu_percent: float | None = None
    reference_tokens_per_second: float | None = None
    reference_mfu_percent: float | None = None
    speed_ratio: float | None = None


def bench_figures(report: Mapping[str, Any], budget: float) -> BenchFigures:
    """The figures of `run_trainer_bench`'s JSON report."""
    script = report.get("script") or {}
    reference = report.get("reference") or {}
    failed = next((row for row in (script, reference) if row and row.get("status") != "ok"), None)
    return BenchFigures(
        status="ok" if failed is None else str(failed.get("status")),
        reason="" if failed is None else str(failed.get("reason") or ""),
        budget_seconds=budget,
        script_tokens_per_second=_number(script.get("tokens_per_second")),
        script_mfu_percent=_number(script.get("mfu_percent")),
        reference_tokens_per_second=_number(reference.get("tokens_per_second")),
        reference_mfu_percent=_number(reference.get("mfu_percent")),
        speed_ratio=_number(report.get("speed_vs_plain_gpt")),
    )


@dataclass(frozen=True)
class LoopOutcome:
    """One decided experiment of the loop (number 0 is the baseline)."""

    number: int
    decision: str  # keep, discard or crash
    status: str
    val_bpb: float | None  # None: a crash, or a training early abort stopped


@dataclass(frozen=True)
class LoopFigures:
    """The loop's figures: its run read from the journal, each experiment's outcome."""

    budget_seconds: float
    experiments: int  # asked for, after the baseline
    error: str = ""
    workspace: str = ""
    tag: str = ""
    baseline_val_bpb: float | None = None
    best_val_bpb: float | None = None
    gain_bpb: float | None = None
    keeps: int = 0
    crashes: int = 0
    wall_seconds: float = 0.0
    outcomes: tuple[LoopOutcome, ...] = field(default_factory=tuple)


def loop_figures(run: SearchRun, outcomes: Sequence[LoopOutcome], budget: float) -> LoopFigures:
    """The loop's figures from the search bench's run and the journal's decisions."""
    return LoopFigures(
        budget_seconds=budget,
        experiments=run.experiments,
        workspace=run.workspace,
        tag=run.tag,
        baseline_val_bpb=run.baseline_val_bpb,
        best_val_bpb=run.best_val_bpb,
        gain_bpb=run.gain_bpb,
        keeps=run.keeps,
        crashes=run.crashes,
        wall_seconds=run.wall_seconds,
        outcomes=tuple(outcomes),
    )


# ---------------------------------------------------------------------------------------------
# the block to paste


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def _training_line(figures: TrainingFigures) -> str:
    where = f"{figures.budget_seconds:g} s on {figures.device}"
    if figures.status != "ok":
        return f"{where}: {figures.status}: {figures.reason}; confinement {figures.confinement}"
    return (
        f"{where}: val_bpb {_fmt(figures.val_bpb, '.6f')}, MFU "
        f"{_fmt(figures.mfu_percent, '.2f', '%')}, tokens/s "
        f"{_fmt(figures.tokens_per_second, ',.0f')}, peak {figures.memory_kind} "
        f"{_fmt(figures.peak_memory_mb, ',.0f', ' MB')}, confinement {figures.confinement}; "
        f"{_fmt(figures.total_seconds, '.1f', ' s')} in all"
    )


def _bench_line(figures: BenchFigures) -> str:
    where = f"{figures.budget_seconds:g} s each"
    if figures.status != "ok":
        return f"{where}: {figures.status}: {figures.reason}"
    return (
        f"{where}: default script {_fmt(figures.script_tokens_per_second, ',.0f')} tokens/s "
        f"(MFU {_fmt(figures.script_mfu_percent, '.2f', '%')}), plain GPT "
        f"{_fmt(figures.reference_tokens_per_second, ',.0f')} tokens/s (MFU "
        f"{_fmt(figures.reference_mfu_percent, '.2f', '%')}): ratio "
        f"{_fmt(figures.speed_ratio, '.2f', 'x')}"
    )


def _outcome_text(outcome: LoopOutcome) -> str:
    decision = (
        "baseline" if outcome.number == 0 and outcome.decision == "keep" else outcome.decision
    )
    if outcome.val_bpb is not None:
        return f"#{outcome.number} {decision} {outcome.val_bpb:.6f}"
    if outcome.decision == "discard":
        return f"#{outcome.number} discard (stopped early)"
    return f"#{outcome.number} {decision} ({outcome.status})"


def _loop_line(figures: LoopFigures) -> str:
    where = f"{figures.experiments} experiments of {figures.budget_seconds:g} s ({LOOP_PROPOSER})"
    if figures.error:
        return f"{where}: {figures.error}"
    outcomes = ", ".join(_outcome_text(outcome) for outcome in figures.outcomes) or "none"
    return (
        f"{where}: {outcomes}; {figures.keeps} kept, {figures.crashes} crashed; best "
        f"{_fmt(figures.best_val_bpb, '.6f')} (gain {_fmt(figures.gain_bpb, '.6f')}); "
        f"{figures.wall_seconds:.1f} s"
    )


@dataclass
class GpuCheckResult:
    """Everything the check found, filled in as its parts run."""

    checks: list[Check] = field(default_factory=list)
    training: TrainingFigures | None = None
    bench: BenchFigures | None = None
    loop: LoopFigures | None = None
    stopped: str = ""  # why the check stopped before its end

    @property
    def ok(self) -> bool:
        """Whether no check failed and every part ran to its end."""
        return (
            not self.stopped
            and all(check.status != FAIL for check in self.checks)
            and self.training is not None
            and self.training.status == "ok"
            and self.bench is not None
            and self.bench.status == "ok"
            and self.loop is not None
            and not self.loop.error
            and self.loop.baseline_val_bpb is not None
        )


def _machine_line(result: GpuCheckResult) -> str:
    gpus = next((check for check in result.checks if check.key == "gpus"), None)
    torch_check = next((check for check in result.checks if check.key == "torch"), None)
    parts = []
    if result.training is not None:
        parts.append(f"{result.training.device_name} ({result.training.device})")
    if torch_check is not None and torch_check.details.get("version"):
        parts.append(f"torch {torch_check.details['version']}")
    if gpus is not None and gpus.details.get("driver_version"):
        cuda = gpus.details.get("driver_cuda")
        parts.append(
            f"driver {gpus.details['driver_version']}" + (f" (CUDA {cuda})" if cuda else "")
        )
    return ", ".join(parts) or "unknown"


def render_block(result: GpuCheckResult, total_seconds: float, planned_seconds: float) -> list[str]:
    """The block of figures to paste into a report."""
    lines = [BLOCK_START, f"machine   {_machine_line(result)}"]
    for position, check in enumerate(result.checks):
        lines.append(f"{'doctor' if position == 0 else '':<9} {check.line()}")
    absent = "did not run" + (f" ({result.stopped})" if result.stopped else "")
    lines.append(f"training  {_training_line(result.training) if result.training else absent}")
    lines.append(f"bench     {_bench_line(result.bench) if result.bench else absent}")
    lines.append(f"loop      {_loop_line(result.loop) if result.loop else absent}")
    lines.append(
        f"total     {duration(total_seconds)} (planned {duration(planned_seconds)}); "
        f"{'ok' if result.ok else 'not ok'}"
    )
    lines.append(BLOCK_END)
    return lines


# ---------------------------------------------------------------------------------------------
# running


def _part_settings(device: str, budget: float) -> Settings:
    """The settings of a training of the bundled default script: the shipped defaults and
    the environment's, with this part's device and budget."""
    return load_settings(
        None, overrides={"trainer.device": device, "trainer.budget_seconds": budget}
    )


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set the variables that are not set already, for the duration; then unset them."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def run_training_part(options: GpuCheckOptions, folder: Path, progress: TextIO) -> TrainingFigures:
    """The default script trained once under confinement, its files kept in ``folder``."""
    from cockpit.training import run_training

    settings = _part_settings(options.device, options.train_budget)
    result = run_training(settings, None, out=progress, keep_dir=folder)
    return training_figures(
        result.summary, result.outcome.status, result.reason, options.train_budget
    )


def run_bench_part(options: GpuCheckOptions) -> BenchFigures:
    """The trainer benchmark: the default script and the plain GPT, the bench's budget each."""
    from cockpit.bench.trainer_bench import run_trainer_bench

    settings = _part_settings(options.device, options.bench_budget)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_trainer_bench(settings, None, as_json=True, reference=True)
    try:
        report = json.loads(printed.getvalue())
    except json.JSONDecodeError:
        return BenchFigures("crash", "the bench printed no figures", options.bench_budget)
    return bench_figures(report, options.bench_budget)


def read_outcomes(workspace: Path) -> list[LoopOutcome]:
    """Each decided experiment of the workspace's latest run, in number order."""
    from cockpit.report.summary import summarize_experiments
    from cockpit.store.journal import Journal
    from cockpit.store.paths import WorkspacePaths

    with Journal.open(WorkspacePaths(workspace).journal, readonly=True) as journal:
        run = journal.latest_run()
        if run is None:
            return []
        summary = summarize_experiments(journal.experiments(run.id), run=run)
    return [
        LoopOutcome(point.number, point.decision, point.status, point.val_bpb)
        for point in summary.points
    ]


def run_loop_part(options: GpuCheckOptions, folder: Path, progress: TextIO) -> LoopFigures:
    """The research loop on a fresh workspace under ``folder``, as the search bench runs it."""
    from cockpit.bench.search_bench import run_one
    from cockpit.bench.search_runs import SearchOptions
    from cockpit.engine.workspace_error import WorkspaceError
    from cockpit.errors import EngineError
    from cockpit.store.records import JournalError

    search = SearchOptions(
        proposers=(LOOP_PROPOSER,),
        experiments=options.loop_experiments,
        budget_seconds=options.loop_budget,
        seeds=1,
        workers=1,
        device=options.device,
    )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _environment(LOOP_ENVIRONMENT):
            run = run_one(search, folder, LOOP_PROPOSER, 0, progress)
        outcomes = read_outcomes(Path(run.workspace))
    except (EngineError, WorkspaceError, JournalError, ValueError) as exc:
        return LoopFigures(options.loop_budget, options.loop_experiments, error=str(exc))
    return loop_figures(run, outcomes, options.loop_budget)


def _blocking(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if check.key in BLOCKING_CHECKS and check.status == FAIL]


def _no_gpu(checks: Sequence[Check]) -> bool:
    gpus = next((check for check in checks if check.key == "gpus"), None)
    return gpus is not None and gpus.details.get("state") == "no_gpu"


def _prepare_out(out: Path | None) -> str:
    """Why ``out`` cannot take the check's runs; "" when it can."""
    if out is None or not out.exists():
        return ""
    if not out.is_dir():
        return f"{out} is not a folder; give --out a new or empty folder"
    if any(out.iterdir()):
        return f"{out} is not empty; give --out a new or empty folder"
    return ""


def _run_parts(
    options: GpuCheckOptions, root: Path, result: GpuCheckResult, out: TextIO, progress: TextIO
) -> None:
    """The training, the bench and the loop, in order, each said as it starts and ends; their
    files go under ``root``, their logs to ``progress``."""
    print(f"training the default script for {options.train_budget:g} s ...", file=out, flush=True)
    result.training = run_training_part(options, root / "train", progress)
    print(f"training: {_training_line(result.training)}", file=out, flush=True)
    print(f"benchmark, {options.bench_budget:g} s each ...", file=out, flush=True)
    result.bench = run_bench_part(options)
    print(f"bench: {_bench_line(result.bench)}", file=out, flush=True)
    print(
        f"research loop, {options.loop_experiments} experiments of {options.loop_budget:g} s ...",
        file=out,
        flush=True,
    )
    result.loop = run_loop_part(options, root / "loop", progress)


def run_gpu_check(
    options: GpuCheckOptions,
    settings: Settings,
    workspace: Path,
    out: TextIO = sys.stdout,
    progress: TextIO = sys.stderr,
) -> int:
    """Run the check and print its plan, the doctor's lines and the block of figures; 0 when
    everything passed, 1 when something failed, 2 when it could not start."""
    started = time.monotonic()
    problem = _prepare_out(options.out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    corpus = read_corpus_state(settings.trainer.corpus, cache_dir_of(settings))
    steps = make_plan(options, corpus_build_seconds(corpus))
    planned = sum(step.seconds for step in steps)
    for line in render_plan(options, steps):
        print(line, file=out, flush=True)
    result = GpuCheckResult()
    result.checks = run_doctor(
        settings,
        workspace,
        device=options.device,
        refresh=options.refresh,
        fail_free_gb=options.fail_free_gb,
    )
    print("doctor:", file=out)
    for check in result.checks:
        print("  " + check.line(), file=out, flush=True)
    if options.device != "cpu" and _no_gpu(result.checks):
        print(
            "no NVIDIA GPU here: the GPU check needs one. `cockpit doctor --gpu-check --device "
            "cpu` with small budgets (e.g. --train-budget 3 --bench-budget 2 --loop-budget 3 "
            "--loop-experiments 2) runs the same pipeline on the CPU",
            file=out,
        )
        return 2
    blocking = _blocking(result.checks)
    with contextlib.ExitStack() as stack:
        if options.out is not None:
            root = options.out.expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="cockpit-gpu-check-"))
            )
        if blocking:
            result.stopped = f"the {', '.join(check.key for check in blocking)} check failed"
        else:
            _run_parts(options, root, result, out, progress)
        total = time.monotonic() - started
        print("", file=out)
        for line in render_block(result, total, planned):
            print(line, file=out)
        if options.out is not None:
            print(f"the runs' files are kept in {root}", file=out)
    return 0 if result.ok else 1
