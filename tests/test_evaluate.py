"""The fixed evaluator on exported programs, on the CPU with small models: what bits per byte
it gives, that it is deterministic and reads a fixed slice, that it refuses every way a model
can break the contract (wrong shapes, look-ahead within a window or across the rows of a
batch), and that the template scores the same as the old in-process evaluation did."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainer import template_path
from trainer.evaluate import eval_windows, evaluate_program
from trainer.outcomes import HarnessStop, Outcome
from trainer.program import Program, export_forward, load_program

VOCAB = 256
SEQ_LEN = 32
CPU = torch.device("cpu")


def sample_text(lines: int = 300) -> np.ndarray:
    """Repetitive text bytes, as the held-out split of a small corpus would be."""
    body = "".join(f"file {n % 40:03d} line {n} says hello to the model\n" for n in range(lines))
    return np.frombuffer(body.encode(), dtype=np.uint8).copy()


class Bigram(nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
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


class Zeros(Bigram):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx] * 0.0


class PrefixMean(Bigram):
    """Causal context: position t sees the mean of the rows of tokens 0..t."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.table[idx]
        steps = torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        return rows.cumsum(dim=1) / steps


class WholeSequenceMean(Bigram):
    """Not causal: every position adds the mean of the whole window's rows."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.table[idx]
        return rows + rows.mean(dim=1, keepdim=True)


class PeeksAtTheNextRow(Bigram):
    """Causal within a window, but its last position reads the first token of the next row
    of the batch: in an evaluation batch of consecutive windows, that is its target."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self.table[idx]
        following = torch.roll(idx[:, 0], -1, dims=0)
        cheat = torch.nn.functional.one_hot(following, VOCAB).float() * 30.0
        last = logits[:, -1:, :] + cheat.unsqueeze(1)
        return torch.cat([logits[:, :-1, :], last], dim=1)


class NarrowVocab(Bigram):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx][..., :128]


class Flat(Bigram):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx].sum(dim=-1)


class NaNLogits(Bigram):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx] * float("nan")


def program_of(model: nn.Module, tmp_path: Path, seq_len: int = SEQ_LEN) -> Program:
    path = tmp_path / f"{type(model).__name__}.program"
    export_forward(model, torch.zeros((2, seq_len), dtype=torch.long), path)
    return load_program(path, CPU)


def score(program: Program, tokens: np.ndarray, eval_tokens: int = 4096) -> float:
    return evaluate_program(program, tokens, SEQ_LEN, eval_tokens, CPU, VOCAB).val_bpb


def refusal(program: Program, tokens: np.ndarray | None = None) -> HarnessStop:
    with pytest.raises(HarnessStop) as info:
        score(program, sample_text() if tokens is None else tokens)
    return info.value


# --- bits per byte ----------------------------------------------------------------------------


def test_uniform_guessing_scores_eight_bits_per_byte(tmp_path: Path) -> None:
    """All-zero logits score log2(256) = 8 bits per byte, to float32 precision."""
    result = evaluate_program(program_of(Zeros.random(), tmp_path), sample_text(), SEQ_LEN,
                              4096, CPU, VOCAB)  # fmt: skip
    assert result.val_bpb == pytest.approx(8.0, abs=1e-7)
    assert result.val_loss_nats == pytest.approx(math.log(256), abs=1e-6)
    assert result.tokens == result.bytes == 4096  # 128 windows of 32 targets


def test_the_same_model_scores_the_identical_number_and_learning_helps(tmp_path: Path) -> None:
    """Two evaluations of one program give the same float bit for bit (the secret choices of
    the checks change nothing in the score); a fitted bigram table scores far below uniform
    guessing, and a random one above it."""
    tokens = sample_text()
    fitted = program_of(Bigram.fitted(tokens), tmp_path)
    first, second = score(fitted, tokens), score(fitted, tokens)
    assert first == second
    assert first < 3.0
    assert score(program_of(Bigram.random(), tmp_path), tokens) > 8.0


def test_only_the_fixed_leading_slice_is_scored(tmp_path: Path) -> None:
    tokens = sample_text()
    span = 10 * SEQ_LEN
    program = program_of(Bigram.fitted(tokens), tmp_path)
    base = score(program, tokens, span)
    beyond = tokens.copy()
    beyond[span + 1 :] = 0
    assert score(program, beyond, span) == base
    inside = tokens.copy()
    inside[span] = 0  # the last window's last target
    assert score(program, inside, span) != base


