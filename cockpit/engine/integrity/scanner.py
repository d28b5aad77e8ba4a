"""The scan: one pass over a script's syntax tree that raises a flag for every way found of
reaching around the harness."""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Iterable, Iterator

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    FILE_ACCESS,
    HARNESS_TAMPER,
    PROCESS,
    SLEEP,
    SUMMARY_WRITE,
    VALIDATION_DATA,
    WHY_BUDGET,
    WHY_CTX,
    WHY_DATA,
    WHY_ENV,
    WHY_EVAL,
    WHY_FILES,
    WHY_FIXED,
    WHY_PROBE,
    WHY_PROCESS,
    WHY_SLEEP,
    WHY_SUMMARY,
    Flag,
)
from cockpit.engine.integrity.names import (
    ContextNames,
    FunctionNode,
    Names,
    match_module,
    match_reference,
)
from cockpit.engine.integrity.paths import Paths, outside_workspace
from cockpit.engine.integrity.rules import (
    CACHE_PATTERNS,
    CLOCK_FUNCTIONS,
    CTX_CLOCK_METHODS,
    CTX_HARNESS_METHODS,
    ENV_TUNING_PREFIXES,
    ENV_WRITE_METHODS,
    EVAL_OPTION,
    EVALUATOR_NAMES,
    FILE_FUNCTIONS,
    GRADIENT_CALLS,
    GRADIENT_METHODS,
    HARNESS_MODULE_STRING,
    PATH_METHODS,
    PRETRAINED_ATTRIBUTES,
    PROTECTED_WORKSPACE_FILES,
    REFLECTION_ATTRIBUTES,
    RESERVED_REPORT_KEYS,
    RUN_FILE_PATTERNS,
    SPLIT_NAME,
    STOP_CATCHING,
    SUMMARY_LINE,
    SYS_PATH_WRITE_METHODS,
    TARGET_PARAMETERS,
    TUNABLE_MODULE_SETTINGS,
)
from cockpit.engine.integrity.syntax import (
    all_parameters,
    fold_string,
    is_bare_string,
    own_nodes,
    source_snippet,
)


