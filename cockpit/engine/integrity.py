"""Integrity guards: static checks that keep a proposed train.py from gaming the metric.

The harness already owns the clock, the data and the evaluation, and probes the returned
model for honest per-token losses. What it cannot see at run time is a script that reaches
around it: reading the held-out split from the cache, patching the evaluator or the loss,
changing its own settings, writing a summary of its own, swallowing the stop at the end of
the budget, or a model whose answers differ between the probe and the evaluation. Before
every training the engine runs `inspect_script` on the proposed script and the current best
one; every flag is one line that goes back to the model and to the researcher.

The checks read the syntax tree only; nothing is imported or run. They are heuristics that
name what they found, so an honest edit that trips one can be reworded, and an attempt that
slips past them still meets the harness's own checks.

`fingerprint_fixed_parts` hashes the fixed trainer modules and the corpus, so that a run
whose evaluator changed under it is noticed rather than compared.
"""

from __future__ import annotations

import ast
import difflib
import functools
import hashlib
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EVAL_SETTINGS",
    "FILE_ACCESS",
    "FLAG_KINDS",
    "HARNESS_TAMPER",
    "PROCESS",
    "SEED_ONLY",
    "SLEEP",
    "SUMMARY_WRITE",
    "SYNTAX",
    "VALIDATION_DATA",
    "Flag",
    "describe_fingerprint_change",
    "describe_flags",
    "fingerprint_fixed_parts",
    "inspect_script",
]

FILE_ACCESS = "file_access"
VALIDATION_DATA = "validation_data"
HARNESS_TAMPER = "harness_tamper"
SEED_ONLY = "seed_only"
EVAL_SETTINGS = "eval_settings"
SUMMARY_WRITE = "summary_write"
SLEEP = "sleep"
PROCESS = "process"
SYNTAX = "syntax"
FLAG_KINDS = (
    FILE_ACCESS,
    VALIDATION_DATA,
    HARNESS_TAMPER,
    SEED_ONLY,
    EVAL_SETTINGS,
    SUMMARY_WRITE,
    SLEEP,
    PROCESS,
    SYNTAX,
)


@dataclass(frozen=True)
class Flag:
    """One finding: its kind, the line of the new script it points at, and a one-line message
    that says what was found and why it is not allowed."""

    kind: str
    line: int | None
    message: str


# --- why each kind is refused (the second half of every message) ----------------------------------

_WHY_FILES = (
    "train.py gets its data from ctx and may touch files only inside its workspace, "
    "named by literal relative paths"
)
_WHY_DATA = (
    "the corpus, its cache and the held-out split belong to the harness; "
    "train.py trains only on ctx.batch()"
)
_WHY_FIXED = (
    "the harness, the evaluator and the data are fixed; "
    "train.py may change how the model is trained, nothing else"
)
_WHY_CTX = (
    "ctx belongs to the harness: call its methods and read its public fields, never change them"
)
_WHY_BUDGET = "a run must stop when its budget is spent (ctx.time_left() <= 0)"
_WHY_EVAL = "the evaluation settings are fixed by the harness for every run"
_WHY_ENV = (
    "the harness's settings (COCKPIT_*) and the environment are fixed for a run; only "
    "PyTorch and compiler tuning variables (PYTORCH_*, TORCHINDUCTOR_*, OMP_*, ...) may be set"
)
_WHY_PROBE = (
    "the evaluator probes the model on one batch and then scores it on others, so the model "
    "must behave the same on every call"
)
_WHY_SUMMARY = "the summary and the metrics stream are written by the harness alone"
_WHY_SLEEP = "a run spends its budget training; waiting changes nothing but the clock"
_WHY_PROCESS = "a run is one offline process: no subprocesses, signals, threads or network"
_WHY_SEED = (
    "a new seed only re-rolls the noise, it does not improve the model; change the training itself"
)


# --- what is looked for ---------------------------------------------------------------------------

# Imported modules, by dotted prefix: kind and what the module gives access to.
_MODULES: dict[str, tuple[str, str]] = {
    "trainer": (HARNESS_TAMPER, "the harness's own package"),
    "cockpit": (HARNESS_TAMPER, "the cockpit's own package"),
    "agent": (HARNESS_TAMPER, "the cockpit's own package"),
    "importlib": (HARNESS_TAMPER, "imports by name, past these checks"),
    "imp": (HARNESS_TAMPER, "imports by name, past these checks"),
    "runpy": (HARNESS_TAMPER, "runs other modules"),
    "builtins": (HARNESS_TAMPER, "Python's builtins, shared with the harness"),
    "ctypes": (HARNESS_TAMPER, "raw memory access"),
    "subprocess": (PROCESS, "starts processes"),
    "socket": (PROCESS, "network access"),
    "signal": (PROCESS, "signal handlers; the harness's stop at the end of the budget is SIGALRM"),
    "multiprocessing": (PROCESS, "starts processes"),
    "torch.multiprocessing": (PROCESS, "starts processes"),
    "concurrent": (PROCESS, "worker threads and processes"),
    "_thread": (PROCESS, "threads"),
    "pty": (PROCESS, "starts processes"),
    "asyncio": (PROCESS, "an event loop with subprocesses, sockets and timers"),
    "http": (PROCESS, "network access"),
    "urllib": (PROCESS, "network access"),
    "urllib3": (PROCESS, "network access"),
    "requests": (PROCESS, "network access"),
    "httpx": (PROCESS, "network access"),
    "aiohttp": (PROCESS, "network access"),
    "ftplib": (PROCESS, "network access"),
    "smtplib": (PROCESS, "network access"),
    "ssl": (PROCESS, "network access"),
    "socketserver": (PROCESS, "network access"),
    "xmlrpc": (PROCESS, "network access"),
    "select": (PROCESS, "waits on file descriptors"),
    "selectors": (PROCESS, "waits on file descriptors"),
    "atexit": (SUMMARY_WRITE, "code that runs after the harness has written the summary"),
    "sysconfig": (VALIDATION_DATA, "the standard library's location: the default corpus"),
    "site": (VALIDATION_DATA, "the interpreter's library locations: the default corpus"),
    "platformdirs": (VALIDATION_DATA, "the user cache directory, where the corpus cache lives"),
    "shutil": (FILE_ACCESS, "copies and moves files anywhere"),
    "glob": (FILE_ACCESS, "lists files anywhere"),
    "mmap": (FILE_ACCESS, "maps files into memory"),
    "sqlite3": (FILE_ACCESS, "opens databases, the cockpit's journal among them"),
    "zipfile": (FILE_ACCESS, "reads archives"),
    "tarfile": (FILE_ACCESS, "reads archives"),
    "fileinput": (FILE_ACCESS, "reads files"),
    "linecache": (FILE_ACCESS, "reads files"),
    "tempfile": (FILE_ACCESS, "files outside the workspace"),
    "pandas": (FILE_ACCESS, "reads data files"),
    "pyarrow": (FILE_ACCESS, "reads data files, the corpus's parquet shards among them"),
    "transformers": (FILE_ACCESS, "pretrained weights from outside the workspace"),
    "huggingface_hub": (FILE_ACCESS, "pretrained weights from outside the workspace"),
    "datasets": (FILE_ACCESS, "data sets from outside the workspace"),
    "timm": (FILE_ACCESS, "pretrained weights from outside the workspace"),
}

