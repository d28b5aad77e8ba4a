"""The harness's last step: the exported forward loaded in this process and scored on the
validation split (trainer.evaluate), within a time limit and a bound on how far it may grow
this process, and its figures (bits per byte, MFU, sizes and times) put in the run's summary.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil
import torch

from trainer import hardware, limits, readback
from trainer.data import EncodedCorpus, default_cache_dir
from trainer.evaluate import evaluate_program
from trainer.options import EVAL_MEMORY_SHARE
from trainer.outcomes import HarnessStop, Outcome
from trainer.program import ProgramError, load_program
from trainer.record import Run, reported_number
from trainer.supervise import Export
from trainer.training import deadline

# A program whose graph allocates without bound is stopped before it takes the engine's and
# Ollama's memory too. Its resident size is sampled this often (the sample, not an rlimit:
# an address-space limit breaks CUDA, whose reservations are far larger than its use).
MEMORY_SAMPLE_SECONDS = 0.05


def evaluate_export(run: Run, device: torch.device, corpus: EncodedCorpus, export: Export) -> None:
    """Score the export on the validation split into the run's summary, within the evaluation's
    time (limits.evaluation_limit_seconds) and memory (--eval-memory-mb); the
    export's file is closed after, whatever way it ends."""
    options = run.options
    limit = limits.evaluation_limit_seconds(options.budget_seconds)
    with (
        export.file,
        deadline(limit, f"evaluation took longer than {limit:g} s", run.hard_stop),
        memory_bound(eval_memory_limit(options.eval_memory_mb), run.memory_stop),
    ):
        _evaluate(run, device, corpus, export)


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
    seconds = reported_number(reported.get("training_seconds"))
    tokens = reported_number(reported.get("tokens_seen"))
    flops_per_token = reported_number(reported.get("flops_per_token")) or 6.0 * program.num_params
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
        shapes=program.shapes,
        mfu_percent=100.0 * achieved / peak if achieved and peak else None,
        peak_flops=peak,
        # Not kept where it lies in the run's scratch folder, removed when the run ends.
        program=None if run.scratch in export.path.parents else str(export.path),
        program_mb=os.fstat(export.file.fileno()).st_size / 1e6,
        export_seconds=reported_number(exported.get("seconds")),
        evaluation_seconds=evaluation_seconds,
        evaluation_checks_seconds=result.checks_seconds,
    )
