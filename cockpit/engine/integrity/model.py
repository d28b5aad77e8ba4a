"""The returned model: the script's torch modules, checked for what would make the model
behave differently between the harness's probe and its evaluation (a forward that depends on
the batch size, changes its own state, computes gradients or reads the clock; an override of
eval() or train(); a reduction argument it ignores)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from cockpit.engine.integrity.flags import EVAL_SETTINGS, WHY_FIXED, WHY_PROBE, Findings
from cockpit.engine.integrity.names import Names
from cockpit.engine.integrity.rules import (
    CLOCK_FUNCTIONS,
    GRADIENT_CALLS,
    GRADIENT_METHODS,
    TARGET_PARAMETERS,
)
from cockpit.engine.integrity.syntax import all_parameters, source_snippet


class ModelChecks:
    """The checks of the script's model classes, run on the whole tree at once."""

    def __init__(self, tree: ast.Module, names: Names, findings: Findings) -> None:
        self._tree = tree
        self._names = names
        self._findings = findings

    def check(self) -> None:
        for cls in self._model_classes():
            self._check_model_class(cls)

    def _model_classes(self) -> list[ast.ClassDef]:
        """The script's torch modules: classes based on nn.Module, or on such a class of its own."""
        classes = [node for node in ast.walk(self._tree) if isinstance(node, ast.ClassDef)]
        models: dict[str, ast.ClassDef] = {}
        grew = True
        while grew:
            grew = False
            for cls in classes:
                if cls.name in models:
                    continue
                for base in cls.bases:
                    qualified = self._names.qualified(base) or ""
                    own = isinstance(base, ast.Name) and base.id in models
                    if own or qualified.startswith("torch.nn."):
                        models[cls.name] = cls
                        grew = True
                        break
        return list(models.values())

    def _check_model_class(self, cls: ast.ClassDef) -> None:
        for item in cls.body:
            if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if item.name in ("eval", "train"):
                self._findings.flag(
                    EVAL_SETTINGS,
                    item,
                    f"{cls.name} overrides {item.name}(): the harness switches the model to "
                    f"evaluation mode through it before probing and scoring; {WHY_FIXED}",
                )
            elif item.name in ("forward", "__call__"):
                self._check_forward(cls, item)

    def _check_forward(
        self, cls: ast.ClassDef, forward: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        where = f"{cls.name}.{forward.name}()"
        parameters = all_parameters(forward)
        self._check_reduction(where, forward, parameters)
        batch_names = self._batch_names(forward)
        for node in _evaluated_nodes(forward):
            if isinstance(node, ast.Compare) and self._depends_on_batch(node, batch_names):
                self._findings.flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} depends on the batch size ({source_snippet(node)}): {WHY_PROBE}",
                )
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                self._findings.flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes state outside the model ({source_snippet(node)}): {WHY_PROBE}",
                )
            elif self._changes_own_state(node):
                self._findings.flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes the model's own state on every call ({source_snippet(node)}): "
                    f"{WHY_PROBE}, and would learn from the held-out data during evaluation",
                )
            elif isinstance(node, ast.Call):
                self._check_forward_call(where, node)

    def _check_forward_call(self, where: str, node: ast.Call) -> None:
        qualified = self._names.qualified(node.func) or ""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        disables_inference = qualified == "torch.inference_mode" and any(
            isinstance(argument, ast.Constant) and argument.value is False for argument in node.args
        )
        if qualified in GRADIENT_CALLS or disables_inference or method in GRADIENT_METHODS:
            self._findings.flag(
                EVAL_SETTINGS,
                node,
                f"{where} computes gradients, steps an optimiser or leaves evaluation mode "
                f"({source_snippet(node)}): during evaluation it would train on the held-out data",
            )
        elif qualified in CLOCK_FUNCTIONS or qualified.startswith(("time.", "datetime.")):
            self._findings.flag(
                EVAL_SETTINGS,
                node,
                f"{where} reads the clock ({source_snippet(node)}): {WHY_PROBE}",
            )

    def _check_reduction(
        self, where: str, forward: ast.FunctionDef | ast.AsyncFunctionDef, parameters: set[str]
    ) -> None:
        takes_targets = bool(parameters & TARGET_PARAMETERS) or "reduction" in parameters
        if not takes_targets:
            return
        used = {
            node.id
            for node in ast.walk(forward)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        }
        if "reduction" in parameters:
            if "reduction" not in used:
                self._findings.flag(
                    EVAL_SETTINGS,
                    forward,
                    f"{where} ignores its reduction argument: the evaluator asks for "
                    "reduction='none' and scores the per-token losses",
                )
            return
        kwarg = forward.args.kwarg
        if kwarg is None or kwarg.arg not in used:
            self._findings.flag(
                EVAL_SETTINGS,
                forward,
                f"{where} takes targets but no reduction argument: the evaluator calls "
                "model(idx, targets, reduction='none') and scores the per-token losses",
            )

    @staticmethod
    def _batch_names(forward: ast.AST) -> set[str]:
        """Local names bound to the batch size (batch, length = idx.shape; n = x.size(0))."""
        names: set[str] = set()
        for node in ast.walk(forward):
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target, value = node.targets[0], node.value
            whole_shape = (isinstance(value, ast.Attribute) and value.attr == "shape") or (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "size"
                and not value.args
            )
            if whole_shape and isinstance(target, ast.Tuple) and target.elts:
                first = target.elts[0]
                if isinstance(first, ast.Name) and not _on_self(value):
                    names.add(first.id)
            elif isinstance(target, ast.Name) and _batch_expression(value, set()):
                names.add(target.id)
        return names

    @staticmethod
    def _depends_on_batch(compare: ast.Compare, batch_names: set[str]) -> bool:
        """A comparison of the batch size with something else (two batch sizes compared with
        each other, as in a shape check, are the same on every call)."""
        operands = [compare.left, *compare.comparators]
        mentions = [
            any(_batch_expression(part, batch_names) for part in ast.walk(operand))
            for operand in operands
        ]
        return any(mentions) and not all(mentions)

    @staticmethod
    def _changes_own_state(node: ast.AST) -> bool:
        if isinstance(node, ast.AugAssign):
            return _on_self(node.target)
        if isinstance(node, ast.Assign):
            return any(
                (isinstance(target, ast.Attribute) and target.attr == "training")
                or (
                    _on_self(target)
                    and any(
                        isinstance(part, ast.Attribute | ast.Subscript)
                        and ast.dump(part) == ast.dump(target)
                        for part in ast.walk(node.value)
                    )
                )
                for target in node.targets
            )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method == "train":
                return True
            in_place = (method.endswith("_") and not method.startswith("_")) or method in (
                "append",
                "extend",
                "insert",
            )
            return in_place and _on_self(node.func.value)
        return False