class Scanner(ast.NodeVisitor):
    """One pass over a script's tree that collects every finding."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.names = Names(tree)
        self.ctx = ContextNames(tree)
        self.paths = Paths(self.names)
        self.flags: list[Flag] = []
        self._seen: set[tuple[str, int | None, str]] = set()
        self._functions: list[FunctionNode] = []
        self._bare_strings: set[int] = set()
        self._arguments: set[int] = set()
        for node in ast.walk(tree):
            if is_bare_string(node) and isinstance(node, ast.Expr):
                self._bare_strings.add(id(node.value))
            elif isinstance(node, ast.Call):
                self._arguments.update(id(argument) for argument in node.args)
                self._arguments.update(id(keyword.value) for keyword in node.keywords)

    def scan(self) -> list[Flag]:
        self.visit(self.tree)
        for cls in self._model_classes():
            self._check_model_class(cls)
        return self.flags

    def _flag(self, kind: str, node: ast.AST | None, message: str) -> None:
        line = getattr(node, "lineno", None) if node is not None else None
        key = (kind, line, message)
        if key not in self._seen:
            self._seen.add(key)
            self.flags.append(Flag(kind, line, message))

    @property
    def _function(self) -> FunctionNode | None:
        return self._functions[-1] if self._functions else None

    def _is_ctx(self, node: ast.AST) -> bool:
        return self.ctx.holds(node, self._function)

    # scopes

    def _visit_function(self, node: FunctionNode) -> None:
        if not isinstance(node, ast.Lambda) and node.name in EVALUATOR_NAMES:
            self._flag(
                EVAL_SETTINGS,
                node,
                f"defines {node.name}(), a name of the fixed evaluator or harness: {WHY_FIXED}",
            )
        self._functions.append(node)
        self.generic_visit(node)
        self._functions.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_function(node)

    # imports

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_import(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self._flag(
                HARNESS_TAMPER,
                node,
                f"uses a relative import ({source_snippet(node)}): it reaches the harness's package; "
                f"{WHY_FIXED}",
            )
            return
        if self._check_import(node, module):
            return
        for alias in node.names:
            if self._check_import(node, f"{module}.{alias.name}"):
                return

    def _check_import(self, node: ast.AST, module: str) -> bool:
        found = match_module(module)
        if found is None:
            return False
        kind, what = found
        self._flag(kind, node, f"imports {module} ({what}): {self._why(kind)}")
        return True

    @staticmethod
    def _why(kind: str) -> str:
        return {
            FILE_ACCESS: WHY_FILES,
            VALIDATION_DATA: WHY_DATA,
            HARNESS_TAMPER: WHY_FIXED,
            EVAL_SETTINGS: WHY_EVAL,
            SUMMARY_WRITE: WHY_SUMMARY,
            SLEEP: WHY_SLEEP,
            PROCESS: WHY_PROCESS,
        }.get(kind, WHY_FIXED)

    # references

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            qualified = self.names.qualified(node)
            if qualified is not None:
                self._check_reference(node, qualified)
        if "eval_tokens" in node.id.lower():
            self._flag_eval_tokens(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualified = self.names.qualified(node)
        if qualified is not None:
            self._check_reference(node, qualified)
        if node.attr in REFLECTION_ATTRIBUTES:
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reads .{node.attr} ({source_snippet(node)}): it reaches the harness's frames, code "
                f"or globals; {WHY_FIXED}",
            )
        elif node.attr in PRETRAINED_ATTRIBUTES:
            self._flag(
                FILE_ACCESS,
                node,
                f"loads pretrained weights ({source_snippet(node)}): {WHY_FILES}",
            )
        if "eval_tokens" in node.attr.lower():
            self._flag_eval_tokens(node)
        if node.attr == "__dict__" and (
            self.names.is_module_reference(node.value) or self._is_ctx(node.value)
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reaches into the namespace of a module or of ctx ({source_snippet(node)}): "
                f"{WHY_FIXED}",
            )
        if (
            self._is_ctx(node.value)
            and isinstance(node.ctx, ast.Load)
            and node.attr.startswith("_")
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reaches into ctx's private state ({source_snippet(node)}): {WHY_CTX}",
            )
        self.generic_visit(node)

    def _check_reference(self, node: ast.AST, qualified: str) -> None:
        found = match_reference(qualified)
        if found is not None:
            name, kind, what = found
            self._flag(kind, node, f"uses {name} ({what}): {self._why(kind)}")

    def _flag_eval_tokens(self, node: ast.AST) -> None:
        self._flag(
            EVAL_SETTINGS,
            node,
            "names eval_tokens, the harness's evaluation size: " + WHY_EVAL,
        )

    # strings

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) not in self._bare_strings:
            text = fold_string(node)
            if text is not None:
                self._check_string(node, text)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = fold_string(node)
        if text is not None:
            self._check_string(node, text)
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        text = fold_string(node)
        if text is not None:
            self._check_string(node, text)
            return
        self.generic_visit(node)

    def _check_string(self, node: ast.AST, text: str) -> None:
        if not text:
            return
        if id(node) in self._arguments and SPLIT_NAME.fullmatch(text):
            # load("val"), os.path.join(cache, "validation"): a split asked for by name.
            self._flag(
                VALIDATION_DATA,
                node,
                f'asks for the held-out split by name ("{text}"): {WHY_DATA}',
            )
        for pattern, what in CACHE_PATTERNS:
            match = pattern.search(text)
            if match:
                self._flag(
                    VALIDATION_DATA,
                    node,
                    f'names {what} ("{self._excerpt(text, match)}"): {WHY_DATA}',
                )
        for pattern, what in RUN_FILE_PATTERNS:
            match = pattern.search(text)
            if match:
                self._flag(
                    SUMMARY_WRITE,
                    node,
                    f'names {what} ("{self._excerpt(text, match)}"): {WHY_SUMMARY}',
                )
        match = SUMMARY_LINE.search(text)
        if match:
            self._flag(
                SUMMARY_WRITE,
                node,
                f'writes text that looks like the summary block ("{self._excerpt(text, match)}"): '
                f"{WHY_SUMMARY}; print progress in other words",
            )
        match = EVAL_OPTION.search(text)
        if match:
            self._flag(
                EVAL_SETTINGS,
                node,
                f'names a setting of the harness ("{self._excerpt(text, match)}"): {WHY_EVAL}',
            )
        if "eval_tokens" in text:
            self._flag_eval_tokens(node)
        if HARNESS_MODULE_STRING.fullmatch(text) and "." in text:
            self._flag(
                HARNESS_TAMPER, node, f'names the module "{text}" of the harness: {WHY_FIXED}'
            )
        if text in ("__builtins__", "__import__"):
            self._flag(HARNESS_TAMPER, node, f'names "{text}": {WHY_FIXED}')

    @staticmethod
    def _excerpt(text: str, match: re.Match[str]) -> str:
        start, end = max(0, match.start() - 20), min(len(text), match.end() + 20)
        excerpt = " ".join(text[start:end].split())
        return excerpt.replace('"', "'")

    # calls

    def visit_Call(self, node: ast.Call) -> None:
        qualified = self.names.qualified(node.func)
        function_name = qualified or ""
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            looked_up = self.names.qualified(node)
            if looked_up is not None:
                self._check_reference(node, looked_up)
            name = node.args[1]
            if (
                self._is_ctx(node.args[0])
                and isinstance(name, ast.Constant)
                and str(name.value).startswith("_")
            ):
                self._flag(
                    HARNESS_TAMPER,
                    node,
                    f"reaches into ctx's private state ({source_snippet(node)}): {WHY_CTX}",
                )
        self._check_attribute_setters(node, function_name)
        if (
            function_name in ("vars", "type")
            and node.args
            and (self._is_ctx(node.args[0]) or self.names.is_module_reference(node.args[0]))
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reaches the class or namespace of ctx or of a module ({source_snippet(node)}): "
                f"{WHY_CTX if self._is_ctx(node.args[0]) else WHY_FIXED}",
            )
        if isinstance(node.func, ast.Attribute):
            self._check_method_call(node, node.func)
        if function_name == "contextlib.suppress" and any(
            self._catches_stop(argument) for argument in node.args
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"suppresses BaseException ({source_snippet(node)}): that swallows the harness's stop; "
                f"{WHY_BUDGET}",
            )
        self._check_file_call(node, function_name)
        fold = fold_string(node)
        if fold is not None:
            # "sep".join([...literals]): the joined text is checked once, not piece by piece.
            self._check_string(node, fold)
            self.visit(node.func)
            return
        self.generic_visit(node)

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
        if self._is_ctx(target):
            self._flag(HARNESS_TAMPER, node, f"changes ctx ({source_snippet(node)}): {WHY_CTX}")
        elif self.names.is_module_reference(target) or (
            isinstance(target, ast.Call) and self.names.qualified(target.func) == "type"
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"patches a module or class at run time ({source_snippet(node)}): {WHY_FIXED}",
            )

    def _check_method_call(self, node: ast.Call, func: ast.Attribute) -> None:
        receiver = self.names.qualified(func.value)
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
            self._flag(
                HARNESS_TAMPER,
                node,
                f"changes where Python imports from ({source_snippet(node)}): {WHY_FIXED}",
            )
        if self._is_ctx(func.value):
            if func.attr in CTX_HARNESS_METHODS:
                self._flag(
                    HARNESS_TAMPER,
                    node,
                    f"calls ctx.{func.attr}(), which only the harness calls: {WHY_CTX}",
                )
            if func.attr == "report":
                reserved = sorted(
                    keyword.arg for keyword in node.keywords if keyword.arg in RESERVED_REPORT_KEYS
                )
                if reserved:
                    self._flag(
                        SUMMARY_WRITE,
                        node,
                        f"reports {', '.join(reserved)} through ctx.report(): those fields of the "
                        f"metrics stream and summary are the harness's; {WHY_SUMMARY}",
                    )

    def _check_env_keys(self, node: ast.AST, keys: Iterable[ast.expr | None]) -> None:
        for key in keys:
            name = fold_string(key) if key is not None else None
            if name is None:
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"sets environment variables it does not name ({source_snippet(node)}): {WHY_ENV}",
                )
            elif name.startswith("COCKPIT_") or not name.startswith(ENV_TUNING_PREFIXES):
                self._flag(
                    EVAL_SETTINGS, node, f"changes the environment variable {name}: {WHY_ENV}"
                )

    def _check_file_call(self, node: ast.Call, function_name: str) -> None:
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
            and not self.names.is_module_reference(node.func.value)
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
            self._flag(
                SUMMARY_WRITE,
                node,
                f"opens file descriptor {path_node.value} directly ({source_snippet(node)}): "
                f"{WHY_SUMMARY}",
            )
            return
        path = self.paths.resolve(path_node) if path_node is not None else None
        if path is None:
            self._flag(
                FILE_ACCESS,
                node,
                f"{verb} a file whose path is only known at run time ({source_snippet(node)}): "
                f"{WHY_FILES}",
            )
        elif outside_workspace(path):
            self._flag(
                FILE_ACCESS,
                node,
                f"{verb} {path!r}, outside the workspace ({source_snippet(node)}): {WHY_FILES}",
            )
        elif writes:
            protected = PROTECTED_WORKSPACE_FILES.get(posixpath.normpath(path))
            if protected is not None:
                kind, why = protected
                self._flag(kind, node, f"writes the workspace's {path} during the run: {why}")

    # assignments

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_target(target, node)
        self.generic_visit(node)

    def _check_target(self, target: ast.AST, statement: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._check_target(element, statement)
            return
        if isinstance(target, ast.Starred):
            self._check_target(target.value, statement)
            return
        if isinstance(target, ast.Name):
            if target.id in EVALUATOR_NAMES:
                self._flag(
                    EVAL_SETTINGS,
                    statement,
                    f"defines {target.id}, a name of the fixed evaluator or harness: {WHY_FIXED}",
                )
            return
        if isinstance(target, ast.Subscript):
            if self.names.qualified(target.value) == "os.environ":
                self._check_env_keys(statement, [target.slice])
            return
        if not isinstance(target, ast.Attribute):
            return
        qualified = self.names.qualified(target)
        if self._is_ctx(target.value) or any(
            isinstance(part, ast.Attribute) and part.attr in self.ctx.attributes
            for part in ast.walk(target.value)
        ):
            self._flag(
                HARNESS_TAMPER, statement, f"changes ctx ({source_snippet(target)}): {WHY_CTX}"
            )
        elif qualified in ("sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__"):
            self._flag(
                SUMMARY_WRITE,
                statement,
                f"replaces {qualified}, where the harness prints the summary: {WHY_SUMMARY}",
            )
        elif qualified == "os.environ":
            self._flag(EVAL_SETTINGS, statement, f"replaces os.environ: {WHY_ENV}")
        elif self.names.is_module_reference(target) and not (
            qualified is not None and qualified.startswith(TUNABLE_MODULE_SETTINGS)
        ):
            self._flag(
                HARNESS_TAMPER,
                statement,
                f"monkeypatches {qualified or source_snippet(target)}: patching a module changes the "
                f"code the harness and the evaluator share with the script; {WHY_FIXED}",
            )

    # control flow

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if (node.type is None or self._catches_stop(node.type)) and not any(
            isinstance(statement, ast.Raise) for statement in node.body
        ):
            caught = "everything" if node.type is None else source_snippet(node.type)
            self._flag(
                HARNESS_TAMPER,
                node,
                f"catches {caught} without re-raising: that swallows the harness's stop at the end "
                f"of the budget; catch Exception instead; {WHY_BUDGET}",
            )
        self.generic_visit(node)

    def _catches_stop(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple):
            return any(self._catches_stop(element) for element in node.elts)
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in STOP_CATCHING

    def visit_Try(self, node: ast.Try) -> None:
        self._check_finally(node.finalbody)
        self.generic_visit(node)

    if hasattr(ast, "TryStar"):  # Python 3.11+

        def visit_TryStar(self, node: ast.AST) -> None:
            self._check_finally(getattr(node, "finalbody", []))
            self.generic_visit(node)

    def _check_finally(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            for node in [statement, *own_nodes(statement)]:
                escapes = isinstance(node, ast.Return) or (
                    isinstance(node, (ast.Break, ast.Continue))
                    and not self._inside_loop(statement, node)
                )
                if escapes:
                    self._flag(
                        HARNESS_TAMPER,
                        node,
                        f"leaves a finally block with {source_snippet(node)}: that swallows the "
                        f"harness's stop at the end of the budget; {WHY_BUDGET}",
                    )

    @staticmethod
    def _inside_loop(root: ast.AST, target: ast.AST) -> bool:
        for loop in [root, *own_nodes(root)]:
            if (
                isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
                and loop is not target
                and any(inner is target for inner in own_nodes(loop))
            ):
                return True
        return False

    def visit_While(self, node: ast.While) -> None:
        if self._idle(node.body):
            self._flag(
                SLEEP,
                node,
                f"loops without doing any work (while {source_snippet(node.test)}: ...): {WHY_SLEEP}",
            )
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        if all(
            isinstance(statement, (ast.Pass, ast.Continue))
            or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
            for statement in node.body
        ):
            self._flag(
                SLEEP,
                node,
                f"loops without doing any work (for ... in {source_snippet(node.iter)}: ...): "
                f"{WHY_SLEEP}",
            )
        self.generic_visit(node)

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
        if self.names.qualified(node.func) in CLOCK_FUNCTIONS:
            return True
        func = node.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in CTX_CLOCK_METHODS
            and self._is_ctx(func.value)
        )

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for operand in operands:
            method = self._ctx_method(operand)
            others = [other for other in operands if other is not operand]
            overrun = (
                (method == "time_left" and any(self._negative(other) for other in others))
                or (method == "progress" and any(self._above_one(other) for other in others))
                or (method == "elapsed" and any(self._budget_extended(other) for other in others))
            )
            if overrun:
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"trains past the end of the budget ({source_snippet(node)}): {WHY_BUDGET}",
                )
        self.generic_visit(node)

    def _ctx_method(self, node: ast.AST) -> str | None:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and self._is_ctx(node.func.value)
        ):
            return node.func.attr
        return None

    @staticmethod
    def _negative(node: ast.AST) -> bool:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return not (isinstance(node.operand, ast.Constant) and node.operand.value == 0)
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and node.value < 0
        )

    @staticmethod
    def _above_one(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
            and node.value > 1
        )

    def _budget_extended(self, node: ast.AST) -> bool:
        return (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, (ast.Add, ast.Mult))
            and any(
                isinstance(part, ast.Attribute)
                and part.attr == "budget_seconds"
                and self._is_ctx(part.value)
                for part in (node.left, node.right)
            )
        )

    # the returned model

    def _model_classes(self) -> list[ast.ClassDef]:
        """The script's torch modules: classes based on nn.Module, or on such a class of its own."""
        classes = [node for node in ast.walk(self.tree) if isinstance(node, ast.ClassDef)]
        models: dict[str, ast.ClassDef] = {}
        grew = True
        while grew:
            grew = False
            for cls in classes:
                if cls.name in models:
                    continue
                for base in cls.bases:
                    qualified = self.names.qualified(base) or ""
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
                self._flag(
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
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} depends on the batch size ({source_snippet(node)}): {WHY_PROBE}",
                )
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes state outside the model ({source_snippet(node)}): {WHY_PROBE}",
                )
            elif self._changes_own_state(node):
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes the model's own state on every call ({source_snippet(node)}): "
                    f"{WHY_PROBE}, and would learn from the held-out data during evaluation",
                )
            elif isinstance(node, ast.Call):
                self._check_forward_call(where, node)

    def _check_forward_call(self, where: str, node: ast.Call) -> None:
        qualified = self.names.qualified(node.func) or ""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        disables_inference = qualified == "torch.inference_mode" and any(
            isinstance(argument, ast.Constant) and argument.value is False for argument in node.args
        )
        if qualified in GRADIENT_CALLS or disables_inference or method in GRADIENT_METHODS:
            self._flag(
                EVAL_SETTINGS,
                node,
                f"{where} computes gradients, steps an optimiser or leaves evaluation mode "
                f"({source_snippet(node)}): during evaluation it would train on the held-out data",
            )
        elif qualified in CLOCK_FUNCTIONS or qualified.startswith(("time.", "datetime.")):
            self._flag(
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
                self._flag(
                    EVAL_SETTINGS,
                    forward,
                    f"{where} ignores its reduction argument: the evaluator asks for "
                    "reduction='none' and scores the per-token losses",
                )
            return
        kwarg = forward.args.kwarg
        if kwarg is None or kwarg.arg not in used:
            self._flag(
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
