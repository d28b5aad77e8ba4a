"""The `cockpit` command line.

cockpit                       train the default research script once, on the defaults
cockpit train [options]       one training run of a workspace's train.py (or the template)
cockpit bench trainer         the trainer's speed: tokens/s, MFU, steps, val_bpb, memory
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cockpit.config import ConfigError, Settings, load_settings


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds greater than 0, got {text}")
    return value


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="the research workspace (default: none; the bundled template script is trained)",
    )


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        type=_positive_float,
        default=None,
        help="training seconds (config: trainer.budget_seconds)",
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (config: trainer.device)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (config: trainer.seed)")
    parser.add_argument(
        "--corpus", default=None, help="stdlib, text:DIR or parquet:DIR (config: trainer.corpus)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cockpit",
        description="Research Cockpit: autonomous, offline ML research on your own GPU box.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a workspace's train.py once and print the summary"
    )
    _add_workspace(train)
    _add_training_options(train)
    train.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the run's log, metrics and summary in this folder",
    )

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    benches = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    trainer_bench = benches.add_parser(
        "trainer",
        help="speed of the default script against a plain GPT of the same size",
    )
    _add_workspace(trainer_bench)
    _add_training_options(trainer_bench)
    trainer_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    trainer_bench.add_argument(
        "--no-reference", action="store_true", help="skip the plain-GPT comparison run"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "trainer.budget_seconds": getattr(args, "budget", None),
        "trainer.device": getattr(args, "device", None),
        "trainer.seed": getattr(args, "seed", None),
        "trainer.corpus": getattr(args, "corpus", None),
    }


def _settings(args: argparse.Namespace) -> tuple[Settings, Path | None]:
    workspace = getattr(args, "workspace", None)
    if workspace is not None:
        workspace = workspace.expanduser().resolve()
        if not workspace.is_dir():
            raise ConfigError(
                f"workspace {workspace} does not exist; check the path given to --workspace"
            )
    return load_settings(workspace, overrides=_overrides(args)), workspace


def _cmd_train(args: argparse.Namespace) -> int:
    from cockpit.training import run_training, script_for

    settings, workspace = _settings(args)
    script = script_for(settings, workspace)
    if not script.is_file():
        print(
            f"error: {script} not found; the workspace's trainer.script setting names it",
            file=sys.stderr,
        )
        return 2
    print(
        f"training {script} for {settings.trainer.budget_seconds:g} s "
        f"(device {settings.trainer.device}, seed {settings.trainer.seed}, corpus {settings.trainer.corpus})",
        flush=True,
    )
    result = run_training(settings, workspace, keep_dir=getattr(args, "keep", None))
    return (
        result.exit_code
        if result.exit_code is not None and result.exit_code >= 0
        else int(result.outcome)
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from cockpit.bench.trainer_bench import run_trainer_bench

    settings, workspace = _settings(args)
    return run_trainer_bench(
        settings, workspace, as_json=args.json, reference=not args.no_reference
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {None: _cmd_train, "train": _cmd_train, "bench": _cmd_bench}
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