def _on_self(expression: ast.AST) -> bool:
    """Whether an expression is state the model keeps (self.count, self.memory[i],
    self.weight.data), reached without calling anything: self.head(x).mul_() changes a fresh
    tensor only."""
    if not isinstance(expression, (ast.Attribute, ast.Subscript)):
        return False
    while isinstance(expression, (ast.Attribute, ast.Subscript)):
        expression = expression.value
    return isinstance(expression, ast.Name) and expression.id == "self"


def _batch_expression(node: ast.AST, batch_names: set[str]) -> bool:
    """The size of the batch a forward was called with: x.shape[0], x.size(0), len(x),
    x.numel(), or a name bound to one of them (never the fixed shape of the model's own state)."""
    if isinstance(node, ast.Name):
        return node.id in batch_names
    if isinstance(node, ast.Subscript):
        index = node.slice
        return (
            isinstance(node.value, ast.Attribute)
            and node.value.attr == "shape"
            and not _on_self(node.value.value)
            and isinstance(index, ast.Constant)
            and index.value == 0
        )
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "len":
            return bool(node.args) and isinstance(node.args[0], ast.Name)
        if isinstance(func, ast.Attribute) and not _on_self(func.value):
            if func.attr == "numel":
                return True
            return (
                func.attr == "size"
                and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == 0
            )
    return False


def _evaluated_nodes(forward: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a forward that can run during evaluation: not the body of an
    `if self.training:` (the harness evaluates in eval mode), not assert statements (they
    change no answer)."""
    stack = list(ast.iter_child_nodes(forward))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Assert):
            continue
        yield node
        if isinstance(node, ast.If) and _training_only(node.test):
            stack.append(node.test)
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _training_only(test: ast.AST) -> bool:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_training_only(value) for value in test.values)
    return (
        isinstance(test, ast.Attribute)
        and test.attr == "training"
        and isinstance(test.value, ast.Name)
        and test.value.id == "self"
    )
