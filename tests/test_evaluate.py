"""The fixed evaluator, in process on the CPU with small models: what bits per byte it gives,
that it is deterministic and reads a fixed slice, and that check_model rejects every way a
returned model can break the contract (even when a script patches torch after import)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer import evaluate
from trainer.evaluate import check_model, eval_windows, evaluate_bpb
from trainer.outcomes import HarnessStop, Outcome

VOCAB = 256
SEQ_LEN = 32
CPU = torch.device("cpu")


def sample_text(lines: int = 300) -> np.ndarray:
    """Repetitive text bytes, as the held-out split of a small corpus would be."""
    body = "".join(f"file {n % 40:03d} line {n} says hello to the model\n" for n in range(lines))
    return np.frombuffer(body.encode(), dtype=np.uint8).copy()


class Model(nn.Module):
    """The contract: model(idx) -> logits; model(idx, targets, reduction) -> losses taken
    with F.cross_entropy looked up at call time (as a training script's would be)."""

    vocab = VOCAB

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        logits = self.logits(idx)
        if targets is None:
            return logits
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction
        )
        return losses.view(targets.shape) if reduction == "none" else losses


class ZeroLogits(Model):
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, self.vocab)


class Bigram(Model):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]

    @classmethod
    def random(cls) -> Bigram:
        return cls(torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(0)))

    @classmethod
    def fitted(cls, tokens: np.ndarray) -> Bigram:
        """Log-probabilities from add-one-smoothed bigram counts of the data."""
        counts = np.ones((VOCAB, VOCAB))
        np.add.at(counts, (tokens[:-1], tokens[1:]), 1)
        return cls(torch.from_numpy(np.log(counts / counts.sum(1, keepdims=True))).float())


class PrefixMean(Bigram):
    """Causal context: position t sees the mean of the rows of tokens 0..t."""

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.table[idx]
        steps = torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        return rows.cumsum(dim=1) / steps


class WholeSequenceMean(Bigram):
    """Not causal: every position adds the mean of the whole sequence's rows."""

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.table[idx]
        return rows + rows.mean(dim=1, keepdim=True)


class NarrowVocab(Model):
    vocab = 128

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, self.vocab)


class FakeLoss(Bigram):
    """Honest logits, made-up losses."""

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        if targets is None:
            return self.logits(idx)
        return torch.zeros(targets.shape)


class MeanLossOnly(Bigram):
    """Ignores reduction='none': one loss per sequence instead of per token."""

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        losses = super().forward(idx, targets, "none")
        return losses if targets is None else losses.mean(dim=1)


class NaNLogits(Model):
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.full((*idx.shape, self.vocab), float("nan"))


def bad_model_reason(model: Any) -> str:
    with pytest.raises(HarnessStop) as info:
        check_model(model, VOCAB, SEQ_LEN, CPU)
    assert info.value.outcome is Outcome.BAD_MODEL
    return info.value.reason


# --- bits per byte ----------------------------------------------------------------------------


def test_uniform_guessing_scores_eight_bits_per_byte() -> None:
    """All-zero logits score log2(256) = 8 bits per byte. Per-token losses are float32, so
    8.0 is met to float32 precision (about 2e-8), not to 1e-9."""
    tokens = sample_text()
    result = evaluate_bpb(ZeroLogits(), tokens, SEQ_LEN, 4096, CPU)
    assert result.val_bpb == pytest.approx(8.0, abs=1e-7)
    assert result.val_loss_nats == pytest.approx(math.log(256), abs=1e-6)
    assert result.tokens == result.bytes == 4096  # 128 windows of 32 targets


def test_the_same_model_scores_the_identical_number_and_learning_helps() -> None:
    """Two evaluations of one model give the same float bit for bit; a bigram table fitted on
    the data scores far below uniform guessing, and a random one above it."""
    tokens = sample_text()
    fitted = Bigram.fitted(tokens)
    first = evaluate_bpb(fitted, tokens, SEQ_LEN, 4096, CPU).val_bpb
    second = evaluate_bpb(fitted, tokens, SEQ_LEN, 4096, CPU).val_bpb
    assert first == second
    assert first < 3.0
    assert evaluate_bpb(Bigram.random(), tokens, SEQ_LEN, 4096, CPU).val_bpb > 8.0


def test_only_the_fixed_leading_slice_is_scored() -> None:
    """Bytes past the scored windows (and their last target) change nothing; a byte inside
    them changes the number."""
    tokens = sample_text()
    span = 10 * SEQ_LEN
    model = Bigram.fitted(tokens)
    base = evaluate_bpb(model, tokens, SEQ_LEN, span, CPU)
    assert base.tokens == span
    beyond = tokens.copy()
    beyond[span + 1 :] = 0
    assert evaluate_bpb(model, beyond, SEQ_LEN, span, CPU).val_bpb == base.val_bpb
    inside = tokens.copy()
    inside[span] = 0  # the last window's last target
    assert evaluate_bpb(model, inside, SEQ_LEN, span, CPU).val_bpb != base.val_bpb


def test_eval_windows_is_capped_by_the_budget_and_by_the_split() -> None:
    """Whole windows only: the token budget caps them, and so does the split, which needs one
    extra token for the last target."""
    assert eval_windows(100_000, 64, 4096) == 64
    assert eval_windows(1000, 64, 1_000_000) == 999 // 64 == 15
    assert eval_windows(65, 64, 4096) == 1
    assert eval_windows(64, 64, 4096) == 0
    assert eval_windows(0, 64, 4096) == 0
    assert eval_windows(100_000, 64, 100) == 1


