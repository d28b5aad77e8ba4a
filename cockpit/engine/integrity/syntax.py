"""Small helpers over the syntax tree: a node's source snippet, a string folded from its
parts, a function's parameters, the nodes a function owns."""

from __future__ import annotations

import ast
from collections.abc import Iterator


def source_snippet(node: ast.AST, limit: int = 70) -> str:
    """The node's source, on one line and cut short."""
    try:
        text = ast.unparse(node)
    except Exception:  # an unusual node; the message stays useful without it
        return type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fold_string(node: ast.AST) -> str | None:
    """The text of a string expression built from literals ("a" + "b", "-" * 3, f"x{y}")."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        if isinstance(node.value, bytes):
            return node.value.decode("latin-1")
        return None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            parts.append(value.value if isinstance(value, ast.Constant) else "{}")
        return "".join(str(part) for part in parts)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add):
            left, right = fold_string(node.left), fold_string(node.right)
            return left + right if left is not None and right is not None else None
        if isinstance(node.op, ast.Mult):
            text, count = (node.left, node.right)
            if isinstance(text, ast.Constant) and isinstance(text.value, int):
                text, count = count, text
            folded = fold_string(text)
            if (
                folded is not None
                and isinstance(count, ast.Constant)
                and isinstance(count.value, int)
                and 0 <= count.value * len(folded) <= 10_000
            ):
                return folded * count.value
        return None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and isinstance(node.args[0], (ast.List, ast.Tuple))
    ):
        separator = fold_string(node.func.value)
        pieces = [fold_string(element) for element in node.args[0].elts]
        if separator is not None and all(piece is not None for piece in pieces):
            return separator.join(piece for piece in pieces if piece is not None)
    return None


def positional_parameters(
    function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
) -> list[str]:
    arguments = function.args
    return [arg.arg for arg in (*arguments.posonlyargs, *arguments.args)]


def all_parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    arguments = function.args
    names = {arg.arg for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)}
    for extra in (arguments.vararg, arguments.kwarg):
        if extra is not None:
            names.add(extra.arg)
    return names


def own_nodes(root: ast.AST) -> Iterator[ast.AST]:
    """Every node under root, without descending into nested functions, lambdas or classes
    (which are yielded themselves)."""
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def is_bare_string(statement: ast.AST) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )
