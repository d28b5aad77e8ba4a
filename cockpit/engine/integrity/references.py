"""What a script reaches by name: the modules it imports, the names and attributes it uses
(refused modules and functions, frames and globals, pretrained weights) and the harness's
evaluation size."""

from __future__ import annotations

import ast

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    FILE_ACCESS,
    HARNESS_TAMPER,
    PROCESS,
    SLEEP,
    SUMMARY_WRITE,
    VALIDATION_DATA,
    WHY_DATA,
    WHY_EVAL,
    WHY_FILES,
    WHY_FIXED,
    WHY_PROCESS,
    WHY_SLEEP,
    WHY_SUMMARY,
    Findings,
)
from cockpit.engine.integrity.names import Names, match_module, match_reference
from cockpit.engine.integrity.rules import PRETRAINED_ATTRIBUTES, REFLECTION_ATTRIBUTES
from cockpit.engine.integrity.syntax import source_snippet

_WHY = {
    FILE_ACCESS: WHY_FILES,
    VALIDATION_DATA: WHY_DATA,
    HARNESS_TAMPER: WHY_FIXED,
    EVAL_SETTINGS: WHY_EVAL,
    SUMMARY_WRITE: WHY_SUMMARY,
    SLEEP: WHY_SLEEP,
    PROCESS: WHY_PROCESS,
}


def flag_eval_tokens(findings: Findings, node: ast.AST) -> None:
    """eval_tokens named anywhere: in a name, an attribute or a string."""
    findings.flag(
        EVAL_SETTINGS,
        node,
        "names eval_tokens, the harness's evaluation size: " + WHY_EVAL,
    )


class ReferenceChecks:
    """The checks of imports, names and attributes."""

    def __init__(self, names: Names, findings: Findings) -> None:
        self._names = names
        self._findings = findings

    def check_import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)

    def check_import_from(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"uses a relative import ({source_snippet(node)}): it reaches the harness's package; "
                f"{WHY_FIXED}",
            )
            return
        if self._check_module(node, module):
            return
        for alias in node.names:
            if self._check_module(node, f"{module}.{alias.name}"):
                return

    def _check_module(self, node: ast.AST, module: str) -> bool:
        found = match_module(module)
        if found is None:
            return False
        kind, what = found
        self._findings.flag(kind, node, f"imports {module} ({what}): {_WHY.get(kind, WHY_FIXED)}")
        return True

    def check_name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            qualified = self._names.qualified(node)
            if qualified is not None:
                self._check_reference(node, qualified)
        if "eval_tokens" in node.id.lower():
            flag_eval_tokens(self._findings, node)

    def check_attribute(self, node: ast.Attribute) -> None:
        qualified = self._names.qualified(node)
        if qualified is not None:
            self._check_reference(node, qualified)
        if node.attr in REFLECTION_ATTRIBUTES:
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"reads .{node.attr} ({source_snippet(node)}): it reaches the harness's frames, code "
                f"or globals; {WHY_FIXED}",
            )
        elif node.attr in PRETRAINED_ATTRIBUTES:
            self._findings.flag(
                FILE_ACCESS,
                node,
                f"loads pretrained weights ({source_snippet(node)}): {WHY_FILES}",
            )
        if "eval_tokens" in node.attr.lower():
            flag_eval_tokens(self._findings, node)

    def check_getattr(self, node: ast.Call) -> None:
        """getattr(module, "name"): the name looked up, as if written out."""
        looked_up = self._names.qualified(node)
        if looked_up is not None:
            self._check_reference(node, looked_up)

    def _check_reference(self, node: ast.AST, qualified: str) -> None:
        found = match_reference(qualified)
        if found is not None:
            name, kind, what = found
            self._findings.flag(kind, node, f"uses {name} ({what}): {_WHY.get(kind, WHY_FIXED)}")
