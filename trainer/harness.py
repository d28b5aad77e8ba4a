"""The harness: trains a script in a confined process, then evaluates what it exported.

    python -m trainer --script train.py --budget 300 --metrics metrics.jsonl --summary-json s.json

The script defines `train(ctx)` and returns the trained model. The harness runs it in a
process of its own (trainer.confined), confined by the kernel before the script is loaded: off
the network, writing only its own folder, reading only what Python, PyTorch and the training
split need. That process exports the model's forward (trainer.program) and exits. This
process, which never imports the script, then loads the export and scores it on the held-out
split (trainer.evaluate), computing the loss from the logits itself, and writes the summary of
record where the training process could not write. It reads what the training left in its folder
(the program, the figures file) through trainer.readback, trusting none of it, and bounds how
far the evaluation may grow this process.

The harness owns the clock, the data, the evaluation and the summary. Every way a run can fail
ends with its own exit code (see trainer.outcomes) and a one-line reason, and nothing hangs: a
soft stop is raised into the script at budget + grace, a watchdog ends the training process a
little later, and this process ends the training's whole tree after that. Whatever the training
left running (a forked child, a daemon of its own session) is ended before the evaluation starts.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import psutil
import torch

from trainer import hardware, readback, template_path
from trainer.atomic import write_json_atomic
from trainer.bounds import MB, Bounds, Watch, hint
from trainer.confine import MODES, Confinement
from trainer.confined import TrainingSpec
from trainer.context import MetricsSink
from trainer.data import CorpusError, EncodedCorpus, default_cache_dir, prepare_corpus
from trainer.evaluate import eval_windows, evaluate_program
from trainer.outcomes import HarnessStop, Outcome
from trainer.pacing import Pacing
from trainer.probe import DeviceCheck, check_device
from trainer.program import ProgramError, load_program, open_program
from trainer.summary import format_summary
from trainer.training import HARD_STOP_MARGIN_SECONDS, classify, deadline, export_limit_seconds
from trainer.walls import training_environment, walls_for

HARNESS_VERSION = "2"  # 2: the score comes from the exported forward, in another process
DEFAULT_SEQ_LEN = {"cpu": 256, "cuda": 2048}
DEFAULT_EVAL_TOKENS = {"cpu": 131072, "cuda": 4194304}
EVAL_TIMEOUT_MIN_SECONDS = 60.0
STARTUP_ALLOWANCE_SECONDS = 60.0  # for the training process to start Python and torch
WAIT_POLL_SECONDS = 0.2  # how often the harness looks at the training's clock
PROGRAM_NAME = "model.program"
# Events the training may put in the metrics stream; the harness writes the end itself.
RELAYED_EVENTS = frozenset({"start", "phase", "metric"})
MAX_RECORD_CHARACTERS = 1 << 16
PR_SET_CHILD_SUBREAPER = 36
FIGURES_NAME = "training.json"
# The figures file holds a few hundred bytes of numbers; anything near this is not one.
MAX_FIGURES_BYTES = 1 << 20
# By default the evaluation may grow this process by this share of the machine's memory: a
# program whose graph allocates without bound is stopped before it takes the engine's and
# Ollama's memory too. Its resident size is sampled this often (the sample, not an rlimit:
# an address-space limit breaks CUDA, whose reservations are far larger than its use).
EVAL_MEMORY_SHARE = 0.5
MEMORY_SAMPLE_SECONDS = 0.05


@dataclass
class HarnessOptions:
    """Everything one run needs. Defaults match the shipped config.toml's [trainer] section."""

    script: Path
    budget_seconds: float = 300.0
    grace_seconds: float = 10.0
    device: str = "auto"
    seed: int = 42
    corpus: str = "stdlib"
    seq_len: int = 0  # 0: DEFAULT_SEQ_LEN for the device
    eval_tokens: int = 0  # 0: DEFAULT_EVAL_TOKENS for the device
    threads: int = 0  # 0: every core this process may use
    cpus: tuple[int, ...] = ()  # the cores the run is pinned to; (): those it was given
    cache_dir: Path | None = None
    pacing_path: Path | None = None  # where step plans are remembered; None: in cache_dir
    metrics_path: Path | None = None
    metrics_fd: int | None = None
    summary_json: Path | None = None
    # The training process's folder (the only one it may write); None: beside the summary,
    # or a temporary one.
    work_dir: Path | None = None
    # Where the exported forward is kept; None: beside the summary (or not kept).
    program_path: Path | None = None
    confinement: str = "auto"  # auto, require or off (see trainer.confine)
    # How much the evaluation may grow this process, in MB; 0: EVAL_MEMORY_SHARE of the machine.
    eval_memory_mb: int = 0
    # The compilers' caches shared by every training (faster on a GPU, and a channel from one
    # training to the next: what one leaves there, a later one loads); False: its own, in its
    # folder, gone with it.
    share_compile_cache: bool = False
    # What the training may take of the machine (trainer.bounds).
    bounds: Bounds = field(default_factory=Bounds)


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs the driver shows (their PCI addresses), whether torch can use them or
    not; none where CUDA_VISIBLE_DEVICES hides them on purpose."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return []
    return sorted(os.path.basename(p) for p in glob.glob("/proc/driver/nvidia/gpus/*"))


