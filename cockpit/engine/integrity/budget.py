"""The time budget: a run must stop when its budget is spent, and spend it training. Flags
what swallows the harness's stop (a bare except, a suppress, a finally that returns), loops
that only wait on the clock, and comparisons that train past the end of the budget."""

from __future__ import annotations

import ast

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    HARNESS_TAMPER,
    SLEEP,
    WHY_BUDGET,
    WHY_SLEEP,
    Findings,
)
from cockpit.engine.integrity.names import Scope
from cockpit.engine.integrity.rules import CLOCK_FUNCTIONS, CTX_CLOCK_METHODS, STOP_CATCHING
from cockpit.engine.integrity.syntax import own_nodes, source_snippet


class BudgetChecks:
    """The checks of exception handling, loops and comparisons with ctx's clock."""

    def __init__(self, scope: Scope, findings: Findings) -> None:
        self._scope = scope
        self._findings = findings

    # the harness's stop

    def check_handler(self, node: ast.ExceptHandler) -> None:
        if (node.type is None or self._catches_stop(node.type)) and not any(
            isinstance(statement, ast.Raise) for statement in node.body
        ):
            caught = "everything" if node.type is None else source_snippet(node.type)
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"catches {caught} without re-raising: that swallows the harness's stop at the end "
                f"of the budget; catch Exception instead; {WHY_BUDGET}",
            )

    def check_call(self, node: ast.Call, function_name: str) -> None:
        if function_name == "contextlib.suppress" and any(
            self._catches_stop(argument) for argument in node.args
        ):
            self._findings.flag(
                HARNESS_TAMPER,
                node,
                f"suppresses BaseException ({source_snippet(node)}): that swallows the harness's stop; "
                f"{WHY_BUDGET}",
            )

    def _catches_stop(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple):
            return any(self._catches_stop(element) for element in node.elts)
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in STOP_CATCHING

    def check_finally(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            for node in [statement, *own_nodes(statement)]:
                escapes = isinstance(node, ast.Return) or (
                    isinstance(node, (ast.Break, ast.Continue))
                    and not _inside_loop(statement, node)
                )
                if escapes:
                    self._findings.flag(
                        HARNESS_TAMPER,
                        node,
                        f"leaves a finally block with {source_snippet(node)}: that swallows the "
                        f"harness's stop at the end of the budget; {WHY_BUDGET}",
                    )

    # waiting

    def check_while(self, node: ast.While) -> None:
        if self._idle(node.body):
            self._findings.flag(
                SLEEP,
                node,
                f"loops without doing any work (while {source_snippet(node.test)}: ...): {WHY_SLEEP}",
            )

    def check_for(self, node: ast.For) -> None:
        if all(
            isinstance(statement, (ast.Pass, ast.Continue))
            or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
            for statement in node.body
        ):
            self._findings.flag(
                SLEEP,
                node,
                f"loops without doing any work (for ... in {source_snippet(node.iter)}: ...): "
                f"{WHY_SLEEP}",
            )

    def _idle(self, body: list[ast.stmt]) -> bool:
        return all(self._idle_statement(statement) for statement in body)

    def _idle_statement(self, statement: ast.stmt) -> bool:
        if isinstance(statement, (ast.Pass, ast.Continue)):
            return True
        if isinstance(statement, ast.Expr):
            return isinstance(statement.value, ast.Constant) or self._clock_call(statement.value)
        if isinstance(statement, (ast.Assign, ast.AugAssign)):
            return self._trivial_value(statement.value)
        return False

    def _trivial_value(self, node: ast.AST) -> bool:
        if isinstance(node, (ast.Constant, ast.Name)):
            return True
        if isinstance(node, ast.BinOp):
            return self._trivial_value(node.left) and self._trivial_value(node.right)
        return self._clock_call(node)

    def _clock_call(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        if self._scope.names.qualified(node.func) in CLOCK_FUNCTIONS:
            return True
        func = node.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in CTX_CLOCK_METHODS
            and self._scope.is_ctx(func.value)
        )

    # training past the end

    def check_compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for operand in operands:
            method = self._ctx_method(operand)
            others = [other for other in operands if other is not operand]
            overrun = (
                (method == "time_left" and any(_negative(other) for other in others))
                or (method == "progress" and any(_above_one(other) for other in others))
                or (method == "elapsed" and any(self._budget_extended(other) for other in others))
            )
            if overrun:
                self._findings.flag(
                    EVAL_SETTINGS,
                    node,
                    f"trains past the end of the budget ({source_snippet(node)}): {WHY_BUDGET}",
                )

    def _ctx_method(self, node: ast.AST) -> str | None:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and self._scope.is_ctx(node.func.value)
        ):
            return node.func.attr
        return None

    def _budget_extended(self, node: ast.AST) -> bool:
        return (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, (ast.Add, ast.Mult))
            and any(
                isinstance(part, ast.Attribute)
                and part.attr == "budget_seconds"
                and self._scope.is_ctx(part.value)
                for part in (node.left, node.right)
            )
        )


def _inside_loop(root: ast.AST, target: ast.AST) -> bool:
    for loop in [root, *own_nodes(root)]:
        if (
            isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
            and loop is not target
            and any(inner is target for inner in own_nodes(loop))
        ):
            return True
    return False


def _negative(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return not (isinstance(node.operand, ast.Constant) and node.operand.value == 0)
    return (
        isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and node.value < 0
    )


def _above_one(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value > 1
    )
