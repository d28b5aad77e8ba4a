"""`cockpit bench ui`: how fast the cockpit opens on a long run, and what it costs when idle.

It writes a journal of a run with many experiments (a thousand by default) into a scratch
workspace, starts the cockpit on it in a real terminal (a detached tmux session of 160 x 50),
and measures:

- time to first frame: from starting the process until the terminal shows the full ledger;
- idle CPU: the cockpit's CPU time over about ten seconds of nothing happening, as a
  percentage of one core.

The journal builder (`fill_journal`) is also what the cockpit's tests and screenshots use:
it writes through the Journal API only, with values drawn from a seeded generator, so two
journals built alike show alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from agent import names
from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock
from cockpit.store.paths import WorkspacePaths
from cockpit.store.records import Run
from cockpit.store.samples import GpuReading, GpuSnapshot, MonitorSample, ProcessReading
from cockpit.store.steering import SUPERVISED
from cockpit.views.readmodel import journal_file

FIRST_FRAME_TARGET_SECONDS = 1.0
IDLE_CPU_TARGET_PERCENT = 1.0
TERMINAL_SIZE = (160, 50)
FIRST_FRAME_TIMEOUT_SECONDS = 30.0

BUDGET_SECONDS = 300.0
BASELINE_BPB = 3.4213
MODEL = "qwen2.5-coder:7b"
# The CAPS constants of the default train.py that the experiments of a built journal change.
KNOBS: tuple[tuple[str, float, str], ...] = (
    ("LEARNING_RATE", 0.003, "AdamW learning rate"),
    ("WARMUP_FRACTION", 0.05, "share of the budget spent warming up"),
    ("WEIGHT_DECAY", 0.1, "AdamW weight decay"),
    ("DROPOUT", 0.0, "dropout after attention and MLP"),
    ("BATCH_SIZE", 32.0, "sequences per step"),
    ("N_LAYER", 4.0, "transformer blocks"),
    ("N_EMBD", 256.0, "width of the residual stream"),
    ("GRAD_CLIP", 1.0, "gradient norm clip"),
)


# ---------------------------------------------------------------------------------------------
# building a journal


def _sha(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(40))


def _diff(name: str, old: float, new: float, comment: str) -> str:
    def show(value: float) -> str:
        return str(int(value)) if value == int(value) and value >= 1 else f"{value:g}"

    return (
        "--- a/train.py\n"
        "+++ b/train.py\n"
        "@@ -14,9 +14,9 @@ import torch.nn.functional as F\n"
        " \n"
        " # --- knobs the agent may turn -------------------------------------\n"
        " SEQ_LEN = 256  # tokens per training window\n"
        f"-{name} = {show(old)}  # {comment}\n"
        f"+{name} = {show(new)}  # {comment}\n"
        " EVAL_EVERY = 0  # the harness evaluates; the script only trains\n"
        " REPORT_EVERY = 10  # steps between live loss reports\n"
        " \n"
    )


def _curve(
    rng: random.Random, final: float, points: int, until: float = 1.0
) -> list[dict[str, Any]]:
    """Loss points of one training: fast early descent toward ``final`` nats-ish, with noise."""
    start = 5.6
    result = []
    for index in range(points):
        progress = until * (index + 1) / points
        loss = final + (start - final) * math.exp(-7.0 * progress) + rng.gauss(0.0, 0.015)
        result.append(
            {
                "t": round(progress * BUDGET_SECONDS, 3),
                "progress": round(progress, 5),
                "step": (index + 1) * 10,
                "loss": round(loss, 5),
            }
        )
    return result


def _gpu_sample(rng: random.Random, at: float, gpus: int, training: bool) -> MonitorSample:
    if gpus <= 0:
        snapshot = GpuSnapshot.no_gpu("no NVIDIA GPU: NVML is not installed on this machine")
    else:
        readings = []
        for index in range(gpus):
            busy = training
            readings.append(
                GpuReading(
                    index=index,
                    name="NVIDIA H100 80GB HBM3",
                    uuid=f"GPU-{index:08d}",
                    utilization_percent=float(rng.randint(88, 99) if busy else rng.randint(0, 4)),
                    memory_used_mb=float(61_440 + rng.randint(-256, 256) if busy else 1_024),
                    memory_total_mb=81_559.0,
                    temperature_c=float(rng.randint(66, 72) if busy else 38),
                    power_w=float(rng.randint(560, 655) if busy else 72),
                    power_limit_w=700.0,
                    process_memory_mb=60_800.0 if busy else None,
                )
            )
        snapshot = GpuSnapshot.ok(readings)
    process = None
    if training:
        process = ProcessReading(
            pids=3,
            cpu_percent=float(rng.randint(96, 104)),
            rss_mb=float(2_900 + rng.randint(0, 60)),
        )
    return MonitorSample(at=at, gpu=snapshot, process=process)


def _worker(
    index: int, gpus: int, number: int, started_at: float, pid: int | None
) -> dict[str, Any]:
    """A worker's entry in the engine's state, training experiment ``number``."""
    return {
        "worker": index,
        "device": f"cuda:{index}" if index < gpus else f"cpu {index}",
        "experiment": number,
        "phase": "training",
        "started_at": started_at,
        "budget_seconds": BUDGET_SECONDS,
        "pid": pid,
    }


def fill_journal(
    journal: Journal,
    *,
    experiments: int = 12,
    phase: str = "training",
    gpus: int = 1,
    samples: int = 40,
    engine_pid: int | None = None,
    seed: int = 7,
    curve_points: int = 60,
    workers: int = 1,
    started_at: float | None = None,
) -> Run:
    """Write a run into ``journal``: the baseline and ``experiments`` decided experiments
    (keeps, discards and the odd crash, with diffs, decisions and events), then one more in
    the given ``phase`` ("training": half trained with live loss points and monitor samples;
    "awaiting_approval": a proposal waiting; "stopped": nothing under way). ``gpus`` = 0
    records "no NVIDIA GPU" samples. ``engine_pid``: the process the state names as the
    engine (None: no engine). Loss points are written for the best and the last ten
    experiments only, so that big journals are quick to build. ``workers`` > 1 (with
    "training"): that many trainings side by side, the first ``started_at`` (Unix time;
    default now) half through its budget, the others further on."""
    rng = random.Random(seed)
    run = journal.create_run(
        tag="nov26",
        branch="cockpit/nov26",
        base_commit=_sha(rng),
        mode=SUPERVISED,
        proposer=names.LLM,
        config={"trainer": {"budget_seconds": BUDGET_SECONDS, "metric": "val_bpb"}},
        corpus_fingerprint="stdlib-5f1c",
    )
    best = BASELINE_BPB
    margin = 0.0015
    knobs = {name: value for name, value, _ in KNOBS}
    best_number = 0
    total = experiments + 1
    curves: dict[int, tuple[int, float]] = {}
    for number in range(total):
        sha = _sha(rng)
        if number == 0:
            experiment = journal.add_experiment(
                run.id,
                0,
                commit_sha=sha,
                parent_commit=sha,
                proposer="baseline",
                description="baseline",
                hypothesis="the unmodified script, to measure against",
                diff="",
                status="evaluating",
                val_bpb=BASELINE_BPB,
                peak_memory_mb=2_870.0,
                lines_of_code=212,
                outcome="ok",
            )
            journal.record_decision(
                experiment.id,
                "keep",
                f"baseline: val_bpb {BASELINE_BPB:.6f} (the mean of 2 runs)",
                run_update={
                    "baseline_val_bpb": BASELINE_BPB,
                    "best_val_bpb": BASELINE_BPB,
                    "best_commit": sha,
                },
            )
            curves[0] = (experiment.id, BASELINE_BPB)
            continue
        name, _start, comment = KNOBS[rng.randrange(len(KNOBS))]
        old = knobs[name]
        factor = rng.choice((0.5, 0.75, 1.25, 1.5, 2.0))
        new = round(old * factor, 6) if old else 0.1
        if name in ("BATCH_SIZE", "N_LAYER", "N_EMBD"):
            new = float(max(1, round(new)))
        crashed = rng.random() < 0.06
        proposer = names.LLM if rng.random() < 0.85 else names.BUILTIN
        description = f"{name.lower().replace('_', ' ')} {old:g} → {new:g}"
        experiment = journal.add_experiment(
            run.id,
            number,
            commit_sha=sha,
            parent_commit=_sha(rng),
            proposer=proposer,
            model=MODEL if proposer == names.LLM else None,
            description=description,
            hypothesis=f"a {'larger' if new > old else 'smaller'} {comment} should lower "
            "val_bpb within the same budget",
            diff=_diff(name, old, new, comment),
            status="evaluating",
            lines_of_code=212,
        )
        if crashed:
            journal.update_experiment(
                experiment.id,
                outcome="crash",
                exit_code=1,
                crash_tail='Traceback (most recent call last):\n  File "train.py", line 201\n'
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            )
            journal.record_decision(
                experiment.id, "crash", "crash: the training process exited with code 1"
            )
            continue
        # Gains get rarer as the run goes on; most changes are noise or worse.
        value = best + rng.gauss(0.004, 0.01) - (0.012 if rng.random() < 0.12 else 0.0)
        value = round(value, 6)
        memory = 2_870.0 + rng.randint(-200, 900)
        journal.update_experiment(
            experiment.id,
            outcome="ok",
            val_bpb=value,
            peak_memory_mb=memory,
            training_seconds=BUDGET_SECONDS,
            details={"evidence": {"best_before": best, "margin": margin}},
        )
        if value < best - margin:
            journal.record_decision(
                experiment.id,
                "keep",
                f"val_bpb {value:.6f} beats the best {best:.6f} by {best - value:.6f} "
                f"(margin {margin:.6f})",
                run_update={"best_val_bpb": value, "best_commit": sha},
            )
            best, best_number = value, number
            knobs[name] = new
        else:
            journal.record_decision(
                experiment.id,
                "discard",
                f"val_bpb {value:.6f} is not better than the best {best:.6f} ({value - best:+.6f})",
            )
        curves[number] = (experiment.id, value)
    for number, (experiment_id, value) in curves.items():
        if number == best_number or number >= total - 10:
            journal.add_metrics(experiment_id, _curve(rng, value * 0.69, curve_points))

    journal.add_event(
        "agent",
        "raise the learning rate tenfold: the edit does not apply",
        run_id=run.id,
        data={"type": "rejected", "reason": "SEARCH block not found in train.py"},
    )
    journal.add_event("note", "try a longer warmup before touching the width", run_id=run.id)
    journal.add_event(
        "agent",
        "Ollama did not answer in 120 s: the built-in proposer stands in",
        run_id=run.id,
        data={"type": "fallback"},
    )

    number = total
    state: dict[str, Any] = {
        "run": run.tag,
        "pid": engine_pid,
        "phase": phase if engine_pid is not None else "stopped",
        "experiment": number,
        "heartbeat": 0.0,
        "proposer": names.LLM,
        "model": MODEL,
        "agent_state": "ready",
        "agent_message": "qwen2.5-coder:7b answered in 41 s",
        "keep_margin_bpb": margin,
        "time_left": None,
        "agent_stream": "",
    }
    if phase in ("training", "awaiting_approval"):
        name, _start, comment = KNOBS[0]
        old = knobs[name]
        sha = _sha(rng)
        experiment = journal.add_experiment(
            run.id,
            number,
            commit_sha=sha,
            parent_commit=_sha(rng),
            proposer=names.LLM,
            model=MODEL,
            description=f"learning rate {old:g} → {old * 1.5:g} with a longer warmup",
            hypothesis="the loss is still falling steeply at the end of the budget: a higher "
            "peak rate should get further in five minutes",
            diff=_diff(name, old, round(old * 1.5, 6), comment),
            status="awaiting_approval" if phase == "awaiting_approval" else "training",
            lines_of_code=212,
            log_path=f"/runs/nov26/{number:04d}/train.log",
        )
        if phase == "training":
            journal.add_metrics(experiment.id, _curve(rng, best * 0.685, curve_points // 2, 0.5))
            state["time_left"] = BUDGET_SECONDS * 0.5
            start = (time.time() if started_at is None else started_at) - BUDGET_SECONDS * 0.5
            state["workers"] = [_worker(0, gpus, number, start, engine_pid)]
            for index in range(1, workers):
                other = journal.add_experiment(
                    run.id,
                    number + index,
                    commit_sha=_sha(rng),
                    parent_commit=_sha(rng),
                    proposer=names.BUILTIN,
                    description=f"{KNOBS[index][0].lower().replace('_', ' ')} x 1.25",
                    hypothesis="",
                    diff="",
                    status="training",
                    lines_of_code=212,
                )
                share = min(0.95, 0.5 + 0.2 * index)
                journal.add_metrics(
                    other.id, _curve(rng, best * 0.69, round(curve_points * share), share)
                )
                state["workers"].append(
                    _worker(index, gpus, other.number, start - BUDGET_SECONDS * 0.2 * index,
                            engine_pid)
                )  # fmt: skip
        else:
            state["agent_stream"] = (
                '{"description": "learning rate with a longer warmup",\n'
                ' "hypothesis": "the loss is still falling steeply at the end of the '
                'budget",\n "edits": [{"search": "LEARNING_RATE = 0.003", "replace": '
                '"LEARNING_RATE = 0.0045"}]}'
            )
    journal.set_state(**state)
    training = phase == "training"
    for index in range(samples):
        sample = _gpu_sample(rng, 1_000.0 + index, gpus, training)
        journal.add_sample(run.id, sample.to_dict())
    final = journal.run(run.id)
    assert final is not None
    return final


def build_workspace(root: Path, experiments: int, **options: Any) -> Path:
    """A folder with a journal of ``experiments`` experiments (no git repository: the
    cockpit only reads the journal); its path. With an ``engine_pid`` and a phase other than
    "stopped", this process holds the workspace's engine lock, as the engine the journal
    names would (see `stand_in_engine`)."""
    root.mkdir(parents=True, exist_ok=True)
    with Journal.open(journal_file(root)) as journal:
        fill_journal(journal, experiments=experiments, **options)
    if options.get("engine_pid") is not None and options.get("phase") != "stopped":
        stand_in_engine(root)
    return root


_STAND_INS: dict[Path, contextlib.ExitStack] = {}


def stand_in_engine(workspace: Path) -> None:
    """Hold ``workspace``'s engine lock in this process until `release_engine` (or until the
    process exits), as an engine holds it while it runs: the screens and `cockpit status`
    take an engine to run while its lock is held, whatever pid the journal names."""
    key = Path(workspace).resolve()
    if key not in _STAND_INS:
        stack = contextlib.ExitStack()
        stack.enter_context(engine_lock(WorkspacePaths(key).cockpit_dir))
        _STAND_INS[key] = stack


def release_engine(workspace: Path) -> None:
    """Let go of a lock `stand_in_engine` holds: the engine it stood for has stopped."""
    stack = _STAND_INS.pop(Path(workspace).resolve(), None)
    if stack is not None:
        stack.close()


# ---------------------------------------------------------------------------------------------
# measuring


def _tmux(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["tmux", *args], capture_output=True, text=True, timeout=15, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"tmux {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _process_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for member in (process, *process.children(recursive=True)):
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def run_ui_bench(experiments: int = 1000, *, idle_seconds: float = 10.0) -> dict[str, Any]:
    """Measure the cockpit on a journal of ``experiments`` experiments in a 160 x 50 tmux
    terminal; print and return the figures (seconds to the first full frame, idle CPU as a
    percentage of one core) with the targets they are held to."""
    if shutil.which("tmux") is None:
        raise RuntimeError("the UI benchmark needs tmux; install it (e.g. apt install tmux)")
    scratch = Path(tempfile.mkdtemp(prefix="cockpit-ui-bench-"))
    session = f"cockpit-ui-bench-{os.getpid()}"
    try:
        built = time.perf_counter()
        workspace = build_workspace(
            scratch / "workspace", experiments, phase="stopped", samples=60, engine_pid=None
        )
        build_seconds = time.perf_counter() - built
        state_dir = scratch / "state"
        command = " ".join(
            [
                f"COCKPIT_STATE_DIR={_quote(str(state_dir))}",
                _quote(sys.executable),
                "-m",
                "cockpit.ui.app",
                _quote(str(workspace)),
            ]
        )
        width, height = TERMINAL_SIZE
        started = time.perf_counter()
        _tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command)
        marker = f"Ledger · {experiments + 1} experiments"
        first_frame: float | None = None
        screen = ""
        while time.perf_counter() - started < FIRST_FRAME_TIMEOUT_SECONDS:
            screen = _tmux("capture-pane", "-p", "-t", session, check=False)
            if marker in screen and f"{experiments}" in screen:
                first_frame = time.perf_counter() - started
                break
            time.sleep(0.02)
        if first_frame is None:
            raise RuntimeError(
                f"the cockpit showed no full ledger within {FIRST_FRAME_TIMEOUT_SECONDS:.0f} s; "
                f"the terminal showed:\n{screen}"
            )
        pane_pid = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        process = psutil.Process(pane_pid)
        time.sleep(1.0)  # let the first frame's work settle before measuring idleness
        cpu_before, clock_before = _process_cpu_seconds(process), time.perf_counter()
        time.sleep(idle_seconds)
        cpu_after, clock_after = _process_cpu_seconds(process), time.perf_counter()
        idle_percent = 100.0 * (cpu_after - cpu_before) / (clock_after - clock_before)
        rss_mb = process.memory_info().rss / 2**20
    finally:
        _tmux("kill-session", "-t", session, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "experiments": experiments,
        "terminal": f"{width}x{height}",
        "journal_build_seconds": round(build_seconds, 2),
        "first_frame_seconds": round(first_frame, 3),
        "first_frame_target_seconds": FIRST_FRAME_TARGET_SECONDS,
        "idle_cpu_percent": round(idle_percent, 2),
        "idle_cpu_target_percent": IDLE_CPU_TARGET_PERCENT,
        "idle_seconds": idle_seconds,
        "rss_mb": round(rss_mb, 1),
    }
    verdict = (
        "ok"
        if first_frame < FIRST_FRAME_TARGET_SECONDS and idle_percent < IDLE_CPU_TARGET_PERCENT
        else "over target"
    )
    print(
        f"cockpit UI on {experiments} experiments ({width}x{height} tmux): first frame "
        f"{first_frame:.2f} s (target < {FIRST_FRAME_TARGET_SECONDS:g} s), idle CPU "
        f"{idle_percent:.2f}% of one core over {idle_seconds:g} s (target < "
        f"{IDLE_CPU_TARGET_PERCENT:g}%), RSS {rss_mb:.0f} MiB: {verdict}"
    )
    return figures


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cockpit.bench.ui_bench [EXPERIMENTS]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    run_ui_bench(int(args[0]) if args else 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
