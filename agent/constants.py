"""The numeric CAPS constants at the top of a script: finding them, and writing new values.

A constant is a number assigned to an upper-case name at module level; one written as
`A if CUDA else B` has the branch of the device. Values are rewritten in place, so that the
rest of the file (comments, layout) is untouched. The built-in proposer and the optimiser both
read and write scripts through here.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

from agent.syntax import parse


@dataclass(frozen=True)
class Constant:
    """A numeric literal assigned to a CAPS name at module level, with its exact position."""

    name: str
    value: int | float
    line: int  # 1-based
    start: int  # column offsets of the literal on that line
    end: int


def _number(node: ast.expr) -> int | float | None:
    # bool is an int subclass, and True is no hyperparameter to scale.
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


@functools.lru_cache(maxsize=2048)
def find_constants(source: str, device: str = "cpu") -> tuple[Constant, ...]:
    """The tunable constants of a script, in file order. Cached: the optimiser reads every
    script of the run again for each proposal, and scripts never change."""
    found: list[Constant] = []
    for node in parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        literal: ast.expr = node.value
        if (
            isinstance(literal, ast.IfExp)
            and isinstance(literal.test, ast.Name)
            and literal.test.id == "CUDA"
        ):
            literal = literal.body if device == "cuda" else literal.orelse
        value = _number(literal)
        if value is None or literal.lineno != literal.end_lineno or literal.end_col_offset is None:
            continue
        found.append(
            Constant(target.id, value, literal.lineno, literal.col_offset, literal.end_col_offset)
        )
    return tuple(found)


def format_value(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6g}"
    return text if any(c in text for c in ".e") else text + ".0"


def replace_literal(source: str, constant: Constant, value: int | float) -> str:
    lines = source.splitlines(keepends=True)
    line = lines[constant.line - 1]
    # ast columns count UTF-8 bytes; CAPS assignments are ASCII up to the literal.
    encoded = line.encode("utf-8")
    new_line = (
        encoded[: constant.start] + format_value(value).encode() + encoded[constant.end :]
    ).decode("utf-8")
    lines[constant.line - 1] = new_line
    return "".join(lines)
