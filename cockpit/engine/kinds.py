"""Kinds of device: results compare within a kind only.

Trainings of one script on an H100 and on an H200 run different numbers of steps in the same
time, so their val_bpb are not comparable. Where the workers' devices are of several kinds,
each kind has its own baseline (trained `noise_runs` times on it) and noise floor, an
experiment's further trainings stay on the kind it first trained on, and it is compared with
the best's result on that kind, measured there first when the best was kept from another.
Where all devices are alike the kind is "" and none of this applies.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from cockpit.store.records import Experiment
from cockpit.store.trials import trial_kind


def _trials(experiment: Experiment) -> list[Mapping[str, Any]]:
    trials = (experiment.details or {}).get("trials") or []
    return [t for t in trials if isinstance(t, Mapping)]


def wanted_kind(experiment: Experiment, kinds: Sequence[str], noise_runs: int) -> str | None:
    """The kind of device the experiment's next training must run on (None: any)."""
    if len(kinds) < 2:
        return None
    trials = _trials(experiment)
    if experiment.number == 0:  # the baseline: on each kind, noise_runs times
        lacking = [k for k in kinds if sum(trial_kind(t) == k for t in trials) < noise_runs]
        return lacking[0] if lacking else None
    if not trials:  # a first training that ran short trains again where it ran
        short = (experiment.details or {}).get("short") or []
        trials = [t for t in short if isinstance(t, Mapping)]
    return trial_kind(trials[0]) if trials else None


def references_needed(
    best: Experiment | None,
    unfinished: Iterable[Experiment],
    kinds: Sequence[str],
    under_way: Collection[str],
) -> list[str]:
    """The kinds the best must be trained on before the experiments that trained there can be
    compared with it: none where it has a result, a training under way (``under_way``) or a
    failed one."""
    if len(kinds) < 2 or best is None or best.number == 0:  # the baseline has every kind
        return []
    have = {trial_kind(t) for t in _trials(best)}
    have |= set((best.details or {}).get("reference_failed") or [])
    have |= set(under_way)
    wanted: list[str] = []
    for experiment in unfinished:
        kind = str((experiment.details or {}).get("training_kind") or "")
        if experiment.status == "evaluating" and kind and kind not in have:
            wanted.append(kind)
            have.add(kind)
    return wanted
