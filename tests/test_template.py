"""The default research script's hand-written layers: each backward pass is checked against
finite differences in float64, each forward against the textbook formula, and the model
against looking ahead."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from trainer import template_path


@pytest.fixture(scope="module")
def template() -> ModuleType:
    spec = importlib.util.spec_from_file_location("research_template", template_path())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def away_from_zero(*shape: int) -> torch.Tensor:
    """Random float64 values at least 0.1 from 0, where relu has no kink to trip a finite
    difference."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    return (x + 0.1 * x.sign()).requires_grad_()


def test_rms_norm_matches_the_formula_and_its_gradient(template: ModuleType) -> None:
    x = away_from_zero(2, 5, 8)
    expected = x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 1e-6)
    torch.testing.assert_close(template.rms_norm(x), expected)
    assert torch.autograd.gradcheck(template.rms_norm, (x,))


def test_relu_squared_matches_the_formula_and_its_gradient(template: ModuleType) -> None:
    x = away_from_zero(3, 4, 16)
    torch.testing.assert_close(template.ReluSquared.apply(x), torch.relu(x) ** 2)
    assert torch.autograd.gradcheck(template.ReluSquared.apply, (x,))
    before = x.detach().clone()
    template.ReluSquared.apply(x).sum().backward()
    torch.testing.assert_close(x.detach(), before)  # the input is never written to


def test_rotary_turns_channel_pairs_and_its_gradient_turns_back(template: ModuleType) -> None:
    length, heads, head_dim = 6, 2, 8
    cos, sin = template.rotary_tables(length, head_dim, 10000.0, torch.device("cpu"))
    cos, sin = cos.double(), sin.double()
    x = away_from_zero(2, length, heads, head_dim)
    half = head_dim // 2
    angles = torch.outer(
        torch.arange(length, dtype=torch.float64),
        10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim),
    )[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    expected = torch.cat(
        (x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()), -1
    )
    torch.testing.assert_close(template.Rotary.apply(x, cos, sin), expected)
    assert torch.autograd.gradcheck(lambda t: template.Rotary.apply(t, cos, sin), (x,))


def test_the_model_does_not_look_ahead_and_gives_per_token_losses(template: ModuleType) -> None:
    torch.manual_seed(0)
    model = template.GPT(256, 32)
    for parameter in model.parameters():  # the zero-initialised branches would hide a leak
        torch.nn.init.normal_(parameter, std=0.1)
    idx = torch.randint(0, 256, (2, 32))
    changed = idx.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
        losses = model(idx, idx, reduction="none")
    assert a.shape == (2, 32, 256)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])
    assert losses.shape == (2, 32) and torch.isfinite(losses).all()


# The constants that shape the forward (the others only change how it trains).
SHAPING = ("DEPTH", "WIDTH", "HEAD_DIM", "MLP_RATIO", "LOGIT_SOFTCAP", "ROPE_BASE")


def _builtin_edits() -> list[tuple[str, int | float]]:
    from agent.builtin import candidates
    from agent.constants import find_constants

    source = template_path().read_text()
    found = {c.name: c for c in find_constants(source)}
    assert set(SHAPING) <= set(found), "the template's shaping constants have moved"
    return [(name, value) for name in SHAPING for value in candidates(found[name])]


@pytest.mark.e2e  # builds, traces and exports the template fourteen times: seconds each
@pytest.mark.parametrize(("name", "value"), _builtin_edits())
def test_every_edit_the_builtin_proposer_makes_exports(
    tmp_path: Path, name: str, value: float
) -> None:
    """The template with each value the built-in proposer may give a constant that shapes
    the model: its forward exports, and the program gives the model's own logits."""
    from agent.constants import find_constants, replace_literal
    from trainer.program import export_forward, load_program

    source = template_path().read_text()
    constant = next(c for c in find_constants(source) if c.name == name)
    edited = tmp_path / "train.py"
    edited.write_text(replace_literal(source, constant, value))
    spec = importlib.util.spec_from_file_location(f"edited_{name}", edited)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.GPT(256, 32).eval()
    export_forward(model, torch.zeros((2, 32), dtype=torch.long), tmp_path / "model.program")
    program = load_program(tmp_path / "model.program", torch.device("cpu"))
    idx = torch.randint(0, 256, (3, 32))
    with torch.inference_mode():
        torch.testing.assert_close(program(idx), model(idx), rtol=1e-5, atol=1e-5)
