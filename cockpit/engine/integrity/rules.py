"""What the checks look for: the names, attributes, settings and patterns that mark a script
reaching around the harness."""

from __future__ import annotations

import re

from cockpit.engine.integrity.flags import (
    EVAL_SETTINGS,
    FILE_ACCESS,
    HARNESS_TAMPER,
    PROCESS,
    SLEEP,
    SUMMARY_WRITE,
    VALIDATION_DATA,
)

# Imported modules, by dotted prefix: kind and what the module gives access to.
MODULES: dict[str, tuple[str, str]] = {
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
REFERENCES: dict[str, tuple[str, str]] = {
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
REFERENCE_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("os.exec", PROCESS, "replaces the process"),
    ("os.spawn", PROCESS, "starts a process"),
    ("os.posix_spawn", PROCESS, "starts a process"),
    ("os.wait", PROCESS, "waits on other processes"),
)
# Modules whose every member is refused; a use is reported once, by the module's name.
REFERENCE_MODULES: tuple[tuple[str, str, str], ...] = (
    ("torch.hub", FILE_ACCESS, "downloads or loads pretrained weights from outside the workspace"),
    ("torch.utils.model_zoo", FILE_ACCESS, "downloads pretrained weights"),
)
# Attribute names that reach into frames, code and globals, whoever they are read from.
REFLECTION_ATTRIBUTES = frozenset(
    {"f_back", "f_locals", "f_globals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
     "ag_frame", "__globals__", "__builtins__", "__subclasses__", "__code__", "__closure__",
     "__import__", "__loader__"}
)  # fmt: skip
PRETRAINED_ATTRIBUTES = frozenset({"from_pretrained", "load_state_dict_from_url"})

# Module attributes that are tuning knobs, not the harness's behaviour: setting them is research.
TUNABLE_MODULE_SETTINGS = (
    "torch.backends.",
    "torch._inductor.config.",
    "torch._dynamo.config.",
    "torch._functorch.config.",
)
ENV_TUNING_PREFIXES = (
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
ENV_WRITE_METHODS = frozenset(
    {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
)
SYS_PATH_WRITE_METHODS = frozenset({"insert", "append", "extend", "remove", "clear", "pop"})

# Public names of the fixed trainer modules that a script has no reason to define.
EVALUATOR_NAMES = frozenset(
    {"evaluate_bpb", "check_model", "eval_windows", "_per_token_losses", "autocast_for",
     "format_summary", "parse_summary", "write_json_atomic", "run_harness", "load_script",
     "prepare_corpus", "default_cache_dir", "is_validation", "split_of", "stdlib_split_of",
     "evaluate_program", "_token_nats", "export_forward", "load_program", "run_training"}
)  # fmt: skip
# ctx's methods that only the harness may call.
CTX_HARNESS_METHODS = frozenset({"start_clock"})
# Keys of a metrics record or the summary that ctx.report(**metrics) must not overwrite.
_SUMMARY_KEYS = (
    "val_bpb", "val_loss", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
    "total_tokens_M", "num_steps", "num_params_M", "exit_code", "eval_tokens",
    "corpus_fingerprint", "tokens_per_second", "peak_rss_mb", "planned_steps", "harness_version",
)  # fmt: skip
RESERVED_REPORT_KEYS = frozenset({"event", "t", "progress", "phase", "status", *_SUMMARY_KEYS})
SUMMARY_LINE = re.compile(
    r"^\s*(?:---\s*$|(?:" + "|".join(map(re.escape, _SUMMARY_KEYS)) + r")\s*:)", re.MULTILINE
)
# Strings that name the corpus cache, the held-out split or the engine's run files.
CACHE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
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
SPLIT_NAME = re.compile(r"^(?:val|valid|validation|held[-_]?out)$", re.I)
RUN_FILE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
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
EVAL_OPTION = re.compile(
    r"^--(?:eval-tokens|seq-len|budget|grace|seed|corpus|device)$|COCKPIT_TRAINER"
)
HARNESS_MODULE_STRING = re.compile(r"^(?:trainer|cockpit|agent)(?:\.\w+)*$")

# Exceptions whose capture swallows the harness's stop (HarnessStop is a BaseException).
STOP_CATCHING = frozenset(
    {"BaseException", "KeyboardInterrupt", "SystemExit", "HarnessStop", "GeneratorExit"}
)
CLOCK_FUNCTIONS = frozenset(
    {"time.time", "time.perf_counter", "time.monotonic", "time.process_time", "time.time_ns",
     "time.perf_counter_ns", "time.monotonic_ns", "datetime.datetime.now", "torch.cuda.synchronize"}
)  # fmt: skip
CTX_CLOCK_METHODS = frozenset({"time_left", "progress", "elapsed"})
TARGET_PARAMETERS = frozenset({"targets", "target", "labels"})
GRADIENT_CALLS = frozenset(
    {"torch.enable_grad", "torch.set_grad_enabled", "torch.autograd.grad",
     "torch.autograd.backward"}
)  # fmt: skip
GRADIENT_METHODS = frozenset({"backward", "step", "zero_grad"})
SEED_METHODS = frozenset({"manual_seed", "manual_seed_all", "seed", "set_seed", "default_rng"})
SEED_FUNCTIONS = frozenset({"set_seed", "seed_everything", "manual_seed"})

# (argument index, keyword names, True: writes / False: reads / None: the mode argument says).
FILE_FUNCTIONS: dict[str, tuple[int, tuple[str, ...], bool | None]] = {
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
PATH_METHODS: dict[str, bool | None] = {
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
PATH_CONSTRUCTORS = frozenset(
    {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath", "Path"}
)
# Workspace files that a run must not rewrite: kind and why.
PROTECTED_WORKSPACE_FILES: dict[str, tuple[str, str]] = {
    "train.py": (HARNESS_TAMPER, "what ran would no longer be what was committed"),
    "program.md": (HARNESS_TAMPER, "it is the researcher's, not the run's"),
    "config.toml": (EVAL_SETTINGS, "it holds the budget and the evaluation settings"),
}
