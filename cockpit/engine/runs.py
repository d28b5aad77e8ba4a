"""A run's record from its opening to its close, and what keeps its results comparable.

A run is opened new (on its own branch, from a clean or adopted script) or resumed, and then
only with the trainer settings and the fixed parts (harness, evaluator) it was recorded with:
results measured otherwise could not be compared with those it holds. A run resumed after an
engine that died is made to agree with the journal first (orphaned trainings stopped, the
ones cut short queued again). Its first experiment is the baseline; its close records how it
ended.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from agent.proposal import script_hash
from cockpit.config import Settings
from cockpit.engine import programs
from cockpit.engine.fingerprint import describe_fingerprint_change, fingerprint_fixed_parts
from cockpit.engine.flight import requeue
from cockpit.engine.results_tsv import export_results_tsv
from cockpit.engine.runner import is_training_process, kill_tree
from cockpit.engine.workspace import Workspace, default_tag, lines_of_code
from cockpit.engine.workspace_error import WorkspaceError
from cockpit.errors import EngineError
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run

# Trainer settings that a run's results depend on: a run resumes only with the ones it was
# recorded with.
COMPARABILITY_SETTINGS = (
    "budget_seconds",
    "corpus",
    "seq_len",
    "eval_tokens",
    "device",
    "command",
    "metric",
)


def open_run(
    journal: Journal,
    workspace: Workspace,
    settings: Settings,
    proposer: str,
    *,
    tag: str | None,
    experiments: int | None,
    adopt: bool,
    say: Callable[[str], None],
) -> Run:
    """The run to drive: the one tagged ``tag``, else the latest while it is active, resumed;
    otherwise a new one on a branch of its own (``adopt``: the script's uncommitted changes
    become its starting point, instead of being refused)."""
    existing = journal.run_by_tag(tag) if tag else journal.latest_run()
    if existing is not None and (tag or existing.status == "active"):
        require_comparable(existing, settings)
        if existing.status != "active":
            journal.update_run(existing.id, status="active")
        _checkout(workspace, existing.tag)
        say(f"resuming run {existing.tag}")
        return existing
    if adopt:
        workspace.adopt_script()
    else:
        workspace.require_clean_script()
    new_tag = journal.unique_tag(workspace.unique_tag(tag or default_tag()))
    branch = workspace.start_run(new_tag)
    _checkout(workspace, new_tag)
    return journal.create_run(
        tag=new_tag,
        branch=branch,
        base_commit=workspace.best_commit(new_tag),
        mode=settings.engine.mode,
        proposer=proposer,
        config={**settings.model_dump(), "fixed_parts": fixed_parts_fingerprint()},
        corpus_fingerprint="",
        target=experiments if experiments is not None else settings.engine.experiments,
    )


def _checkout(workspace: Workspace, tag: str) -> None:
    try:
        workspace.checkout_run(tag)
    except WorkspaceError as exc:
        raise EngineError(str(exc)) from exc


def require_comparable(run: Run, settings: Settings) -> None:
    """Refuse to resume a run with trainer settings that make its results incomparable
    with those recorded (a longer budget trains further, other data scores otherwise)."""
    recorded = run.config.get("trainer") if isinstance(run.config, dict) else None
    if not isinstance(recorded, dict):
        return
    changed = changed_settings(recorded, settings.trainer.model_dump())
    if changed:
        raise EngineError(
            f"run {run.tag} was recorded with other trainer settings than these "
            f"({', '.join(changed)}): its results could not be compared with new ones. "
            f"Resume it with the settings it was recorded with (no --budget, or "
            f"--budget {recorded.get('budget_seconds')}), or start a new run with "
            "`--tag NEW`."
        )


def changed_settings(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"{key} {recorded[key]!r} -> {current[key]!r}"
        for key in COMPARABILITY_SETTINGS
        if key in recorded and recorded[key] != current.get(key)
    ]


def recover(journal: Journal, run: Run) -> None:
    """Make the journal and the processes agree after an engine that died: its trainings
    still running are stopped, and each experiment it left training runs again."""
    state = journal.engine_state()
    orphans = {*state.train_pids, *([] if state.train_pid is None else [state.train_pid])}
    for orphan in orphans:
        if is_training_process(orphan):
            kill_tree(orphan)
            journal.add_event(
                "engine", f"stopped an orphaned training process (pid {orphan})", run_id=run.id
            )
    journal.set_state(train_pid=None, train_pids=[], workers=[])
    for experiment in journal.unfinished_experiments(run.id):
        if experiment.status == "training":
            requeue(journal, experiment, "while training")


def add_baseline(journal: Journal, workspace: Workspace, run: Run) -> Experiment:
    """Experiment 0: the best script unchanged, to measure against."""
    best = workspace.best_commit(run.tag)
    script = workspace.script_at(best)
    refname = workspace.experiment_refname(run.tag, 0)
    if refname not in workspace.repo.references:
        workspace.repo.references.create(refname, best)
    return journal.add_experiment(
        run.id,
        0,
        parent_commit=best,
        commit_sha=best,
        ref=refname,
        proposer="baseline",
        description="baseline",
        hypothesis="the unmodified script, to measure against",
        diff="",
        script_hash=script_hash(script),
        status="committed",
        lines_of_code=lines_of_code(script),
    )


def fixed_parts_fingerprint() -> str:
    """The fingerprint of the installed harness and evaluator (the trainer modules but the
    research script), found without importing them."""
    spec = importlib.util.find_spec("trainer")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the trainer package is not installed; reinstall research-cockpit")
    return fingerprint_fixed_parts(Path(next(iter(spec.submodule_search_locations))), "")


def verify_fixed_parts(journal: Journal, run: Run) -> None:
    """Stop the run when the harness or the evaluator changed since it started."""
    recorded = run.config.get("fixed_parts")
    if not recorded:
        return  # a run from before fingerprints were recorded
    current = fixed_parts_fingerprint()
    if current != recorded:
        stop_for_integrity(journal, run, describe_fingerprint_change(str(recorded), current))


def stop_for_integrity(journal: Journal, run: Run, message: str) -> NoReturn:
    """Stop the engine because the run's results could no longer be trusted or compared,
    saying why in the run's events."""
    journal.add_event("integrity", message, run_id=run.id)
    raise EngineError(message)


def export_run(journal: Journal, run: Run, workspace: Workspace) -> None:
    """After a decision: rewrite results.tsv, and prune what the decided trainings left."""
    export_results_tsv(journal, run.id, workspace.path / "results.tsv")
    programs.prune(workspace.paths.runs(run.tag), journal.experiments(run.id))


def close_run(
    journal: Journal,
    run: Run,
    workspace: Workspace,
    settings: Settings,
    *,
    stopped: bool,
    say: Callable[[str], None],
) -> None:
    """Record how the run ended: ``stopped``, or finished with its experiments done (its
    keeps are then scored on the test split, when the settings ask for it)."""
    journal.update_run(run.id, status="stopped" if stopped else "finished")
    journal.add_event("engine", "engine stopped" if stopped else "run finished", run_id=run.id)
    best = run.best_val_bpb
    say(f"{'stopped' if stopped else 'finished'}: best val_bpb {best:.6f}" if best else "stopped")
    if best and not stopped and settings.engine.test_split_summary:
        found = programs.generalisation(
            workspace.paths.runs(run.tag), journal.experiments(run.id), settings.paths.cache_dir
        )
        say(programs.summary_line(found))
