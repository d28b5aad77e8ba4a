"""The fixed evaluator: bits per byte of an exported forward, computed from its logits.

The number that decides every keep or discard comes from here. It runs in the harness's own
process, which never imports the training script: the model arrives as a program file
(trainer.program) that can only compute logits from tokens. The per-token cross-entropy is
computed here from those logits, over a fixed slice of held-out bytes cut into fixed windows
and fixed batches, so the same model on the same data gives the identical number.

Before the number is trusted, the program must pass checks on the very batches it is scored
on, at a place chosen with a seed drawn in this process (the training process cannot know it):

- it predicts over the tokenizer's whole vocabulary, with finite logits;
- it is deterministic: the same input twice gives the same logits (the program format already
  admits only pure operators; this is the proof on the machine at hand);
- it is causal on real text: in one scored batch, every row's tokens after a secret point
  are replaced by other held-out text and the rows are shuffled; the logits before that point
  must not change. That catches looking ahead within a window and across the windows of a
  batch (consecutive windows are consecutive text), however the program tells real text from
  a probe, since the check is made on the real text it is scored on.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.outcomes import HarnessStop, Outcome
from trainer.program import Program

_EVAL_BATCH_TOKENS = 65536  # tokens per evaluation batch; fixed, so batching never varies
_DETERMINISM_ROWS = 4
_POSITIONS_PER_ROW = 16  # logits compared per row in the causality check
# How far logits may move where nothing they may see has changed, relative to the largest
# logit: kernels are bitwise repeatable for equal shapes on the CPU; bf16 on a GPU less so.
_TOLERANCE = {"cpu": 1e-4, "cuda": 1e-2}


@dataclass(frozen=True)
class EvalResult:
    val_bpb: float
    val_loss_nats: float  # mean cross-entropy per token
    tokens: int  # target tokens scored
    bytes: int  # bytes those tokens stand for
    checks_seconds: float = 0.0  # spent on the determinism and causality checks


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (how the model trains there); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _bad(reason: str) -> HarnessStop:
    return HarnessStop(Outcome.BAD_MODEL, reason)


def eval_windows(val_length: int, seq_len: int, eval_tokens: int) -> int:
    """How many non-overlapping windows of seq_len targets the evaluation scores."""
    return max(0, min(eval_tokens // seq_len, (val_length - 1) // seq_len))


def _logits(program: Program, x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    try:
        logits = program(x)
    except HarnessStop:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _bad(
            f"the exported model failed to run: {type(exc).__name__}: {first}"[:300]
        ) from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise _bad(f"model(idx) must return logits shaped (batch, time, vocab), got {shape}")
    if logits.shape[-1] != vocab_size:
        raise _bad(
            f"the model predicts over {logits.shape[-1]} tokens but the tokenizer has "
            f"{vocab_size}; set the model's vocabulary to ctx.vocab_size"
        )
    if not torch.isfinite(logits).all():
        raise HarnessStop(Outcome.NAN, "the model's logits hold NaN or inf")
    return logits


def _token_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in nats, in float32, from the logits alone."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class _Checks:
    """The secret choices of one evaluation, and the checks made with them."""

    def __init__(self, batches: int, device: torch.device) -> None:
        self.generator = torch.Generator().manual_seed(secrets.randbits(62))
        self.batch = int(torch.randint(0, batches, (1,), generator=self.generator))
        self.device = device
        self.tolerance = _TOLERANCE["cuda" if device.type == "cuda" else "cpu"]

    def _gap(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        gap = (a.float() - b.float()).abs().max().item()
        return gap, self.tolerance * max(1.0, a.float().abs().max().item())

    def deterministic(self, program: Program, x: torch.Tensor, vocab_size: int) -> None:
        rows = x[:_DETERMINISM_ROWS]
        first, second = _logits(program, rows, vocab_size), _logits(program, rows, vocab_size)
        if not torch.equal(first, second):
            gap = (first.float() - second.float()).abs().max().item()
            raise _bad(
                "the model is not deterministic: the same input twice gave logits apart by up "
                f"to {gap:.4g}; its forward must not keep state or draw random numbers"
            )

    def causal(
        self,
        program: Program,
        x: torch.Tensor,
        logits: torch.Tensor,
        stream: torch.Tensor,
        vocab_size: int,
    ) -> None:
        rows, length = x.shape
        if length < 2:
            return
        g = self.generator
        # Half the rows keep all their text (their last position is compared too: its target
        # is the first token of the next window); the others change after a secret point.
        cuts = torch.randint(1, length, (rows,), generator=g)
        cuts[torch.rand(rows, generator=g) < 0.5] = length
        order = torch.randperm(rows, generator=g)
        changed = x.clone()
        sources = torch.randint(0, stream.numel() - length, (rows,), generator=g)
        for row in range(rows):
            cut = int(cuts[row])
            start = int(sources[row])
            changed[row, cut:] = stream[start : start + length - cut].to(x.device)
        after = _logits(program, changed[order], vocab_size)
        for new_row, row in enumerate(order.tolist()):
            cut = int(cuts[row])
            picks = torch.randint(0, cut, (_POSITIONS_PER_ROW,), generator=g)
            positions = torch.unique(torch.cat([picks, torch.tensor([cut - 1])])).to(x.device)
            gap, allowed = self._gap(logits[row, positions], after[new_row, positions])
            if not gap <= allowed:
                raise _bad(
                    "the model looks ahead: on held-out text, its predictions for a position "
                    f"changed (by up to {gap:.4g}) when only later tokens, or the other rows of "
                    "the batch, changed; attention must be causal and rows independent"
                )


def evaluate_program(
    program: Program,
    tokens: np.ndarray,
    seq_len: int,
    eval_tokens: int,
    device: torch.device,
    vocab_size: int,
    bytes_per_token: float = 1.0,
) -> EvalResult:
    """Bits per byte of a program over the first fixed windows of a held-out split, after the
    checks (see the module's docstring); HarnessStop says why a program is refused."""
    windows = eval_windows(len(tokens), seq_len, eval_tokens)
    if eval_tokens < seq_len:
        raise HarnessStop(
            Outcome.SETUP,
            f"eval_tokens ({eval_tokens}) is smaller than one window of seq_len ({seq_len}); "
            "raise eval_tokens or lower seq_len",
        )
    if windows == 0:
        raise HarnessStop(
            Outcome.SETUP,
            f"the held-out split holds {len(tokens)} tokens, fewer than one window of "
            f"{seq_len + 1}; use a larger corpus or a shorter seq_len",
        )
    span = windows * seq_len
    stream = torch.from_numpy(np.array(tokens, dtype=np.int64))
    inputs = stream[:span].view(windows, seq_len)
    targets = stream[1 : span + 1].view(windows, seq_len)
    rows_per_batch = max(1, _EVAL_BATCH_TOKENS // seq_len)
    batches = math.ceil(windows / rows_per_batch)
    checks = _Checks(batches, device)
    checks_seconds = 0.0
    total_nats = 0.0
    with torch.inference_mode(), autocast_for(device):
        for index in range(batches):
            start = index * rows_per_batch
            x = inputs[start : start + rows_per_batch].to(device, non_blocking=True)
            y = targets[start : start + rows_per_batch].to(device, non_blocking=True)
            logits = _logits(program, x, vocab_size)
            total_nats += _token_nats(logits, y).double().sum().item()
            if index == checks.batch:
                started = time.perf_counter()
                checks.deterministic(program, x, vocab_size)
                checks.causal(program, x, logits, stream, vocab_size)
                checks_seconds = time.perf_counter() - started
            del logits
    mean_nats = total_nats / span
    val_bpb = total_nats / (math.log(2) * span * bytes_per_token)
    if not math.isfinite(val_bpb):
        raise HarnessStop(
            Outcome.NAN, f"the evaluated loss is {val_bpb}: the model outputs NaN or inf"
        )
    return EvalResult(
        val_bpb=val_bpb,
        val_loss_nats=mean_nats,
        tokens=span,
        bytes=int(span * bytes_per_token),
        checks_seconds=checks_seconds,
    )
