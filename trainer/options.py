"""What one harness run needs (`HarnessOptions`), and its command line both ways.

`HarnessOptions.parse` reads the flags of ``python -m trainer``; `HarnessOptions.argv` writes
them, so that ``HarnessOptions.parse(options.argv()) == options`` for options whose paths are
absolute and that name at most one metrics sink (a path or a descriptor).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer import template_path
from trainer.bounds import Bounds
from trainer.confine import MODES

# By default the evaluation may grow the harness by this share of the machine's memory
# (trainer.validate).
EVAL_MEMORY_SHARE = 0.5


@dataclass
class HarnessOptions:
    """Everything one run needs. Its defaults are the [trainer] settings' (cockpit.settings
    takes them from here)."""

    script: Path
    budget_seconds: float = 300.0
    grace_seconds: float = 10.0
    device: str = "auto"
    seed: int = 42
    corpus: str = "stdlib"
    seq_len: int = 0  # 0: trainer.harness.DEFAULT_SEQ_LEN for the device
    eval_tokens: int = 0  # 0: trainer.harness.DEFAULT_EVAL_TOKENS for the device
    threads: int = 0  # 0: every core this process may use
    cpus: tuple[int, ...] = ()  # the cores the run is pinned to; (): those it was given
    cache_dir: Path | None = None
    pacing_path: Path | None = None  # where step plans are remembered; None: in cache_dir
    # The script's step plan, given: what its plan_steps answers, instead of a plan remembered
    # or made from the pace (0: none given). A rerun of a training takes the plan it trained.
    plan_steps: int = 0
    metrics_path: Path | None = None
    metrics_fd: int | None = None
    summary_json: Path | None = None
    # The training process's folder (the only one it may write); None: beside the summary,
    # or a temporary one.
    work_dir: Path | None = None
    # Where the exported forward is kept; None: beside the summary (or not kept).
    program_path: Path | None = None
    confinement: str = "auto"  # auto, require or off (see trainer.confine)
    # How much the evaluation may grow this process, in MB; 0: EVAL_MEMORY_SHARE of the machine.
    eval_memory_mb: int = 0
    # The compilers' caches shared by every training (faster on a GPU, and a channel from one
    # training to the next: what one leaves there, a later one loads); False: its own, in its
    # folder, gone with it.
    share_compile_cache: bool = False
    # What the training may take of the machine (trainer.bounds).
    bounds: Bounds = field(default_factory=Bounds)

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> HarnessOptions:
        """The options of a command line (default: this process's); argparse exits with its
        message on flags it refuses."""
        args = build_parser().parse_args(None if argv is None else list(argv))
        # Paths are made absolute here, once: the training process runs in another folder, and
        # a path relative to this one would name another file there.
        paths = {
            name: getattr(args, name).absolute() if getattr(args, name) is not None else None
            for name in ("cache_dir", "pacing", "metrics", "summary_json", "work_dir", "program")
        }
        return cls(
            script=(args.script or template_path()).resolve(),
            budget_seconds=args.budget,
            grace_seconds=args.grace,
            device=args.device,
            seed=args.seed,
            corpus=args.corpus,
            seq_len=args.seq_len,
            eval_tokens=args.eval_tokens,
            threads=args.threads,
            cpus=args.cpus,
            cache_dir=paths["cache_dir"],
            pacing_path=paths["pacing"],
            plan_steps=args.plan_steps,
            metrics_path=paths["metrics"],
            metrics_fd=args.metrics_fd,
            summary_json=paths["summary_json"],
            confinement=args.confinement,
            work_dir=paths["work_dir"],
            program_path=paths["program"],
            eval_memory_mb=args.eval_memory_mb,
            share_compile_cache=args.share_compile_cache,
            bounds=Bounds(
                args.memory_limit_mb, args.max_processes, args.disk_limit_mb, args.metrics_limit_mb
            ),
        )

    def argv(self) -> list[str]:
        """The flags that `parse` reads back as these options (``python -m trainer`` comes
        before them)."""
        argv = [
            "--script", str(self.script),
            "--budget", str(self.budget_seconds),
            "--grace", str(self.grace_seconds),
            "--device", self.device,
            "--seed", str(self.seed),
            "--corpus", self.corpus,
            "--seq-len", str(self.seq_len),
            "--eval-tokens", str(self.eval_tokens),
            "--threads", str(self.threads),
            "--confinement", self.confinement,
            "--eval-memory-mb", str(self.eval_memory_mb),
            "--memory-limit-mb", str(self.bounds.memory_mb),
            "--max-processes", str(self.bounds.processes),
            "--disk-limit-mb", str(self.bounds.disk_mb),
            "--metrics-limit-mb", str(self.bounds.metrics_mb),
        ]  # fmt: skip
        if self.plan_steps:
            argv += ["--plan-steps", str(self.plan_steps)]
        if self.cpus:
            argv += ["--cpus", ",".join(str(core) for core in self.cpus)]
        if self.share_compile_cache:
            argv.append("--share-compile-cache")
        if self.metrics_fd is not None:
            argv += ["--metrics-fd", str(self.metrics_fd)]
        for flag, path in (
            ("--cache-dir", self.cache_dir),
            ("--pacing", self.pacing_path),
            ("--metrics", self.metrics_path),
            ("--summary-json", self.summary_json),
            ("--work-dir", self.work_dir),
            ("--program", self.program_path),
        ):
            if path is not None:
                argv += [flag, str(path)]
        return argv


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m trainer``'s flags, its defaults those of `HarnessOptions`."""
    defaults = HarnessOptions(script=Path("train.py"))
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Run a training script's train(ctx) under a wall-clock budget and evaluate "
        "the model it returns (validation bits per byte).",
    )
    parser.add_argument(
        "--script", type=Path, default=None, help="the script (default: the bundled template)"
    )
    parser.add_argument(
        "--budget", type=float, default=defaults.budget_seconds, help="training seconds"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=defaults.grace_seconds,
        help="seconds past the budget before a timeout",
    )
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--corpus", default=defaults.corpus, help="stdlib, text:DIR or parquet:DIR")
    parser.add_argument(
        "--seq-len", type=int, default=defaults.seq_len, help="0: 256 on CPU, 2048 on CUDA"
    )
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=defaults.eval_tokens,
        help="0: 131072 on CPU, 4194304 on CUDA",
    )
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="CPU threads, 0: all cores"
    )
    parser.add_argument(
        "--cpus",
        type=_core_list,
        default=(),
        help="pin the run to these cores, e.g. 0,1 (default: the cores it was given)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="where encoded corpora are kept"
    )
    parser.add_argument(
        "--pacing",
        type=Path,
        default=None,
        help="the file that remembers step plans (default: pacing.json in the cache folder)",
    )
    parser.add_argument(
        "--plan-steps",
        type=_count,
        default=defaults.plan_steps,
        help="the script's step plan: what ctx.plan_steps answers, so that it trains these "
        "steps (if they fit the budget) as a run it reproduces did (0: the plan remembered in "
        "the pacing file, or one made from the pace)",
    )
    sink = parser.add_mutually_exclusive_group()
    sink.add_argument(
        "--metrics", type=Path, default=None, help="append live metrics (JSON lines) here"
    )
    sink.add_argument(
        "--metrics-fd", type=int, default=None, help="write live metrics to this descriptor"
    )
    parser.add_argument(
        "--summary-json", type=Path, default=None, help="write the summary here as JSON"
    )
    parser.add_argument(
        "--confinement",
        choices=MODES,
        default="auto",
        help="confine the training process: off the network, writing only its own folder, "
        "reading only what it needs (auto: as far as the kernel allows; require: fail where it "
        "does not fully; off)",
    )
    parser.add_argument(
        "--share-compile-cache",
        action="store_true",
        help="let the training use the compilers' caches (Inductor, Triton, CUDA) in the cache "
        "folder, shared with every other training: faster on a GPU, but what one training leaves "
        "there a later one loads (default: a cache of its own, in its folder)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="the training process's folder (default: 'training' beside the summary JSON)",
    )
    parser.add_argument(
        "--program",
        type=Path,
        default=None,
        help="where to keep the exported model (default: beside the summary JSON)",
    )
    parser.add_argument(
        "--eval-memory-mb",
        type=int,
        default=defaults.eval_memory_mb,
        help="how much the evaluation may grow the harness, in MB "
        f"(0: {EVAL_MEMORY_SHARE * 100:.0f}%% of this machine's memory)",
    )
    bounds = defaults.bounds
    for flag, default, what in (
        ("--memory-limit-mb", bounds.memory_mb, "the training's memory, in MB (0: half the "
         "machine's)"),
        ("--max-processes", bounds.processes, "the training's processes and threads (0: no bound)"),
        ("--disk-limit-mb", bounds.disk_mb, "what the training may write into its folder, in MB "
         "(0: no bound)"),
        ("--metrics-limit-mb", bounds.metrics_mb, "the training's metrics stream, in MB (0: no "
         "bound)"),
    ):  # fmt: skip
        parser.add_argument(flag, type=_count, default=default, help=what)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def _core_list(text: str) -> tuple[int, ...]:
    try:
        cores = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cores must be numbers like 0,1, got {text!r}") from None
    if not cores or min(cores) < 0:
        raise argparse.ArgumentTypeError(f"cores must be numbers like 0,1, got {text!r}")
    return cores
