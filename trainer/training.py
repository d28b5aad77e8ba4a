"""The confined training process's work: run ``train(ctx)`` under the budget, export the model.

Runs after trainer.confined has confined the process. Every way the training can end becomes
an exit code (trainer.outcomes) and a figures file for the harness, which trusts none of it
for the score: the score comes from the exported forward, evaluated elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
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
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import numpy as np
import torch

from trainer import hardware, limits
from trainer.atomic import write_json_atomic
from trainer.confine import Confinement
from trainer.confined import TrainingSpec
from trainer.context import Context, MetricsSink
from trainer.outcomes import HarnessStop, Outcome
from trainer.pacing import Pacing
from trainer.program import ExportError, export_forward

# --- offline ------------------------------------------------------------------------------

_LOOPBACK_HOSTS = {"localhost", "ip6-localhost", "::1", "0.0.0.0", ""}


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _offline_audit_hook(event: str, args: tuple[Any, ...]) -> None:
    """Refuse Python's own connections that leave the machine with a clear message (model hubs,
    kernel downloads). The kernel's confinement is the wall; this is the early word."""
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


def install_offline_guard() -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    sys.addaudithook(_offline_audit_hook)


# --- time limits ------------------------------------------------------------------------


@contextmanager
def deadline(seconds: float, reason: str, on_hard_stop: Any) -> Iterator[None]:
    """Raise a timeout into the main thread after `seconds`; end the process if it never yields
    (limits.HARD_STOP_MARGIN_SECONDS later)."""

    def soft_stop(signum: int, frame: FrameType | None) -> None:
        raise HarnessStop(Outcome.TIMEOUT, reason)

    previous = signal.signal(signal.SIGALRM, soft_stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds + limits.HARD_STOP_MARGIN_SECONDS):
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


def _flops_per_token(model: Any, num_params: int | None) -> float | None:
    """The model's own estimate when it offers one (estimate_flops()), else 6 x parameters."""
    estimate = getattr(model, "estimate_flops", None)
    if callable(estimate):
        try:
            return float(estimate())
        except Exception:
            pass
    return 6.0 * num_params if num_params else None


def _count_params(model: Any) -> int | None:
    try:
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


def classify(exc: BaseException) -> tuple[Outcome, str]:
    if isinstance(exc, HarnessStop):
        return exc.outcome, exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return Outcome.INTERRUPTED, "interrupted (SIGINT)"
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()
    first_line = message[0] if message else type(exc).__name__
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return Outcome.OOM, first_line[:300]
    return Outcome.CRASH, first_line[:300]


class Training:
    """One training: the figures the harness reads back, whatever way it ends."""

    def __init__(self, spec: TrainingSpec, sink: MetricsSink) -> None:
        self.spec = spec
        self.sink = sink
        self.figures: dict[str, Any] = {}
        self.ctx: Context | None = None
        self.training_seconds: float | None = None
        self._finished = threading.Lock()

    def finish(self, outcome: Outcome, reason: str | None) -> int:
        """Write the figures file once; return the exit code."""
        if not self._finished.acquire(blocking=False):
            return int(outcome)
        figures = dict(self.figures, status=outcome.status, exit_code=int(outcome))
        ctx = self.ctx
        if ctx is not None:
            seconds = self.training_seconds if self.training_seconds is not None else ctx.elapsed()
            figures.update(
                training_seconds=seconds,
                tokens_seen=ctx.tokens_seen,
                num_steps=ctx.last_step,
            )
        if reason:
            figures["reason"] = reason.replace("\n", " ")
        figures["peak_vram_mb"] = hardware.peak_device_memory_mb()
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.sink.close()
        write_json_atomic(Path(self.spec.result_path), figures, indent=None)
        return int(outcome)

    def hard_stop(self, reason: str) -> None:
        """Called from the watchdog thread: the script ignored the soft stop."""
        if self._finished.locked():
            return
        os._exit(self.finish(Outcome.TIMEOUT, reason))


