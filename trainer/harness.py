"""The harness: runs a training script under a wall-clock budget and evaluates what it returns.

    python -m trainer --script train.py --budget 300 --metrics metrics.jsonl --summary-json s.json

The script defines `train(ctx)` and returns the trained model. The harness owns the clock,
the data (training batches only; the held-out split is not even loaded until training is
over), the evaluation and the summary. Every way a run can fail ends with its own exit code
(see trainer.outcomes) and a one-line reason, and nothing hangs: a soft stop is raised into
the script at budget + grace, and a watchdog ends the process a little later if the script
does not yield.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

import numpy as np
import torch

from trainer import hardware, template_path
from trainer.confine import MODES, Confinement
from trainer.data import CorpusError, EncodedCorpus, default_cache_dir, prepare_corpus
from trainer.evaluate import check_model, eval_windows, evaluate_bpb
from trainer.outcomes import HarnessStop, Outcome
from trainer.pacing import Pacing
from trainer.summary import format_summary, write_json_atomic

HARNESS_VERSION = "1"
DEFAULT_SEQ_LEN = {"cpu": 256, "cuda": 2048}
DEFAULT_EVAL_TOKENS = {"cpu": 131072, "cuda": 4194304}
# A watchdog ends the process this long after the soft stop if the script never yields.
HARD_STOP_MARGIN_SECONDS = 10.0
# A reported loss this many times the loss of uniform guessing means training has diverged.
DIVERGED_FACTOR = 3.0
DIVERGED_AFTER_REPORTS = 5
EVAL_TIMEOUT_MIN_SECONDS = 60.0


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
    cache_dir: Path | None = None
    pacing_path: Path | None = None  # where step plans are remembered; None: in cache_dir
    metrics_path: Path | None = None
    metrics_fd: int | None = None
    summary_json: Path | None = None
    # What confines this process (see trainer.confine), or why it could not be confined when
    # that was required; None: the harness runs in a process that was not started for it.
    confinement: Confinement | Exception | None = None


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when a GPU is usable, else the CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


# --- offline ------------------------------------------------------------------------------

_LOOPBACK_HOSTS = {"localhost", "ip6-localhost", "::1", "0.0.0.0", ""}


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _offline_audit_hook(event: str, args: tuple[Any, ...]) -> None:
    """Refuse any network connection that leaves the machine (model hubs, kernel downloads).

    Local sockets stay allowed: compiler worker pools and the like talk over them."""
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == socket.AF_UNIX or not isinstance(address, tuple):
            return
        host = address[0]
    else:
        return
    if not _is_local(host):
        raise ConnectionRefusedError(
            f"network access to {host!r} is blocked: training runs are offline "
            "(no model hubs, no downloads)"
        )


_offline_installed = False


def install_offline_guard() -> None:
    """Make this process offline for good (an audit hook cannot be removed)."""
    global _offline_installed
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    if not _offline_installed:
        sys.addaudithook(_offline_audit_hook)
        _offline_installed = True


# --- live metrics -------------------------------------------------------------------------


class MetricsSink:
    """JSON lines, flushed one by one so that another process can follow them live."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | None, fd: int | None) -> MetricsSink:
        if fd is not None:
            return cls(os.fdopen(fd, "w", buffering=1, closefd=False))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(open(path, "a", buffering=1, encoding="utf-8"))
        return cls(None)

    def write(self, record: dict[str, Any]) -> None:
        if self._stream is None:
            return
        line = json.dumps(record, allow_nan=True, default=float)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                self._stream = None  # the reader went away; the run goes on

    def close(self) -> None:
        if self._stream is not None:
            with self._lock:
                try:
                    self._stream.close()
                except OSError:
                    pass
                self._stream = None


# --- the context handed to train(ctx) ------------------------------------------------------


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


