"""The seed: a proposal that changes nothing but the random seed only re-rolls the noise
(`seed_only_change`), and a script that seeds a generator with anything but the harness's
``ctx.seed`` draws the same luck on every seed (`SeedChecks`).

The second is what makes the run's noise honest: the baseline's noise runs, a confirmation and
a verification each train on another seed and read the spread from what changes. A script that
calls ``torch.manual_seed(1234)`` would answer every seed with the initial weights it found
luckiest, and its verified value would be as lucky as its ledger's. The check is static and
so best-effort: a seed is accepted as ``ctx.seed``, ``int(ctx.seed)``, ``ctx.seed`` plus or
minus a whole number, or ``ctx.seed`` modulo a number of 2**16 or more (a second generator, a
generator that wants 32 bits); anything else, no argument included (seeded from the clock), is
flagged."""

from __future__ import annotations

import ast
import difflib
import functools

from agent.syntax import parse
from cockpit.engine.integrity.flags import (
    FIXED_SEED,
    SEED_ONLY,
    WHY_FIXED_SEED,
    WHY_SEED,
    Findings,
    Flag,
)
from cockpit.engine.integrity.names import Scope
from cockpit.engine.integrity.rules import SEED_FUNCTIONS, SEED_METHODS
from cockpit.engine.integrity.syntax import is_bare_string


def _seedlike(name: str) -> bool:
    return "seed" in name.lower()


def _is_seed_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in SEED_METHODS
    return isinstance(func, ast.Name) and func.id in SEED_FUNCTIONS


class SeedChecks:
    """Seeding calls whose seed is not the harness's ``ctx.seed``."""

    def __init__(self, scope: Scope, findings: Findings) -> None:
        self.scope = scope
        self.findings = findings

    def check_call(self, node: ast.Call) -> None:
        if not _is_seed_call(node):
            return
        seeds = [*node.args[:1], *(k.value for k in node.keywords if k.arg and _seedlike(k.arg))]
        if seeds and all(self._from_ctx(seed) for seed in seeds):
            return
        call = ast.unparse(node)
        call = call if len(call) <= 60 else call[:57] + "..."
        self.findings.flag(
            FIXED_SEED, node, f"{call} does not seed from ctx.seed: {WHY_FIXED_SEED}"
        )

    def _from_ctx(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "seed":
            return self.scope.is_ctx(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id == "int" and len(node.args) == 1 and self._from_ctx(node.args[0])
        if not isinstance(node, ast.BinOp) or not self._from_ctx(node.left):
            return False
        right = node.right
        if not isinstance(right, ast.Constant) or type(right.value) is not int:
            return isinstance(node.op, ast.Mod) and _power_of_two_at_least_16(right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return True
        return isinstance(node.op, ast.Mod) and right.value >= 2**16


def _power_of_two_at_least_16(node: ast.AST) -> bool:
    """``2**32`` and its like, written as a power."""
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Pow)
        and isinstance(node.left, ast.Constant)
        and node.left.value == 2
        and isinstance(node.right, ast.Constant)
        and type(node.right.value) is int
        and node.right.value >= 16
    )


class _WithoutDocstrings(ast.NodeTransformer):
    """Drops string statements (docstrings): they change nothing that runs."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        return None if is_bare_string(node) else self.generic_visit(node)


class _WithoutSeeds(_WithoutDocstrings):
    """Blinds a tree to its seeds: seed calls and seed constants dropped, seed values replaced
    by one placeholder, so that two scripts differing only by seed become equal."""

    _PLACEHOLDER = "__seed__"

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if _is_seed_call(node.value):
            return None
        return super().visit_Expr(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        if all(self._seed_target(target) for target in node.targets):
            return None
        return self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        return None if self._seed_target(node.target) else self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | None:
        return None if self._seed_target(node.target) else self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if _is_seed_call(node):
            node.args, node.keywords = [], []
        for keyword in node.keywords:
            if keyword.arg and _seedlike(keyword.arg):
                keyword.value = ast.Name(self._PLACEHOLDER, ast.Load())
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(self._PLACEHOLDER, node.ctx) if _seedlike(node.id) else node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if _seedlike(node.attr):
            return ast.Name(self._PLACEHOLDER, node.ctx)
        return self.generic_visit(node)

    @staticmethod
    def _seed_target(target: ast.AST) -> bool:
        if isinstance(target, ast.Name):
            return _seedlike(target.id)
        if isinstance(target, ast.Attribute):
            return _seedlike(target.attr)
        if isinstance(target, (ast.Tuple, ast.List)):
            return all(_WithoutSeeds._seed_target(element) for element in target.elts)
        return False


@functools.lru_cache(maxsize=16)
def dump(source: str, blind_to_seeds: bool) -> str:
    """The script's tree as text, without docstrings (and, if asked, without its seeds).
    Cached: the engine compares many proposals against the same best script."""
    transformer = _WithoutSeeds() if blind_to_seeds else _WithoutDocstrings()
    return ast.dump(transformer.visit(parse(source)))


def seed_only_change(old: str, new: str) -> Flag | None:
    if dump(old, False) == dump(new, False):
        return None  # nothing that runs changed
    if dump(old, True) != dump(new, True):
        return None
    return Flag(
        SEED_ONLY, _first_changed_line(old, new), f"changes only the random seed: {WHY_SEED}"
    )


def _first_changed_line(old: str, new: str) -> int | None:
    """The first line of the new script that differs, preferring one that mentions a seed."""
    new_lines = new.splitlines()
    changed: list[int] = []
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new_lines, autojunk=False)
    for tag, _, _, start, end in matcher.get_opcodes():
        if tag != "equal":
            changed.extend(range(start, max(end, start + 1)))
    for index in changed:
        if index < len(new_lines) and "seed" in new_lines[index].lower():
            return index + 1
    return changed[0] + 1 if changed and changed[0] < len(new_lines) else None
