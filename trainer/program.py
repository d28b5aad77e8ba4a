"""The model's forward as a program the evaluator can run without running the agent's code.

When ``train(ctx)`` returns, the training process traces the model's forward (``idx → logits``)
with ``torch.export``, batch dimension dynamic, and writes the traced graph as data: a list
of ATen operator calls and their arguments (``graph.json``) beside the weights
(``weights.pt``), in one zip file. The evaluation process reads that file back and runs it
with a small interpreter; it never imports the training script.

Why not ``torch.export.save``/``load``: loading a ``.pt2`` file unpickles parts of it and
hands shape expressions to ``sympy.sympify`` (an ``eval``), so a hostile file runs code in the
evaluator. Here nothing in the file is executed: the graph is JSON, the weights load through
``torch.load(weights_only=True)``, and every operator must be a functional, deterministic ATen
operator (or an integer operation on sizes). Such a program is a pure function of its input:
it keeps no state between calls and cannot tell a probe from an evaluation by counting them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import operator
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from trainer import readback
from trainer.atomic import replacing

FORMAT = "cockpit-program/1"
MAX_BATCH = 1 << 16
# What the evaluator reads of a program file at most (the training that wrote it is not
# trusted, so these are checked before anything is read or inflated). 8 GiB holds two billion
# float32 parameters, far more than a budget of minutes trains; a graph is a few megabytes.
MAX_PROGRAM_BYTES = 8 << 30
MAX_GRAPH_BYTES = 64 << 20
MEMBER_LIMITS = {"graph.json": MAX_GRAPH_BYTES, "weights.pt": MAX_PROGRAM_BYTES}
# Integer operations on sizes that a dynamic batch brings into a graph.
_SIZE_OPERATORS: dict[str, Callable[..., Any]] = {
    f"_operator.{name}": getattr(operator, name)
    for name in ("getitem", "add", "sub", "mul", "floordiv", "mod", "neg", "truediv", "pow")
}
_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
        torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
    )
}  # fmt: skip
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last,
}
_REFUSED_TAGS = (torch.Tag.nondeterministic_seeded,)
# Operators tagged as drawing random numbers that draw none when this argument (name,
# position) is zero: attention with its dropout off.
_RANDOM_ONLY_WITH = {"aten::scaled_dot_product_attention.default": ("dropout_p", 4)}


class ExportError(Exception):
    """The model's forward could not be traced; the message says what to change."""


class ProgramError(Exception):
    """A program file the evaluator refuses to run; the message says why."""


# --- writing ------------------------------------------------------------------------------


def _encode(value: Any, names: dict[Any, str]) -> Any:
    if isinstance(value, torch.fx.Node):
        return {"node": names[value]}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(item, names) for item in value]
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise ExportError(f"the traced forward holds a {type(value).__name__} argument ({value!r})")