# Referenced names (called or not), by qualified name: kind and what the name does.
_REFERENCES: dict[str, tuple[str, str]] = {
    "time.sleep": (SLEEP, "sleeps"),
    "torch.cuda._sleep": (SLEEP, "spins the GPU idle"),
    "threading.Event": (SLEEP, "a thread wait"),
    "threading.Condition": (SLEEP, "a thread wait"),
    "threading.Barrier": (SLEEP, "a thread wait"),
    "threading.Semaphore": (SLEEP, "a thread wait"),
    "threading.BoundedSemaphore": (SLEEP, "a thread wait"),
    "input": (SLEEP, "waits for keyboard input"),
    "breakpoint": (SLEEP, "waits in the debugger"),
    "threading.Thread": (
        PROCESS,
        "a thread that can go on changing the model while it is evaluated",
    ),
    "threading.Timer": (
        PROCESS,
        "a thread that can go on changing the model while it is evaluated",
    ),
    "os.system": (PROCESS, "runs a shell command"),
    "os.popen": (PROCESS, "runs a shell command"),
    "os.kill": (PROCESS, "sends signals to processes"),
    "os.killpg": (PROCESS, "sends signals to processes"),
    "os.fork": (PROCESS, "starts a process"),
    "os.forkpty": (PROCESS, "starts a process"),
    "os.getppid": (PROCESS, "finds the harness's parent process"),
    "os.setsid": (PROCESS, "leaves the run's process group, so a stop cannot reach it"),
    "os.setpgrp": (PROCESS, "leaves the run's process group, so a stop cannot reach it"),
    "os.setpgid": (PROCESS, "leaves the run's process group, so a stop cannot reach it"),
    "os._exit": (PROCESS, "ends the process past the harness"),
    "os.abort": (PROCESS, "ends the process past the harness"),
    "os.pidfd_open": (PROCESS, "reaches other processes"),
    "resource.setrlimit": (PROCESS, "changes the process's limits"),
    "os.putenv": (EVAL_SETTINGS, "changes the environment"),
    "os.unsetenv": (EVAL_SETTINGS, "changes the environment"),
    "os.write": (SUMMARY_WRITE, "writes to a file descriptor directly"),
    "os.fdopen": (SUMMARY_WRITE, "opens a file descriptor directly (stdout, the metrics stream)"),
    "os.dup": (SUMMARY_WRITE, "duplicates a file descriptor (stdout, the metrics stream)"),
    "os.dup2": (SUMMARY_WRITE, "redirects a file descriptor (stdout, the metrics stream)"),
    "sys.__stdout__": (SUMMARY_WRITE, "the process's raw stdout, where the summary is printed"),
    "sys.__stderr__": (SUMMARY_WRITE, "the process's raw stderr"),
    "sys.stdout.buffer": (
        SUMMARY_WRITE,
        "writes past print() to stdout, where the summary is printed",
    ),
    "sys.stderr.buffer": (SUMMARY_WRITE, "writes past print() to stderr"),
    "sys.stdout.fileno": (SUMMARY_WRITE, "the descriptor of stdout, where the summary is printed"),
    "sys.stderr.fileno": (SUMMARY_WRITE, "the descriptor of stderr"),
    "sys.argv": (
        SUMMARY_WRITE,
        "the harness's command line, which names the summary and metrics files",
    ),
    "sys.orig_argv": (
        SUMMARY_WRITE,
        "the harness's command line, which names the summary and metrics files",
    ),
    "sys.modules": (
        HARNESS_TAMPER,
        "every loaded module, the harness and the evaluator among them",
    ),
    "sys._getframe": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "sys._current_frames": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "sys.settrace": (HARNESS_TAMPER, "traces the harness's own code"),
    "sys.setprofile": (HARNESS_TAMPER, "traces the harness's own code"),
    "sys.addaudithook": (HARNESS_TAMPER, "hooks into the harness's own operations"),
    "sys.meta_path": (HARNESS_TAMPER, "changes how modules are imported"),
    "sys.path_hooks": (HARNESS_TAMPER, "changes how modules are imported"),
    "gc.get_objects": (
        HARNESS_TAMPER,
        "every live object, the harness's and the evaluator's among them",
    ),
    "gc.get_referrers": (HARNESS_TAMPER, "reaches the harness's objects"),
    "gc.get_referents": (HARNESS_TAMPER, "reaches the harness's objects"),
    "inspect.currentframe": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "inspect.stack": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "inspect.getouterframes": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "inspect.trace": (HARNESS_TAMPER, "the harness's stack frames and their variables"),
    "__import__": (HARNESS_TAMPER, "imports by name, past these checks"),
    "exec": (HARNESS_TAMPER, "runs code from a string, past these checks"),
    "eval": (HARNESS_TAMPER, "runs code from a string, past these checks"),
    "compile": (HARNESS_TAMPER, "builds code from a string, past these checks"),
    "__builtins__": (HARNESS_TAMPER, "Python's builtins, shared with the harness"),
}
_REFERENCE_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("os.exec", PROCESS, "replaces the process"),
    ("os.spawn", PROCESS, "starts a process"),
    ("os.posix_spawn", PROCESS, "starts a process"),
    ("os.wait", PROCESS, "waits on other processes"),
)
# Modules whose every member is refused; a use is reported once, by the module's name.
_REFERENCE_MODULES: tuple[tuple[str, str, str], ...] = (
    ("torch.hub", FILE_ACCESS, "downloads or loads pretrained weights from outside the workspace"),
    ("torch.utils.model_zoo", FILE_ACCESS, "downloads pretrained weights"),
)
# Attribute names that reach into frames, code and globals, whoever they are read from.
_REFLECTION_ATTRIBUTES = frozenset(
    {"f_back", "f_locals", "f_globals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
     "ag_frame", "__globals__", "__builtins__", "__subclasses__", "__code__", "__closure__",
     "__import__", "__loader__"}
)  # fmt: skip
_PRETRAINED_ATTRIBUTES = frozenset({"from_pretrained", "load_state_dict_from_url"})

