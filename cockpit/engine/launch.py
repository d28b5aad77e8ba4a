"""Launching a training: an experiment's script started on a worker, as a `Flight`.

A launch takes a few steps, each its own method of `Launcher`: the seed (each training of one
script on one kind of device gets the next), the training's folder, the worker's worktree at
the experiment's commit, the job (the harness's, or the workspace's own command in script
mode), the early-abort watch, the experiment marked as training, and the executor's start
(after the LLM's server is freed of its model, with one worker).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cockpit.config import Settings
from cockpit.engine import worktrees
from cockpit.engine.agents import AgentSetup
from cockpit.engine.early_abort import Watch
from cockpit.engine.flight import Flight, early_abort_watch
from cockpit.engine.jobs import RunFiles, build_job
from cockpit.engine.runner import Executor, TrainingJob
from cockpit.engine.workers import Worker
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import next_seed

# What confines a script-mode training: nothing of the harness's (see trainer.confine).
SCRIPT_MODE_CONFINEMENT = {
    "network": None,
    "enforced": False,
    "reason": "script mode runs the workspace's own command as it is, outside the harness",
}


class Launcher:
    """Starts the trainings of a workspace's experiments through an executor."""

    def __init__(
        self,
        workspace: Workspace,
        settings: Settings,
        executor: Executor,
        agent: AgentSetup,
        clock: Callable[[], float],
        say: Callable[[str], None],
        marks: list[tuple[Any, ...]],
    ) -> None:
        self.workspace = workspace
        self.paths = workspace.paths
        self.settings = settings
        self.executor = executor
        self.agent = agent
        self.clock = clock
        self.say = say
        self.marks = marks  # the loop's own steps, for `cockpit bench loop`

    def launch(
        self,
        journal: Journal,
        run: Run,
        worker: Worker,
        experiment: Experiment,
        *,
        reference: bool,
        workers: int,
        gpu_seen: bool,
        on_phase: Callable[[Flight], None],
    ) -> Flight:
        """Start training ``experiment`` on ``worker``, one of ``workers``. A ``reference``
        training measures the best's script on the worker's kind of device and leaves its
        (decided) experiment as it is."""
        details = dict(experiment.details or {})
        seed = self._seed(details, worker)
        directory = self._directory(run, experiment, worker, seed)
        files = RunFiles.under(directory)
        job = self._job(journal, run, worker, experiment, seed, directory, files)
        watch = self._watch(journal, run, worker, experiment, reference)
        if not reference:
            experiment = journal.update_experiment(
                experiment.id,
                status="training",
                started_at=experiment.started_at or self.clock(),
                log_path=str(files.log),
                details={**details, "seed": seed, "training_kind": worker.kind},
            )
        where = f" on {worker.label}" if workers > 1 else ""
        what = f"the best, #{experiment.number}, measured" if reference else f"#{experiment.number}"
        self.say(f"{what} training for {job.budget_seconds:g} s{where}")
        if workers == 1:
            # One worker: the model is unloaded before each training. With more it stays where
            # the researcher put it ([agent] settings), as trainings never pause for it.
            self.agent.before_training(uses_gpu=self.settings.trainer.device != "cpu" and gpu_seen)
        handle = self.executor.start(job)
        self.marks.append(("train_start", time.perf_counter(), worker.index, experiment.number))
        return Flight(
            experiment=experiment,
            worker=worker,
            handle=handle,
            job=job,
            files=files,
            seed=seed,
            watch=watch,
            on_phase=on_phase,
            journal=journal,
            reference=reference,
        )

    def _seed(self, details: dict[str, Any], worker: Worker) -> int:
        """Each training of one script (noise runs, confirmations) on one kind of device gets
        the next seed."""
        return next_seed(self.settings.trainer.seed, details.get("trials"), worker.kind)

    def _directory(self, run: Run, experiment: Experiment, worker: Worker, seed: int) -> Path:
        """The training's own folder: one per attempt, seed, rebase and kind of device."""
        details = experiment.details or {}
        base_seed = self.settings.trainer.seed
        return self.paths.training(
            run.tag,
            experiment.number,
            attempt=experiment.attempt,
            seed=None if seed == base_seed else seed,
            rebase=int(details.get("rebases", 0)),
            kind=worker.kind,
        )

    def _worker_settings(self, worker: Worker, seed: int) -> Settings:
        """The settings as this training runs them: its seed, and the worker's cores as its
        threads unless the settings name a number."""
        trainer: dict[str, Any] = {"seed": seed}
        if worker.threads and not self.settings.trainer.threads:
            trainer["threads"] = worker.threads
        return self.settings.model_copy(
            update={"trainer": self.settings.trainer.model_copy(update=trainer)}
        )

    def _job(
        self,
        journal: Journal,
        run: Run,
        worker: Worker,
        experiment: Experiment,
        seed: int,
        directory: Path,
        files: RunFiles,
    ) -> TrainingJob:
        """The job that trains the experiment's script on the worker, in the worker's worktree
        checked out at the experiment's commit."""
        settings = self._worker_settings(worker, seed)
        assert experiment.commit_sha is not None
        worktree = worktrees.checkout(
            self.workspace.repo, self.paths, worker.index, experiment.commit_sha
        )
        # Step plans are remembered per run and device: every script of the run is planned
        # under the conditions it trains in, never by a plan made elsewhere.
        pacing = self.paths.pacing(run.tag, worker.index)
        placement: dict[str, Any] = {"device": worker.device, "cpus": worker.cpus, "cwd": worktree}
        command = self.settings.trainer.command
        if command:
            # Script mode: the command runs the worktree's own file, the experiment's version.
            journal.set_state(confinement=SCRIPT_MODE_CONFINEMENT)
            script = worktree / self.workspace.script_name
            job = build_job(
                settings, script, files, self.workspace.path, pacing=pacing, **placement
            )
            return dataclasses.replace(
                job,
                options=dataclasses.replace(job.options, metrics_path=None, summary_json=None),
                command_line=["/bin/sh", "-c", command],
            )
        script = directory / self.workspace.script_name
        script.write_text(self.workspace.script_at(experiment.commit_sha))
        return build_job(settings, script, files, self.workspace.path, pacing=pacing, **placement)

    def _watch(
        self, journal: Journal, run: Run, worker: Worker, experiment: Experiment, reference: bool
    ) -> Watch | None:
        """Early abort: the best run's curve to compare with, unless this is the baseline, a
        repeated run of a script (noise floor, confirmation) or a script-mode command."""
        if self.settings.trainer.command or (experiment.details or {}).get("trials") or reference:
            return None
        return early_abort_watch(journal, self.settings.engine, run, experiment, worker.kind)
