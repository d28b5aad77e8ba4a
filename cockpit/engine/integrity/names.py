"""What an expression refers to: the modules and objects a script's names stand for, which
names hold the harness's context (`ctx`), and the scope a pass over the script stands in."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator

from cockpit.engine.integrity.rules import (
    MODULES,
    REFERENCE_MODULES,
    REFERENCE_PREFIXES,
    REFERENCES,
)
from cockpit.engine.integrity.syntax import all_parameters, own_nodes, positional_parameters


class Names:
    """The script's imports and bindings, to resolve `F.cross_entropy` to
    `torch.nn.functional.cross_entropy`, and `nap` (from time import sleep as nap) to
    `time.sleep`."""

    def __init__(self, tree: ast.Module) -> None:
        self.imports: dict[str, str] = {}
        self.bound: set[str] = set()
        self.single_assignments: dict[str, ast.expr] = {}
        assignment_counts: Counter[str] = Counter()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        self.imports[root] = root
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name != "*":
                        self.imports[alias.asname or alias.name] = f"{module}.{alias.name}"
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.bound.add(node.id)
                assignment_counts[node.id] += 1
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
                assignment_counts[node.arg] += 1
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(node.name)
                assignment_counts[node.name] += 1
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bound.add(node.name)
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                self.single_assignments[node.targets[0].id] = node.value
        for name, count in assignment_counts.items():
            if count != 1:
                self.single_assignments.pop(name, None)
        self.bound -= set(self.imports)

    def qualified(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, through imports; None for a local value."""
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return self.imports[node.id]
            return None if node.id in self.bound else node.id
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base is not None else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and node.func.id not in self.bound
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = self.qualified(node.args[0])
            return f"{base}.{node.args[1].value}" if base is not None else None
        return None

    def is_module_reference(self, node: ast.AST) -> bool:
        """Whether an expression names an imported module or one of its members (a chain of
        attributes from an imported name, with no call or subscript on the way)."""
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.imports


def match_reference(qualified: str) -> tuple[str, str, str] | None:
    """The name to report, the kind and what it does, for a refused name."""
    if qualified in REFERENCES:
        return (qualified, *REFERENCES[qualified])
    for prefix, kind, what in REFERENCE_PREFIXES:
        if qualified.startswith(prefix):
            return qualified, kind, what
    for module, kind, what in REFERENCE_MODULES:
        if qualified == module or qualified.startswith(module + "."):
            return module, kind, what
    return None


def match_module(module: str) -> tuple[str, str] | None:
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        found = MODULES.get(".".join(parts[:length]))
        if found is not None:
            return found
    return None


# --- ctx: which names hold the harness's context --------------------------------------------------


FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


class ContextNames:
    """Where the harness's ctx flows: train(ctx)'s parameter, the parameters of the script's
    own functions it is passed to, local aliases, globals and attributes it is stored in."""

    def __init__(self, tree: ast.Module) -> None:
        self.by_function: dict[int, set[str]] = {}
        self.module_names: set[str] = set()
        self.attributes: set[str] = set()
        functions: dict[str, list[FunctionNode]] = {}
        methods: dict[str, list[FunctionNode]] = {}
        classes: dict[str, ast.ClassDef] = {}
        for statement in tree.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(statement.name, []).append(statement)
            elif isinstance(statement, ast.ClassDef):
                classes[statement.name] = statement
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        methods.setdefault(item.name, []).append(item)
        work: list[tuple[FunctionNode, set[str]]] = []
        for train in functions.get("train", []):
            parameters = positional_parameters(train)
            if parameters:
                work.append((train, {parameters[0]}))
        while work:
            function, names = work.pop()
            known = self.by_function.setdefault(id(function), set())
            if names <= known and known:
                continue
            known |= names
            self._follow(function, known, functions, methods, classes, work)

    def _follow(
        self,
        function: FunctionNode,
        names: set[str],
        functions: dict[str, list[FunctionNode]],
        methods: dict[str, list[FunctionNode]],
        classes: dict[str, ast.ClassDef],
        work: list[tuple[FunctionNode, set[str]]],
    ) -> None:
        declared_global: set[str] = set()
        for node in own_nodes(function):
            if isinstance(node, ast.Global):
                declared_global.update(node.names)
        grew = True
        while grew:
            grew = False
            for node in own_nodes(function):
                if isinstance(node, ast.Assign) and self._holds(node.value, names):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id not in names:
                            names.add(target.id)
                            grew = True
                            if target.id in declared_global:
                                self.module_names.add(target.id)
                        elif isinstance(target, ast.Attribute):
                            self.attributes.add(target.attr)
        for node in own_nodes(function):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                work.append((node, names - all_parameters(node)))
            elif isinstance(node, ast.Call):
                for callee, offset in self._callees(node, functions, methods, classes):
                    parameters = positional_parameters(callee)[offset:]
                    passed = {
                        parameters[index]
                        for index, argument in enumerate(node.args)
                        if index < len(parameters) and self._holds(argument, names)
                    }
                    passed |= {
                        keyword.arg
                        for keyword in node.keywords
                        if keyword.arg and self._holds(keyword.value, names)
                    }
                    if passed:
                        work.append((callee, passed))

    def _holds(self, node: ast.AST, names: set[str]) -> bool:
        return (isinstance(node, ast.Name) and node.id in names) or (
            isinstance(node, ast.Attribute) and node.attr in self.attributes
        )

    @staticmethod
    def _callees(
        call: ast.Call,
        functions: dict[str, list[FunctionNode]],
        methods: dict[str, list[FunctionNode]],
        classes: dict[str, ast.ClassDef],
    ) -> Iterator[tuple[FunctionNode, int]]:
        if isinstance(call.func, ast.Name):
            for function in functions.get(call.func.id, []):
                yield function, 0
            cls = classes.get(call.func.id)
            if cls is not None:
                for item in cls.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        yield item, 1
        elif (
            isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id in ("self", "cls")
        ):
            for method in methods.get(call.func.attr, []):
                yield method, 1

    def names_in(self, function: FunctionNode | None) -> set[str]:
        local = self.by_function.get(id(function), set()) if function is not None else set()
        return local | self.module_names

    def holds(self, node: ast.AST, function: FunctionNode | None) -> bool:
        """Whether an expression is the harness's ctx in the given function."""
        return self._holds(node, self.names_in(function))


class Scope:
    """The script's names as the pass over it stands: what an expression refers to, and
    whether it holds ctx in the function being visited (ctx flows by name, function by
    function)."""

    def __init__(self, tree: ast.Module) -> None:
        self.names = Names(tree)
        self.ctx = ContextNames(tree)
        self._functions: list[FunctionNode] = []

    def enter(self, function: FunctionNode) -> None:
        self._functions.append(function)

    def leave(self) -> None:
        self._functions.pop()

    def is_ctx(self, node: ast.AST) -> bool:
        """Whether an expression is the harness's ctx where the pass stands."""
        function = self._functions[-1] if self._functions else None
        return self.ctx.holds(node, function)
