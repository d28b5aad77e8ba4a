"""The `cockpit` command line.

cockpit                       the cockpit: the terminal UI of a workspace's research, its
                              engine started if it is not running (without a terminal: the
                              research loop, headless, in the foreground)
cockpit train [options]       one training run of a workspace's train.py (or the template)
cockpit run / start / stop    the research loop with the cockpit on it (--headless, or
                              without a terminal: in the foreground) / detached / stopped
cockpit status                what the engine is doing
cockpit bench trainer|loop|ui figures: the trainer's speed, the loop's overhead, the UI's
cockpit bench search          research yield per hour of compute, proposer against proposer
cockpit doctor [--json]       is this box ready for a night of research? one line per check
cockpit doctor --gpu-check    the doctor, a training, the bench and a short loop on the GPU,
                              within ten minutes, ending with figures to paste into a report
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.names import PROPOSERS
from cockpit.config import ConfigError, Settings, load_settings
from cockpit.gpu_check import GpuCheckOptions
from cockpit.store.steering import MODES, Kind, Steer

if TYPE_CHECKING:
    from cockpit.engine.workspace import Workspace

# The `cockpit <command>` lines that steer a running engine: what each sends, and its help.
STEER_COMMANDS = {
    "approve": (Kind.APPROVE, "approve the proposal that waits (supervised mode)"),
    "veto": (Kind.VETO, "veto the proposal that waits; the reason goes to the agent"),
    "pause": (Kind.PAUSE, "pause after the current step"),
    "resume": (Kind.RESUME, "resume a paused engine"),
    "note": (Kind.NOTE, "a note for the agent"),
    "mode": (Kind.SET_MODE, "switch between autonomous and supervised"),
    "keep": (
        Kind.OVERRIDE_KEEP,
        "override a decision: keep a discarded experiment (the branch moves to it)",
    ),
    "discard": (
        Kind.OVERRIDE_DISCARD,
        "override a decision: revert the kept experiment that is the current best",
    ),
}


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds greater than 0, got {text}")
    return value


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'must be "auto" or a number, 1 or more, got {text}')
    return int(text)


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number, {minimum} or more, got {text}"
            )
        return int(text)

    return parse


_at_least_one = _whole_number(1)
_at_least_zero = _whole_number(0)


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of GB, 0 or more, got {text}")
    return value


def _proposer_list(text: str) -> tuple[str, ...]:
    from cockpit.bench.search_runs import parse_proposers

    try:
        return parse_proposers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    parser.add_argument(
        "--workspace",
        dest="ui_workspace",
        type=Path,
        default=None,
        help="the research workspace the cockpit shows (default: the default workspace)",
    )
    parser.add_argument(
        "--theme",
        default=None,
        help="midnight, daylight or contrast (default: the last one chosen, else ui.theme)",
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

    init = commands.add_parser("init", help="create a research workspace from the template")
    init.add_argument("directory", type=Path)

    for name, help_text in (
        ("run", "run the research loop: with the cockpit on it, or --headless in the foreground"),
        ("start", "run the research loop detached (survives the terminal closing)"),
    ):
        loop = commands.add_parser(name, help=help_text)
        _add_engine_workspace(loop)
        if name == "run":
            loop.add_argument(
                "--headless",
                action="store_true",
                help="the loop in this process, printing its progress, without the cockpit "
                "(also what happens without a terminal); in a terminal, without it, the loop "
                "runs detached and the cockpit shows it",
            )
        loop.add_argument(
            "--experiments",
            type=int,
            default=None,
            help="experiments after the baseline (0: until stopped)",
        )
        loop.add_argument(
            "--budget", type=_positive_float, default=None, help="training seconds per experiment"
        )
        loop.add_argument(
            "--workers",
            type=_workers,
            default=None,
            help='trainings side by side, each on its own device: a number, or "auto" (one per '
            "GPU; one on a machine without a GPU)",
        )
        loop.add_argument(
            "--tag",
            default=None,
            help="the run's tag (default: today, e.g. nov26); an existing tag resumes that run",
        )
        loop.add_argument("--mode", choices=MODES, default=None)
        loop.add_argument(
            "--proposer",
            choices=PROPOSERS,
            default=None,
            help="hybrid: the [agent] model changes the code while Optuna tunes the numbers; "
            "llm: the model alone (Optuna stands in while it is unreachable); optuna: the "
            "optimiser alone; builtin: nudges one CAPS constant at a time",
        )
        loop.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
        loop.add_argument(
            "--adopt",
            action="store_true",
            help="make uncommitted changes to train.py the new baseline",
        )
        if name == "run":
            # Internal: how `cockpit start` hands its detached engine the settings it
            # resolved (commands.EngineStart), so the engine never parses the flags again.
            loop.add_argument("--settings-file", type=Path, default=None, help=argparse.SUPPRESS)

    stop = commands.add_parser("stop", help="stop the engine after the current experiment")
    _add_engine_workspace(stop)
    stop.add_argument(
        "--now",
        action="store_true",
        help="stop at once (the training is recorded as interrupted and runs again next time)",
    )

    status = commands.add_parser("status", help="what the engine is doing")
    _add_engine_workspace(status)
    status.add_argument("--json", action="store_true")

    for name, (_kind, help_text) in STEER_COMMANDS.items():
        steer = commands.add_parser(name, help=help_text)
        _add_engine_workspace(steer)
        if name in ("approve", "veto"):
            steer.add_argument(
                "--experiment", type=int, default=None, help="its number (default: the one waiting)"
            )
        if name == "veto":
            steer.add_argument("--reason", default="", help="why, for the agent")
        if name == "note":
            steer.add_argument("text")
        if name == "mode":
            steer.add_argument("mode", choices=MODES)
        if name in ("keep", "discard"):
            steer.add_argument("experiment", type=int, help="the experiment's number")

    report = commands.add_parser(
        "report", help="write progress.png and report.md of a run (default: the latest)"
    )
    _add_engine_workspace(report)
    report.add_argument(
        "--out", type=Path, default=None, help="where to write them (default: WORKSPACE/report)"
    )
    report.add_argument("--tag", default=None, help="the run (default: the latest)")
    report.add_argument(
        "--json",
        action="store_true",
        help="print the run's figures as JSON instead of writing the files",
    )

    verify = commands.add_parser(
        "verify",
        help="train a run's best again on seeds no experiment used: the gain you can bank",
    )
    _add_engine_workspace(verify)
    verify.add_argument("--tag", default=None, help="the run (default: the latest)")
    verify.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="fresh seeds to train it on (config: engine.verify_seeds; 3 where that is 0)",
    )

    _add_doctor(commands)

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
    trainer_bench.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate the two N times and report the median (default: 1)",
    )
    loop_bench = benches.add_parser(
        "loop",
        help="the scheduler's overhead per training (p50, p95) and how busy the workers are kept",
    )
    loop_bench.add_argument("--experiments", type=int, default=12)
    loop_bench.add_argument("--workers", type=int, default=1, help="workers side by side")
    loop_bench.add_argument(
        "--budget", type=_positive_float, default=1.0, help="seconds each training lasts"
    )
    loop_bench.add_argument(
        "--propose-seconds",
        type=float,
        default=0.0,
        help="how long the proposer takes to answer (default: at once)",
    )
    loop_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    search_bench = benches.add_parser(
        "search",
        help="research yield per hour of compute: the val_bpb each proposer gains, over seeds",
    )
    search_bench.add_argument(
        "--proposer",
        type=_proposer_list,
        default="builtin,optuna",
        help=f"the proposers to compare, comma-separated: {', '.join(PROPOSERS)} "
        "(default: builtin,optuna)",
    )
    search_bench.add_argument(
        "--experiments", type=_at_least_one, default=24, help="experiments after the baseline"
    )
    search_bench.add_argument(
        "--budget", type=_positive_float, default=20.0, help="training seconds per experiment"
    )
    search_bench.add_argument(
        "--seeds", type=_at_least_one, default=2, help="runs per proposer, seeds 0 to K-1"
    )
    search_bench.add_argument(
        "--workers", type=_at_least_one, default=1, help="trainings side by side in each run"
    )
    search_bench.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where search.png and each run's workspace go (default: a scratch folder, removed)",
    )
    search_bench.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (config: trainer.device)"
    )
    search_bench.add_argument(
        "--verify",
        type=_at_least_zero,
        default=0,
        help="train each run's best script again K times with fresh seeds and report the "
        "verified gain, without the luck that made it the best (default: 0)",
    )
    search_bench.add_argument(
        "--start",
        default=None,
        metavar="FILE|tuned",
        help="the script every run begins from: a file, or tuned for the template with the "
        "constants found best on a CPU at 20 s, so that only what a proposer finds beyond "
        "them counts (default: the template)",
    )
    search_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    abort_bench = benches.add_parser(
        "early-abort",
        help="replay a recorded run: compute early abort saves on discards, keeps it loses",
    )
    _add_engine_workspace(abort_bench)
    abort_bench.add_argument("--tag", default=None, help="the run (default: the latest)")
    abort_bench.add_argument(
        "--after", type=float, default=None, help="share of the budget (config: early_abort_after)"
    )
    abort_bench.add_argument(
        "--margin",
        type=float,
        default=None,
        help="the margin's floor (config: engine.early_abort_margin)",
    )
    abort_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    ui_bench = benches.add_parser(
        "ui",
        help="the cockpit in a tmux terminal on a large journal: first frame, idle CPU, memory",
    )
    ui_bench.add_argument("--experiments", type=int, default=1000)
    ui_bench.add_argument(
        "--idle-seconds", type=float, default=10.0, help="how long idle CPU is measured"
    )
    ui_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def _add_doctor(commands: Any) -> None:
    """`cockpit doctor`: the checks, and with --gpu-check the ten-minute GPU check."""
    defaults = GpuCheckOptions()
    doctor = commands.add_parser(
        "doctor",
        help="is this box ready for a night of research? one line per check, with its fix",
    )
    _add_engine_workspace(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda or cuda:N: the device probed (config: trainer.device) and, with "
        f"--gpu-check, trained on (default there: {defaults.device})",
    )
    doctor.add_argument(
        "--refresh",
        action="store_true",
        help="run the confined device probe again instead of reading its cached result",
    )
    doctor.add_argument(
        "--min-free-gb",
        type=_gigabytes,
        default=defaults.fail_free_gb,
        help=f"fail below this much free disk (default: {defaults.fail_free_gb:g} GB)",
    )
    doctor.add_argument(
        "--gpu-check",
        action="store_true",
        help="then train the default script, bench it against a plain GPT and run a short "
        "research loop, within ten minutes, and print figures to paste into a report",
    )
    for flag, default, what in (
        ("--train-budget", defaults.train_budget, "training seconds of the default script"),
        ("--bench-budget", defaults.bench_budget, "training seconds of each bench run"),
        ("--loop-budget", defaults.loop_budget, "training seconds of each loop experiment"),
    ):
        doctor.add_argument(
            flag, type=_positive_float, default=default, help=f"{what} (default: {default:g})"
        )
    doctor.add_argument(
        "--loop-experiments",
        type=_at_least_one,
        default=defaults.loop_experiments,
        help=f"experiments after the loop's baseline (default: {defaults.loop_experiments})",
    )
    doctor.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the GPU check's runs in this new folder (default: a scratch folder, removed)",
    )


def _add_engine_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="the research workspace (default: the default workspace in the user data directory)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "trainer.budget_seconds": getattr(args, "budget", None),
        "trainer.device": getattr(args, "device", None),
        "trainer.seed": getattr(args, "seed", None),
        "trainer.corpus": getattr(args, "corpus", None),
        "engine.experiments": getattr(args, "experiments", None),
        "engine.mode": getattr(args, "mode", None),
        "engine.proposer": getattr(args, "proposer", None),
        "engine.workers": getattr(args, "workers", None),
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
    from cockpit.engine.jobs import script_for
    from cockpit.training import run_training

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
    if args.bench == "early-abort":
        from cockpit import commands
        from cockpit.bench.early_abort_bench import run_early_abort_bench

        recorded = commands.open_workspace(args.workspace).path
        engine = load_settings(recorded).engine
        return run_early_abort_bench(
            recorded,
            args.tag,
            after=args.after if args.after is not None else engine.early_abort_after,
            floor=args.margin if args.margin is not None else engine.early_abort_margin,
            as_json=args.json,
        )
    if args.bench == "ui":
        import json

        from cockpit.bench.ui_bench import run_ui_bench

        try:
            figures = run_ui_bench(args.experiments, idle_seconds=args.idle_seconds)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(figures, indent=2))
        return 0
    if args.bench == "search":
        from cockpit.bench.search_bench import run_search_bench
        from cockpit.bench.search_runs import SearchOptions

        options = SearchOptions(
            proposers=args.proposer,
            experiments=args.experiments,
            budget_seconds=args.budget,
            seeds=args.seeds,
            workers=args.workers,
            device=args.device,
            out=args.out,
            verify=args.verify,
            start=args.start,
        )
        return run_search_bench(options, as_json=args.json)
    if args.bench == "loop":
        from cockpit.bench.loop_bench import run_loop_bench

        return run_loop_bench(
            args.experiments,
            args.json,
            workers=args.workers,
            budget=args.budget,
            propose_seconds=args.propose_seconds,
        )
    from cockpit.bench.trainer_bench import run_trainer_bench

    settings, workspace = _settings(args)
    return run_trainer_bench(
        settings,
        workspace,
        as_json=args.json,
        reference=not args.no_reference,
        repeat=args.repeat,
    )


def _cmd_doctor(args: argparse.Namespace) -> int:
    from cockpit.doctor.checkup import run_doctor
    from cockpit.doctor.verdicts import print_doctor
    from cockpit.engine.workspace import Workspace

    if args.json and args.gpu_check:
        print(
            "error: --json prints the doctor's checks alone; --gpu-check prints its own block",
            file=sys.stderr,
        )
        return 2
    settings, workspace = _settings(args)
    workspace = workspace or Workspace.default_path()
    if args.gpu_check:
        from cockpit.gpu_check import run_gpu_check

        options = GpuCheckOptions(
            device=args.device or GpuCheckOptions.device,
            train_budget=args.train_budget,
            bench_budget=args.bench_budget,
            loop_budget=args.loop_budget,
            loop_experiments=args.loop_experiments,
            out=args.out,
            refresh=args.refresh,
            fail_free_gb=args.min_free_gb,
        )
        return run_gpu_check(options, settings, workspace)
    checks = run_doctor(settings, workspace, refresh=args.refresh, fail_free_gb=args.min_free_gb)
    return print_doctor(checks, workspace, as_json=args.json)


def _cmd_verify(args: argparse.Namespace) -> int:
    from cockpit import commands
    from cockpit.verify import cmd_verify

    return cmd_verify(commands.open_workspace(args.workspace), args.tag, args.seeds)


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from cockpit import commands
    from cockpit.report.summary import ReportError
    from cockpit.report.workspace import read_report, write_report

    if args.workspace is not None:
        workspace = args.workspace.expanduser().resolve()
    else:
        workspace = commands.open_workspace(None).path
    try:
        cache_dir = load_settings(workspace).paths.cache_dir
        if args.json:
            data = read_report(workspace, args.tag, cache_dir).as_json()
            print(json.dumps(data, indent=2))
            return 0
        png, markdown = write_report(workspace, args.out, args.tag, cache_dir)
    except (ReportError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {markdown}\nwrote {png}")
    return 0


def _in_a_terminal() -> bool:
    """Whether a person is at a terminal here (both ends of it), for the cockpit's screen."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _cmd_cockpit(args: argparse.Namespace) -> int:
    """Bare `cockpit`: the terminal UI, with the engine started behind it when it is not running."""
    from cockpit import commands
    from cockpit.engine.loop import EngineOptions

    if args.theme is not None:
        from themes import resolve_theme

        try:
            resolve_theme(args.theme)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    workspace = commands.open_workspace(args.ui_workspace)
    if not _in_a_terminal():
        print(
            "no terminal here: running the research loop in the foreground, headless "
            "(`cockpit` in a terminal shows the cockpit; `cockpit start` runs it detached)",
            file=sys.stderr,
        )
        return commands.cmd_run(workspace, load_settings(workspace.path), EngineOptions())
    if not commands.engine_running(workspace):
        code = commands.cmd_start(workspace, load_settings(workspace.path), EngineOptions())
        if code != 0:
            return code
    from cockpit.ui.app import run_cockpit

    return run_cockpit(workspace.path, theme=args.theme)


