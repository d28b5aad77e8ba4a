"""The scan: one pass over a script's syntax tree that raises a flag for every way found of
reaching around the harness.

The pass owns the walk (the scope it stands in, which nodes it descends into) and hands each
node to the checks of every concern it concerns, in a fixed order: `references` (what is
reached by name), `strings` (what strings name), `files` (file access), `tampering` (changes
to shared state), `budget` (the stop and the clock), `seed` (seeds not from ctx); `model`
checks the returned model's classes afterwards.
"""

from __future__ import annotations

import ast

from cockpit.engine.integrity.budget import BudgetChecks
from cockpit.engine.integrity.files import FileChecks
from cockpit.engine.integrity.flags import Findings, Flag
from cockpit.engine.integrity.model import ModelChecks
from cockpit.engine.integrity.names import FunctionNode, Scope
from cockpit.engine.integrity.references import ReferenceChecks
from cockpit.engine.integrity.seed import SeedChecks
from cockpit.engine.integrity.strings import StringChecks
from cockpit.engine.integrity.tampering import TamperChecks


class Scanner(ast.NodeVisitor):
    """One pass over a script's tree that collects every finding."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.scope = Scope(tree)
        self.findings = Findings()
        self.references = ReferenceChecks(self.scope.names, self.findings)
        self.strings = StringChecks(tree, self.findings)
        self.files = FileChecks(self.scope.names, self.findings)
        self.tampering = TamperChecks(self.scope, self.findings)
        self.budget = BudgetChecks(self.scope, self.findings)
        self.model = ModelChecks(tree, self.scope.names, self.findings)
        self.seeds = SeedChecks(self.scope, self.findings)

    def scan(self) -> list[Flag]:
        self.visit(self.tree)
        self.model.check()
        return self.findings.flags

    # scopes

    def _visit_function(self, node: FunctionNode) -> None:
        self.tampering.check_definition(node)
        self.scope.enter(node)
        self.generic_visit(node)
        self.scope.leave()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_function(node)

    # names

    def visit_Import(self, node: ast.Import) -> None:
        self.references.check_import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.references.check_import_from(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.references.check_name(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.references.check_attribute(node)
        self.tampering.check_attribute(node)
        self.generic_visit(node)

    # strings

    def visit_Constant(self, node: ast.Constant) -> None:
        self.strings.check_constant(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.strings.check_folded(node)
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if self.strings.check_folded(node):
            return
        self.generic_visit(node)

    # calls

    def visit_Call(self, node: ast.Call) -> None:
        function_name = self.scope.names.qualified(node.func) or ""
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            self.references.check_getattr(node)
        self.tampering.check_call(node, function_name)
        self.budget.check_call(node, function_name)
        self.files.check_call(node, function_name)
        self.seeds.check_call(node)
        if self.strings.check_folded(node):
            # "sep".join([...literals]): the joined text is checked once, not piece by piece.
            self.visit(node.func)
            return
        self.generic_visit(node)

    # assignments

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.tampering.check_target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.tampering.check_target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.tampering.check_target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self.tampering.check_target(target, node)
        self.generic_visit(node)

    # control flow

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self.budget.check_handler(node)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        self.budget.check_finally(node.finalbody)
        self.generic_visit(node)

    if hasattr(ast, "TryStar"):  # Python 3.11+

        def visit_TryStar(self, node: ast.AST) -> None:
            self.budget.check_finally(getattr(node, "finalbody", []))
            self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self.budget.check_while(node)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self.budget.check_for(node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        self.budget.check_compare(node)
        self.generic_visit(node)