def _target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}::{target._schema.name.split('::', 1)[1]}.{target._overloadname}"
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def export_forward(model: Any, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Trace ``model(idx) -> logits`` with a dynamic batch and write it to ``path``.

    Raises ExportError with the first line of what went wrong and what the forward must be."""
    module = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: trace the original
    if not isinstance(module, torch.nn.Module):
        raise ExportError(
            f"train(ctx) must return a torch.nn.Module to export, got {type(model).__name__}"
        )
    module.eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
            traced = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            traced = traced.run_decompositions({})
    except Exception as exc:
        raise ExportError(
            f"the model could not be exported ({_first_line(exc)}); forward(idx) must be "
            "traceable by torch.export: no Python branching on tensor values, no data-dependent "
            "shapes, and any batch size must work"
        ) from exc
    signature = traced.graph_signature
    for spec in signature.output_specs:
        if spec.kind.name != "USER_OUTPUT":
            raise ExportError(
                f"the model's forward changes its own state ({spec.kind.name.lower()} of "
                f"{spec.target}); forward must not update buffers or inputs"
            )
    values = {**traced.state_dict, **traced.constants}
    bound: dict[str, str] = {}  # placeholder → weight key
    user_inputs: list[str] = []
    for spec in signature.input_specs:
        name = spec.arg.name
        if spec.kind.name == "USER_INPUT":
            user_inputs.append(name)
        else:
            bound[name] = str(spec.target)
    if len(user_inputs) != 1:
        raise ExportError(f"forward must take exactly one input (idx), it takes {user_inputs}")
    names = {node: node.name for node in traced.graph.nodes}
    nodes = []
    for node in traced.graph.nodes:
        entry: dict[str, Any] = {"name": node.name, "op": node.op}
        if node.op == "call_function":
            entry["target"] = _target_name(node.target)
            entry["args"] = _encode(list(node.args), names)
            entry["kwargs"] = {k: _encode(v, names) for k, v in node.kwargs.items()}
        elif node.op == "output":
            entry["args"] = _encode(list(node.args), names)
        elif node.op != "placeholder":
            raise ExportError(f"the traced forward holds a {node.op} node, which is not supported")
        nodes.append(entry)
    weights = {key: values[key].detach().cpu().contiguous() for key in set(bound.values())}
    graph = {
        "format": FORMAT,
        "input": user_inputs[0],
        "bound": bound,
        "nodes": nodes,
        "torch_version": torch.__version__,
        "num_params": sum(p.numel() for p in module.parameters()),
    }
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("graph.json", json.dumps(graph))
        archive.writestr("weights.pt", buffer.getvalue())
    return {"nodes": len(nodes), "bytes": path.stat().st_size}


# --- reading and running --------------------------------------------------------------------


def _resolve(name: Any, args: list[Any], kwargs: dict[str, Any]) -> Callable[..., Any]:
    """The operator a node names, if it is one the evaluator runs; else ProgramError."""
    if not isinstance(name, str):
        raise ProgramError(f"a node names {name!r} as its operator")
    if name in _SIZE_OPERATORS:
        return _SIZE_OPERATORS[name]
    namespace, sep, rest = name.partition("::")
    op_name, dot, overload = rest.rpartition(".")
    if namespace != "aten" or not sep or not dot:
        raise ProgramError(f"operator {name!r} is not an ATen operator")
    packet = getattr(torch.ops.aten, op_name, None) if op_name.isidentifier() else None
    if not isinstance(packet, torch._ops.OpOverloadPacket) or not overload.isidentifier():
        raise ProgramError(f"operator {name!r} does not exist in this torch")
    op = getattr(packet, overload, None)
    if not isinstance(op, torch._ops.OpOverload):
        raise ProgramError(f"operator {name!r} does not exist in this torch")
    if op._schema.is_mutable:
        raise ProgramError(f"operator {name!r} changes its arguments in place")
    if any(tag in op.tags for tag in _REFUSED_TAGS):
        switch = _RANDOM_ONLY_WITH.get(name)
        if switch is None:
            raise ProgramError(f"operator {name!r} draws random numbers")
        keyword, position = switch
        value = kwargs.get(keyword, args[position] if len(args) > position else 0.0)
        if value not in (0, 0.0, None):
            raise ProgramError(f"operator {name!r} draws random numbers ({keyword}={value!r})")
    return op


@dataclass
class _Node:
    name: str
    op: str
    target: Callable[..., Any] | None
    args: Any
    kwargs: dict[str, Any]


def _decode_constant(value: Any) -> Any:
    """Check a decoded argument's shape (nested lists of scalars and node references)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode_constant(item) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        ((kind, item),) = value.items()
        if kind == "node" and isinstance(item, str):
            return _Ref(item)
        if kind == "float" and item in ("inf", "-inf", "nan"):
            return float(item)
        if kind == "dtype" and item in _DTYPES:
            return _DTYPES[item]
        if kind == "device" and item in ("cpu", "cuda", "meta"):
            return _DEVICE
        if kind == "layout" and item in _LAYOUTS:
            return _LAYOUTS[item]
        if kind == "memory_format" and item in _MEMORY_FORMATS:
            return _MEMORY_FORMATS[item]
    raise ProgramError(f"an argument of an unknown kind: {str(value)[:80]}")


@dataclass(frozen=True)
class _Ref:
    name: str


_DEVICE = object()  # stands for the device the program runs on


class Program:
    """A loaded program: ``program(idx) -> logits``, a pure function of idx."""

    def __init__(self, nodes: list[_Node], input_name: str, weights: dict[str, torch.Tensor],
                 num_params: int, device: torch.device) -> None:  # fmt: skip
        self._nodes = nodes
        self._input = input_name
        self._weights = weights
        self.num_params = num_params
        self.device = device
        # Its weights' names, shapes and types, fingerprinted: scripts that share one build the
        # same tensors, so one seed draws them the same initial values and batches (their
        # luck is shared, and the engine compares them seed by seed).
        layout = sorted((name, list(t.shape), str(t.dtype)) for name, t in weights.items())
        self.shapes = hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]
        # Each intermediate is dropped after its last use, so memory stays that of eager mode.
        self._last_use: dict[str, int] = {}
        for index, node in enumerate(nodes):
            for ref in _refs(node.args, node.kwargs):
                self._last_use[ref] = index

    def __call__(self, idx: torch.Tensor) -> Any:
        values: dict[str, Any] = dict(self._weights)
        values[self._input] = idx
        for index, node in enumerate(self._nodes):
            if node.op == "output":
                (result,) = _bind(node.args, values, self.device)
                return (
                    result[0] if isinstance(result, (list, tuple)) and len(result) == 1 else result
                )
            if node.op == "call_function":
                assert node.target is not None
                args = _bind(node.args, values, self.device)
                kwargs = {k: _bind(v, values, self.device) for k, v in node.kwargs.items()}
                values[node.name] = node.target(*args, **kwargs)
            for ref in _refs(node.args, node.kwargs):
                if self._last_use.get(ref) == index and ref not in self._weights:
                    values.pop(ref, None)
        raise ProgramError("the program has no output")


