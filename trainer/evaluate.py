"""The fixed evaluator: validation bits per byte, and the checks a model must pass first.

The number that decides every keep or discard comes from here, never from what a training
script prints. It is computed over a fixed slice of held-out bytes, cut into fixed windows
and fixed batches, so the same model on the same data gives the identical number.

Before it is trusted, a returned model is probed on a fixed batch: it must predict over the
tokenizer's whole vocabulary, its per-token losses must be the cross-entropy of its own
logits (a model cannot report a loss of its own making), and it must not look ahead (its
predictions for early positions may not change when later tokens do).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.outcomes import HarnessStop, Outcome

# Bound before any training script is imported, so that a script patching
# torch.nn.functional cannot change how the evaluator scores it.
_cross_entropy = F.cross_entropy
_EVAL_BATCH_TOKENS = 65536  # tokens per evaluation batch; fixed, so batching never varies
_PROBE_SEED = 1234


@dataclass(frozen=True)
class EvalResult:
    val_bpb: float
    val_loss_nats: float  # mean cross-entropy per token
    tokens: int  # target tokens scored
    bytes: int  # bytes those tokens stand for


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (how the model trains there); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _bad(reason: str) -> HarnessStop:
    return HarnessStop(Outcome.BAD_MODEL, reason)


def _per_token_losses(model: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    losses = model(x, y, reduction="none")
    if not isinstance(losses, torch.Tensor):
        raise _bad(
            "model(idx, targets, reduction='none') must return a tensor of per-token losses, "
            f"got {type(losses).__name__}"
        )
    if losses.numel() != y.numel():
        raise _bad(
            "model(idx, targets, reduction='none') must return one loss per token "
            f"({y.numel()} for a {tuple(y.shape)} batch), got shape {tuple(losses.shape)}"
        )
    return losses.reshape(y.shape).float()


def check_model(model: Any, vocab_size: int, seq_len: int, device: torch.device) -> None:
    """Probe a returned model on a fixed batch; raise HarnessStop(BAD_MODEL) with the reason."""
    if model is None:
        raise _bad("train(ctx) returned None; it must return the trained model")
    if not callable(model):
        raise _bad(f"train(ctx) must return a callable model, got {type(model).__name__}")
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    half = seq_len // 2
    x = torch.randint(0, vocab_size, (2, seq_len), generator=generator).to(device)
    y = torch.randint(0, vocab_size, (2, seq_len), generator=generator).to(device)
    x_later_changed = x.clone()
    x_later_changed[:, half:] = torch.randint(
        0, vocab_size, (2, seq_len - half), generator=generator
    ).to(device)
    strict = device.type == "cpu"
    with torch.inference_mode(), autocast_for(device):
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
            shape = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise _bad(f"model(idx) must return logits shaped (batch, time, vocab), got {shape}")
        if not torch.isfinite(logits).all():
            raise HarnessStop(Outcome.NAN, "the model's logits hold NaN or inf")
        if logits.shape[-1] != vocab_size:
            raise _bad(
                f"the model predicts over {logits.shape[-1]} tokens but the tokenizer has "
                f"{vocab_size}; set the model's vocabulary to ctx.vocab_size"
            )
        losses = _per_token_losses(model, x, y)
        expected = _cross_entropy(
            logits.float().reshape(-1, vocab_size), y.reshape(-1), reduction="none"
        ).reshape(y.shape)
        tolerance = 1e-3 if strict else 5e-2
        gap = (losses - expected).abs().max().item()
        if not gap <= tolerance * max(1.0, expected.abs().max().item()):
            raise _bad(
                "the model's per-token losses are not the cross-entropy of its own logits "
                f"(largest gap {gap:.4g}); compute the loss from the logits it returns"
            )
        if half == 0:
            return  # a one-token window has no later token to look ahead to
        early = model(x_later_changed)[:, :half].float()
        drift = (early - logits[:, :half].float()).abs().max().item()
        if not drift <= (1e-4 if strict else 5e-2) * max(1.0, logits.float().abs().max().item()):
            raise _bad(
                "the model looks ahead: its predictions for early positions change when later "
                f"tokens change (by up to {drift:.4g}); its attention must be causal"
            )


def eval_windows(val_length: int, seq_len: int, eval_tokens: int) -> int:
    """How many non-overlapping windows of seq_len targets the evaluation scores."""
    return max(0, min(eval_tokens // seq_len, (val_length - 1) // seq_len))


def evaluate_bpb(
    model: Callable[..., Any],
    val_tokens: np.ndarray,
    seq_len: int,
    eval_tokens: int,
    device: torch.device,
    bytes_per_token: float = 1.0,
) -> EvalResult:
    """Validation bits per byte of a model over the first fixed windows of the held-out split."""
    windows = eval_windows(len(val_tokens), seq_len, eval_tokens)
    if eval_tokens < seq_len:
        raise HarnessStop(
            Outcome.SETUP,
            f"eval_tokens ({eval_tokens}) is smaller than one window of seq_len ({seq_len}); "
            "raise eval_tokens or lower seq_len",
        )
    if windows == 0:
        raise HarnessStop(
            Outcome.SETUP,
            f"the validation split holds {len(val_tokens)} tokens, fewer than one window of "
            f"{seq_len + 1}; use a larger corpus or a shorter seq_len",
        )
    span = windows * seq_len
    stream = torch.from_numpy(np.array(val_tokens[: span + 1], dtype=np.int64))
    inputs = stream[:span].view(windows, seq_len)
    targets = stream[1 : span + 1].view(windows, seq_len)
    rows_per_batch = max(1, _EVAL_BATCH_TOKENS // seq_len)
    total_nats = 0.0
    with torch.inference_mode(), autocast_for(device):
        for start in range(0, windows, rows_per_batch):
            x = inputs[start : start + rows_per_batch].to(device, non_blocking=True)
            y = targets[start : start + rows_per_batch].to(device, non_blocking=True)
            total_nats += _per_token_losses(model, x, y).double().sum().item()
    mean_nats = total_nats / span
    val_bpb = total_nats / (math.log(2) * span * bytes_per_token)
    if not math.isfinite(val_bpb):
        raise HarnessStop(
            Outcome.NAN, f"the evaluated loss is {val_bpb}: the model outputs NaN or inf"
        )
    return EvalResult(
        val_bpb=val_bpb, val_loss_nats=mean_nats, tokens=span, bytes=int(span * bytes_per_token)
    )