def resolve_device(name: str, gpus: list[str] | None = None) -> torch.device:
    """`auto` is CUDA when a GPU is usable, else the CPU; but a GPU the driver shows that torch
    cannot use is an error, never a quiet move to the CPU. Asking for CUDA without one is an
    error. ``gpus``: the GPUs the driver shows (default: `visible_gpus`)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        shown = visible_gpus() if gpus is None else gpus
        if shown:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise HarnessStop(
                Outcome.SETUP,
                f"the driver shows {len(shown)} NVIDIA GPU(s) ({', '.join(shown)}) but torch "
                f"{torch.__version__} ({build}) cannot use them; install a torch build for this "
                "driver's CUDA (`cockpit doctor` compares them), or set [trainer] device = "
                '"cpu" to train on the CPU on purpose',
            )
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise HarnessStop(
            Outcome.SETUP, f"unknown device {name!r}; use auto, cpu or cuda[:N]"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessStop(
            Outcome.SETUP,
            "device cuda was asked for but no CUDA GPU is usable (no driver, no device, or a "
            "CPU-only torch build); use --device cpu",
        )
    if device.type not in ("cpu", "cuda"):
        raise HarnessStop(
            Outcome.SETUP, f"device {name!r} is not supported; use auto, cpu or cuda[:N]"
        )
    return device


# --- the training process -----------------------------------------------------------------


class Relay:
    """Follows the training's metrics pipe and passes its records on, minus what only the
    harness may say: no end record, and the start record only once (the training process
    writes it before the script is loaded)."""

    def __init__(self, read_fd: int, sink: MetricsSink, limit_bytes: int = 0) -> None:
        self._stream = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._sink = sink
        # The metrics bound (0: none): past it nothing more is passed on, the stream is drained
        # so that the training does not block on it, and `overflow` says so.
        self._limit = limit_bytes
        self.received = 0
        self.overflow: str | None = None
        self.start: dict[str, Any] | None = None
        self._began = time.perf_counter()
        # From the training process's start to its training phase: its start-up cost.
        self.startup_seconds: float | None = None
        # When the training process said it starts the script (before any of the script ran,
        # so the script cannot move it), and when the process ended: the script's own time.
        self.script_began: float | None = None
        self.script_ended: float = 0.0
        self._thread = threading.Thread(target=self._follow, name="metrics-relay", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        # Lines are read in bounded pieces: an endless line cannot fill this process's memory
        # (a piece of one fails to parse and is dropped).
        for line in iter(lambda: self._stream.readline(MAX_RECORD_CHARACTERS), ""):
            self.received += len(line)
            if self._limit and self.received > self._limit:
                if self.overflow is None:
                    self.overflow = (
                        f"the training wrote more than {readback.size_text(self._limit)} of "
                        f"metrics, past its bound; {hint('metrics')}"
                    )
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") not in RELAYED_EVENTS:
                continue
            if record["event"] == "start":
                if self.start is not None:
                    continue
                self.start = record
            if record.get("phase") == "training" and self.startup_seconds is None:
                self.script_began = time.perf_counter()
                self.startup_seconds = self.script_began - self._began
            self._sink.write(record)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


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


def eval_memory_limit(megabytes: int) -> int:
    """How many bytes the evaluation may grow this process by (0 MB: the default share)."""
    if megabytes > 0:
        return megabytes * 1_000_000
    return int(EVAL_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@contextmanager
def memory_bound(limit_bytes: int, on_hit: Callable[[str], None]) -> Iterator[None]:
    """Watch this process's resident memory while the block runs; past ``limit_bytes`` more than
    it held at the start, call ``on_hit`` with the reason (from another thread: the block may be
    inside one huge allocation and would never see an exception)."""
    process = psutil.Process()
    start = process.memory_info().rss
    done = threading.Event()

    def watch() -> None:
        while not done.wait(MEMORY_SAMPLE_SECONDS):
            grown = process.memory_info().rss - start
            if grown > limit_bytes:
                on_hit(
                    f"evaluating it grew the harness by "
                    f"{readback.size_text(grown)}, past the evaluation's limit of "
                    f"{readback.size_text(limit_bytes)}: its program allocates more memory than "
                    "the evaluation allows (the limit is --eval-memory-mb, by default "
                    f"{EVAL_MEMORY_SHARE:.0%} of this machine's memory)"
                )
                return

    thread = threading.Thread(target=watch, name="harness-memory-bound", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Run:
    """One harness run: state that the summary is built from, whatever way the run ends."""

    def __init__(self, options: HarnessOptions) -> None:
        self.options = options
        self.started = time.perf_counter()
        self.summary: dict[str, Any] = {"status": "setup"}
        self.training: dict[str, Any] = {}  # what the training process reported
        self.sink = MetricsSink.open(options.metrics_path, options.metrics_fd)
        self.child: subprocess.Popen[bytes] | None = None
        self.device_check: DeviceCheck | None = None
        self._finished = threading.Lock()

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = dict(self.summary)
        reported = self.training
        seconds = _number(reported.get("training_seconds"))
        tokens = _number(reported.get("tokens_seen"))
        figures["training_seconds"] = seconds
        figures["total_seconds"] = time.perf_counter() - self.started
        if tokens is not None:
            figures["total_tokens_M"] = tokens / 1e6
            if seconds:
                figures["tokens_per_second"] = tokens / seconds
        steps = reported.get("num_steps")
        if isinstance(steps, int):
            figures["num_steps"] = steps
        for key in ("peak_vram_mb", "peak_rss_mb"):
            if _number(reported.get(key)) is not None:
                figures[key] = reported[key]
        return figures

    def finish(self, outcome: Outcome, reason: str | None) -> int:
        """Print the summary block, write its JSON and the final metrics line; once per run."""
        if not self._finished.acquire(blocking=False):
            return int(outcome)
        figures = self.figures()
        figures["status"] = outcome.status
        figures["exit_code"] = int(outcome)
        if reason:
            figures["reason"] = reason.replace("\n", " ")
        if outcome is not Outcome.OK:
            figures.pop("val_bpb", None)
        self.sink.write({"event": "end", **figures})
        self.sink.close()
        if self.options.summary_json is not None:
            write_json_atomic(self.options.summary_json, figures)
        sys.stdout.write(format_summary(figures) + "\n")
        sys.stdout.flush()
        return int(outcome)

    def hard_stop(self, reason: str) -> None:
        """Called from the watchdog thread: the evaluation ignored the soft stop."""
        if self._finished.locked():
            return
        os._exit(self.finish(Outcome.TIMEOUT, reason))

    def memory_stop(self, reason: str) -> None:
        """Called from the memory bound's thread: the evaluation grew past its limit. The main
        thread may be inside the allocation that grows it, so the process ends from here."""
        if self._finished.locked():
            return
        os._exit(self.finish(Outcome.BAD_MODEL, f"the exported model was refused: {reason}"))


def _prepare(run: Run) -> tuple[torch.device, EncodedCorpus]:
    options = run.options
    if options.confinement not in MODES:
        raise HarnessStop(Outcome.SETUP, f"--confinement must be one of {', '.join(MODES)}")
    try:
        device = resolve_device(options.device)
    except HarnessStop as refused:
        # Said as the probe's refusal would be: a device no training here can use stops the
        # engine with the reason instead of crashing experiment after experiment.
        run.summary["device_check"] = _refusal(refused.reason)
        raise
    if options.cpus:
        # Pinned before any thread pool starts: torch's threads and the training process
        # inherit the set, so trainings side by side never share a core.
        try:
            os.sched_setaffinity(0, options.cpus)
        except (OSError, ValueError) as exc:
            raise HarnessStop(
                Outcome.SETUP, f"cannot run on cores {list(options.cpus)}: {exc}"
            ) from None
    threads = options.threads or hardware.available_cores()
    if not options.script.is_file():
        raise HarnessStop(Outcome.SETUP, f"training script {options.script} not found")
    if options.budget_seconds <= 0:
        raise HarnessStop(
            Outcome.SETUP, f"the budget must be positive, got {options.budget_seconds}"
        )
    # After the pinning: a probe that runs now runs on the cores the training will.
    check = check_device(device, options.confinement, options.cache_dir or default_cache_dir())
    run.summary["device_check"] = {
        "usable": check.usable,
        "layer": check.layer,
        "message": check.message,
        "cached": check.cached,
    }
    if not check.usable or check.layer is None:
        raise HarnessStop(Outcome.SETUP, f"the device probe refused the device: {check.message}")
    run.device_check = check
    try:
        corpus = prepare_corpus(options.corpus, options.cache_dir)
    except (CorpusError, OSError) as exc:
        raise HarnessStop(Outcome.SETUP, str(exc)) from exc
    seq_len = options.seq_len or DEFAULT_SEQ_LEN[device.type]
    eval_tokens = options.eval_tokens or DEFAULT_EVAL_TOKENS[device.type]
    run.summary.update(
        device=str(device),
        device_name=hardware.device_name(device),
        threads=threads,
        seed=options.seed,
        budget_seconds=options.budget_seconds,
        seq_len=seq_len,
        corpus=corpus.name,
        corpus_fingerprint=corpus.fingerprint,
        vocab_size=corpus.vocab_size,
        harness_version=HARNESS_VERSION,
        torch_version=torch.__version__,
        script=str(options.script),
        eval_tokens=eval_windows(corpus.val_tokens, seq_len, eval_tokens) * seq_len,
    )
    return device, corpus


def _refusal(message: str) -> dict[str, Any]:
    return {"usable": False, "layer": None, "message": message, "cached": False}


def _work_dir(options: HarnessOptions) -> Path:
    if options.work_dir is not None:
        work_dir = options.work_dir
    elif options.summary_json is not None:
        work_dir = options.summary_json.parent / "training"
    else:
        work_dir = Path(tempfile.mkdtemp(prefix="cockpit-training-"))
    # Absolute: the training process starts in this folder and is handed paths inside it.
    work_dir = work_dir.absolute()
    shutil.rmtree(work_dir, ignore_errors=True)  # what an earlier run left there is not reused
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


def _train(run: Run, device: torch.device, corpus: EncodedCorpus) -> Export:
    """Run the training process to its end; return its export."""
    options = run.options
    cache_dir = options.cache_dir or default_cache_dir()
    work_dir = _work_dir(options)
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
    script_limit = budget + grace + HARD_STOP_MARGIN_SECONDS + export_limit_seconds(budget)
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
        if script_began is None and now - began > STARTUP_ALLOWANCE_SECONDS:
            return None, HarnessStop(
                Outcome.TIMEOUT,
                f"the training process did not start the script within "
                f"{STARTUP_ALLOWANCE_SECONDS:g} s (importing Python and torch) and was ended",
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
    seconds = _number(reported.get("training_seconds"))
    steps = reported.get("num_steps")
    if seconds is not None and isinstance(steps, int):
        change = pacing.settle(steps, seconds, run.options.budget_seconds)
        if change is not None:
            run.summary["plan_settled"] = change


def _evaluate(run: Run, device: torch.device, corpus: EncodedCorpus, export: Export) -> None:
    options = run.options
    run.sink.write({"event": "phase", "phase": "evaluating"})
    seq_len = int(run.summary["seq_len"])
    started = time.perf_counter()
    try:
        program = load_program(export.path, device, export.file)
    except ProgramError as exc:
        raise HarnessStop(Outcome.BAD_MODEL, f"the exported model was refused: {exc}") from exc
    result = evaluate_program(
        program,
        corpus.load("val"),
        seq_len,
        int(run.summary["eval_tokens"]),
        device,
        corpus.vocab_size,
    )
    evaluation_seconds = time.perf_counter() - started
    reported = run.training
    seconds = _number(reported.get("training_seconds"))
    tokens = _number(reported.get("tokens_seen"))
    flops_per_token = _number(reported.get("flops_per_token")) or 6.0 * program.num_params
    tokens_per_second = tokens / seconds if tokens and seconds else 0.0
    achieved = flops_per_token * tokens_per_second
    peak = hardware.peak_flops(device, options.cache_dir or default_cache_dir(), achieved)
    exported = reported.get("export")
    if not isinstance(exported, dict):
        exported = {}
    run.summary.update(
        val_bpb=result.val_bpb,
        val_loss=result.val_loss_nats,
        eval_tokens=result.tokens,
        num_params_M=program.num_params / 1e6,
        mfu_percent=100.0 * achieved / peak if achieved and peak else None,
        peak_flops=peak,
        program=str(export.path),
        program_mb=os.fstat(export.file.fileno()).st_size / 1e6,
        export_seconds=_number(exported.get("seconds")),
        evaluation_seconds=evaluation_seconds,
        evaluation_checks_seconds=result.checks_seconds,
    )


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    raise HarnessStop(Outcome.INTERRUPTED, f"stopped by {signal.Signals(signum).name}")


def run_harness(options: HarnessOptions) -> int:
    """Train in a confined process, evaluate its export here; print and write the summary."""
    run = Run(options)
    previous = {sig: signal.signal(sig, _on_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            device, corpus = _prepare(run)
            export = _train(run, device, corpus)
            limit = max(EVAL_TIMEOUT_MIN_SECONDS, options.budget_seconds)
            with (
                export.file,
                deadline(limit, f"evaluation took longer than {limit:g} s", run.hard_stop),
                memory_bound(eval_memory_limit(options.eval_memory_mb), run.memory_stop),
            ):
                _evaluate(run, device, corpus, export)
        except BaseException as exc:  # every way out becomes an outcome and a summary
            if run.child is not None and run.child.poll() is None:
                end_descendants()
            outcome, reason = classify(exc)
            if outcome is Outcome.SETUP:
                print(f"error: {reason}", file=sys.stderr, flush=True)
            elif not isinstance(exc, HarnessStop):
                traceback.print_exc()
            return run.finish(outcome, reason)
        return run.finish(Outcome.OK, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    defaults = HarnessOptions(script=Path("train.py"))
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Run a training script's train(ctx) under a wall-clock budget and evaluate "
        "the model it returns (validation bits per byte).",
    )
    parser.add_argument(
        "--script", type=Path, default=None, help="the script (default: the bundled template)"
    )
    parser.add_argument(
        "--budget", type=float, default=defaults.budget_seconds, help="training seconds"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=defaults.grace_seconds,
        help="seconds past the budget before a timeout",
    )
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--corpus", default=defaults.corpus, help="stdlib, text:DIR or parquet:DIR")
    parser.add_argument(
        "--seq-len", type=int, default=defaults.seq_len, help="0: 256 on CPU, 2048 on CUDA"
    )
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=defaults.eval_tokens,
        help="0: 131072 on CPU, 4194304 on CUDA",
    )
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="CPU threads, 0: all cores"
    )
    parser.add_argument(
        "--cpus",
        type=_core_list,
        default=(),
        help="pin the run to these cores, e.g. 0,1 (default: the cores it was given)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="where encoded corpora are kept"
    )
    parser.add_argument(
        "--pacing",
        type=Path,
        default=None,
        help="the file that remembers step plans (default: pacing.json in the cache folder)",
    )
    sink = parser.add_mutually_exclusive_group()
    sink.add_argument(
        "--metrics", type=Path, default=None, help="append live metrics (JSON lines) here"
    )
    sink.add_argument(
        "--metrics-fd", type=int, default=None, help="write live metrics to this descriptor"
    )
    parser.add_argument(
        "--summary-json", type=Path, default=None, help="write the summary here as JSON"
    )
    parser.add_argument(
        "--confinement",
        choices=MODES,
        default="auto",
        help="confine the training process: off the network, writing only its own folder, "
        "reading only what it needs (auto: as far as the kernel allows; require: fail where it "
        "does not fully; off)",
    )
    parser.add_argument(
        "--share-compile-cache",
        action="store_true",
        help="let the training use the compilers' caches (Inductor, Triton, CUDA) in the cache "
        "folder, shared with every other training: faster on a GPU, but what one training leaves "
        "there a later one loads (default: a cache of its own, in its folder)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="the training process's folder (default: 'training' beside the summary JSON)",
    )
    parser.add_argument(
        "--program",
        type=Path,
        default=None,
        help="where to keep the exported model (default: beside the summary JSON)",
    )
    parser.add_argument(
        "--eval-memory-mb",
        type=int,
        default=defaults.eval_memory_mb,
        help="how much the evaluation may grow the harness, in MB "
        f"(0: {EVAL_MEMORY_SHARE * 100:.0f}%% of this machine's memory)",
    )
    bounds = defaults.bounds
    for flag, default, what in (
        ("--memory-limit-mb", bounds.memory_mb, "the training's memory, in MB (0: half the "
         "machine's)"),
        ("--max-processes", bounds.processes, "the training's processes and threads (0: no bound)"),
        ("--disk-limit-mb", bounds.disk_mb, "what the training may write into its folder, in MB "
         "(0: no bound)"),
        ("--metrics-limit-mb", bounds.metrics_mb, "the training's metrics stream, in MB (0: no "
         "bound)"),
    ):  # fmt: skip
        parser.add_argument(flag, type=_count, default=default, help=what)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def _core_list(text: str) -> tuple[int, ...]:
    try:
        cores = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cores must be numbers like 0,1, got {text!r}") from None
    if not cores or min(cores) < 0:
        raise argparse.ArgumentTypeError(f"cores must be numbers like 0,1, got {text!r}")
    return cores


def main(argv: list[str] | None = None) -> int:
    """The harness's command line."""
    args = build_parser().parse_args(argv)
    # Paths are made absolute here, once: the training process runs in another folder, and a
    # path relative to this one would name another file there.
    paths = {
        name: getattr(args, name).absolute() if getattr(args, name) is not None else None
        for name in ("cache_dir", "pacing", "metrics", "summary_json", "work_dir", "program")
    }
    options = HarnessOptions(
        script=(args.script or template_path()).resolve(),
        budget_seconds=args.budget,
        grace_seconds=args.grace,
        device=args.device,
        seed=args.seed,
        corpus=args.corpus,
        seq_len=args.seq_len,
        eval_tokens=args.eval_tokens,
        threads=args.threads,
        cpus=args.cpus,
        cache_dir=paths["cache_dir"],
        pacing_path=paths["pacing"],
        metrics_path=paths["metrics"],
        metrics_fd=args.metrics_fd,
        summary_json=paths["summary_json"],
        confinement=args.confinement,
        work_dir=paths["work_dir"],
        program_path=paths["program"],
        eval_memory_mb=args.eval_memory_mb,
        share_compile_cache=args.share_compile_cache,
        bounds=Bounds(
            args.memory_limit_mb, args.max_processes, args.disk_limit_mb, args.metrics_limit_mb
        ),
    )
    return run_harness(options)
