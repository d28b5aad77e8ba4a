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

This module is the run's order: its preparation (the device, the device probe, the corpus),
then the training process (trainer.supervise), the evaluation (trainer.validate) and the
summary (trainer.record); its options and command line are trainer.options.

The harness owns the clock, the data, the evaluation and the summary. Every way a run can fail
ends with its own exit code (see trainer.outcomes) and a one-line reason, and nothing hangs: a
soft stop is raised into the script at budget + grace, a watchdog ends the training process a
little later, and this process ends the training's whole tree after that. Whatever the training
left running (a forked child, a daemon of its own session) is ended before the evaluation starts.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from types import FrameType
from typing import Any

import torch

from trainer import hardware
from trainer.confine import MODES
from trainer.data import CorpusError, EncodedCorpus, default_cache_dir, prepare_corpus
from trainer.device import resolve_device
from trainer.evaluate import eval_windows
from trainer.options import HarnessOptions
from trainer.outcomes import HarnessStop, Outcome
from trainer.probe import check_device
from trainer.readback import remove_tree
from trainer.record import Run
from trainer.supervise import end_descendants, run_training
from trainer.training import classify
from trainer.validate import evaluate_export

HARNESS_VERSION = "2"  # 2: the score comes from the exported forward, in another process
DEFAULT_SEQ_LEN = {"cpu": 256, "cuda": 2048}
DEFAULT_EVAL_TOKENS = {"cpu": 131072, "cuda": 4194304}


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


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    raise HarnessStop(Outcome.INTERRUPTED, f"stopped by {signal.Signals(signum).name}")


def run_harness(options: HarnessOptions) -> int:
    """Train in a confined process, evaluate its export here; print and write the summary."""
    run = Run(options)
    previous = {sig: signal.signal(sig, _on_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            device, corpus = _prepare(run)
            export = run_training(run, device, corpus)
            evaluate_export(run, device, corpus, export)
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
        if run.scratch is not None:
            remove_tree(run.scratch)


def main(argv: list[str] | None = None) -> int:
    """The harness's command line."""
    return run_harness(HarnessOptions.parse(argv))
