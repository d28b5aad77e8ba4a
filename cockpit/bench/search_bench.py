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
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cockpit.bench.search_report import (
    MATPLOTLIB_MISSING,
    PLOT_NAME,
    headline,
    matplotlib_missing,
    plot_search,
    plural,
    render_table,
    report_json,
    run_line,
)
from cockpit.bench.search_runs import (
    SearchOptions,
    SearchRun,
    read_run,
)
from cockpit.bench.starts import StartError, start_script
from cockpit.config import Settings, load_settings
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal

if TYPE_CHECKING:  # the engine loads only when a run starts, not to parse the options
    from cockpit.engine.agents import AgentSetup

SCRATCH = "cockpit-bench-search-"  # the prefix of the scratch folder used without --out


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
                f"{plural(options.experiments, 'experiment')} of {options.budget_seconds:g} s",
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
                    f"interrupted: the figures of the {plural(len(runs), 'run')} that finished",
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
