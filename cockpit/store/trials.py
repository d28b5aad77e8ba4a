"""A script's trainings and their curves, as decisions and the screen read them.

An experiment's script may be trained more than once (the baseline's noise runs, a
confirmation, a measurement on another kind of device): its live loss points carry the seed
(and kind) of the training they belong to, and its trials record each training's result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cockpit.store.curves import Measured, Reference, Trace, reference, trace
from cockpit.store.records import Experiment

# A loss point this many seconds past the training's elapsed time cannot belong to it.
TRIAL_CLOCK_SLACK_SECONDS = 2.0
# A training that trained fewer than this share of the steps planned for it ran short: the
# machine was slower than when the plan was made (another load, a throttled device), and its
# time ran out before its schedule ended (a learning rate that never fully decayed). Trained
# again on the plan cut to what fitted, it does fewer steps: on a shared 2-core CPU at 20 s
# that scored a median 0.022 worse than the short training on the same seed (13 pairs).
FULL_SHARE = 0.98

LossPoint = tuple[float, float]  # (training progress from 0 to 1, loss)


def loss_points(metrics: Iterable[Mapping[str, Any]]) -> list[tuple[float, float, float]]:
    """(t, progress, loss) of the metric points that have all three (a NaN loss is None)."""
    points = []
    for metric in metrics:
        t, progress, loss = metric.get("t"), metric.get("progress"), metric.get("loss")
        if t is None or progress is None or loss is None:
            continue
        if not (math.isfinite(loss) and math.isfinite(progress)):
            continue
        points.append((float(t), float(progress), float(loss)))
    return points


def split_trials(times: Sequence[float]) -> list[int]:
    """Where each training of one experiment starts in its points, in the order they came:
    the clock of every training starts again from zero, so a point earlier than the one
    before it opens a new one. The first index is always 0 (for a non-empty sequence)."""
    starts = [0] if times else []
    for index in range(1, len(times)):
        if times[index] < times[index - 1]:
            starts.append(index)
    return starts


def current_trial_start(times: Sequence[float], elapsed: float | None) -> int:
    """The index where the latest training's points start. ``elapsed``: how long the
    training in progress has run, when one is; a point later than that (plus some slack)
    belongs to an earlier training, so when the last group has one, the training in
    progress has not reported yet and its points start at the end."""
    starts = split_trials(times)
    if not starts:
        return 0
    start = starts[-1]
    if elapsed is not None and times[-1] > elapsed + TRIAL_CLOCK_SLACK_SECONDS:
        return len(times)
    return start


def latest_training(metrics: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The metric records of an experiment's latest training (its clock starts at zero)."""
    records = [m for m in metrics if isinstance(m.get("t"), (int, float))]
    return records[current_trial_start([float(m["t"]) for m in records], None) :]


def latest_curve(metrics: Iterable[Mapping[str, Any]]) -> tuple[LossPoint, ...]:
    """The (progress, loss) curve of an experiment's latest training."""
    return tuple((progress, loss) for _, progress, loss in loss_points(latest_training(metrics)))


