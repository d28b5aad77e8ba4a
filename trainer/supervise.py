"""The training process, seen from the harness: started confined (trainer.confined) in a folder
of its own, its clock and bounds kept here where the script cannot reach them, its whole tree
ended when it ends, its step plan settled, and its export taken out of its folder before this
process evaluates it (trainer.validate).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import psutil

from trainer import limits, readback
from trainer.bounds import MB, Watch
from trainer.confine import Confinement
from trainer.confined import TrainingSpec
from trainer.data import EncodedCorpus, default_cache_dir
from trainer.outcomes import HarnessStop, Outcome
from trainer.pacing import Pacing
from trainer.program import ProgramError, open_program
from trainer.record import Run, reported_number
from trainer.relay import Relay
from trainer.walls import training_environment, walls_for

if TYPE_CHECKING:
    import torch


WAIT_POLL_SECONDS = 0.2  # how often the harness looks at the training's clock
PROGRAM_NAME = "model.program"
PR_SET_CHILD_SUBREAPER = 36
FIGURES_NAME = "training.json"
# The figures file holds a few hundred bytes of numbers; anything near this is not one.
MAX_FIGURES_BYTES = 1 << 20


def _become_subreaper() -> None:
    """Orphans of the training (a double fork, a new session) become this process's children,
    so none outlives the training unseen."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def end_descendants() -> int:
    """Kill every process this one started, and what they started; return how many."""
    descendants = psutil.Process().children(recursive=True)
    for process in descendants:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(descendants, timeout=5)
    return len(descendants)


def _read_figures(path: Path) -> dict[str, Any]:
    """The figures the training process left ({} when it left none, or no JSON table); a file
    the harness will not read (trainer.readback) ends the run as a crash."""
    try:
        figures = json.loads(readback.read_left(path, MAX_FIGURES_BYTES))
    except FileNotFoundError:
        return {}
    except readback.Refused as exc:
        raise HarnessStop(
            Outcome.CRASH,
            f"the training's figures file was refused: {exc}; the harness writes {path.name} "
            "itself at the end of the training, so the script must leave it alone",
        ) from None
    except (OSError, ValueError, RecursionError):
        return {}
    return figures if isinstance(figures, dict) else {}


def _work_dir(run: Run) -> Path:
    """The training's folder, made empty: the one named, the one beside the summary, or a
    temporary one (the run's scratch, removed when it ends)."""
    options = run.options
    if options.work_dir is not None:
        work_dir = options.work_dir
    elif options.summary_json is not None:
        work_dir = options.summary_json.parent / "training"
    else:
        work_dir = run.scratch = Path(tempfile.mkdtemp(prefix="cockpit-training-"))
    # Absolute: the training process starts in this folder and is handed paths inside it.
    work_dir = work_dir.absolute()
    readback.remove_tree(work_dir)  # what an earlier run left there is not reused
    work_dir.mkdir(parents=True)
    return work_dir


def _pacing_facts(run: Run) -> list[str]:
    summary = run.summary
    torch_version = importlib.metadata.version("torch")
    return [str(summary[k]) for k in ("device_name", "threads", "budget_seconds", "seq_len",
                                       "corpus_fingerprint")] + [torch_version]  # fmt: skip


@dataclass
class Export:
    """The program a training exported: where it is kept, and the file itself, opened and
    checked (trainer.readback) before it left the training's folder."""

    path: Path
    file: BinaryIO


