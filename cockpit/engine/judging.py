"""Judging trained experiments: `decide.decide`'s verdicts applied to the journal and the
run's branch.

A keep advances the branch and the best; a discard leaves both; a training to repeat goes
back to wait for a worker with the next seed; a gain made on a best that has moved since is
re-applied onto the new best and waits to be trained there. Every decision is recorded with
its reason and evidence, results.tsv is rewritten, and the notices hear of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from agent.proposal import script_hash
from cockpit.config import Settings
from cockpit.engine.decide import Action, Decision, Rules, Standing
from cockpit.engine.decide import decide as judge
from cockpit.engine.early_abort import Verdict
from cockpit.engine.failpoints import failpoint
from cockpit.engine.noise import NoiseFloor
from cockpit.engine.notify import EngineNotices
from cockpit.engine.run_noise import RunNoise
from cockpit.engine.workspace import Workspace, lines_of_code
from cockpit.errors import EngineError
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import (
    next_seed,
    trial_kind,
    trial_ran_short,
    trial_results,
    trial_shapes,
    whole_number,
)


class Judge:
    """Decides the trained experiments of one run."""

    def __init__(
        self,
        journal: Journal,
        workspace: Workspace,
        settings: Settings,
        notices: EngineNotices,
        run: Callable[[], Run],
        export: Callable[[], None],
        say: Callable[[str], None],
        kinds: tuple[str, ...] = ("",),
    ) -> None:
        self.journal = journal
        self.workspace = workspace
        self.settings = settings
        self.notices = notices
        self.run = run  # the run's record as the journal has it now
        self.export = export  # rewrites results.tsv after a decision
        self.say = say
        # The kinds of device the workers have: with more than one, each kind has its own
        # baseline, noise floor and comparisons.
        self.kinds = kinds
        self.noise = RunNoise(journal, settings)

    def discard_early(self, experiment: Experiment, verdict: Verdict) -> None:
        """Record a training stopped early as discarded, with the evidence."""
        journal = self.journal
        reason = verdict.describe()
        current = journal.experiment_by_id(experiment.id)
        details = dict((current.details if current else experiment.details) or {})
        journal.update_experiment(
            experiment.id, details={**details, "early_abort": verdict.evidence()}
        )
        self.record_decision(experiment, "discard", reason)
        failpoint("decided")
        self.say(f"#{experiment.number} discard: {reason}")
        self.export()

    def record_decision(
        self,
        experiment: Experiment,
        decision: str,
        reason: str,
        status: str | None = None,
        run_update: dict[str, Any] | None = None,
        events: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Every decision goes through here: recorded with ``events`` of the run in one
        transaction (`Journal.record_decision`), then told to the notices."""
        best_before = self.run().best_val_bpb
        self.journal.record_decision(
            experiment.id, decision, reason, status, run_update=run_update, events=events
        )
        current = self.journal.experiment_by_id(experiment.id)
        value = current.val_bpb if current is not None else experiment.val_bpb
        self.notices.decided(
            experiment.number, status or decision, experiment.description, value, best_before
        )

    def decide(self, experiment: Experiment) -> None:
        run = self.run()
        number = experiment.number
        if experiment.outcome != "ok" or experiment.val_bpb is None:
            summary = experiment.summary or {}
            reason = summary.get("reason") or summary.get("runner_reason")
            status = {"timeout": "timeout", "interrupted": "interrupted"}.get(
                str(experiment.outcome), "crash"
            )
            self.record_decision(
                experiment, "crash", f"{experiment.outcome}: {reason or 'no summary'}", status
            )
            self.say(f"#{number} {status}: {reason}")
            self.export()
            if number == 0:
                raise EngineError(
                    f"the baseline failed ({experiment.outcome}: {reason}); fix train.py in "
                    f"{self.workspace.path} and run again (its log: {experiment.log_path})"
                )
            return
        trials = self._record_trial(experiment)
        if self._rerun_short(experiment, trials):
            return
        kind = trial_kind(trials[-1])
        if number == 0 and len(self.kinds) > 1:
            runs = self.settings.engine.noise_runs
            lacking = [k for k in self.kinds if sum(trial_kind(t) == k for t in trials) < runs]
            if lacking:
                self._train_again(
                    experiment, trials, f"noise floor: baseline run on {lacking[0]}", lacking[0]
                )
                return
        own = {int(t["seed"]): float(t["val_bpb"]) for t in trials if trial_kind(t) == kind}
        if number == 0:
            own = {index: float(t["val_bpb"]) for index, t in enumerate(trials)}
        best = parent = None
        if number > 0:
            best_experiment = self.best_experiment(run)
            assert run.best_val_bpb is not None
            best = standing(best_experiment, run.best_val_bpb, kind)
            if best is None:
                assert best_experiment is not None  # (no experiment: a standing of its own)
                failed = (best_experiment.details or {}).get("reference_failed") or []
                if kind in failed:
                    self.record_decision(
                        experiment,
                        "discard",
                        f"the best was never measured on {kind}, and results never compare "
                        "across kinds of device",
                    )
                    self.export()
                # else: it waits for the best's reference training on its kind of device
                return
            if experiment.parent_commit != run.best_commit:
                origin = self.experiment_at(run, experiment.parent_commit)
                parent = (
                    None
                    if origin is None or origin.val_bpb is None
                    else standing(origin, origin.val_bpb, kind)
                )
                if parent is None:
                    self.record_decision(
                        experiment,
                        "discard",
                        "the script it was made from has no result"
                        + (f" on {kind}" if kind else ""),
                    )
                    self.export()
                    return
        # Measured once the experiment can be decided: one waiting for the best's result on
        # its kind of device is looked at on every tick of the engine.
        noise = self.noise.floor(run, kind)
        flags = {flag.get("kind") for flag in (experiment.details or {}).get("flags") or []}
        decision = judge(
            number,
            own,
            lines_of_code=experiment.lines_of_code,
            best=best,
            parent=parent,
            noise=noise,
            rules=Rules(
                noise_runs=self.settings.engine.noise_runs,
                keep_runs=self.settings.engine.keep_runs,
                max_runs=self.settings.engine.max_runs,
                confirm_multiple=self.settings.engine.confirm_multiple,
                metric=self.settings.trainer.metric,
                source="self-reported" if self.settings.trainer.command else "harness",
            ),
            flags={str(flag) for flag in flags},
            shapes=trial_shapes(trials, kind),
            next_seed=next_seed(self.settings.trainer.seed, trials, kind),
        )
        short = sum(trial_ran_short(t) for t in trials if trial_kind(t) == kind)
        if short and decision.action is not Action.TRAIN_AGAIN:
            said = "one of its trainings" if short == 1 else f"{short} of its trainings"
            decision = dataclasses.replace(
                decision, reason=f"{decision.reason} ({said} ran short of its plan)"
            )
        self._apply_decision(experiment, decision, trials, noise)

    def _apply_decision(
        self,
        experiment: Experiment,
        decision: Decision,
        trials: list[dict[str, Any]],
        noise: NoiseFloor,
    ) -> None:
        journal = self.journal
        run = self.run()
        number = experiment.number
        if decision.action is Action.TRAIN_AGAIN:
            self._train_again(experiment, trials, decision.reason, trial_kind(trials[-1]))
            return
        journal.update_experiment(experiment.id, val_bpb=decision.value)
        if number == 0:
            assert experiment.commit_sha is not None
            self.record_decision(
                experiment,
                "keep",
                decision.reason,
                run_update={
                    "baseline_val_bpb": decision.value,
                    "best_val_bpb": decision.value,
                    "best_commit": experiment.commit_sha,
                    "corpus_fingerprint": str(
                        (experiment.summary or {}).get("corpus_fingerprint", "")
                    ),
                },
            )
            self.say(f"#0 {decision.reason}")
            self.export()
            return
        journal.update_experiment(
            experiment.id,
            details={**(experiment.details or {}), "trials": trials, "evidence": decision.evidence},
        )
        if decision.action is Action.REAPPLY:
            self._reapply(experiment, decision, trials)
            return
        if decision.action is Action.KEEP:
            assert experiment.commit_sha is not None
            self.workspace.keep(run.tag, experiment.commit_sha)
            failpoint("kept")
            self.record_decision(
                experiment,
                "keep",
                decision.reason,
                run_update={"best_val_bpb": decision.value, "best_commit": experiment.commit_sha},
            )
        else:
            self.record_decision(experiment, "discard", decision.reason)
        failpoint("decided")
        self.say(f"#{number} {decision.action}: {decision.reason}")
        self.export()

    def _reapply(
        self, experiment: Experiment, decision: Decision, trials: list[dict[str, Any]]
    ) -> None:
        """Put a stale experiment's change onto the new best, to be trained and decided there;
        discard it when the change no longer applies."""
        journal = self.journal
        run = self.run()
        assert experiment.commit_sha is not None
        details = dict(experiment.details or {})
        rebase = int(details.get("rebases", 0)) + 1
        sha = self.workspace.reapply(run.tag, experiment.number, experiment.commit_sha, rebase)
        if sha is None:
            reason = f"{decision.reason.split('; its change')[0]}; its change does not apply there"
            self.record_decision(experiment, "discard", reason)
            self.say(f"#{experiment.number} discard: {reason}")
            self.export()
            return
        script = self.workspace.script_at(sha)
        stale = [
            *details.get("stale", []),
            {
                "commit": experiment.commit_sha,
                "parent": experiment.parent_commit,
                "trials": trials,
                "short": details.pop("short", []),
                "reason": decision.reason,
            },
        ]
        details.update(rebases=rebase, stale=stale, trials=[])
        details.pop("seed", None)
        details.pop("evidence", None)
        journal.update_experiment(
            experiment.id,
            status="committed",
            commit_sha=sha,
            parent_commit=run.best_commit,
            diff=self.workspace.diff(sha),
            script_hash=script_hash(script),
            lines_of_code=lines_of_code(script),
            outcome=None,
            val_bpb=None,
            details=details,
        )
        message = f"#{experiment.number} {decision.reason}"
        journal.add_event("reapply", message, run_id=run.id, experiment_id=experiment.id)
        self.say(message)

    def _record_trial(self, experiment: Experiment) -> list[dict[str, Any]]:
        """The experiment's trainings so far, this one included (recorded once, even when
        the engine decides again after a restart)."""
        details = dict(experiment.details or {})
        trials: list[dict[str, Any]] = list(details.get("trials", []))
        seed = details.get("seed", self.settings.trainer.seed)
        kind = str(details.get("training_kind") or "")
        if not any(trial.get("seed") == seed and trial_kind(trial) == kind for trial in trials):
            trial = {
                "seed": seed,
                "val_bpb": experiment.val_bpb,
                "training_seconds": experiment.training_seconds,
                "num_steps": experiment.num_steps,
                "log_path": experiment.log_path,
            }
            planned = whole_number((experiment.summary or {}).get("planned_steps"))
            if planned is not None:
                trial["planned"] = planned
            if kind:
                trial["kind"] = kind
            shapes = (experiment.summary or {}).get("shapes")
            if isinstance(shapes, str):
                trial["shapes"] = shapes
            trials.append(trial)
            self.journal.update_experiment(experiment.id, details={**details, "trials": trials})
        return trials

    def _rerun_short(self, experiment: Experiment, trials: list[dict[str, Any]]) -> bool:
        """Send a training that ran short of its plan back to be trained again on its seed,
        while the experiment has `short_reruns` left (none by default). Its trial moves to the
        experiment's ``short`` list, so the seed comes round again; the rerun trains the plan
        its harness cut to what fitted, in a folder of its own (a new attempt). Returns
        whether it went back."""
        latest = trials[-1]
        details = dict(experiment.details or {})
        short = list(details.get("short", []))
        if not trial_ran_short(latest) or len(short) >= self.settings.engine.short_reruns:
            return False
        details.update(trials=trials[:-1], short=[*short, latest])
        message = (
            f"#{experiment.number} ran short of its plan ({latest['num_steps']} of "
            f"{latest['planned']} steps: the machine slowed down after the plan was made); "
            f"trained again with seed {latest['seed']} on the plan cut to what fitted"
        )
        self.journal.update_experiment(
            experiment.id, status="committed", attempt=experiment.attempt + 1, details=details
        )
        self.journal.add_event(
            "noise", message, run_id=experiment.run_id, experiment_id=experiment.id
        )
        self.say(message)
        return True

    def _train_again(
        self, experiment: Experiment, trials: list[dict[str, Any]], why: str, kind: str = ""
    ) -> None:
        """Send a trained experiment back for one more training, with the next seed (of its
        trainings on devices of ``kind``)."""
        journal = self.journal
        seed = next_seed(self.settings.trainer.seed, trials, kind)
        values = ", ".join(f"{float(trial['val_bpb']):.6f}" for trial in trials)
        message = f"#{experiment.number} {why} with seed {seed} (so far: {values})"
        journal.update_experiment(experiment.id, status="committed")
        journal.add_event("noise", message, run_id=experiment.run_id, experiment_id=experiment.id)
        self.say(message)

    def experiment_at(self, run: Run, commit: str | None) -> Experiment | None:
        for experiment in self.journal.experiments(run.id):
            if commit is not None and experiment.commit_sha == commit:
                return experiment
        return None

    def best_experiment(self, run: Run) -> Experiment | None:
        return self.experiment_at(run, run.best_commit)

    def record_reference(
        self, experiment_id: int, value: float | None, seed: int, kind: str, reason: str
    ) -> None:
        """A training of a decided script on another kind of device, for the decisions there
        to compare with; a failed one is recorded so that nothing waits for it again."""
        current = self.journal.experiment_by_id(experiment_id)
        if current is None:
            return
        details = dict(current.details or {})
        if value is None:
            details["reference_failed"] = [*details.get("reference_failed", []), kind]
            message = f"#{current.number} could not be measured on {kind}: {reason}"
        else:
            trial = {"seed": seed, "val_bpb": value, "kind": kind, "reference": True}
            details["trials"] = [*details.get("trials", []), trial]
            message = f"#{current.number} measured on {kind}: val_bpb {value:.6f}"
        self.journal.update_experiment(experiment_id, details=details)
        self.journal.add_event("noise", message, run_id=current.run_id, experiment_id=experiment_id)
        self.say(message)

    def override(self, run: Run, keep: bool, number: int) -> str:
        """The researcher's keep or discard of a decided experiment, against the decision."""
        journal = self.journal
        experiment = journal.experiment(run.id, number)
        if experiment is None or experiment.commit_sha is None or not experiment.is_final:
            raise ValueError(f"experiment #{number} has no decision to override")
        if keep:
            if experiment.val_bpb is None:
                raise ValueError(f"experiment #{number} has no val_bpb to keep")
            self.workspace.keep(run.tag, experiment.commit_sha)
            self.record_decision(
                experiment,
                "keep",
                "kept by the researcher (override)",
                run_update={
                    "best_val_bpb": experiment.val_bpb,
                    "best_commit": experiment.commit_sha,
                },
            )
        else:
            if experiment.commit_sha != run.best_commit or experiment.parent_commit is None:
                raise ValueError(
                    f"only the current best experiment can be reverted; #{number} is not it"
                )
            parent = self.experiment_at(run, experiment.parent_commit)
            self.workspace.revert_to(run.tag, experiment.parent_commit)
            journal.record_decision(
                experiment.id,
                "discard",
                "reverted by the researcher (override)",
                run_update={
                    "best_val_bpb": parent.val_bpb if parent else None,
                    "best_commit": experiment.parent_commit,
                },
            )
        self.export()
        return f"{'keep' if keep else 'discard'} #{number}"


def standing(experiment: Experiment | None, value: float, kind: str = "") -> Standing | None:
    """A decided script as decisions on devices of ``kind`` see it (None: it was never
    trained on one)."""
    if experiment is None:
        return Standing(-1, value)
    shapes = trial_shapes((experiment.details or {}).get("trials"), kind)
    if not kind:
        trials = dict(trial_results(experiment))
        return Standing(experiment.number, value, trials, experiment.lines_of_code, shapes)
    trials = dict(trial_results(experiment, kind))
    if not trials:
        return None
    mean = sum(trials.values()) / len(trials)
    return Standing(experiment.number, mean, trials, experiment.lines_of_code, shapes)
