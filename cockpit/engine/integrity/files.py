"""File access: the calls that open, list, write or remove files, and where their paths point
(inside the workspace, outside it, or only known at run time)."""

from __future__ import annotations

import ast
import posixpath

from cockpit.engine.integrity.flags import (
    FILE_ACCESS,
    SUMMARY_WRITE,
    WHY_FILES,
    WHY_SUMMARY,
    Findings,
)
from cockpit.engine.integrity.names import Names
from cockpit.engine.integrity.paths import Paths, outside_workspace
from cockpit.engine.integrity.rules import FILE_FUNCTIONS, PATH_METHODS, PROTECTED_WORKSPACE_FILES
from cockpit.engine.integrity.syntax import fold_string, source_snippet


class FileChecks:
    """The check of file calls: open(), numpy and torch loads and saves, os and pathlib."""

    def __init__(self, names: Names, findings: Findings) -> None:
        self._names = names
        self._paths = Paths(names)
        self._findings = findings

    def check_call(self, node: ast.Call, function_name: str) -> None:
        spec = FILE_FUNCTIONS.get(function_name)
        path_node: ast.AST | None
        writes: bool | None
        if spec is not None:
            index, keywords, writes = spec
            path_node = node.args[index] if len(node.args) > index else None
            if path_node is None:
                path_node = next((k.value for k in node.keywords if k.arg in keywords), None)
            mode_index = 1
        elif (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in PATH_METHODS
            and not self._names.is_module_reference(node.func.value)
        ):
            writes = PATH_METHODS[node.func.attr]
            path_node = node.func.value
            mode_index = 0
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "tofile":
            writes, mode_index = True, 1
            path_node = node.args[0] if node.args else None
        else:
            return
        if writes is None:
            mode = node.args[mode_index] if len(node.args) > mode_index else None
            mode = mode or next((k.value for k in node.keywords if k.arg == "mode"), None)
            text = fold_string(mode) if mode is not None else "r"
            writes = text is None or any(letter in text for letter in "wax+")
        verb = "writes" if writes else "reads"
        if (
            path_node is not None
            and isinstance(path_node, ast.Constant)
            and isinstance(path_node.value, int)
        ):
            self._findings.flag(
                SUMMARY_WRITE,
                node,
                f"opens file descriptor {path_node.value} directly ({source_snippet(node)}): "
                f"{WHY_SUMMARY}",
            )
            return
        path = self._paths.resolve(path_node) if path_node is not None else None
        if path is None:
            self._findings.flag(
                FILE_ACCESS,
                node,
                f"{verb} a file whose path is only known at run time ({source_snippet(node)}): "
                f"{WHY_FILES}",
            )
        elif outside_workspace(path):
            self._findings.flag(
                FILE_ACCESS,
                node,
                f"{verb} {path!r}, outside the workspace ({source_snippet(node)}): {WHY_FILES}",
            )
        elif writes:
            protected = PROTECTED_WORKSPACE_FILES.get(posixpath.normpath(path))
            if protected is not None:
                kind, why = protected
                self._findings.flag(
                    kind, node, f"writes the workspace's {path} during the run: {why}"
                )