# Module attributes that are tuning knobs, not the harness's behaviour: setting them is research.
_TUNABLE_MODULE_SETTINGS = (
    "torch.backends.",
    "torch._inductor.config.",
    "torch._dynamo.config.",
    "torch._functorch.config.",
)
_ENV_TUNING_PREFIXES = (
    "PYTORCH_",
    "TORCH_",
    "TORCHINDUCTOR_",
    "TRITON_",
    "CUBLAS_",
    "CUDNN_",
    "NCCL_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TOKENIZERS_PARALLELISM",
)
_ENV_WRITE_METHODS = frozenset(
    {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
)
_SYS_PATH_WRITE_METHODS = frozenset({"insert", "append", "extend", "remove", "clear", "pop"})

# Public names of the fixed trainer modules that a script has no reason to define.
_EVALUATOR_NAMES = frozenset(
    {"evaluate_bpb", "check_model", "eval_windows", "_per_token_losses", "autocast_for",
     "format_summary", "parse_summary", "write_json_atomic", "run_harness", "load_script",
     "prepare_corpus", "default_cache_dir", "is_validation"}
)  # fmt: skip
# ctx's methods that only the harness may call.
_CTX_HARNESS_METHODS = frozenset({"start_clock"})
# Keys of a metrics record or the summary that ctx.report(**metrics) must not overwrite.
_SUMMARY_KEYS = (
    "val_bpb", "val_loss", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
    "total_tokens_M", "num_steps", "num_params_M", "exit_code", "eval_tokens",
    "corpus_fingerprint", "tokens_per_second", "peak_rss_mb", "planned_steps", "harness_version",
)  # fmt: skip
_RESERVED_REPORT_KEYS = frozenset({"event", "t", "progress", "phase", "status", *_SUMMARY_KEYS})
_SUMMARY_LINE = re.compile(
    r"^\s*(?:---\s*$|(?:" + "|".join(map(re.escape, _SUMMARY_KEYS)) + r")\s*:)", re.MULTILINE
)
# Strings that name the corpus cache, the held-out split or the engine's run files.
_CACHE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"research-cockpit", re.I), "the cockpit's cache directory"),
    (re.compile(r"COCKPIT_CACHE_DIR|XDG_CACHE_HOME|user_cache_dir"), "the cache directory"),
    (re.compile(r"(?:^|[/\\])\.cache(?:$|[/\\])"), "the user cache directory"),
    (re.compile(r"(?:^|[/\\])corpora(?:$|[/\\])"), "the corpus cache"),
    (
        re.compile(r"(?:^|[/\\])(?:train\.bin|meta\.json|pacing\.json|cpu_peak_flops\.json)$"),
        "a file of the corpus cache",
    ),
    (
        # A path to it: a folder or a file named for it (a bare "val" is checked as an argument).
        re.compile(
            r"(?:^|[/\\])(?:val|valid|validation|held[-_]?out)"
            r"(?:(?:\.\w+)+(?:$|[/\\])|[/\\])|[/\\](?:val|valid|validation|held[-_]?out)$",
            re.I,
        ),
        "the held-out split",
    ),
    (re.compile(r"lib/python\d"), "the standard library, the default corpus"),
)
_SPLIT_NAME = re.compile(r"^(?:val|valid|validation|held[-_]?out)$", re.I)
_RUN_FILE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:^|[/\\])\.cockpit(?:$|[/\\])"), "the engine's folder of run files"),
    (
        re.compile(r"(?:^|[/\\])(?:summary\.json|metrics\.jsonl|results\.tsv)$"),
        "a summary, metrics or results file",
    ),
    (re.compile(r"^--(?:summary-json|metrics|metrics-fd)$"), "the harness's output options"),
    (
        re.compile(r"^/dev/(?:stdout|stderr|fd\b)|^/proc/self/(?:fd|cmdline)"),
        "the process's output",
    ),
)
_EVAL_OPTION = re.compile(
    r"^--(?:eval-tokens|seq-len|budget|grace|seed|corpus|device)$|COCKPIT_TRAINER"
)
_HARNESS_MODULE_STRING = re.compile(r"^(?:trainer|cockpit|agent)(?:\.\w+)*$")

# Exceptions whose capture swallows the harness's stop (HarnessStop is a BaseException).
_STOP_CATCHING = frozenset(
    {"BaseException", "KeyboardInterrupt", "SystemExit", "HarnessStop", "GeneratorExit"}
)
_CLOCK_FUNCTIONS = frozenset(
    {"time.time", "time.perf_counter", "time.monotonic", "time.process_time", "time.time_ns",
     "time.perf_counter_ns", "time.monotonic_ns", "datetime.datetime.now", "torch.cuda.synchronize"}
)  # fmt: skip
_CTX_CLOCK_METHODS = frozenset({"time_left", "progress", "elapsed"})
_TARGET_PARAMETERS = frozenset({"targets", "target", "labels"})
_GRADIENT_CALLS = frozenset(
    {"torch.enable_grad", "torch.set_grad_enabled", "torch.autograd.grad",
     "torch.autograd.backward"}
)  # fmt: skip
_GRADIENT_METHODS = frozenset({"backward", "step", "zero_grad"})
_SEED_METHODS = frozenset({"manual_seed", "manual_seed_all", "seed", "set_seed", "default_rng"})
_SEED_FUNCTIONS = frozenset({"set_seed", "seed_everything", "manual_seed"})

