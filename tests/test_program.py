"""The exported program's file format: a hostile file is refused before anything in it runs.

The training process writes the program file and the training process is untrusted, so these
tests write program files by hand, as an attack would, and check that loading refuses them
without executing any of their content."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.models import Tiny
from trainer.program import ProgramError, export_forward, load_program

CPU = torch.device("cpu")


def exported(tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    path = tmp_path / "tiny.program"
    export_forward(Tiny(), torch.zeros((2, 16), dtype=torch.long), path)
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("graph.json")), archive.read("weights.pt")


def write(tmp_path: Path, graph: dict[str, Any], weights: bytes) -> Path:
    path = tmp_path / "hostile.program"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("graph.json", json.dumps(graph))
        archive.writestr("weights.pt", weights)
    return path


def test_an_exported_program_gives_the_models_logits(tmp_path: Path) -> None:
    model = Tiny().eval()
    path = tmp_path / "tiny.program"
    export_forward(model, torch.zeros((2, 16), dtype=torch.long), path)
    program = load_program(path, CPU)
    x = torch.randint(0, 256, (5, 16))  # another batch size than the example's
    with torch.inference_mode():
        assert torch.equal(program(x), model(x))
    assert program.num_params == sum(p.numel() for p in model.parameters())


def _with_target(graph: dict[str, Any], target: str) -> dict[str, Any]:
    nodes = [dict(node) for node in graph["nodes"]]
    call = next(node for node in nodes if node["op"] == "call_function")
    call["target"] = target
    return {**graph, "nodes": nodes}


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("torch.os.system", "not an ATen operator"),
        ("builtins.eval", "not an ATen operator"),
        ("aten::add_.Tensor", "in place"),
        ("aten::bernoulli.p", "random numbers"),
        ("aten::no_such_operator.default", "does not exist"),
        ("prims::add.default", "not an ATen operator"),
    ],
)
def test_operators_other_than_pure_aten_ones_are_refused(
    tmp_path: Path, target: str, fragment: str
) -> None:
    graph, weights = exported(tmp_path)
    with pytest.raises(ProgramError, match=fragment):
        load_program(write(tmp_path, _with_target(graph, target), weights), CPU)


def test_attention_with_dropout_on_is_refused(tmp_path: Path) -> None:
    class Attending(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(256, 8)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.embed(idx).unsqueeze(1)
            mask = torch.ones(idx.shape[1], idx.shape[1], dtype=torch.bool).tril()
            y = torch.nn.functional.scaled_dot_product_attention(x, x, x, mask)
            return y.squeeze(1) @ self.embed.weight.T

    path = tmp_path / "attending.program"
    export_forward(Attending(), torch.zeros((2, 16), dtype=torch.long), path)
    load_program(path, CPU)  # dropout off: accepted
    with zipfile.ZipFile(path) as archive:
        graph, weights = json.loads(archive.read("graph.json")), archive.read("weights.pt")
    for node in graph["nodes"]:
        if "scaled_dot_product_attention" in str(node.get("target")):
            node["args"][4:] = [0.5]  # dropout_p, after the mask
    with pytest.raises(ProgramError, match="random numbers"):
        load_program(write(tmp_path, graph, weights), CPU)


class _Planted:
    """Unpickling this would create a file: the proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def test_pickled_code_in_the_weights_never_runs(tmp_path: Path) -> None:
    graph, _ = exported(tmp_path)
    marker = tmp_path / "the-loader-ran-code"
    weights = io.BytesIO()
    torch.save({"embed.weight": _Planted(str(marker))}, weights)
    with pytest.raises(ProgramError, match="cannot be read safely"):
        load_program(write(tmp_path, graph, weights.getvalue()), CPU)
    assert not marker.exists()
    # The control: the same bytes, unpickled as torch.export.load would, do run code.
    torch.load(io.BytesIO(weights.getvalue()), weights_only=False)
    assert marker.exists()


def test_malformed_graphs_are_refused_with_a_reason(tmp_path: Path) -> None:
    graph, weights = exported(tmp_path)
    nodes = graph["nodes"]
    backwards = {**graph, "nodes": [nodes[0], nodes[-1], *nodes[1:-1]]}
    with pytest.raises(ProgramError, match=r"before it is defined|no output"):
        load_program(write(tmp_path, backwards, weights), CPU)
    odd = json.loads(json.dumps(graph))
    call = next(node for node in odd["nodes"] if node["op"] == "call_function")
    call["args"].append({"sympy": "__import__('os').system('true')"})
    with pytest.raises(ProgramError, match="unknown kind"):
        load_program(write(tmp_path, odd, weights), CPU)
    for shape in (
        {**graph, "nodes": 7},
        {**graph, "bound": {**graph["bound"], "p_embed_weight": ["a"]}},
    ):
        with pytest.raises(ProgramError, match=r"malformed|bound to no"):
            load_program(write(tmp_path, shape, weights), CPU)
    with pytest.raises(ProgramError, match="not a cockpit-program"):
        load_program(write(tmp_path, {**graph, "format": "other"}, weights), CPU)
    (tmp_path / "junk.program").write_bytes(pickle.dumps({"not": "a zip"}))
    with pytest.raises(ProgramError, match="cannot read"):
        load_program(tmp_path / "junk.program", CPU)