def run_training(run: Run, device: torch.device, corpus: EncodedCorpus) -> Export:
    """Run the training process to its end; return its export."""
    options = run.options
    cache_dir = options.cache_dir or default_cache_dir()
    work_dir = _work_dir(run)
    pacing_path = options.pacing_path or cache_dir / "pacing.json"
    plans = work_dir / "pacing.json"
    if pacing_path.is_file():
        shutil.copyfile(pacing_path, plans)
    # The compilers' caches: the training's own unless shared (see HarnessOptions), so that
    # nothing one training leaves there is loaded by the next.
    compile_cache = (cache_dir if options.share_compile_cache else work_dir) / "compile"
    compile_cache.mkdir(parents=True, exist_ok=True)
    run.summary["compile_cache"] = "shared" if options.share_compile_cache else "own"
    facts = _pacing_facts(run)
    # A given plan goes into the training's copy of the plans only; settled after the
    # training like any plan, it is cut in the pacing file where it did not fit.
    if options.plan_steps:
        Pacing(plans, Pacing.make_key(options.script, *facts)).remember(options.plan_steps)
        run.summary["plan_given"] = options.plan_steps
    check = run.device_check
    read_end, write_end = os.pipe()
    spec = TrainingSpec(
        script=str(options.script),
        budget_seconds=options.budget_seconds,
        grace_seconds=options.grace_seconds,
        device=str(device),
        seed=options.seed,
        seq_len=int(run.summary["seq_len"]),
        threads=int(run.summary["threads"]),
        vocab_size=corpus.vocab_size,
        train_path=str(corpus.train_path),
        work_dir=str(work_dir),
        program_path=str(work_dir / PROGRAM_NAME),
        result_path=str(work_dir / FIGURES_NAME),
        pacing_path=str(plans),
        pacing_facts=facts,
        metrics_fd=write_end,
        bounds=options.bounds.to_dict(),
        confinement=options.confinement,
        **walls_for(options.script, corpus.train_path, work_dir, compile_cache, corpus.hidden),
        layer=check.layer if check is not None and check.layer else "full",
        layer_reason=check.message if check is not None and check.degraded else "",
    )
    spec_path = work_dir / "spec.json"
    spec.write(spec_path)
    _become_subreaper()
    run.child = subprocess.Popen(
        [sys.executable, "-m", "trainer.confined", str(spec_path)],
        cwd=work_dir,
        env=training_environment(work_dir, compile_cache),
        stdin=subprocess.DEVNULL,
        pass_fds=(write_end,),
        start_new_session=True,
    )
    os.close(write_end)
    relay = Relay(read_end, run.sink, options.bounds.metrics_mb * MB)
    watch = Watch(options.bounds, run.child.pid, str(work_dir))
    try:
        code, cut = _wait_for_training(run.child, relay, watch, options.budget_seconds,
                                       options.grace_seconds)  # fmt: skip
    finally:
        ended = end_descendants()  # the training's tree, and any orphan it left behind
        watch.close()
    relay.join(5.0)
    run.summary["training_startup_seconds"] = relay.startup_seconds
    if relay.script_began is not None:
        run.summary["script_seconds"] = relay.script_ended - relay.script_began
    run.summary["peak_memory_mb"] = watch.peak_memory / 1e6
    run.summary["peak_processes"] = watch.peak_processes
    if cut is None and (disk := watch.check_disk()) is not None:
        cut = HarnessStop(Outcome.CRASH, disk)  # what it wrote after the harness's last look
    run.summary["folder_mb"] = watch.folder_bytes / 1e6
    start = relay.start or {}
    confinement = Confinement.from_dict(start.get("confinement"))
    if confinement is not None:
        run.summary["confinement"] = confinement.to_dict()
    if ended and code is not None:
        print(f"ended {ended} process(es) the training left running", file=sys.stderr, flush=True)
    run.training = _read_figures(work_dir / FIGURES_NAME)
    _settle_pacing(run, Pacing(pacing_path, Pacing.make_key(options.script, *facts)))
    if cut is not None:
        raise cut
    assert code is not None
    outcome = Outcome.from_exit_code(code)
    reason = run.training.get("reason")
    if code != 0:
        if outcome is None or outcome is Outcome.OK:
            raise HarnessStop(Outcome.CRASH, f"the training process {_ended_by(code)}")
        raise HarnessStop(outcome, str(reason or f"the training ended as {outcome.status}"))
    program = work_dir / PROGRAM_NAME
    # Opened where the training left it and read through this descriptor from now on: what is
    # evaluated is the file checked here, whatever the name comes to mean later.
    try:
        file = open_program(program)
    except FileNotFoundError:
        raise HarnessStop(
            Outcome.CRASH, "the training process exited without exporting the model"
        ) from None
    except ProgramError as exc:
        raise HarnessStop(Outcome.BAD_MODEL, f"the exported model was refused: {exc}") from None
    # Out of the training's folder: nothing that training left can change it any more.
    kept = options.program_path or (
        options.summary_json.parent / PROGRAM_NAME if options.summary_json else program
    )
    try:
        if kept != program:
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(program, kept)
    except BaseException:
        file.close()
        raise
    return Export(kept, file)


def _wait_for_training(
    child: subprocess.Popen[bytes], relay: Relay, watch: Watch, budget: float, grace: float
) -> tuple[int | None, HarnessStop | None]:
    """The training process's exit code, or None and why it was cut short: past its time (a
    timeout) or past one of its bounds (a crash; `Watch` and the metrics bound of the `Relay`).

    Its clock is kept here, where the script cannot reach it: the allowance for starting
    Python and torch ends with the start of the script, which the training process says before
    any of the script runs (`Relay.script_began`); from then on the script has its budget, the
    grace, the watchdog's margin and the export's time, and not a second of the allowance it
    did not use. A script that stops the process's own clock gains nothing by it."""
    began = time.perf_counter()
    startup_limit = limits.STARTUP_ALLOWANCE_SECONDS
    script_limit = limits.script_limit_seconds(budget, grace)
    while True:
        try:
            code = child.wait(timeout=WAIT_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        else:
            relay.script_ended = time.perf_counter()
            return code, None
        passed = relay.overflow or watch.check()
        if passed is not None:
            relay.script_ended = time.perf_counter()
            return None, HarnessStop(Outcome.CRASH, passed)
        now = time.perf_counter()
        script_began = relay.script_began
        if script_began is None and now - began > startup_limit:
            return None, HarnessStop(
                Outcome.TIMEOUT,
                f"the training process did not start the script within "
                f"{startup_limit:g} s (importing Python and torch) and was ended",
            )
        if script_began is not None and now - script_began > script_limit:
            relay.script_ended = now
            return None, HarnessStop(
                Outcome.TIMEOUT,
                f"the script ran past {script_limit:g} s (its budget of {budget:g} s, "
                f"{grace:g} s grace, and the time allowed to stop and export) and was ended",
            )


def _ended_by(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _settle_pacing(run: Run, pacing: Pacing) -> None:
    """Take the training's plan for its own script into the plan file, then settle it."""
    reported = run.training
    plan = reported.get("planned_steps")
    if not isinstance(plan, int) or isinstance(plan, bool) or plan < 1:
        return
    pacing.plan = plan
    pacing.reused = reported.get("plan_reused") is True
    if not pacing.reused:
        pacing.remember(plan)
    run.summary.update(planned_steps=plan, plan_reused=pacing.reused)
    seconds = reported_number(reported.get("training_seconds"))
    steps = reported.get("num_steps")
    if seconds is not None and isinstance(steps, int):
        change = pacing.settle(steps, seconds, run.options.budget_seconds)
        if change is not None:
            run.summary["plan_settled"] = change