def test_a_split_smaller_than_one_window_is_a_setup_error() -> None:
    """A split with no room for seq_len + 1 tokens cannot be scored: SETUP, with the sizes."""
    tokens = sample_text()[:SEQ_LEN]
    with pytest.raises(HarnessStop) as info:
        evaluate_bpb(ZeroLogits(), tokens, SEQ_LEN, 4096, CPU)
    assert info.value.outcome is Outcome.SETUP
    assert f"holds {SEQ_LEN} tokens" in info.value.reason and str(SEQ_LEN + 1) in info.value.reason


def test_nan_logits_end_the_evaluation_as_nan() -> None:
    """A model that outputs NaN is stopped with the NAN outcome, not given a score."""
    with pytest.raises(HarnessStop) as info:
        evaluate_bpb(NaNLogits(), sample_text(), SEQ_LEN, 4096, CPU)
    assert info.value.outcome is Outcome.NAN
    assert "nan" in info.value.reason.lower()


# --- check_model ------------------------------------------------------------------------------


def test_correct_causal_models_pass_the_checks() -> None:
    """A bigram table and a model that uses its whole past (a prefix mean) both pass."""
    check_model(Bigram.random(), VOCAB, SEQ_LEN, CPU)
    check_model(PrefixMean.random(), VOCAB, SEQ_LEN, CPU)
    check_model(ZeroLogits(), VOCAB, SEQ_LEN, CPU)


def test_returning_none_or_a_non_callable_is_a_bad_model() -> None:
    """None and a non-callable are refused with what train(ctx) must return."""
    assert "returned None" in bad_model_reason(None)
    assert "callable model, got dict" in bad_model_reason({"weights": 1})


def test_a_model_of_the_wrong_vocabulary_is_refused_with_both_sizes() -> None:
    """Logits over 128 tokens against a 256-token tokenizer: both numbers in the reason."""
    reason = bad_model_reason(NarrowVocab())
    assert "128" in reason and "256" in reason and "ctx.vocab_size" in reason


def test_made_up_losses_are_refused() -> None:
    """Per-token losses that are not the cross-entropy of the model's own logits."""
    assert "not the cross-entropy" in bad_model_reason(FakeLoss.random())


def test_a_model_that_looks_ahead_is_refused() -> None:
    """Early predictions that change when later tokens change mean the model is not causal."""
    assert "looks ahead" in bad_model_reason(WholeSequenceMean.random())


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (MeanLossOnly.random, "one loss per token"),
        (lambda: lambda idx, targets=None, reduction="mean": torch.zeros(2, 3), "shaped (batch"),
        (
            lambda: (
                lambda idx, targets=None, reduction="mean": (
                    torch.zeros(*idx.shape, VOCAB) if targets is None else [0.0]
                )
            ),
            "must return a tensor",
        ),
    ],
    ids=["loss-per-sequence", "logits-2d", "losses-list"],
)
def test_wrongly_shaped_outputs_are_refused(make: Callable[[], Any], fragment: str) -> None:
    """Losses of the wrong shape or type, and logits of the wrong shape, are BAD_MODEL."""
    assert fragment in bad_model_reason(make())


def test_patching_cross_entropy_after_import_cannot_fool_the_check() -> None:
    """The evaluator bound F.cross_entropy when it was imported: a script that replaces it with
    a function returning zeros makes its own losses zero, and is still caught."""
    original = F.cross_entropy
    assert evaluate._cross_entropy is original

    def zeros(logits: torch.Tensor, targets: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        losses = torch.zeros(targets.shape, dtype=logits.dtype)
        return losses if kwargs.get("reduction") == "none" else losses.sum()

    model = Bigram.random()
    check_model(model, VOCAB, SEQ_LEN, CPU)  # honest while torch is intact
    F.cross_entropy = zeros  # type: ignore[assignment]
    try:
        x = torch.zeros(1, 4, dtype=torch.long)
        assert model(x, x, reduction="none").abs().sum().item() == 0.0  # the patch took hold
        with pytest.raises(HarnessStop) as info:
            check_model(model, VOCAB, SEQ_LEN, CPU)
    finally:
        F.cross_entropy = original  # type: ignore[assignment]
    assert info.value.outcome is Outcome.BAD_MODEL
    assert "not the cross-entropy" in info.value.reason
    assert torch.nn.functional.cross_entropy is original


def test_a_model_with_nan_logits_is_reported_as_nan_not_as_a_bad_model() -> None:
    with pytest.raises(HarnessStop) as info:
        check_model(NaNLogits(), VOCAB, SEQ_LEN, CPU)
    assert info.value.outcome is Outcome.NAN


def test_one_token_windows_skip_the_look_ahead_probe() -> None:
    check_model(PrefixMean.random(), VOCAB, 1, CPU)  # nothing later to look at; no crash


def test_eval_tokens_below_one_window_names_the_setting() -> None:
    with pytest.raises(HarnessStop, match="eval_tokens") as info:
        evaluate_bpb(ZeroLogits(), sample_text(), SEQ_LEN, SEQ_LEN - 1, CPU)
    assert info.value.outcome is Outcome.SETUP
