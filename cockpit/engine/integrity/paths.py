"""Where a file call points: paths folded from the script's strings and names, and whether they
leave the workspace."""

from __future__ import annotations

import ast
import posixpath
import re

from cockpit.engine.integrity.names import Names
from cockpit.engine.integrity.rules import PATH_CONSTRUCTORS
from cockpit.engine.integrity.syntax import fold_string

_OUTSIDE_PREFIXES = ("/", "~", "\\")


def _join(base: str, part: str) -> str:
    if part.startswith(_OUTSIDE_PREFIXES) or re.match(r"^[A-Za-z]:", part):
        return part
    return f"{base.rstrip('/')}/{part}" if base else part


def _parent(path: str) -> str:
    if path.startswith(_OUTSIDE_PREFIXES):
        return posixpath.dirname(path.rstrip("/")) or "/"
    normal = posixpath.normpath(path or ".")
    if normal == ".":
        return ".."
    if normal == ".." or normal.endswith("/.."):
        return normal + "/.."
    return posixpath.dirname(normal)


class Paths:
    """Static resolution of path expressions, relative to the workspace (the run's working
    directory, where train.py lives). None: only known at run time."""

    def __init__(self, names: Names) -> None:
        self._names = names

    def resolve(self, node: ast.AST, depth: int = 0) -> str | None:
        if depth > 20:
            return None
        names = self._names
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            return fold_string(node)
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            if all(isinstance(value, ast.Constant) for value in node.values):
                return fold_string(node)
            if isinstance(first, ast.Constant) and str(first.value).startswith(_OUTSIDE_PREFIXES):
                return str(first.value)
            return None
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return "train.py"
            value = names.single_assignments.get(node.id)
            return self.resolve(value, depth + 1) if value is not None else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
            left = self.resolve(node.left, depth + 1)
            if left is not None and left.startswith(_OUTSIDE_PREFIXES):
                return left  # whatever follows, it is outside the workspace
            right = self.resolve(node.right, depth + 1)
            if left is None or right is None:
                return None
            return _join(left, right) if isinstance(node.op, ast.Div) else left + right
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.resolve(node.value, depth + 1)
            return _parent(inner) if inner is not None else None
        if isinstance(node, ast.Call):
            return self._resolve_call(node, depth)
        return None

    def _resolve_call(self, node: ast.Call, depth: int) -> str | None:
        qualified = self._names.qualified(node.func)
        arguments = [self.resolve(argument, depth + 1) for argument in node.args]
        if qualified in PATH_CONSTRUCTORS or qualified == "os.path.join":
            path = ""
            for argument in arguments:
                if argument is None:
                    return path if path.startswith(_OUTSIDE_PREFIXES) else None
                path = _join(path, argument)
            return path
        if qualified in ("pathlib.Path.cwd", "Path.cwd", "os.getcwd"):
            return ""
        if qualified in ("pathlib.Path.home", "Path.home"):
            return "~"
        if qualified in ("tempfile.gettempdir", "tempfile.mkdtemp", "tempfile.mkstemp"):
            return "/tmp"
        if qualified == "os.path.dirname" and arguments:
            return _parent(arguments[0]) if arguments[0] is not None else None
        if qualified in ("os.path.abspath", "os.path.realpath", "os.path.normpath") and arguments:
            return arguments[0]
        if qualified in ("os.path.expanduser", "os.path.expandvars") and arguments:
            return arguments[0]
        if isinstance(node.func, ast.Attribute) and not self._names.is_module_reference(node.func):
            method = node.func.attr
            receiver = self.resolve(node.func.value, depth + 1)
            if method in ("resolve", "absolute", "expanduser") and not node.args:
                return receiver
            if method == "joinpath" and receiver is not None:
                path = receiver
                for argument in arguments:
                    if argument is None:
                        return None
                    path = _join(path, argument)
                return path
            if method in ("with_name", "with_suffix", "with_stem") and receiver is not None:
                return (
                    receiver
                    if method != "with_name"
                    else _join(_parent(receiver), arguments[0] or "")
                )
        return None


def outside_workspace(path: str) -> bool:
    if path.startswith(_OUTSIDE_PREFIXES) or re.match(r"^[A-Za-z]:", path):
        return True
    normal = posixpath.normpath(path or ".")
    return normal == ".." or normal.startswith("../")
