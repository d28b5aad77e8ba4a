"""`cockpit verify`: the run's best trained again on seeds no experiment used.

The ledger's best is the mean of the trainings that made it a keep, and a keep is the one
whose seeds favoured it most among many: its value is optimistic. Trained again on fresh
seeds with the run's own settings (the same budget, corpus, device and harness), the best
shows what its script is worth, and the gain a researcher can bank. The result is a
``verify`` event of the run (`cockpit.store.verification`), which `cockpit status` and the
report show beside the ledger's figures.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TextIO

from cockpit.config import Settings
from cockpit.engine.noise import noise_floor
from cockpit.engine.runs import fixed_parts_fingerprint
from cockpit.engine.workspace import Workspace
from cockpit.errors import EngineError
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.records import Run
from cockpit.store.verification import EVENT_KIND, Verification, fresh_seeds


def run_settings(run: Run) -> Settings:
    """The settings the run was started with, as its journal recorded them."""
    recorded = {key: value for key, value in run.config.items() if key != "fixed_parts"}
    return Settings.model_validate(recorded)


def verify_run(
    workspace: Workspace,
    journal: Journal,
    run: Run,
    seeds: int,
    progress: TextIO = sys.stdout,
) -> Verification:
    """Train ``run``'s best ``seeds`` times on fresh seeds, record it, and return it.

    Raises EngineError when there is nothing to verify or the harness changed since the run."""
    if seeds < 1:
        raise EngineError(f"--seeds must be 1 or more, got {seeds}")
    if run.best_commit is None or run.best_val_bpb is None:
        raise EngineError(f"run {run.tag} has no best yet: let its baseline finish first")
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
    trials = [
        [float(t["val_bpb"]) for t in (e.details or {}).get("trials", []) if "val_bpb" in t]
        for e in experiments
    ]
    used = {
        int(t["seed"])
        for e in experiments
        for t in (e.details or {}).get("trials", [])
        if isinstance(t.get("seed"), int)
    }
    settings = run_settings(run)
    used.add(settings.trainer.seed)
    chosen = fresh_seeds(used, seeds)
    noise = noise_floor(
        trials, floor=settings.engine.keep_margin_bpb, multiple=settings.engine.noise_multiple
    )
    folder = workspace.path / ".cockpit" / "verify" / run.tag
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "train.py"
    write_atomic(script, workspace.script_at(run.best_commit).encode("utf-8"))
    values: list[float | None] = []
    for seed in chosen:
        print(
            f"verifying #{best.number} of run {run.tag}: seed {seed} "
            f"({settings.trainer.budget_seconds:g} s) ...",
            file=progress,
            flush=True,
        )
        values.append(_train(settings, workspace, script, seed, folder / str(seed)))
        shown = "no val_bpb" if values[-1] is None else f"val_bpb {values[-1]:.6f}"
        print(f"  seed {seed}: {shown}", file=progress, flush=True)
    verification = Verification(
        experiment=best.number,
        commit=run.best_commit,
        seeds=tuple(chosen),
        values=tuple(values),
        ledger_best=run.best_val_bpb,
        ledger_runs=max(1, len((best.details or {}).get("trials", []))),
        baseline=run.baseline_val_bpb,
        spread=noise.spread,
        multiple=settings.engine.noise_multiple,
    )
    journal.add_event(
        EVENT_KIND,
        f"#{best.number} {verification.describe()}",
        run_id=run.id,
        experiment_id=best.id,
        data=verification.to_data(),
    )
    return verification


def _train(
    settings: Settings, workspace: Workspace, script: Path, seed: int, folder: Path
) -> float | None:
    from cockpit.training import run_training

    trainer = settings.trainer.model_copy(
        update={"seed": seed, "script": str(script.relative_to(workspace.path))}
    )
    result = run_training(
        settings.model_copy(update={"trainer": trainer}),
        workspace.path,
        out=io.StringIO(),
        keep_dir=folder,
    )
    return result.val_bpb


def cmd_verify(workspace: Workspace, tag: str | None, seeds: int) -> int:
    """`cockpit verify`: print the verification of the run (default: the latest)."""
    from cockpit.store.lock import engine_lock_held

    if engine_lock_held(workspace.path):
        print(
            "error: the engine is running: its trainings and these would share the machine and "
            "measure each other; `cockpit stop` first, then `cockpit verify`",
            file=sys.stderr,
        )
        return 1
    with Journal.open(workspace.paths.journal) as journal:
        run = journal.run_by_tag(tag) if tag is not None else journal.latest_run()
        if run is None:
            where = f"no run tagged {tag}" if tag is not None else "no run yet"
            print(f"error: {where} in {workspace.path}: `cockpit run` first", file=sys.stderr)
            return 1
        try:
            verification = verify_run(workspace, journal, run, seeds)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"run {run.tag}, #{verification.experiment}: {verification.describe()}")
    return 0