class Context:
    """What a training script gets: the device, the clock, training batches and live reporting.

    Only the training split is reachable from here; the evaluation data is loaded after
    train(ctx) returns."""

    def __init__(
        self,
        device: torch.device,
        seed: int,
        budget_seconds: float,
        seq_len: int,
        vocab_size: int,
        train_tokens: np.ndarray,
        sink: MetricsSink,
        pacing: Pacing | None = None,
    ) -> None:
        self.device = device
        self.seed = seed
        self.budget_seconds = budget_seconds
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.tokens_seen = 0
        self.steps_reported = 0
        self.last_step = 0
        self.planned_steps: int | None = None  # the step plan, once the script asked for one
        self.failure: HarnessStop | None = None
        self._sink = sink
        self._pacing = pacing
        self._generator = torch.Generator().manual_seed(seed)
        # Small corpora live on the device itself, so sampling a batch costs no host copy.
        data = torch.from_numpy(np.asarray(train_tokens))
        on_device = device.type == "cuda" and data.numel() <= 2**30
        self._data = data.to(device) if on_device else data
        self._started: float | None = None
        self._diverged_above = DIVERGED_FACTOR * math.log(vocab_size)

    # the clock
    def start_clock(self) -> None:
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far."""
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def time_left(self) -> float:
        """Seconds of the budget still left (negative once it is spent)."""
        return self.budget_seconds - self.elapsed()

    def progress(self) -> float:
        """The fraction of the budget spent, from 0 to 1: the natural clock for schedules."""
        return min(1.0, max(0.0, self.elapsed() / self.budget_seconds))

    def plan_steps(self, steps_done: int, seconds_per_step: float) -> int:
        """How many steps this run should take in all, at the pace measured so far.

        The first run of a script fixes the number; later runs of the same script (and
        budget, device, threads) that share its plan file reuse it, so that two runs differing
        only by their seed do identical work and a rerun with the same seed gives the same
        result. The engine gives each experiment run a plan file of its own.
        Train until the plan is done or time runs out, whichever comes first. Metric
        records from then on carry the plan (``planned_steps``): the cockpit compares curves
        at the same point of their schedules."""
        if self._pacing is None:
            planned = steps_done + int(max(0.0, self.time_left()) / seconds_per_step)
        else:
            planned = self._pacing.plan_steps(steps_done, seconds_per_step, self.time_left())
        self.planned_steps = planned
        return planned

    # data
    def batch(
        self, batch_size: int, seq_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of training windows: inputs and next-token targets, int64, on the device."""
        length = self.seq_len if seq_len is None else int(seq_len)
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {length}")
        highest_start = self._data.numel() - length - 1
        if highest_start < 1:
            raise ValueError(
                f"the training split has {self._data.numel()} tokens, too few for seq_len {length}"
            )
        starts = torch.randint(0, highest_start, (batch_size,), generator=self._generator)
        index = starts.unsqueeze(1) + torch.arange(length + 1)
        windows = self._data[index.to(self._data.device)].to(self.device, non_blocking=True).long()
        self.tokens_seen += batch_size * length
        return windows[:, :-1], windows[:, 1:]

    # reporting
    def report(self, step: int | None = None, loss: Any = None, **metrics: Any) -> None:
        """Record live metrics (a JSON line that the cockpit follows while the run goes on).

        A NaN or infinite loss ends the run at once, and so does a loss that has exploded far
        above what uniform guessing scores."""
        record: dict[str, Any] = {"event": "metric", "t": round(self.elapsed(), 4)}
        record["progress"] = round(self.progress(), 5)
        if step is not None:
            self.last_step = int(step)
            record["step"] = self.last_step
        if self.planned_steps is not None:
            record["planned_steps"] = self.planned_steps
        for name, value in metrics.items():
            try:
                record[name] = _as_float(value)
            except (TypeError, ValueError):
                record[name] = str(value)
        self.steps_reported += 1
        if loss is not None:
            loss_value = _as_float(loss)
            record["loss"] = loss_value
            self._sink.write(record)
            if not math.isfinite(loss_value):
                self._fail(
                    HarnessStop(
                        Outcome.NAN, f"training loss became {loss_value} at step {self.last_step}"
                    )
                )
            if loss_value > self._diverged_above and self.steps_reported > DIVERGED_AFTER_REPORTS:
                self._fail(
                    HarnessStop(
                        Outcome.DIVERGED,
                        f"training loss exploded to {loss_value:.3g} at step {self.last_step} "
                        f"(uniform guessing scores {math.log(self.vocab_size):.2f})",
                    )
                )
        else:
            self._sink.write(record)

    def log(self, message: str) -> None:
        """Print a line to the run's log, flushed."""
        print(message, flush=True)

    def _fail(self, stop: HarnessStop) -> None:
        # Remembered as well as raised: a script that swallows the exception still fails.
        self.failure = stop
        raise stop


# --- time limits ------------------------------------------------------------------------


