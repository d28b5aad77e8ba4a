"""Verifying a run's best: its script trained again on seeds no experiment of the run used.

The ledger's best is the mean of the trainings that made it a keep, and the keep is the one
whose seeds favoured it most among many: its value is optimistic. Trained again on fresh seeds
with the run's settings and its step plans (the same budget, corpus, device, harness and
number of steps), the best shows what its script is worth. The result is a ``verify`` event of
the run (`cockpit.store.verification` owns its data). `cockpit verify` does it on demand, and
the engine at the end of a run that finished (``[engine] verify_seeds``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cockpit.config import Settings
from cockpit.engine.jobs import RunFiles, build_job
from cockpit.engine.noise import noise_floor
from cockpit.engine.run_noise import earlier_noise
from cockpit.engine.runner import RunResult, TrainingProcess
from cockpit.engine.runs import fixed_parts_fingerprint
from cockpit.engine.workspace import Workspace
from cockpit.errors import EngineError
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import ran_short, trained_plan, trial_results, whole_number
from cockpit.store.verification import EVENT_KIND, Verification, fresh_seeds


def run_settings(run: Run) -> Settings:
    """The settings the run was started with, as its journal recorded them."""
    recorded = {key: value for key, value in run.config.items() if key != "fixed_parts"}
    return Settings.model_validate(recorded)


@dataclass(frozen=True)
class _Script:
    """A script to verify, and the step plan its trainings in the run recorded (None: none)."""

    path: Path
    plan: int | None


def verify_best(
    workspace: Workspace,
    journal: Journal,
    run: Run,
    settings: Settings,
    seeds: int,
    *,
    say: Callable[[str], None],
    should_stop: Callable[[], bool] | None = None,
) -> Verification | None:
    """Train ``run``'s best ``seeds`` times on fresh seeds, record it, and return it (None:
    stopped before a training ended, and nothing recorded).

    Raises EngineError when there is nothing to verify, or nothing comparable to verify with
    (the harness changed since the run; a run of the workspace's own command)."""
    if seeds < 1:
        raise EngineError(f"the seeds to verify on must be 1 or more, got {seeds}")
    if run.best_commit is None or run.best_val_bpb is None:
        raise EngineError(f"run {run.tag} has no best yet: let its baseline finish first")
    if settings.trainer.command:
        raise EngineError(
            f"run {run.tag} trained the workspace's own command (script mode), whose trainings "
            "the cockpit does not set the seed of: there is nothing to verify it with"
        )
    recorded = run.config.get("fixed_parts")
    if recorded and recorded != fixed_parts_fingerprint():
        raise EngineError(
            f"the harness or the evaluator changed since run {run.tag} started: trainings now "
            "would not compare with its ledger; verify with the version that ran it"
        )
    experiments = journal.experiments(run.id)
    best = next((e for e in experiments if e.commit_sha == run.best_commit), None)
    if best is None:
        raise EngineError(
            f"run {run.tag}'s best commit {run.best_commit[:10]} is not in its ledger"
        )
    trials = [list((e.details or {}).get("trials", [])) for e in experiments]
    used = {int(t["seed"]) for group in trials for t in group if isinstance(t.get("seed"), int)}
    used.add(settings.trainer.seed)
    chosen = fresh_seeds(used, seeds)
    noise = noise_floor(
        [[value for _, value in trial_results(e)] for e in experiments],
        floor=settings.engine.keep_margin_bpb,
        multiple=settings.engine.noise_multiple,
        prior=earlier_noise(journal, run),
    )
    folder = workspace.path / ".cockpit" / "verify" / run.tag
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / Path(workspace.script_name).name
    write_atomic(script, workspace.script_at(run.best_commit).encode("utf-8"))
    # The best trains the steps its keep trained, not a plan of now: the plan its trials
    # recorded, given to the harness. Each training gets a copy of the run's step plans too
    # (a script whose trials recorded none reuses the run's, where it still has one): one
    # that runs short of its plan on a host slower than during the run (the plan is then cut)
    # must not cut the steps of the next verification, nor the run's own plans.
    plans = workspace.paths.pacing(run.tag, 0)
    snapshot = plans.read_bytes() if plans.is_file() else None
    # The baseline's script beside it, on each seed right after it: the verified gain is then
    # taken between two trainings of one seed and one hour of the machine.
    baseline = next((e for e in experiments if e.number == 0 and e.commit_sha), None)
    beside = None
    if settings.engine.verify_baseline and baseline is not None and baseline.id != best.id:
        assert baseline.commit_sha is not None
        path = folder / "baseline" / Path(workspace.script_name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, workspace.script_at(baseline.commit_sha).encode("utf-8"))
        beside = _Script(path, trained_plan(baseline))
    values: list[float | None] = []
    steps: list[int | None] = []
    planned: list[int | None] = []
    baseline_values: list[float | None] = []
    for seed in chosen:
        if should_stop is not None and should_stop():
            break
        said = " and the baseline #0" if beside is not None else ""
        say(
            f"verifying #{best.number}{said} of run {run.tag}: seed {seed} "
            f"({settings.trainer.budget_seconds:g} s each)"
        )
        trained = _verify_seed(
            settings,
            workspace.path,
            _Script(script, trained_plan(best)),
            seed,
            folder,
            snapshot,
            say,
            should_stop,
        )
        if trained is None:
            break  # the training was cut short: it measured nothing
        if beside is not None:
            again = _verify_seed(
                settings,
                workspace.path,
                beside,
                seed,
                beside.path.parent,
                snapshot,
                say,
                should_stop,
                label="the baseline, ",
            )
            if again is None:
                break
            baseline_values.append(again[0])
        values.append(trained[0])
        steps.append(trained[1])
        planned.append(trained[2])
    if len(values) < len(chosen):
        say(f"verification of #{best.number} stopped: nothing recorded")
        return None
    verification = Verification(
        experiment=best.number,
        commit=run.best_commit,
        seeds=tuple(chosen),
        values=tuple(values),
        ledger_best=run.best_val_bpb,
        ledger_runs=max(1, len(trials[experiments.index(best)])),
        baseline=run.baseline_val_bpb,
        spread=noise.spread,
        multiple=settings.engine.noise_multiple,
        steps=tuple(steps),
        planned=tuple(planned),
        baseline_values=tuple(baseline_values),
    )
    journal.add_event(
        EVENT_KIND,
        verification.headline(),
        run_id=run.id,
        experiment_id=best.id,
        data=verification.to_data(),
    )
    return verification


def _verify_seed(
    settings: Settings,
    base: Path,
    script: _Script,
    seed: int,
    folder: Path,
    plans: bytes | None,
    say: Callable[[str], None],
    should_stop: Callable[[], bool] | None,
    label: str = "",
) -> tuple[float | None, int | None, int | None] | None:
    """Train the script with ``seed`` on the plan it recorded, with a copy of the run's step
    plans ``plans``: its val_bpb, the steps it ran and the steps planned (None: stopped,
    nothing measured). A training that runs short of its plan is trained again on the plan
    its harness cut to what fitted (in its copy of the plans), as an experiment's is, up to
    `short_reruns` times (none by default)."""
    reruns = settings.engine.short_reruns
    for attempt in range(1, reruns + 2):
        files = folder / (str(seed) if attempt == 1 else f"{seed}-{attempt}")
        files.mkdir(parents=True, exist_ok=True)
        pacing = files / "pacing.json"
        if plans is not None:
            write_atomic(pacing, plans)
        else:
            pacing.unlink(missing_ok=True)
        given = script.plan if attempt == 1 else None
        result = _train(settings, base, script.path, given, seed, files, pacing, should_stop)
        if should_stop is not None and should_stop():
            return None
        value, summary = result.val_bpb, result.summary
        ran = whole_number(summary.get("num_steps"))
        plan = whole_number(summary.get("planned_steps"))
        said = "no val_bpb" if value is None else f"val_bpb {value:.6f}"
        if ran is not None and plan is not None:
            said += f" ({ran} of {plan} planned steps)"
        if not ran_short(ran, plan) or attempt > reruns:
            say(f"  {label}seed {seed}: {said}")
            return value, ran, plan
        say(
            f"  {label}seed {seed}: {said}, short of its plan: trained again on the plan cut "
            "to what fitted"
        )
        plans = pacing.read_bytes() if pacing.is_file() else None
    raise AssertionError("unreachable: the last attempt returns")


def _train(
    settings: Settings,
    base: Path,
    script: Path,
    plan: int | None,
    seed: int,
    folder: Path,
    pacing: Path,
    should_stop: Callable[[], bool] | None,
) -> RunResult:
    """One training of the script with ``seed`` (on the step plan ``plan``, when given)."""
    trainer = settings.trainer.model_copy(update={"seed": seed})
    job = build_job(
        settings.model_copy(update={"trainer": trainer}),
        script,
        RunFiles.under(folder),
        base,
        pacing=pacing,
        plan_steps=plan or 0,
    )
    process = TrainingProcess(job)
    process.start()
    return process.wait(should_stop=should_stop)


def verifies_at_end(settings: Settings, run: Run) -> bool:
    """Whether a run that finished (not stopped) has its best trained again on fresh seeds:
    `[engine] verify_seeds` asks for it, it has a best, and the harness measures it (a
    self-reported metric is the workspace's own command's, not ours to repeat)."""
    return (
        settings.engine.verify_seeds > 0
        and run.best_commit is not None
        and not settings.trainer.command
    )


def verify_at_end(
    workspace: Workspace,
    journal: Journal,
    run: Run,
    settings: Settings,
    best: Experiment | None,
    say: Callable[[str], None],
    should_stop: Callable[[], bool],
) -> str | None:
    """The engine's verification of a finished run's best (``best``): the phase is
    VERIFYING meanwhile, and stopped after; what it showed, in words (None: stopped first, or
    it could not be done, which is said)."""
    journal.set_state(
        phase="verifying", experiment=None if best is None else best.number, time_left=None
    )
    try:
        verified = verify_best(
            workspace,
            journal,
            run,
            settings,
            settings.engine.verify_seeds,
            say=say,
            should_stop=should_stop,
        )
    except EngineError as exc:
        say(f"no verification: {exc}")
        return None
    finally:
        journal.set_state(phase="stopped")
    if verified is None:
        return None
    message = verified.headline()
    say(message)
    return message