def _refs(args: Any, kwargs: dict[str, Any] | None = None) -> Iterator[str]:
    stack = [args, list((kwargs or {}).values())]
    while stack:
        item = stack.pop()
        if isinstance(item, _Ref):
            yield item.name
        elif isinstance(item, list):
            stack.extend(item)


def _bind(value: Any, values: dict[str, Any], device: torch.device) -> Any:
    if isinstance(value, _Ref):
        return values[value.name]
    if value is _DEVICE:
        return device
    if isinstance(value, list):
        return [_bind(item, values, device) for item in value]
    return value


def open_program(path: Path) -> BinaryIO:
    """Open a program file as the evaluator reads one (trainer.readback): a regular file, not
    through a link, within MAX_PROGRAM_BYTES. FileNotFoundError when there is none."""
    try:
        return readback.open_left(path, MAX_PROGRAM_BYTES)
    except readback.Refused as exc:
        raise ProgramError(str(exc)) from None


def load_program(path: Path, device: torch.device, file: BinaryIO | None = None) -> Program:
    """Read a program file without executing anything in it; ProgramError says what is wrong.

    ``file``: the program already opened with `open_program` (the harness opens it before it
    moves it out of the training's folder); else ``path`` is opened that way."""
    try:
        if file is not None:
            return _load(path, file, device)
        with open_program(path) as opened:
            return _load(path, opened, device)
    except FileNotFoundError as exc:
        raise ProgramError(f"there is no exported model at {path}") from exc
    except readback.Refused as exc:
        raise ProgramError(str(exc)) from None
    # A file of another shape; nesting deep enough for a RecursionError included.
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise ProgramError(f"the exported model {path.name} is malformed: {exc}") from exc


def _load(path: Path, file: BinaryIO, device: torch.device) -> Program:
    members = readback.read_members(file, path.name, MEMBER_LIMITS, MAX_PROGRAM_BYTES)
    try:
        graph = json.loads(members["graph.json"])
    except ValueError as exc:
        raise ProgramError(f"cannot read the exported model {path.name}: {exc}") from exc
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        raise ProgramError(f"{path.name} is not a {FORMAT} file")
    raw_weights = members.pop("weights.pt")
    # weights.pt is a zip archive of its own, and torch.load inflates compressed records in
    # it: its members are checked as the program's were before torch reads any of them.
    readback.check_archive(raw_weights, f"{path.name}'s weights.pt", MAX_PROGRAM_BYTES)
    try:
        weights = torch.load(io.BytesIO(raw_weights), map_location=device, weights_only=True)
    except Exception as exc:
        raise ProgramError(f"the exported weights cannot be read safely: {exc}") from exc
    del raw_weights  # the tensors hold what is needed; the bytes need not stay beside them
    bound = graph.get("bound")
    if not isinstance(weights, dict) or not isinstance(bound, dict):
        raise ProgramError("the exported weights are not a table of tensors")
    input_name = graph.get("input")
    nodes: list[_Node] = []
    placeholders: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    for raw in graph.get("nodes") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProgramError("a node of the program is malformed")
        name, op = raw["name"], raw.get("op")
        if name in seen:
            raise ProgramError(f"node {name!r} is defined twice")
        if op == "placeholder":
            if name != input_name:
                key = bound.get(name)
                tensor = weights.get(key) if isinstance(key, str) else None
                if not isinstance(tensor, torch.Tensor):
                    raise ProgramError(f"input {name!r} is bound to no exported weight")
                placeholders[name] = tensor
            node = _Node(name, op, None, [], {})
        elif op in ("call_function", "output"):
            args = _decode_constant(raw.get("args", []))
            kwargs_raw = raw.get("kwargs", {})
            if not isinstance(args, list) or not isinstance(kwargs_raw, dict):
                raise ProgramError(f"node {name!r} has malformed arguments")
            kwargs = {str(k): _decode_constant(v) for k, v in kwargs_raw.items()}
            for ref in _refs(args, kwargs):
                if ref not in seen:
                    raise ProgramError(f"node {name!r} uses {ref!r} before it is defined")
            target = _resolve(raw.get("target"), args, kwargs) if op == "call_function" else None
            node = _Node(name, op, target, args, kwargs)
        else:
            raise ProgramError(f"node {name!r} is a {op!r} node, which is not supported")
        seen.add(name)
        nodes.append(node)
    if input_name not in seen or not nodes or nodes[-1].op != "output":
        raise ProgramError("the program has no input or no output")
    num_params = graph.get("num_params")
    return Program(
        nodes,
        str(input_name),
        placeholders,
        int(num_params)
        if isinstance(num_params, int)
        else sum(t.numel() for t in weights.values()),
        device,
    )
