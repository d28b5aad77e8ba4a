"""Changes to what a script shares with the harness: ctx, modules and classes, the
environment, the import path, the output streams, and the names of the fixed evaluator."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    HARNESS_TAMPER,
    SUMMARY_WRITE,
    WHY_CTX,
    WHY_ENV,
    WHY_FIXED,
    WHY_SUMMARY,
    Findings,
)
from cockpit.engine.integrity.names import FunctionNode, Scope
from cockpit.engine.integrity.rules import (
    CTX_HARNESS_METHODS,
    ENV_TUNING_PREFIXES,
    ENV_WRITE_METHODS,
    EVALUATOR_NAMES,
    RESERVED_REPORT_KEYS,
    SYS_PATH_WRITE_METHODS,
    TUNABLE_MODULE_SETTINGS,
)
from cockpit.engine.integrity.syntax import fold_string, source_snippet


class TamperChecks:
    """The checks of definitions, assignments, attribute reads and calls that change or reach
    into shared state."""

    def __init__(self, scope: Scope, findings: Findings) -> None:
        self._scope = scope
        self._names = scope.names
        self._findings = findings

    def check_definition(self, node: FunctionNode) -> None:
        if not isinstance(node, ast.Lambda) and node.name in EVALUATOR_NAMES:
            self._findings.flag(
                EVAL_SETTINGS,
                node,
                f"defines {node.name}(), a name of the fixed evaluator or harness: {WHY_FIXED}",
            )

    def check_attribute(self, node: ast.Attribute) -> None:
        is_ctx = self._scope.is_ctx
        if node.attr == "__dict__" and (
            self._names.is_module_reference(node.value) or is_ctx(node.value)
        ):
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"reaches into the namespace of a module or of ctx ({source_snippet(node)}): "
                f"{WHY_FIXED}",
            )
        if is_ctx(node.value) and isinstance(node.ctx, ast.Load) and node.attr.startswith("_"):
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"reaches into ctx's private state ({source_snippet(node)}): {WHY_CTX}",
            )

    # calls

    def check_call(self, node: ast.Call, function_name: str) -> None:
        is_ctx = self._scope.is_ctx
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            name = node.args[1]
            if (
                is_ctx(node.args[0])
                and isinstance(name, ast.Constant)
                and str(name.value).startswith("_")
            ):
                self._findings.flag(
                    HARNESS_TAMPER,
                    node,
                    f"reaches into ctx's private state ({source_snippet(node)}): {WHY_CTX}",
                )
        self._check_attribute_setters(node, function_name)
        if (
            function_name in ("vars", "type")
            and node.args
            and (is_ctx(node.args[0]) or self._names.is_module_reference(node.args[0]))
        ):
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"reaches the class or namespace of ctx or of a module ({source_snippet(node)}): "
                f"{WHY_CTX if is_ctx(node.args[0]) else WHY_FIXED}",
            )
        if isinstance(node.func, ast.Attribute):
            self._check_method_call(node, node.func)

    def _check_attribute_setters(self, node: ast.Call, function_name: str) -> None:
        target: ast.AST | None = None
        if function_name in ("setattr", "delattr", "object.__setattr__", "object.__delattr__"):
            target = node.args[0] if node.args else None
        elif isinstance(node.func, ast.Attribute) and node.func.attr in (
            "__setattr__",
            "__delattr__",
        ):
            target = node.func.value
        if target is None:
            return
        if self._scope.is_ctx(target):
            self._findings.flag(
                HARNESS_TAMPER, node, f"changes ctx ({source_snippet(node)}): {WHY_CTX}"
            )
        elif self._names.is_module_reference(target) or (
            isinstance(target, ast.Call) and self._names.qualified(target.func) == "type"
        ):
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"patches a module or class at run time ({source_snippet(node)}): {WHY_FIXED}",
            )

    def _check_method_call(self, node: ast.Call, func: ast.Attribute) -> None:
        receiver = self._names.qualified(func.value)
        if receiver == "os.environ" and func.attr in ENV_WRITE_METHODS:
            keys: list[ast.expr | None] = []
            if func.attr == "update":
                for argument in node.args:
                    keys.extend(argument.keys if isinstance(argument, ast.Dict) else [None])
                keys.extend(
                    ast.Constant(keyword.arg) if keyword.arg else None for keyword in node.keywords
                )
            else:
                keys.append(node.args[0] if node.args else None)
            self._check_env_keys(node, keys)
        if receiver == "sys.path" and func.attr in SYS_PATH_WRITE_METHODS:
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"changes where Python imports from ({source_snippet(node)}): {WHY_FIXED}",
            )
        if self._scope.is_ctx(func.value):
            if func.attr in CTX_HARNESS_METHODS:
                self._findings.flag(
                    HARNESS_TAMPER,
                    node,
                    f"calls ctx.{func.attr}(), which only the harness calls: {WHY_CTX}",
                )
            if func.attr == "report":
                reserved = sorted(
                    keyword.arg for keyword in node.keywords if keyword.arg in RESERVED_REPORT_KEYS
                )
                if reserved:
                    self._findings.flag(
                        SUMMARY_WRITE,
                        node,
                        f"reports {', '.join(reserved)} through ctx.report(): those fields of the "
                        f"metrics stream and summary are the harness's; {WHY_SUMMARY}",
                    )

    def _check_env_keys(self, node: ast.AST, keys: Iterable[ast.expr | None]) -> None:
        for key in keys:
            name = fold_string(key) if key is not None else None
            if name is None:
                self._findings.flag(
                    EVAL_SETTINGS,
                    node,
                    f"sets environment variables it does not name ({source_snippet(node)}): {WHY_ENV}",
                )
            elif name.startswith("COCKPIT_") or not name.startswith(ENV_TUNING_PREFIXES):
                self._findings.flag(
                    EVAL_SETTINGS, node, f"changes the environment variable {name}: {WHY_ENV}"
                )

    # assignments

    def check_target(self, target: ast.AST, statement: ast.AST) -> None:
        """A target of an assignment or a del statement."""
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.check_target(element, statement)
            return
        if isinstance(target, ast.Starred):
            self.check_target(target.value, statement)
            return
        if isinstance(target, ast.Name):
            if target.id in EVALUATOR_NAMES:
                self._findings.flag(
                    EVAL_SETTINGS,
                    statement,
                    f"defines {target.id}, a name of the fixed evaluator or harness: {WHY_FIXED}",
                )
            return
        if isinstance(target, ast.Subscript):
            if self._names.qualified(target.value) == "os.environ":
                self._check_env_keys(statement, [target.slice])
            return
        if not isinstance(target, ast.Attribute):
            return
        qualified = self._names.qualified(target)
        if self._scope.is_ctx(target.value) or any(
            isinstance(part, ast.Attribute) and part.attr in self._scope.ctx.attributes
            for part in ast.walk(target.value)
        ):
            self._findings.flag(
                HARNESS_TAMPER, statement, f"changes ctx ({source_snippet(target)}): {WHY_CTX}"
            )
        elif qualified in ("sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__"):
            self._findings.flag(
                SUMMARY_WRITE,
                statement,
                f"replaces {qualified}, where the harness prints the summary: {WHY_SUMMARY}",
            )
        elif qualified == "os.environ":
            self._findings.flag(EVAL_SETTINGS, statement, f"replaces os.environ: {WHY_ENV}")
        elif self._names.is_module_reference(target) and not (
            qualified is not None and qualified.startswith(TUNABLE_MODULE_SETTINGS)
        ):
            self._findings.flag(
                HARNESS_TAMPER,
                statement,
                f"monkeypatches {qualified or source_snippet(target)}: patching a module changes the "
                f"code the harness and the evaluator share with the script; {WHY_FIXED}",
            )