def paired_training(metrics: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of an experiment's latest training with the seed of its first training.

    Every experiment's first training uses the run's seed, and the seed decides the batches:
    two such curves saw the same data in the same order, so their gap is the scripts'
    difference, not the luck of the batches (with the small batches of a CPU run, that luck
    alone moves the loss by several percent). Points recorded without a seed (journals from
    before seeds were kept with the points) give the latest training."""
    seed = next((m["seed"] for m in metrics if m.get("seed") is not None), None)
    if seed is None:
        return latest_training(metrics)
    return latest_training([m for m in metrics if m.get("seed") == seed])


def paired_curve(metrics: Sequence[Mapping[str, Any]]) -> tuple[LossPoint, ...]:
    """The (progress, loss) curve of `paired_training`, by the clock (for display)."""
    return latest_curve(paired_training(metrics))


def paired_trace(metrics: Sequence[Mapping[str, Any]]) -> Trace:
    """`paired_training` as early abort compares it (see `curves.trace`)."""
    return trace(paired_training(metrics))


def trial_kind(trial: Mapping[str, Any]) -> str:
    """The kind of device a training ran on ("" where a run has devices of one kind only)."""
    return str(trial.get("kind") or "")


def next_seed(first: int, trials: object, kind: str = "") -> int:
    """The seed of a script's next training on devices of ``kind``: its trainings there (an
    experiment's ``details["trials"]``) take the run's first seed and the ones after it, in
    turn (noise runs, confirmations, near misses)."""
    return first + sum(
        trial_kind(trial) == kind
        for trial in (trials if isinstance(trials, list) else [])
        if isinstance(trial, Mapping)
    )


def whole_number(value: Any) -> int | None:
    """A count as a summary, a trial or an event's data holds it (None: not a number)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return int(value) if number else None


def ran_short(steps: int | None, planned: int | None) -> bool:
    """Whether a training of ``steps`` steps ran short of the ``planned`` ones (see
    `FULL_SHARE`); a training with no plan (a script that plans no steps) never does."""
    return steps is not None and planned is not None and steps < FULL_SHARE * planned


def trial_ran_short(trial: Mapping[str, Any]) -> bool:
    """Whether this training of a script (one of ``details["trials"]``) ran short of its plan."""
    return ran_short(whole_number(trial.get("num_steps")), whole_number(trial.get("planned")))


def trained_plan(experiment: Experiment) -> int | None:
    """The step plan an experiment's script trained on, as its trials recorded it: the
    latest training's that ran its plan whole (else the latest's that had one). None where
    no training recorded a plan (a script that plans no steps, a journal from before)."""
    trials = (experiment.details or {}).get("trials") or []
    recorded = [
        trial
        for trial in (trials if isinstance(trials, list) else [])
        if isinstance(trial, Mapping) and whole_number(trial.get("planned"))
    ]
    whole = [trial for trial in recorded if not trial_ran_short(trial)]
    chosen = (whole or recorded)[-1:]
    return whole_number(chosen[0]["planned"]) if chosen else None


def trial_results(experiment: Experiment, kind: str | None = None) -> tuple[tuple[int, float], ...]:
    """(seed, val_bpb) of every training of an experiment's script (on devices of ``kind``
    only, when given): the noise-floor runs of the baseline, a confirmation run."""
    trials = (experiment.details or {}).get("trials") or []
    return tuple(
        (int(trial["seed"]), float(trial["val_bpb"]))
        for trial in (trials if isinstance(trials, list) else [])
        if isinstance(trial, Mapping)
        and isinstance(trial.get("seed"), int)
        and isinstance(trial.get("val_bpb"), (int, float))
        and (kind is None or trial_kind(trial) == kind)
    )


def trial_shapes(trials: object, kind: str | None = None) -> str | None:
    """The fingerprint of the weights every one of these trainings of a script (an
    experiment's ``details["trials"]``; on devices of ``kind``, when given) built, as the
    harness read it from the exported model; None where one has none (a journal from before,
    a self-reported metric) or two differ."""
    found = {
        trial.get("shapes")
        for trial in (trials if isinstance(trials, list) else [])
        if isinstance(trial, Mapping) and (kind is None or trial_kind(trial) == kind)
    }
    (shapes,) = found if len(found) == 1 else (None,)
    return shapes if isinstance(shapes, str) and shapes else None


def paired_differences(experiments: Sequence[Experiment], kind: str = "") -> list[list[float]]:
    """For each script and the one it was made from, trained on two seeds or more in common
    with the same weights' shapes (on devices of ``kind``): its val_bpb less its parent's,
    seed by seed. How much of a seed's luck such scripts share; scripts of other shapes, or
    of unknown ones, drew other luck and say nothing of it."""
    by_commit = {e.commit_sha: e for e in experiments if e.commit_sha is not None}
    found = []
    for experiment in experiments:
        commit = experiment.parent_commit
        parent = by_commit.get(commit) if commit is not None and experiment.number > 0 else None
        if parent is None:
            continue
        shapes = trial_shapes((experiment.details or {}).get("trials"), kind)
        if shapes is None or shapes != trial_shapes((parent.details or {}).get("trials"), kind):
            continue
        own, theirs = dict(trial_results(experiment, kind)), dict(trial_results(parent, kind))
        common = [seed for seed in sorted(own) if seed in theirs]
        if len(common) >= 2:
            found.append([own[seed] - theirs[seed] for seed in common])
    return found


def measured_loss(experiment: Experiment, seed: int | None, kind: str = "") -> float | None:
    """The loss the harness measured for an experiment's training with ``seed`` on devices of
    ``kind``, in the units of a reported training loss: mean nats per token on the validation
    split. The trials record val_bpb; the summary's val_loss over its val_bpb turns bits per
    byte into nats per token (ln 2 times the split's bytes per token). None where that training
    was not measured by the harness (a script-mode command's figures are its own)."""
    summary = experiment.summary or {}
    val_loss, val_bpb = _positive(summary.get("val_loss")), _positive(summary.get("val_bpb"))
    if summary.get("self_reported") or val_loss is None or val_bpb is None:
        return None
    values = dict(trial_results(experiment, kind))
    if not (experiment.details or {}).get("trials"):
        return val_loss  # no trials recorded: the summary is of its one training
    if seed is None:  # points recorded without a seed: only a single training is certain
        value = next(iter(values.values())) if len(values) == 1 else None
    else:
        value = values.get(seed)
    return None if value is None else value * val_loss / val_bpb


def _positive(value: Any) -> float | None:
    """The value as a float when it is a finite number above zero, else None."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) and value > 0 else None


def measured_trace(
    experiment: Experiment, metrics: Sequence[Mapping[str, Any]], label: str
) -> Measured:
    """`paired_trace` with the loss the harness measured for that same training (its seed,
    its kind of device)."""
    records = paired_training(metrics)
    seed = next((m["seed"] for m in records if isinstance(m.get("seed"), int)), None)
    kind = str(records[0].get("kind") or "") if records else ""
    return Measured(trace(records), measured_loss(experiment, seed, kind), label)


def trusted_reference(
    best: Experiment,
    experiments: Sequence[Experiment],
    metrics: Callable[[Experiment], Sequence[Mapping[str, Any]]],
) -> Reference | None:
    """What early abort holds a training made from ``best`` against: the best's curve and
    those of its parent and of the run's baseline, each with the loss the harness measured
    (see `curves.reference`). ``metrics``: an experiment's metric records, of the kind of
    device compared on. None: the best has no measured curve."""
    by_commit = {e.commit_sha: e for e in experiments if e.commit_sha}
    parent = by_commit.get(best.parent_commit or "")
    baseline = next((e for e in experiments if e.number == 0), None)
    ancestors = []
    if parent is not None and parent.number != 0:
        ancestors.append(measured_trace(parent, metrics(parent), f"its parent #{parent.number}"))
    if baseline is not None and baseline.id != best.id:
        ancestors.append(measured_trace(baseline, metrics(baseline), "the baseline #0"))
    return reference(measured_trace(best, metrics(best), "the best run"), ancestors)