def _cmd_engine(args: argparse.Namespace) -> int:
    from cockpit import commands

    if args.command == "init":
        return commands.cmd_init(args.directory)
    workspace = commands.open_workspace(args.workspace)
    if args.command in ("run", "start"):
        return _cmd_loop(args, workspace)
    if args.command == "stop":
        return commands.cmd_stop(workspace, args.now)
    if args.command == "status":
        return commands.cmd_status(workspace, args.json)
    return commands.cmd_send(workspace, _steer(args))


def _cmd_loop(args: argparse.Namespace, workspace: Workspace) -> int:
    """`cockpit run` and `cockpit start`: the settings are resolved here, once, and a detached
    engine is handed them as they are (commands.EngineStart), not the flags to parse again."""
    from cockpit import commands
    from cockpit.engine.loop import EngineOptions

    settings_file = getattr(args, "settings_file", None)
    if settings_file is not None:
        if (
            any(value is not None for value in _overrides(args).values())
            or args.tag is not None
            or args.adopt
        ):
            print(
                "error: --settings-file holds every setting and option of the run; give it "
                "alone, with --workspace",
                file=sys.stderr,
            )
            return 2
        start = commands.EngineStart.take(settings_file)
        return commands.cmd_run(workspace, start.settings, start.options)
    options = EngineOptions(tag=args.tag, experiments=args.experiments, adopt=args.adopt)
    if args.command == "run" and (args.headless or not _in_a_terminal()):
        return commands.cmd_run(workspace, _loop_settings(args, workspace), options)
    if args.command == "start":
        return commands.cmd_start(workspace, _loop_settings(args, workspace), options)
    # `cockpit run` in a terminal: the loop runs detached, as `cockpit start` runs it,
    # with the cockpit on it; `q` leaves it running, `Q` stops it.
    if commands.engine_running(workspace):
        print(
            f"an engine is already running for {workspace.path}: showing it (its own "
            "settings hold; `cockpit stop` first to run with these)",
            file=sys.stderr,
        )
    else:
        code = commands.cmd_start(workspace, _loop_settings(args, workspace), options)
        if code != 0:
            return code
    from cockpit.ui.app import run_cockpit

    return run_cockpit(workspace.path, theme=None)


def _loop_settings(args: argparse.Namespace, workspace: Workspace) -> Settings:
    """The research loop's settings: the defaults, the workspace's config.toml, the
    environment and the flags, highest last."""
    return load_settings(workspace.path, overrides=_overrides(args))


def _steer(args: argparse.Namespace) -> Steer:
    """The steering command a `cockpit <command>` line asks for."""
    kind, _help = STEER_COMMANDS[args.command]
    try:
        return Steer(
            kind,
            experiment=getattr(args, "experiment", None),
            reason=getattr(args, "reason", ""),
            text=getattr(args, "text", ""),
            mode=getattr(args, "mode", ""),
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    from cockpit.engine.workspace_error import WorkspaceError

    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        None: _cmd_cockpit,
        "train": _cmd_train,
        "bench": _cmd_bench,
        "report": _cmd_report,
        "verify": _cmd_verify,
        "doctor": _cmd_doctor,
    }
    try:
        return handlers.get(args.command, _cmd_engine)(args)
    except (ConfigError, WorkspaceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