def _train(training: Training, confinement: Confinement | Exception) -> None:
    spec = training.spec
    if isinstance(confinement, Exception):
        raise HarnessStop(Outcome.SETUP, str(confinement))
    print(confinement.describe(), file=sys.stderr, flush=True)
    install_offline_guard()
    sys.dont_write_bytecode = True  # the script's folder is not writable
    hardware.keep_freed_memory()
    device = torch.device(spec.device)
    os.environ["COCKPIT_DEVICE"] = device.type  # read by the template to pick its sizes
    torch.set_num_threads(spec.threads)
    script = Path(spec.script)
    pacing = Pacing(Path(spec.pacing_path), Pacing.make_key(script, *spec.pacing_facts))
    ctx = Context(
        device=device,
        seed=spec.seed,
        budget_seconds=spec.budget_seconds,
        seq_len=spec.seq_len,
        vocab_size=spec.vocab_size,
        train_tokens=np.fromfile(spec.train_path, dtype=np.uint8),
        sink=training.sink,
        pacing=pacing,
    )
    training.sink.write(
        {
            "event": "start",
            "phase": "importing",
            "confinement": confinement.to_dict(),
            "device": str(device),
            "threads": spec.threads,
            "seq_len": spec.seq_len,
            "budget_seconds": spec.budget_seconds,
        }
    )
    # The optimisers import torch._dynamo on their first step (about a second); import it
    # now so that the training budget measures training, not imports.
    importlib.import_module("torch._dynamo")
    random.seed(spec.seed)
    np.random.seed(spec.seed % 2**32)
    torch.manual_seed(spec.seed)
    training.ctx = ctx
    training.sink.write(
        {"event": "phase", "phase": "training", "budget_seconds": spec.budget_seconds}
    )
    hardware.reset_peak_device_memory()
    with deadline(
        limits.soft_stop_seconds(spec.budget_seconds, spec.grace_seconds),
        f"training ran past its budget of {spec.budget_seconds:g} s "
        f"(+{spec.grace_seconds:g} s grace)",
        training.hard_stop,
    ):
        # The budget's clock starts before the first line of the script runs: whatever it
        # does while it is imported (module-level work, threads started there) is spent from
        # the budget, not from the allowance for starting Python and torch, which is over.
        ctx.start_clock()
        module = load_script(script)
        train = getattr(module, "train", None)
        if not callable(train):
            raise HarnessStop(Outcome.CRASH, f"{script.name} defines no train(ctx) function")
        model = train(ctx)
        training.training_seconds = ctx.elapsed()
    if ctx.failure is not None:  # the script caught and swallowed a stop
        raise ctx.failure
    training.figures.update(planned_steps=pacing.plan, plan_reused=pacing.reused)
    if model is None:
        raise HarnessStop(Outcome.BAD_MODEL, "train(ctx) returned None; it must return the model")
    num_params = _count_params(model)
    training.figures.update(
        num_params=num_params, flops_per_token=_flops_per_token(model, num_params)
    )
    training.sink.write({"event": "phase", "phase": "exporting"})
    limit = limits.export_limit_seconds(spec.budget_seconds)
    example = torch.zeros((2, spec.seq_len), dtype=torch.long, device=device)
    started = time.perf_counter()
    with deadline(limit, f"exporting the model took longer than {limit:g} s", training.hard_stop):
        try:
            exported = export_forward(model, example, Path(spec.program_path))
        except ExportError as exc:
            raise HarnessStop(Outcome.BAD_MODEL, str(exc)) from exc
    training.figures["export"] = {**exported, "seconds": time.perf_counter() - started}


def run_training(spec: TrainingSpec, confinement: Confinement | Exception) -> int:
    """Train and export; write the figures file; return the exit code."""
    training = Training(spec, MetricsSink.open(None, spec.metrics_fd))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_terminate)
    try:
        _train(training, confinement)
    except BaseException as exc:  # every way out becomes an outcome
        outcome, reason = classify(exc)
        if outcome in (Outcome.CRASH, Outcome.OOM):
            traceback.print_exc()
        elif outcome is Outcome.SETUP:
            print(f"error: {reason}", file=sys.stderr, flush=True)
        return training.finish(outcome, reason)
    return training.finish(Outcome.OK, None)