# (argument index, keyword names, True: writes / False: reads / None: the mode argument says).
_FILE_FUNCTIONS: dict[str, tuple[int, tuple[str, ...], bool | None]] = {
    "open": (0, ("file",), None),
    "io.open": (0, ("file",), None),
    "io.FileIO": (0, ("file",), None),
    "codecs.open": (0, ("filename",), None),
    "os.open": (0, ("path",), None),
    "io.open_code": (0, ("path",), False),
    "gzip.open": (0, ("filename",), None),
    "bz2.open": (0, ("filename",), None),
    "lzma.open": (0, ("filename",), None),
    "tokenize.open": (0, ("filename",), False),
    "numpy.load": (0, ("file",), False),
    "numpy.loadtxt": (0, ("fname",), False),
    "numpy.genfromtxt": (0, ("fname",), False),
    "numpy.fromfile": (0, ("file",), False),
    "numpy.memmap": (0, ("filename",), None),
    "numpy.save": (0, ("file",), True),
    "numpy.savez": (0, ("file",), True),
    "numpy.savez_compressed": (0, ("file",), True),
    "numpy.savetxt": (0, ("fname",), True),
    "torch.load": (0, ("f",), False),
    "torch.save": (1, ("f",), True),
    "torch.from_file": (0, ("filename",), False),
    "os.listdir": (0, ("path",), False),
    "os.scandir": (0, ("path",), False),
    "os.walk": (0, ("top",), False),
    "os.remove": (0, ("path",), True),
    "os.unlink": (0, ("path",), True),
    "os.rmdir": (0, ("path",), True),
    "os.mkdir": (0, ("path",), True),
    "os.makedirs": (0, ("name",), True),
    "os.rename": (0, ("src",), True),
    "os.replace": (0, ("src",), True),
    "os.truncate": (0, ("path",), True),
    "os.chmod": (0, ("path",), True),
    "os.symlink": (1, ("dst",), True),
}
# Methods of pathlib paths (on a receiver that is not an imported module).
_PATH_METHODS: dict[str, bool | None] = {
    "read_text": False,
    "read_bytes": False,
    "iterdir": False,
    "glob": False,
    "rglob": False,
    "write_text": True,
    "write_bytes": True,
    "touch": True,
    "unlink": True,
    "mkdir": True,
    "rmdir": True,
    "symlink_to": True,
    "hardlink_to": True,
    "open": None,
}
_PATH_CONSTRUCTORS = frozenset(
    {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath", "Path"}
)
# Workspace files that a run must not rewrite: kind and why.
_PROTECTED_WORKSPACE_FILES: dict[str, tuple[str, str]] = {
    "train.py": (HARNESS_TAMPER, "what ran would no longer be what was committed"),
    "program.md": (HARNESS_TAMPER, "it is the researcher's, not the run's"),
    "config.toml": (EVAL_SETTINGS, "it holds the budget and the evaluation settings"),
}


# --- small syntax helpers -------------------------------------------------------------------------


def _snippet(node: ast.AST, limit: int = 70) -> str:
    """The node's source, on one line and cut short."""
    try:
        text = ast.unparse(node)
    except Exception:  # an unusual node; the message stays useful without it
        return type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold_string(node: ast.AST) -> str | None:
    """The text of a string expression built from literals ("a" + "b", "-" * 3, f"x{y}")."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        if isinstance(node.value, bytes):
            return node.value.decode("latin-1")
        return None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            parts.append(value.value if isinstance(value, ast.Constant) else "{}")
        return "".join(str(part) for part in parts)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add):
            left, right = _fold_string(node.left), _fold_string(node.right)
            return left + right if left is not None and right is not None else None
        if isinstance(node.op, ast.Mult):
            text, count = (node.left, node.right)
            if isinstance(text, ast.Constant) and isinstance(text.value, int):
                text, count = count, text
            folded = _fold_string(text)
            if (
                folded is not None
                and isinstance(count, ast.Constant)
                and isinstance(count.value, int)
                and 0 <= count.value * len(folded) <= 10_000
            ):
                return folded * count.value
        return None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and isinstance(node.args[0], (ast.List, ast.Tuple))
    ):
        separator = _fold_string(node.func.value)
        pieces = [_fold_string(element) for element in node.args[0].elts]
        if separator is not None and all(piece is not None for piece in pieces):
            return separator.join(piece for piece in pieces if piece is not None)
    return None


def _positional_parameters(
    function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
) -> list[str]:
    arguments = function.args
    return [arg.arg for arg in (*arguments.posonlyargs, *arguments.args)]


def _all_parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    arguments = function.args
    names = {arg.arg for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)}
    for extra in (arguments.vararg, arguments.kwarg):
        if extra is not None:
            names.add(extra.arg)
    return names


def _own_nodes(root: ast.AST) -> Iterator[ast.AST]:
    """Every node under root, without descending into nested functions, lambdas or classes
    (which are yielded themselves)."""
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _is_bare_string(statement: ast.AST) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


# --- names: what an expression refers to ----------------------------------------------------------


class _Names:
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


def _match_reference(qualified: str) -> tuple[str, str, str] | None:
    """The name to report, the kind and what it does, for a refused name."""
    if qualified in _REFERENCES:
        return (qualified, *_REFERENCES[qualified])
    for prefix, kind, what in _REFERENCE_PREFIXES:
        if qualified.startswith(prefix):
            return qualified, kind, what
    for module, kind, what in _REFERENCE_MODULES:
        if qualified == module or qualified.startswith(module + "."):
            return module, kind, what
    return None


def _match_module(module: str) -> tuple[str, str] | None:
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        found = _MODULES.get(".".join(parts[:length]))
        if found is not None:
            return found
    return None


# --- ctx: which names hold the harness's context --------------------------------------------------


FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


class _ContextNames:
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
            parameters = _positional_parameters(train)
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
        for node in _own_nodes(function):
            if isinstance(node, ast.Global):
                declared_global.update(node.names)
        grew = True
        while grew:
            grew = False
            for node in _own_nodes(function):
                if isinstance(node, ast.Assign) and self._holds(node.value, names):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id not in names:
                            names.add(target.id)
                            grew = True
                            if target.id in declared_global:
                                self.module_names.add(target.id)
                        elif isinstance(target, ast.Attribute):
                            self.attributes.add(target.attr)
        for node in _own_nodes(function):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                work.append((node, names - _all_parameters(node)))
            elif isinstance(node, ast.Call):
                for callee, offset in self._callees(node, functions, methods, classes):
                    parameters = _positional_parameters(callee)[offset:]
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


# --- paths: where a file call points --------------------------------------------------------------

_OUTSIDE_PREFIXES = ("/", "~", "\\")


def _join(base: str, part: str) -> str:
    if part.startswith(_OUTSIDE_PREFIXES) or re.match(r"^[A-Za-z]:", part):
        return part
    return f"{base.rstrip('/')}/{part}" if base else part


def _parent(path: str) -> str:
    if path.startswith(_OUTSIDE_PREFIXES):
        return posixpath.dirname(path.rstrip("/")) or "/"
    normal = posixpath.normpath(path or ".")
    if normal == ".":
        return ".."
    if normal == ".." or normal.endswith("/.."):
        return normal + "/.."
    return posixpath.dirname(normal)


class _Paths:
    """Static resolution of path expressions, relative to the workspace (the run's working
    directory, where train.py lives). None: only known at run time."""

    def __init__(self, names: _Names) -> None:
        self._names = names

    def resolve(self, node: ast.AST, depth: int = 0) -> str | None:
        if depth > 20:
            return None
        names = self._names
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            return _fold_string(node)
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            if all(isinstance(value, ast.Constant) for value in node.values):
                return _fold_string(node)
            if isinstance(first, ast.Constant) and str(first.value).startswith(_OUTSIDE_PREFIXES):
                return str(first.value)
            return None
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return "train.py"
            value = names.single_assignments.get(node.id)
            return self.resolve(value, depth + 1) if value is not None else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
            left = self.resolve(node.left, depth + 1)
            if left is not None and left.startswith(_OUTSIDE_PREFIXES):
                return left  # whatever follows, it is outside the workspace
            right = self.resolve(node.right, depth + 1)
            if left is None or right is None:
                return None
            return _join(left, right) if isinstance(node.op, ast.Div) else left + right
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.resolve(node.value, depth + 1)
            return _parent(inner) if inner is not None else None
        if isinstance(node, ast.Call):
            return self._resolve_call(node, depth)
        return None

    def _resolve_call(self, node: ast.Call, depth: int) -> str | None:
        qualified = self._names.qualified(node.func)
        arguments = [self.resolve(argument, depth + 1) for argument in node.args]
        if qualified in _PATH_CONSTRUCTORS or qualified == "os.path.join":
            path = ""
            for argument in arguments:
                if argument is None:
                    return path if path.startswith(_OUTSIDE_PREFIXES) else None
                path = _join(path, argument)
            return path
        if qualified in ("pathlib.Path.cwd", "Path.cwd", "os.getcwd"):
            return ""
        if qualified in ("pathlib.Path.home", "Path.home"):
            return "~"
        if qualified in ("tempfile.gettempdir", "tempfile.mkdtemp", "tempfile.mkstemp"):
            return "/tmp"
        if qualified == "os.path.dirname" and arguments:
            return _parent(arguments[0]) if arguments[0] is not None else None
        if qualified in ("os.path.abspath", "os.path.realpath", "os.path.normpath") and arguments:
            return arguments[0]
        if qualified in ("os.path.expanduser", "os.path.expandvars") and arguments:
            return arguments[0]
        if isinstance(node.func, ast.Attribute) and not self._names.is_module_reference(node.func):
            method = node.func.attr
            receiver = self.resolve(node.func.value, depth + 1)
            if method in ("resolve", "absolute", "expanduser") and not node.args:
                return receiver
            if method == "joinpath" and receiver is not None:
                path = receiver
                for argument in arguments:
                    if argument is None:
                        return None
                    path = _join(path, argument)
                return path
            if method in ("with_name", "with_suffix", "with_stem") and receiver is not None:
                return (
                    receiver
                    if method != "with_name"
                    else _join(_parent(receiver), arguments[0] or "")
                )
        return None


def _outside_workspace(path: str) -> bool:
    if path.startswith(_OUTSIDE_PREFIXES) or re.match(r"^[A-Za-z]:", path):
        return True
    normal = posixpath.normpath(path or ".")
    return normal == ".." or normal.startswith("../")


# --- the scan -------------------------------------------------------------------------------------


class _Scanner(ast.NodeVisitor):
    """One pass over a script's tree that collects every finding."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.names = _Names(tree)
        self.ctx = _ContextNames(tree)
        self.paths = _Paths(self.names)
        self.flags: list[Flag] = []
        self._seen: set[tuple[str, int | None, str]] = set()
        self._functions: list[FunctionNode] = []
        self._bare_strings: set[int] = set()
        self._arguments: set[int] = set()
        for node in ast.walk(tree):
            if _is_bare_string(node) and isinstance(node, ast.Expr):
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
        if not isinstance(node, ast.Lambda) and node.name in _EVALUATOR_NAMES:
            self._flag(
                EVAL_SETTINGS,
                node,
                f"defines {node.name}(), a name of the fixed evaluator or harness: {_WHY_FIXED}",
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
                f"uses a relative import ({_snippet(node)}): it reaches the harness's package; "
                f"{_WHY_FIXED}",
            )
            return
        if self._check_import(node, module):
            return
        for alias in node.names:
            if self._check_import(node, f"{module}.{alias.name}"):
                return

    def _check_import(self, node: ast.AST, module: str) -> bool:
        found = _match_module(module)
        if found is None:
            return False
        kind, what = found
        self._flag(kind, node, f"imports {module} ({what}): {self._why(kind)}")
        return True

    @staticmethod
    def _why(kind: str) -> str:
        return {
            FILE_ACCESS: _WHY_FILES,
            VALIDATION_DATA: _WHY_DATA,
            HARNESS_TAMPER: _WHY_FIXED,
            EVAL_SETTINGS: _WHY_EVAL,
            SUMMARY_WRITE: _WHY_SUMMARY,
            SLEEP: _WHY_SLEEP,
            PROCESS: _WHY_PROCESS,
        }.get(kind, _WHY_FIXED)

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
        if node.attr in _REFLECTION_ATTRIBUTES:
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reads .{node.attr} ({_snippet(node)}): it reaches the harness's frames, code "
                f"or globals; {_WHY_FIXED}",
            )
        elif node.attr in _PRETRAINED_ATTRIBUTES:
            self._flag(
                FILE_ACCESS,
                node,
                f"loads pretrained weights ({_snippet(node)}): {_WHY_FILES}",
            )
        if "eval_tokens" in node.attr.lower():
            self._flag_eval_tokens(node)
        if node.attr == "__dict__" and (
            self.names.is_module_reference(node.value) or self._is_ctx(node.value)
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reaches into the namespace of a module or of ctx ({_snippet(node)}): "
                f"{_WHY_FIXED}",
            )
        if (
            self._is_ctx(node.value)
            and isinstance(node.ctx, ast.Load)
            and node.attr.startswith("_")
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"reaches into ctx's private state ({_snippet(node)}): {_WHY_CTX}",
            )
        self.generic_visit(node)

    def _check_reference(self, node: ast.AST, qualified: str) -> None:
        found = _match_reference(qualified)
        if found is not None:
            name, kind, what = found
            self._flag(kind, node, f"uses {name} ({what}): {self._why(kind)}")

    def _flag_eval_tokens(self, node: ast.AST) -> None:
        self._flag(
            EVAL_SETTINGS,
            node,
            "names eval_tokens, the harness's evaluation size: " + _WHY_EVAL,
        )

    # strings

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) not in self._bare_strings:
            text = _fold_string(node)
            if text is not None:
                self._check_string(node, text)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = _fold_string(node)
        if text is not None:
            self._check_string(node, text)
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        text = _fold_string(node)
        if text is not None:
            self._check_string(node, text)
            return
        self.generic_visit(node)

    def _check_string(self, node: ast.AST, text: str) -> None:
        if not text:
            return
        if id(node) in self._arguments and _SPLIT_NAME.fullmatch(text):
            # load("val"), os.path.join(cache, "validation"): a split asked for by name.
            self._flag(
                VALIDATION_DATA,
                node,
                f'asks for the held-out split by name ("{text}"): {_WHY_DATA}',
            )
        for pattern, what in _CACHE_PATTERNS:
            match = pattern.search(text)
            if match:
                self._flag(
                    VALIDATION_DATA,
                    node,
                    f'names {what} ("{self._excerpt(text, match)}"): {_WHY_DATA}',
                )
        for pattern, what in _RUN_FILE_PATTERNS:
            match = pattern.search(text)
            if match:
                self._flag(
                    SUMMARY_WRITE,
                    node,
                    f'names {what} ("{self._excerpt(text, match)}"): {_WHY_SUMMARY}',
                )
        match = _SUMMARY_LINE.search(text)
        if match:
            self._flag(
                SUMMARY_WRITE,
                node,
                f'writes text that looks like the summary block ("{self._excerpt(text, match)}"): '
                f"{_WHY_SUMMARY}; print progress in other words",
            )
        match = _EVAL_OPTION.search(text)
        if match:
            self._flag(
                EVAL_SETTINGS,
                node,
                f'names a setting of the harness ("{self._excerpt(text, match)}"): {_WHY_EVAL}',
            )
        if "eval_tokens" in text:
            self._flag_eval_tokens(node)
        if _HARNESS_MODULE_STRING.fullmatch(text) and "." in text:
            self._flag(
                HARNESS_TAMPER, node, f'names the module "{text}" of the harness: {_WHY_FIXED}'
            )
        if text in ("__builtins__", "__import__"):
            self._flag(HARNESS_TAMPER, node, f'names "{text}": {_WHY_FIXED}')

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
                    f"reaches into ctx's private state ({_snippet(node)}): {_WHY_CTX}",
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
                f"reaches the class or namespace of ctx or of a module ({_snippet(node)}): "
                f"{_WHY_CTX if self._is_ctx(node.args[0]) else _WHY_FIXED}",
            )
        if isinstance(node.func, ast.Attribute):
            self._check_method_call(node, node.func)
        if function_name == "contextlib.suppress" and any(
            self._catches_stop(argument) for argument in node.args
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"suppresses BaseException ({_snippet(node)}): that swallows the harness's stop; "
                f"{_WHY_BUDGET}",
            )
        self._check_file_call(node, function_name)
        fold = _fold_string(node)
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
            self._flag(HARNESS_TAMPER, node, f"changes ctx ({_snippet(node)}): {_WHY_CTX}")
        elif self.names.is_module_reference(target) or (
            isinstance(target, ast.Call) and self.names.qualified(target.func) == "type"
        ):
            self._flag(
                HARNESS_TAMPER,
                node,
                f"patches a module or class at run time ({_snippet(node)}): {_WHY_FIXED}",
            )

    def _check_method_call(self, node: ast.Call, func: ast.Attribute) -> None:
        receiver = self.names.qualified(func.value)
        if receiver == "os.environ" and func.attr in _ENV_WRITE_METHODS:
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
        if receiver == "sys.path" and func.attr in _SYS_PATH_WRITE_METHODS:
            self._flag(
                HARNESS_TAMPER,
                node,
                f"changes where Python imports from ({_snippet(node)}): {_WHY_FIXED}",
            )
        if self._is_ctx(func.value):
            if func.attr in _CTX_HARNESS_METHODS:
                self._flag(
                    HARNESS_TAMPER,
                    node,
                    f"calls ctx.{func.attr}(), which only the harness calls: {_WHY_CTX}",
                )
            if func.attr == "report":
                reserved = sorted(
                    keyword.arg for keyword in node.keywords if keyword.arg in _RESERVED_REPORT_KEYS
                )
                if reserved:
                    self._flag(
                        SUMMARY_WRITE,
                        node,
                        f"reports {', '.join(reserved)} through ctx.report(): those fields of the "
                        f"metrics stream and summary are the harness's; {_WHY_SUMMARY}",
                    )

    def _check_env_keys(self, node: ast.AST, keys: Iterable[ast.expr | None]) -> None:
        for key in keys:
            name = _fold_string(key) if key is not None else None
            if name is None:
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"sets environment variables it does not name ({_snippet(node)}): {_WHY_ENV}",
                )
            elif name.startswith("COCKPIT_") or not name.startswith(_ENV_TUNING_PREFIXES):
                self._flag(
                    EVAL_SETTINGS, node, f"changes the environment variable {name}: {_WHY_ENV}"
                )

    def _check_file_call(self, node: ast.Call, function_name: str) -> None:
        spec = _FILE_FUNCTIONS.get(function_name)
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
            and node.func.attr in _PATH_METHODS
            and not self.names.is_module_reference(node.func.value)
        ):
            writes = _PATH_METHODS[node.func.attr]
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
            text = _fold_string(mode) if mode is not None else "r"
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
                f"opens file descriptor {path_node.value} directly ({_snippet(node)}): "
                f"{_WHY_SUMMARY}",
            )
            return
        path = self.paths.resolve(path_node) if path_node is not None else None
        if path is None:
            self._flag(
                FILE_ACCESS,
                node,
                f"{verb} a file whose path is only known at run time ({_snippet(node)}): "
                f"{_WHY_FILES}",
            )
        elif _outside_workspace(path):
            self._flag(
                FILE_ACCESS,
                node,
                f"{verb} {path!r}, outside the workspace ({_snippet(node)}): {_WHY_FILES}",
            )
        elif writes:
            protected = _PROTECTED_WORKSPACE_FILES.get(posixpath.normpath(path))
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
            if target.id in _EVALUATOR_NAMES:
                self._flag(
                    EVAL_SETTINGS,
                    statement,
                    f"defines {target.id}, a name of the fixed evaluator or harness: {_WHY_FIXED}",
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
            self._flag(HARNESS_TAMPER, statement, f"changes ctx ({_snippet(target)}): {_WHY_CTX}")
        elif qualified in ("sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__"):
            self._flag(
                SUMMARY_WRITE,
                statement,
                f"replaces {qualified}, where the harness prints the summary: {_WHY_SUMMARY}",
            )
        elif qualified == "os.environ":
            self._flag(EVAL_SETTINGS, statement, f"replaces os.environ: {_WHY_ENV}")
        elif self.names.is_module_reference(target) and not (
            qualified is not None and qualified.startswith(_TUNABLE_MODULE_SETTINGS)
        ):
            self._flag(
                HARNESS_TAMPER,
                statement,
                f"monkeypatches {qualified or _snippet(target)}: patching a module changes the "
                f"code the harness and the evaluator share with the script; {_WHY_FIXED}",
            )

    # control flow

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if (node.type is None or self._catches_stop(node.type)) and not any(
            isinstance(statement, ast.Raise) for statement in node.body
        ):
            caught = "everything" if node.type is None else _snippet(node.type)
            self._flag(
                HARNESS_TAMPER,
                node,
                f"catches {caught} without re-raising: that swallows the harness's stop at the end "
                f"of the budget; catch Exception instead; {_WHY_BUDGET}",
            )
        self.generic_visit(node)

    def _catches_stop(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple):
            return any(self._catches_stop(element) for element in node.elts)
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in _STOP_CATCHING

    def visit_Try(self, node: ast.Try) -> None:
        self._check_finally(node.finalbody)
        self.generic_visit(node)

    if hasattr(ast, "TryStar"):  # Python 3.11+

        def visit_TryStar(self, node: ast.AST) -> None:
            self._check_finally(getattr(node, "finalbody", []))
            self.generic_visit(node)

    def _check_finally(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            for node in [statement, *_own_nodes(statement)]:
                escapes = isinstance(node, ast.Return) or (
                    isinstance(node, (ast.Break, ast.Continue))
                    and not self._inside_loop(statement, node)
                )
                if escapes:
                    self._flag(
                        HARNESS_TAMPER,
                        node,
                        f"leaves a finally block with {_snippet(node)}: that swallows the "
                        f"harness's stop at the end of the budget; {_WHY_BUDGET}",
                    )

    @staticmethod
    def _inside_loop(root: ast.AST, target: ast.AST) -> bool:
        for loop in [root, *_own_nodes(root)]:
            if (
                isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
                and loop is not target
                and any(inner is target for inner in _own_nodes(loop))
            ):
                return True
        return False

    def visit_While(self, node: ast.While) -> None:
        if self._idle(node.body):
            self._flag(
                SLEEP,
                node,
                f"loops without doing any work (while {_snippet(node.test)}: ...): {_WHY_SLEEP}",
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
                f"loops without doing any work (for ... in {_snippet(node.iter)}: ...): "
                f"{_WHY_SLEEP}",
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
        if self.names.qualified(node.func) in _CLOCK_FUNCTIONS:
            return True
        func = node.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in _CTX_CLOCK_METHODS
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
                    f"trains past the end of the budget ({_snippet(node)}): {_WHY_BUDGET}",
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
                    f"evaluation mode through it before probing and scoring; {_WHY_FIXED}",
                )
            elif item.name in ("forward", "__call__"):
                self._check_forward(cls, item)

    def _check_forward(
        self, cls: ast.ClassDef, forward: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        where = f"{cls.name}.{forward.name}()"
        parameters = _all_parameters(forward)
        self._check_reduction(where, forward, parameters)
        batch_names = self._batch_names(forward)
        for node in _evaluated_nodes(forward):
            if isinstance(node, ast.Compare) and self._depends_on_batch(node, batch_names):
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} depends on the batch size ({_snippet(node)}): {_WHY_PROBE}",
                )
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes state outside the model ({_snippet(node)}): {_WHY_PROBE}",
                )
            elif self._changes_own_state(node):
                self._flag(
                    EVAL_SETTINGS,
                    node,
                    f"{where} changes the model's own state on every call ({_snippet(node)}): "
                    f"{_WHY_PROBE}, and would learn from the held-out data during evaluation",
                )
            elif isinstance(node, ast.Call):
                self._check_forward_call(where, node)

    def _check_forward_call(self, where: str, node: ast.Call) -> None:
        qualified = self.names.qualified(node.func) or ""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        disables_inference = qualified == "torch.inference_mode" and any(
            isinstance(argument, ast.Constant) and argument.value is False for argument in node.args
        )
        if qualified in _GRADIENT_CALLS or disables_inference or method in _GRADIENT_METHODS:
            self._flag(
                EVAL_SETTINGS,
                node,
                f"{where} computes gradients, steps an optimiser or leaves evaluation mode "
                f"({_snippet(node)}): during evaluation it would train on the held-out data",
            )
        elif qualified in _CLOCK_FUNCTIONS or qualified.startswith(("time.", "datetime.")):
            self._flag(
                EVAL_SETTINGS,
                node,
                f"{where} reads the clock ({_snippet(node)}): {_WHY_PROBE}",
            )

    def _check_reduction(
        self, where: str, forward: ast.FunctionDef | ast.AsyncFunctionDef, parameters: set[str]
    ) -> None:
        takes_targets = bool(parameters & _TARGET_PARAMETERS) or "reduction" in parameters
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