def test_eval_windows_is_capped_by_the_budget_and_by_the_split() -> None:
    assert eval_windows(100_000, 64, 4096) == 64
    assert eval_windows(1000, 64, 1_000_000) == 999 // 64 == 15
    assert eval_windows(65, 64, 4096) == 1
    assert eval_windows(64, 64, 4096) == 0
    assert eval_windows(100_000, 64, 100) == 1


def test_a_split_smaller_than_one_window_is_a_setup_error(tmp_path: Path) -> None:
    stop = refusal(program_of(Zeros.random(), tmp_path), sample_text()[:SEQ_LEN])
    assert stop.outcome is Outcome.SETUP
    assert f"holds {SEQ_LEN} tokens" in stop.reason and str(SEQ_LEN + 1) in stop.reason


def test_nan_logits_end_the_evaluation_as_nan(tmp_path: Path) -> None:
    stop = refusal(program_of(NaNLogits.random(), tmp_path))
    assert stop.outcome is Outcome.NAN and "nan" in stop.reason.lower()


# --- the checks ---------------------------------------------------------------------------


def test_causal_models_pass_the_checks(tmp_path: Path) -> None:
    for model in (Bigram.random(), PrefixMean.random()):
        assert score(program_of(model, tmp_path), sample_text()) > 0


def test_a_model_that_looks_ahead_within_its_window_is_refused(tmp_path: Path) -> None:
    stop = refusal(program_of(WholeSequenceMean.random(), tmp_path))
    assert stop.outcome is Outcome.BAD_MODEL and "looks ahead" in stop.reason


def test_a_model_that_reads_the_next_row_of_the_batch_is_refused(tmp_path: Path) -> None:
    """Consecutive windows are consecutive text: a model reading its neighbour row's first
    token knows its last target. Shuffled rows in the check change that neighbour."""
    program = program_of(PeeksAtTheNextRow.fitted(sample_text()), tmp_path)
    for _ in range(3):  # the secret choices differ each time; every one must catch it
        stop = refusal(program)
        assert stop.outcome is Outcome.BAD_MODEL and "rows" in stop.reason


def test_a_model_of_the_wrong_vocabulary_is_refused_with_both_sizes(tmp_path: Path) -> None:
    stop = refusal(program_of(NarrowVocab.random(), tmp_path))
    assert "128" in stop.reason and "256" in stop.reason and "ctx.vocab_size" in stop.reason


def test_logits_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    stop = refusal(program_of(Flat.random(), tmp_path))
    assert stop.outcome is Outcome.BAD_MODEL and "shaped (batch" in stop.reason


def test_eval_tokens_below_one_window_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(HarnessStop, match="eval_tokens") as info:
        evaluate_program(program_of(Zeros.random(), tmp_path), sample_text(), SEQ_LEN,
                         SEQ_LEN - 1, CPU, VOCAB)  # fmt: skip
    assert info.value.outcome is Outcome.SETUP


# --- the template, old path against new ------------------------------------------------------


def _old_in_process_bpb(model: nn.Module, tokens: np.ndarray, seq_len: int, span: int) -> float:
    """How the score was computed before: the model's own per-token losses, in process."""
    windows = span // seq_len
    stream = torch.from_numpy(tokens[: windows * seq_len + 1].astype(np.int64))
    x = stream[:-1].view(windows, seq_len)
    y = stream[1:].view(windows, seq_len)
    with torch.inference_mode():
        losses = model(x, y, reduction="none")
    return float(losses.double().sum().item() / (math.log(2) * windows * seq_len))


@pytest.mark.e2e  # trains the template a little, in this process
def test_the_template_scores_as_the_old_in_process_evaluation_did(tmp_path: Path) -> None:
    """The same trained weights: the new path (export, load, logits, our cross-entropy)
    equals the model's own in-process losses to 1e-5 bits per byte."""
    spec = importlib.util.spec_from_file_location("template_under_test", template_path())
    assert spec is not None and spec.loader is not None
    template = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(template)
    torch.manual_seed(0)
    seq_len = 64
    model = template.GPT(VOCAB, seq_len)
    optimizer = template.build_optimizer(model)
    tokens = sample_text(2000)
    data = torch.from_numpy(tokens.astype(np.int64))
    for _ in range(30):  # trained a little, so the weights are no longer the initial ones
        starts = torch.randint(0, len(data) - seq_len - 1, (16,))
        rows = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])
        model(rows[:, :-1], rows[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    span = 4096
    old = _old_in_process_bpb(model, tokens, seq_len, span)
    new = evaluate_program(program_of(model, tmp_path, seq_len), tokens, seq_len, span, CPU, VOCAB)
    assert new.val_bpb == pytest.approx(old, abs=1e-5)
    assert new.val_bpb < 7.0  # it did learn something
