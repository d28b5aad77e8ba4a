"""What a script's strings name: the corpus cache and the held-out split, the engine's run
files, the summary block, the harness's settings and modules."""

from __future__ import annotations

import ast
import re

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    HARNESS_TAMPER,
    SUMMARY_WRITE,
    VALIDATION_DATA,
    WHY_DATA,
    WHY_EVAL,
    WHY_FIXED,
    WHY_SUMMARY,
    Findings,
)
from cockpit.engine.integrity.references import flag_eval_tokens
from cockpit.engine.integrity.rules import (
    CACHE_PATTERNS,
    EVAL_OPTION,
    HARNESS_MODULE_STRING,
    RUN_FILE_PATTERNS,
    SPLIT_NAME,
    SUMMARY_LINE,
)
from cockpit.engine.integrity.syntax import fold_string, is_bare_string


def _excerpt(text: str, match: re.Match[str]) -> str:
    start, end = max(0, match.start() - 20), min(len(text), match.end() + 20)
    excerpt = " ".join(text[start:end].split())
    return excerpt.replace('"', "'")


class StringChecks:
    """The checks of string expressions, each folded from its literal parts first."""

    def __init__(self, tree: ast.Module, findings: Findings) -> None:
        self._findings = findings
        # Docstrings say nothing that runs; the arguments of calls are where a split is named.
        self._bare_strings: set[int] = set()
        self._arguments: set[int] = set()
        for node in ast.walk(tree):
            if is_bare_string(node) and isinstance(node, ast.Expr):
                self._bare_strings.add(id(node.value))
            elif isinstance(node, ast.Call):
                self._arguments.update(id(argument) for argument in node.args)
                self._arguments.update(id(keyword.value) for keyword in node.keywords)

    def check_constant(self, node: ast.Constant) -> None:
        if id(node) not in self._bare_strings:
            text = fold_string(node)
            if text is not None:
                self.check(node, text)

    def check_folded(self, node: ast.AST) -> bool:
        """Check the text a string expression folds to; whether it folded to one."""
        text = fold_string(node)
        if text is None:
            return False
        self.check(node, text)
        return True

    def check(self, node: ast.AST, text: str) -> None:
        if not text:
            return
        flag = self._findings.flag
        if id(node) in self._arguments and SPLIT_NAME.fullmatch(text):
            # load("val"), os.path.join(cache, "validation"): a split asked for by name.
            flag(
                VALIDATION_DATA,
                node,
                f'asks for the held-out split by name ("{text}"): {WHY_DATA}',
            )
        for pattern, what in CACHE_PATTERNS:
            match = pattern.search(text)
            if match:
                flag(
                    VALIDATION_DATA,
                    node,
                    f'names {what} ("{_excerpt(text, match)}"): {WHY_DATA}',
                )
        for pattern, what in RUN_FILE_PATTERNS:
            match = pattern.search(text)
            if match:
                flag(
                    SUMMARY_WRITE,
                    node,
                    f'names {what} ("{_excerpt(text, match)}"): {WHY_SUMMARY}',
                )
        match = SUMMARY_LINE.search(text)
        if match:
            flag(
                SUMMARY_WRITE,
                node,
                f'writes text that looks like the summary block ("{_excerpt(text, match)}"): '
                f"{WHY_SUMMARY}; print progress in other words",
            )
        match = EVAL_OPTION.search(text)
        if match:
            flag(
                EVAL_SETTINGS,
                node,
                f'names a setting of the harness ("{_excerpt(text, match)}"): {WHY_EVAL}',
            )
        if "eval_tokens" in text:
            flag_eval_tokens(self._findings, node)
        if HARNESS_MODULE_STRING.fullmatch(text) and "." in text:
            flag(HARNESS_TAMPER, node, f'names the module "{text}" of the harness: {WHY_FIXED}')
        if text in ("__builtins__", "__import__"):
            flag(HARNESS_TAMPER, node, f'names "{text}": {WHY_FIXED}')