# --- seed-only changes ----------------------------------------------------------------------------


def _seedlike(name: str) -> bool:
    return "seed" in name.lower()


def _is_seed_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _SEED_METHODS
    return isinstance(func, ast.Name) and func.id in _SEED_FUNCTIONS


class _WithoutDocstrings(ast.NodeTransformer):
    """Drops string statements (docstrings): they change nothing that runs."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        return None if _is_bare_string(node) else self.generic_visit(node)


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
def _dump(source: str, blind_to_seeds: bool) -> str:
    """The script's tree as text, without docstrings (and, if asked, without its seeds).
    Cached: the engine compares many proposals against the same best script."""
    transformer = _WithoutSeeds() if blind_to_seeds else _WithoutDocstrings()
    return ast.dump(transformer.visit(ast.parse(source)))


def _seed_only(old: str, new: str) -> Flag | None:
    if _dump(old, False) == _dump(new, False):
        return None  # nothing that runs changed
    if _dump(old, True) != _dump(new, True):
        return None
    return Flag(
        SEED_ONLY, _first_changed_line(old, new), f"changes only the random seed: {_WHY_SEED}"
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


# --- the public checks ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _findings(source: str) -> tuple[Flag, ...]:
    """Every finding in a script that parses. Cached, like _dump."""
    return tuple(_Scanner(ast.parse(source)).scan())


def _parses(source: str) -> bool:
    try:
        _dump(source, False)
    except SyntaxError:
        return False
    return True


def inspect_script(old: str, new: str) -> list[Flag]:
    """Static integrity checks of a proposed train.py (`new`) against the current best (`old`).

    Returns the flags found in the new script, sorted by line; an empty list means nothing
    was found. What the old script already did was accepted with it and is not flagged again
    (a researcher's own baseline may do things a proposal may not add); a change that touches
    nothing but the random seed is flagged as seed_only. A new script that does not parse
    gives one syntax flag."""
    try:
        flags = list(_findings(new))
    except SyntaxError as error:
        return [
            Flag(
                SYNTAX,
                error.lineno,
                f"train.py does not parse ({error.msg}): fix the syntax before it can be checked",
            )
        ]
    if _parses(old):
        accepted = Counter((flag.kind, flag.message) for flag in _findings(old))
        kept: list[Flag] = []
        for flag in flags:
            key = (flag.kind, flag.message)
            if accepted[key] > 0:
                accepted[key] -= 1
            else:
                kept.append(flag)
        flags = kept
        seed_flag = _seed_only(old, new) if old != new else None
        if seed_flag is not None:
            flags.append(seed_flag)
    return sorted(flags, key=lambda flag: (flag.line is None, flag.line or 0, flag.kind))


def describe_flags(flags: Iterable[Flag]) -> str:
    """The flags as lines for the model and the researcher: `line N: [kind] message`."""
    lines = []
    for flag in flags:
        where = f"line {flag.line}" if flag.line is not None else "train.py"
        lines.append(f"{where}: [{flag.kind}] {flag.message}")
    return "\n".join(lines)


# --- fingerprint of the fixed parts ---------------------------------------------------------------


def fingerprint_fixed_parts(trainer_dir: Path, corpus_fingerprint: str) -> str:
    """A sha256 (hex) over the fixed trainer modules (every *.py in trainer_dir but train.py,
    by name, names included) and the corpus fingerprint: equal fingerprints mean the same
    harness, evaluator and data. Raises FileNotFoundError when trainer_dir holds no module."""
    modules = sorted(
        (path for path in trainer_dir.glob("*.py") if path.name != "train.py"),
        key=lambda path: path.name,
    )
    if not modules:
        raise FileNotFoundError(
            f"{trainer_dir} holds no trainer modules (*.py besides train.py); point at the "
            "installed trainer package's folder"
        )
    digest = hashlib.sha256(b"cockpit-fixed-parts:1\0")
    for path in modules:
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    digest.update(f"corpus\0{corpus_fingerprint}".encode())
    return digest.hexdigest()


def describe_fingerprint_change(old: str, new: str) -> str:
    """What to tell the researcher when the fixed parts changed under a run."""
    return (
        f"the harness, evaluator or corpus changed since this run started (fixed parts "
        f"{old[:12]} -> {new[:12]}): the results would not be comparable. Start a new run "
        "with `cockpit run --tag NEW` or restore the files."
    )