@contextmanager
def _deadline(seconds: float, reason: str, on_hard_stop: Any) -> Iterator[None]:
    """Raise a timeout into the main thread after `seconds`; end the process if it never yields."""

    def soft_stop(signum: int, frame: FrameType | None) -> None:
        raise HarnessStop(Outcome.TIMEOUT, reason)

    previous = signal.signal(signal.SIGALRM, soft_stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds + HARD_STOP_MARGIN_SECONDS):
            on_hard_stop(reason + " (the script did not yield; the process was ended)")

    thread = threading.Thread(target=watchdog, name="harness-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        done.set()


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    raise HarnessStop(Outcome.INTERRUPTED, f"stopped by {signal.Signals(signum).name}")


# --- running a script ----------------------------------------------------------------------


def load_script(path: Path) -> ModuleType:
    """Import a training script from its path as a fresh module."""
    spec = importlib.util.spec_from_file_location("cockpit_train_script", path)
    if spec is None or spec.loader is None:
        raise HarnessStop(Outcome.SETUP, f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _count_params(model: Any) -> int | None:
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None
    try:
        return sum(p.numel() for p in parameters())
    except Exception:
        return None


def _flops_per_token(model: Any, num_params: int | None) -> float | None:
    """The model's own estimate when it offers one (estimate_flops()), else 6 x parameters."""
    estimate = getattr(model, "estimate_flops", None)
    if callable(estimate):
        try:
            return float(estimate())
        except Exception:
            pass
    return 6.0 * num_params if num_params else None


def _classify(exc: BaseException) -> tuple[Outcome, str]:
    if isinstance(exc, HarnessStop):
        return exc.outcome, exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return Outcome.INTERRUPTED, "interrupted (SIGINT)"
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()
    first_line = message[0] if message else type(exc).__name__
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return Outcome.OOM, first_line[:300]
    return Outcome.CRASH, first_line[:300]


class Run:
    """One harness run: state that the summary is built from, whatever way the run ends."""

    def __init__(self, options: HarnessOptions) -> None:
        self.options = options
        self.started = time.perf_counter()
        self.summary: dict[str, Any] = {"status": "setup"}
        self.ctx: Context | None = None
        self.training_seconds: float | None = None
        self.sink = MetricsSink.open(options.metrics_path, options.metrics_fd)
        self._finished = threading.Lock()

    def figures(self) -> dict[str, Any]:
        ctx = self.ctx
        training_seconds = self.training_seconds
        if training_seconds is None and ctx is not None:
            training_seconds = ctx.elapsed()
        figures: dict[str, Any] = dict(self.summary)
        figures["training_seconds"] = training_seconds
        figures["total_seconds"] = time.perf_counter() - self.started
        if ctx is not None:
            figures["total_tokens_M"] = ctx.tokens_seen / 1e6
            figures["num_steps"] = ctx.last_step
            if training_seconds:
                figures["tokens_per_second"] = ctx.tokens_seen / training_seconds
        figures["peak_vram_mb"] = hardware.peak_device_memory_mb()
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
        """Called from the watchdog thread: the script ignored the soft stop."""
        if self._finished.locked():
            return  # the main thread is already writing the summary
        os._exit(self.finish(Outcome.TIMEOUT, reason))


def _prepare(run: Run) -> tuple[torch.device, EncodedCorpus]:
    options = run.options
    confinement = options.confinement
    if isinstance(confinement, Exception):
        raise HarnessStop(Outcome.SETUP, str(confinement))
    if confinement is None:
        confinement = Confinement(None, "the harness runs in-process, not as `python -m trainer`")
    run.summary["confinement"] = confinement.to_dict()
    print(confinement.describe(), file=sys.stderr, flush=True)
    install_offline_guard()
    hardware.keep_freed_memory()
    device = resolve_device(options.device)
    os.environ["COCKPIT_DEVICE"] = device.type  # read by the template to pick its sizes
    threads = options.threads or hardware.available_cores()
    torch.set_num_threads(threads)
    if not options.script.is_file():
        raise HarnessStop(Outcome.SETUP, f"training script {options.script} not found")
    if options.budget_seconds <= 0:
        raise HarnessStop(
            Outcome.SETUP, f"the budget must be positive, got {options.budget_seconds}"
        )
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
    # The optimisers import torch._dynamo on their first step (about a second); import it
    # now so that the training budget measures training, not imports.
    importlib.import_module("torch._dynamo")

    random.seed(options.seed)
    np.random.seed(options.seed % 2**32)
    torch.manual_seed(options.seed)
    return device, corpus


def _train_and_evaluate(run: Run) -> None:
    options = run.options
    device, corpus = _prepare(run)
    seq_len = int(run.summary["seq_len"])
    cache_dir = options.cache_dir or default_cache_dir()
    pacing = Pacing(
        options.pacing_path or cache_dir / "pacing.json",
        Pacing.make_key(
            options.script,
            run.summary["device_name"],
            run.summary["threads"],
            options.budget_seconds,
            seq_len,
            corpus.fingerprint,
            torch.__version__,
        ),
    )
    ctx = Context(
        device=device,
        seed=options.seed,
        budget_seconds=options.budget_seconds,
        seq_len=seq_len,
        vocab_size=corpus.vocab_size,
        train_tokens=corpus.load("train"),
        sink=run.sink,
        pacing=pacing,
    )
    run.sink.write({"event": "start", "phase": "importing", **run.summary})
    module = load_script(options.script)
    train = getattr(module, "train", None)
    if not callable(train):
        raise HarnessStop(Outcome.CRASH, f"{options.script.name} defines no train(ctx) function")
    run.ctx = ctx
    run.sink.write(
        {"event": "phase", "phase": "training", "budget_seconds": options.budget_seconds}
    )
    hardware.reset_peak_device_memory()
    soft_limit = options.budget_seconds + options.grace_seconds
    with _deadline(
        soft_limit,
        f"training ran past its budget of {options.budget_seconds:g} s "
        f"(+{options.grace_seconds:g} s grace)",
        run.hard_stop,
    ):
        ctx.start_clock()
        model = train(ctx)
        run.training_seconds = ctx.elapsed()
    if ctx.failure is not None:  # the script caught and swallowed a stop
        raise ctx.failure
    if pacing.plan is not None:
        run.summary.update(planned_steps=pacing.plan, plan_reused=pacing.reused)
        change = pacing.settle(ctx.last_step, run.training_seconds, options.budget_seconds)
        if change is not None:
            run.summary["plan_settled"] = change
    run.sink.write({"event": "phase", "phase": "evaluating"})
    if hasattr(model, "eval") and callable(model.eval):
        model.eval()
    num_params = _count_params(model)
    flops_per_token = _flops_per_token(model, num_params)
    eval_limit = max(EVAL_TIMEOUT_MIN_SECONDS, options.budget_seconds)
    with _deadline(eval_limit, f"evaluation took longer than {eval_limit:g} s", run.hard_stop):
        check_model(model, corpus.vocab_size, seq_len, device)
        result = evaluate_bpb(
            model, corpus.load("val"), seq_len, int(run.summary["eval_tokens"]), device
        )
    tokens_per_second = ctx.tokens_seen / run.training_seconds if run.training_seconds else 0.0
    achieved = flops_per_token * tokens_per_second if flops_per_token else 0.0
    peak = hardware.peak_flops(device, cache_dir, achieved)
    run.summary.update(
        val_bpb=result.val_bpb,
        val_loss=result.val_loss_nats,
        eval_tokens=result.tokens,
        num_params_M=num_params / 1e6 if num_params else None,
        mfu_percent=(
            100.0 * flops_per_token * tokens_per_second / peak if flops_per_token and peak else None
        ),
        peak_flops=peak,
    )


def run_harness(options: HarnessOptions) -> int:
    """Run one training and evaluation; print and write the summary; return the exit code."""
    run = Run(options)
    previous = {sig: signal.signal(sig, _on_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            _train_and_evaluate(run)
        except BaseException as exc:  # every way out becomes an outcome and a summary
            outcome, reason = _classify(exc)
            if outcome in (Outcome.CRASH, Outcome.OOM):
                traceback.print_exc()
            elif isinstance(exc, HarnessStop) and outcome is Outcome.SETUP:
                print(f"error: {reason}", file=sys.stderr, flush=True)
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
        help="take the training process off the network (auto: where the kernel allows; "
        "require: fail where it does not; off)",
    )
    return parser


def main(argv: list[str] | None = None, confinement: Confinement | Exception | None = None) -> int:
    """The harness's command line; ``confinement`` is what `python -m trainer` put in force
    before torch was imported."""
    args = build_parser().parse_args(argv)
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
        cache_dir=args.cache_dir,
        pacing_path=args.pacing,
        metrics_path=args.metrics,
        metrics_fd=args.metrics_fd,
        summary_json=args.summary_json,
        confinement=confinement,
    )
    return run_harness(options)
