"""The engine's command-line verbs: init, run, start, stop, status, and the steering commands
(approve, veto, pause, resume, note, mode) that any shell can send to a running engine."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agent import names
from cockpit.config import ConfigError, Settings
from cockpit.engine.agents import build_agent
from cockpit.engine.executors import executor_for
from cockpit.engine.loop import Engine, EngineOptions, journal_path
from cockpit.engine.noise import paired_phrase
from cockpit.engine.workspace import Workspace
from cockpit.engine.workspace_error import WorkspaceError
from cockpit.errors import EngineError
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock_held, engine_lock_pid
from cockpit.store.records import JournalError, Run
from cockpit.store.state import EngineState
from cockpit.store.steering import Kind, Steer
from cockpit.store.verification import latest_verification
from cockpit.views.agent_status import (
    ModelPaused,
    ProposedBy,
    UnusableReplies,
    describe_proposers,
    in_flight,
    recent_proposers,
)
from cockpit.views.readmodel import (
    describe_split,
    integrity_flags,
    read_search_split,
    read_workers,
)
from trainer.bounds import describe as describe_bounds
from trainer.confine import Confinement

COMMAND_WAIT_SECONDS = 3.0
START_WAIT_SECONDS = 20.0


def open_workspace(path: Path | None, *, announce: bool = True) -> Workspace:
    """The given workspace, or the default one (created on first use, and said where)."""
    if path is not None:
        return Workspace.open(path.expanduser().resolve())
    workspace, created = Workspace.open_or_create_default()
    if announce:
        verb = "created the default workspace" if created else "using the default workspace"
        print(f"{verb}: {workspace.path}", file=sys.stderr)
    return workspace


def engine_running(workspace: Workspace) -> bool:
    """Whether an engine runs for this workspace: it holds the workspace's lock (the one
    definition, `cockpit.store.lock.engine_lock_held`, which the screen reads too)."""
    return engine_lock_held(workspace.path)


def cmd_init(path: Path) -> int:
    workspace = Workspace.init(path.expanduser().resolve())
    print(f"workspace ready: {workspace.path}")
    print(
        f"  edit {workspace.path / 'program.md'} to steer the research, then: cockpit run --workspace {path}"
    )
    return 0


class EngineStart(BaseModel):
    """What a detached engine is started with: the settings its starter resolved (the
    defaults, the workspace's config.toml, the environment and the flags, once) and the run's
    options that are not settings. The engine validates it with the same models, so it runs on
    exactly these settings and never parses the flags a second time."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    settings: Settings
    options: EngineOptions

    def write(self, folder: Path) -> Path:
        """Write it to a new file in ``folder`` (atomically) and return the file's path.

        Each start has a file of its own: two starts at once must not hand their engines
        each other's settings (only one engine takes the workspace, but with its own)."""
        path = folder / f"engine-start-{secrets.token_hex(6)}.json"
        write_atomic(path, self.model_dump_json(indent=2).encode())
        return path

    @classmethod
    def read(cls, path: Path) -> EngineStart:
        """The start written at ``path``; a :class:`ConfigError` says what is wrong with it
        and what to do."""
        again = (
            "Start the engine with `cockpit start` or `cockpit run`: they resolve the settings "
            "and write the file the engine starts with."
        )
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: the settings file the engine was to start with is not there (an "
                f"engine reads its file once and removes it). {again}"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the engine's settings file: {exc.strerror or exc}. {again}"
            ) from exc
        try:
            start = cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(_describe_problem(error) for error in exc.errors()[:3])
            more = len(exc.errors()) - 3
            if more > 0:
                problems += f"; and {more} more"
            raise ConfigError(
                f"{path} is not a settings file this engine can run on ({problems}). {again}"
            ) from None
        missing = _unset_settings(start.settings)
        if missing:
            raise ConfigError(
                f"{path} leaves settings out ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''}); the engine runs on every setting as "
                f"its starter resolved it, never on a default filled in here. {again}"
            )
        return start

    @classmethod
    def take(cls, path: Path) -> EngineStart:
        """Read the start at ``path`` and remove the file: it served its one engine, whose
        run record keeps the settings from here on."""
        start = cls.read(path)
        path.unlink(missing_ok=True)
        return start


def _describe_problem(error: Any) -> str:
    """One of pydantic's errors as `where: what`, e.g. ``settings.trainer.seed: ...``."""
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _unset_settings(model: BaseModel, prefix: str = "") -> list[str]:
    """The settings (dotted names) that ``model`` filled in with its defaults because its
    input did not give them."""
    unset = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name not in model.model_fields_set:
            unset.append(f"{prefix}{name}")
        elif isinstance(value, BaseModel):
            unset.extend(_unset_settings(value, f"{prefix}{name}."))
    return unset


def cmd_run(workspace: Workspace, settings: Settings, options: EngineOptions) -> int:
    """The research loop in this process, on these settings, printing its progress."""
    try:
        executor = executor_for(settings, workspace.paths)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    agent = build_agent(settings)
    engine = Engine(
        workspace, settings, agent.proposer, out=sys.stdout, agent=agent, executor=executor
    )
    try:
        return engine.run(options)
    except (EngineError, WorkspaceError, JournalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        agent.close()


def cmd_start(workspace: Workspace, settings: Settings, options: EngineOptions) -> int:
    """Run the engine detached from this terminal: its own session, immune to SIGHUP. It is
    handed the settings resolved here, in a file, and runs on exactly those."""
    if engine_running(workspace):
        print(f"an engine is already running for {workspace.path}; `cockpit status` shows it")
        return 1
    log = workspace.paths.engine_log
    start_file = EngineStart(settings=settings, options=options).write(workspace.cockpit_dir)
    command = [
        sys.executable,
        "-m",
        "cockpit",
        "run",
        "--headless",
        "--workspace",
        str(workspace.path),
        "--settings-file",
        str(start_file),
    ]
    with open(log, "ab") as output:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workspace.path,
        )
    deadline = time.monotonic() + START_WAIT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            start_file.unlink(missing_ok=True)  # it may have stopped before it took the file
            print(f"the engine stopped at once (exit code {child.returncode}); its log, {log}:")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            return 1
        # The lock's pid, not a probe of the lock: a probe takes the lock for an instant,
        # and the engine starting in that instant would find it taken and give up.
        if engine_lock_pid(workspace.path) == child.pid:
            print(f"engine started (pid {child.pid}); log: {log}")
            print("  `cockpit status` shows it, `cockpit stop` stops it")
            return 0
        time.sleep(0.1)
    print(f"the engine (pid {child.pid}) has not taken the workspace yet; see {log}")
    return 1


def _open_journal(workspace: Workspace, *, readonly: bool) -> Journal | None:
    path = journal_path(workspace)
    if readonly and not path.exists():
        return None
    return Journal.open(path, readonly=readonly)


def _workers(state: EngineState, journal: Journal, run: Run) -> list[dict[str, Any]]:
    """The engine's workers as `cockpit status` shows them: device, experiment, phase."""
    workers = []
    now = time.time()
    for row in read_workers(state):
        left = row.time_left(now)
        number = row.experiment
        experiment = journal.experiment(run.id, number) if number is not None else None
        workers.append(
            {
                "worker": row.worker,
                "device": row.device,
                "experiment": number,
                "phase": row.phase,
                "time_left": None if left is None else round(left, 1),
                "description": experiment.description if experiment is not None else None,
            }
        )
    return workers


def status_report(workspace: Workspace) -> dict[str, Any]:
    """What `cockpit status` says, as data."""
    running = engine_lock_held(workspace.path)
    report: dict[str, Any] = {
        "workspace": str(workspace.path),
        "running": running,
        "phase": "stopped",
        "experiment": None,
        "best_val_bpb": None,
        "baseline_val_bpb": None,
        "tag": None,
        "mode": None,
        "time_left": None,
        "stopping": None,  # the stop the running engine has accepted, while it is pending
        # The best trained again on fresh seeds (`cockpit verify`); None until it has been.
        "verified_best": None,
        "verified_gain": None,
        # The baseline trained beside it on those seeds (None: it was not).
        "verified_baseline": None,
        "verify_seeds": None,
        "last_decisions": [],
    }
    journal = _open_journal(workspace, readonly=True)
    if journal is None:
        return report
    with journal:
        state = journal.engine_state()
        run = journal.latest_run()
        if run is not None:
            report.update(
                tag=run.tag,
                branch=run.branch,
                mode=run.mode,
                best_val_bpb=run.best_val_bpb,
                baseline_val_bpb=run.baseline_val_bpb,
                run_status=run.status,
                experiments=len(journal.experiments(run.id)),
                metric=run.config.get("trainer", {}).get("metric", "val_bpb"),
                # Script mode: the metric is what the workspace's own command printed.
                self_reported=bool(run.config.get("trainer", {}).get("command")),
            )
            verified = latest_verification(journal, run.id)
            # The best trained again on fresh seeds (`cockpit verify`): what can be banked.
            report.update(
                verified_best=None if verified is None else verified.mean,
                verified_gain=None if verified is None else verified.verified_gain,
                verified_baseline=None if verified is None else verified.baseline_now,
                verify_seeds=None if verified is None else list(verified.seeds),
                verified_differs=None if verified is None else verified.differs,
                verified_message=None if verified is None else verified.headline(),
            )
            decisions = journal.events(run.id, kinds=["decision"], limit=5, latest=True)
            report["last_decisions"] = [
                {"at": event.at, "message": event.message, **(event.data or {})}
                for event in decisions
            ]
        if state.keep_margin_bpb is not None:
            report.update(
                keep_margin_bpb=state.keep_margin_bpb,
                noise_spread_bpb=state.noise_spread_bpb,
                noise_runs=state.noise_runs,
                noise_scripts=state.noise_scripts,
                noise_left_out=state.noise_left_out,
                noise_paired_bpb=state.noise_paired_bpb,
                noise_pairs=state.noise_pairs,
                noise_measured_bpb=state.noise_measured_bpb,
                noise_prior_bpb=state.noise_prior_bpb,
                noise_prior_runs=state.noise_prior_runs,
            )
        confinement = Confinement.from_dict(state.confinement)
        report["confinement"] = (
            {**confinement.to_dict(), "message": confinement.describe()}
            if confinement is not None
            else None
        )
        if state.proposer is not None:
            report["agent"] = {
                "proposer": state.proposer,
                "model": state.model,
                "state": state.agent_state,
                "message": state.agent_message,
                "asking": state.asking if running else None,
                "replies": state.agent_replies,
                "paused": state.agent_paused,
                # The hybrid's shares of the next experiments, while it proposes.
                "split": read_search_split(state),
            }
        if run is not None:
            experiments = {e.number: e for e in journal.experiments(run.id)}
            current = in_flight(state, experiments, running=running)
            report["in_flight"] = None if current is None else current.as_json()
            report["recent_proposers"] = [
                proposed.as_json()
                for proposed in recent_proposers(
                    experiments.values(), exclude=None if current is None else current.experiment
                )
            ]
        report["workers"] = _workers(state, journal, run) if running and run is not None else []
        if running:
            report.update(
                phase=state.phase or "starting",
                experiment=state.experiment,
                time_left=state.time_left if state.phase == "training" else None,
                pid=state.pid,
            )
            stopping = state.stopping
            report["stopping"] = None if stopping is None else stopping.as_json()
            waiting = state.experiment
            if run is not None and report["phase"] == "awaiting_approval" and waiting is not None:
                experiment = journal.experiment(run.id, int(waiting))
                if experiment is not None:
                    report["awaiting"] = {
                        "experiment": experiment.number,
                        "description": experiment.description,
                        "flags": list(integrity_flags(experiment)),
                    }
    return report


def cmd_status(workspace: Workspace, as_json: bool) -> int:
    report = status_report(workspace)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    if report["tag"] is None:
        print(
            f"{workspace.path}: no run yet; start one with `cockpit start` or `cockpit run --headless`"
        )
        return 0
    phase = report["phase"]
    if phase == "training" and report["time_left"] is not None:
        phase = f"training, {report['time_left']:.0f} s left"
    engine = (
        f"engine running (pid {report.get('pid')})" if report["running"] else "engine not running"
    )
    print(f"{report['workspace']}  run {report['tag']} ({report['mode']})  {engine}")
    experiment = f"  experiment #{report['experiment']}" if report["experiment"] is not None else ""
    print(f"  phase: {phase}{experiment}")
    stopping = report["stopping"]
    if stopping is not None:
        print(f"  {stopping['message']} (asked {_clock(stopping['asked_at'])})")
    best, baseline = report["best_val_bpb"], report["baseline_val_bpb"]
    if best is not None and baseline is not None:
        metric = report.get("metric", "val_bpb") + (
            " (self-reported)" if report.get("self_reported") else ""
        )
        print(f"  best {metric} {best:.6f}  baseline {baseline:.6f}  gain {baseline - best:+.6f}")
    if report.get("verified_message"):
        print(f"  {report['verified_message']}")
    margin = report.get("keep_margin_bpb")
    if margin is not None:
        spread = report.get("noise_spread_bpb")
        source = (
            f"the run-to-run spread is {spread:.6f} over {report.get('noise_runs')} repeated runs"
            if spread is not None
            else "the configured floor: no repeated runs yet"
        )
        scripts, left_out = report.get("noise_scripts"), report.get("noise_left_out")
        if spread is not None and scripts:
            source += f" of {scripts} script{'s' if scripts != 1 else ''}"
        if spread is not None and left_out:
            source += (
                f"; {left_out} script{'s' if left_out != 1 else ''} whose runs lay further "
                "apart than chance allows left out"
            )
        prior, earlier = report.get("noise_prior_bpb"), report.get("noise_prior_runs")
        if prior is not None:
            measured = report.get("noise_measured_bpb")
            source += (
                f"; pooled with the spread of {prior:.6f} that {earlier} earlier "
                f"run{'s' if earlier != 1 else ''} of these settings measured"
                + ("" if measured is None else f" (this run alone: {measured:.6f})")
            )
        print(f"  keep margin {margin:.6f} ({source})")
        paired, pairs = report.get("noise_paired_bpb"), report.get("noise_pairs")
        if paired is not None:
            print(f"  {paired_phrase(paired, int(pairs or 0))}: their gains are judged with it")
    awaiting = report.get("awaiting")
    if awaiting is not None:
        print(f"  waiting for approval: #{awaiting['experiment']} {awaiting['description']}")
        for flag in awaiting["flags"]:
            print(f"    flagged {flag}")
        print("    `cockpit approve` trains it, `cockpit veto --reason WHY` refuses it")
    confinement = report.get("confinement")
    if confinement is not None:
        print(f"  {'confinement: ' if confinement['enforced'] else ''}{confinement['message']}")
        if confinement.get("bounds"):
            print(f"  {describe_bounds(confinement['bounds'])}")
    if len(report.get("workers") or []) > 1:
        for worker in report["workers"]:
            doing = "idle"
            if worker["experiment"] is not None:
                doing = f"#{worker['experiment']} {worker['phase']}"
                if worker["time_left"] is not None:
                    doing += f", {worker['time_left']:.0f} s left"
                if worker["description"]:
                    doing += f": {worker['description']}"
            print(f"  worker {worker['worker']} ({worker['device']}): {doing}")
    current = report.get("in_flight")
    recent = report.get("recent_proposers") or []
    if current is not None or recent:
        proposers = describe_proposers(
            None if current is None else ProposedBy(**current),
            [ProposedBy(**proposed) for proposed in recent],
        )
        print(f"  proposers: {proposers}")
    agent = report.get("agent")
    if agent is not None:
        print(f"  agent: {_describe_agent(agent)}")
        replies = UnusableReplies.from_state(agent.get("replies"))
        if replies is not None:
            print(f"  model's replies: {replies.message}")
            if replies.advice:
                print(f"    {replies.advice}")
    for decision in report["last_decisions"]:
        print(f"  {_clock(decision['at'])}  {decision['message']}")
    return 0


def _clock(at: float) -> str:
    """A Unix time as `cockpit status` prints it: the local time of day."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def _describe_agent(agent: dict[str, Any]) -> str:
    """One line: who proposes next (the hybrid with its split, the LLM, or Optuna or the
    built-in proposer, alone or standing in for the model), and why not the model when it
    is away or paused."""
    model = agent.get("model")
    proposer = str(agent.get("proposer"))
    paused = ModelPaused.from_state(agent.get("paused"))
    llm = f"LLM ({model})" if model else "LLM"
    if proposer == names.HYBRID:
        split = agent.get("split")
        line = "hybrid proposer: " + (
            describe_split(split, model) if split else f"{llm} and Optuna"
        )
    elif proposer == names.LLM:
        line = f"LLM proposer ({model})" if model else "LLM proposer"
    else:
        name = names.label(proposer)
        line = f"{name} proposer standing in for {model}" if model else f"{name} proposer"
    # The hybrid's line has a colon already: a semicolon sets off what follows it.
    apart = "; " if proposer == names.HYBRID else ": "
    message = agent.get("message")
    if message and agent.get("state") not in (None, "ready"):
        line += f"{apart}{message}"
    elif paused is not None:
        left = paused.proposals_left
        line += f"{apart}it is not asked for {left} more proposal{'s' if left != 1 else ''}"
    return line


def cmd_send(workspace: Workspace, steer: Steer) -> int:
    """Post a command to the engine through the journal and report what became of it."""
    journal = _open_journal(workspace, readonly=False)
    assert journal is not None
    kind = steer.kind.value
    with journal:
        command_id = journal.post_command(kind, steer.payload())
        if not engine_running(workspace):
            print(
                f"no engine is running for {workspace.path}; the {kind} command waits for the next start"
            )
            return 0
        deadline = time.monotonic() + COMMAND_WAIT_SECONDS
        while time.monotonic() < deadline:
            command = journal.command(command_id)
            if command is not None and command.status != "pending":
                print(
                    f"{kind}: {command.result}"
                    if command.status == "done"
                    else f"{kind} failed: {command.result}"
                )
                return 0 if command.status == "done" else 1
            time.sleep(0.1)
    print(f"{kind}: sent; the engine has not answered yet")
    return 0


def cmd_stop(workspace: Workspace, now: bool) -> int:
    code = cmd_send(workspace, Steer(Kind.STOP_ENGINE, now=now))
    if code or not now:
        return code
    deadline = time.monotonic() + 60
    while engine_running(workspace) and time.monotonic() < deadline:
        time.sleep(0.2)
    if engine_running(workspace):
        print("the engine is still stopping; `cockpit status` shows when it is done")
        return 1
    print("engine stopped")
    return 0
