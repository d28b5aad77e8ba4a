"""The optimiser proposer: Optuna tunes the numbers of the best script.

The space is the best script's numeric CAPS constants, each over a window around its current
value (`agent.space`): when a keep moves the best, the window moves with it. The study is
rebuilt from what the engine hands over (`ProposalContext.trials`): every script of the run
that has the best's structure (the same code up to the values of the space's constants) and
lies in the window is a trial, with its val_bpb; one that crashed or was stopped early counts
as bad as the worst result of the structure, so that the sampler learns to stay away.
Scripts in flight are trials still running, so that points asked side by side differ (TPE's
constant liar). A point already trained, or in flight, is never asked again, in the window or
not, and after a restart the study is the same as before it, rebuilt from the journal.

Samplers: TPE (default; multivariate, so constants that work together are tuned together)
and CMA-ES (`cmaes`), which starts at the middle of the window (the best, since inferred
windows are centred on it) and starts again there when the window moves. CMA-ES keeps its
state (mean, step size, covariance) in the process: after a restart it starts again, with
what was trained before still keeping it from asking a point twice. On a plateau (no keep in
`plateau_after` experiments) every other point is drawn at random from the whole window, to
look further away.

Optuna is imported when the first proposal is asked for: a run of another proposer never
loads it.
"""

from __future__ import annotations

import functools
import math
import random
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent import names
from agent.constants import format_value
from agent.proposal import (
    DESCRIPTION_LIMIT,
    AgentEvent,
    EventSink,
    NoProposal,
    Proposal,
    ProposalContext,
    Proposer,
    TrialRecord,
    script_hash,
)
from agent.space import (
    Param,
    SearchSpace,
    SpaceError,
    Value,
    build_space,
    read_program_block,
    structure_key,
    values_of,
    write_values,
)

SAMPLERS = ("tpe", "cmaes")
ASK_ATTEMPTS = 50  # points asked for one proposal before giving up on finding a new one
FAILED_STATUSES = ("crash", "timeout")

Point = tuple[Value, ...]


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _distribution(param: Param) -> Any:
    distributions = _optuna().distributions
    if param.kind == "float":
        return distributions.FloatDistribution(float(param.low), float(param.high), log=param.log)
    return distributions.IntDistribution(
        int(param.encode(param.low)),
        int(param.encode(param.high)),
        log=param.log and param.kind == "int",
        step=param.step if param.kind == "int" else 1,
    )


def describe_change(old: Mapping[str, Value], new: Mapping[str, Value]) -> str:
    """A ledger description of the constants that change: as many as fit, then how many more."""
    changed = [name for name in new if new[name] != old.get(name)]
    if not changed:
        return "retrain the best as it is"
    text = ""
    for shown, name in enumerate(changed):
        part = f"{name} {format_value(new[name])}"
        more = len(changed) - shown - 1
        candidate = f"{text}, {part}" if text else part
        suffix = f" +{more} more" if more else ""
        if len(candidate + suffix) > DESCRIPTION_LIMIT and text:
            return f"{text} +{len(changed) - shown} more"
        text = candidate
    return text[:DESCRIPTION_LIMIT]


@dataclass
class _Study:
    """One structure's study, kept in step with the run's trials."""

    key: str
    space: SearchSpace
    study: Any
    distributions: dict[str, Any]
    sampler: Any  # the study's own sampler, before any constants are held fixed
    per_point: int = 0  # constants a point may change (0: all)
    rng: random.Random = field(default_factory=random.Random)  # which ones
    asked: dict[Point, int] = field(default_factory=dict)  # running trials, by point
    told: set[Point] = field(default_factory=set)  # finished trials in the study
    seen: set[Point] = field(default_factory=set)  # every point trained, in flight or asked

    def point(self, values: Mapping[str, Value]) -> Point:
        return tuple(values.get(p.name, 0) for p in self.space.params)

    def params(self, values: Mapping[str, Value]) -> dict[str, Value] | None:
        """The optimiser's parameters of these values (None: outside the space)."""
        if set(values) != self.space.names:
            return None
        if not all(p.contains(values[p.name]) for p in self.space.params):
            return None
        return {p.name: p.encode(values[p.name]) for p in self.space.params}

    def sync(self, trials: Sequence[tuple[TrialRecord, dict[str, Value]]]) -> None:
        """Add the trials the study does not know yet; tell it the results of those it asked."""
        optuna = _optuna()
        results = [t.val_bpb for t, _ in trials if t.finished and t.val_bpb is not None]
        worst = max(results) if results else None
        for trial, values in trials:
            point = self.point(values)
            if not trial.finished:
                if point not in self.seen:
                    self._adopt_running(values, point)
                continue
            if point in self.told:
                continue
            value = trial.val_bpb
            if value is None and trial.status in (*FAILED_STATUSES, "discard"):
                value = worst  # crashed, or stopped early: as bad as the worst
            state = optuna.trial.TrialState.COMPLETE if value is not None else None
            number = self.asked.pop(point, None)
            if number is not None:
                if state is None:
                    self.study.tell(number, state=optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(number, value)
            elif state is not None:
                params = self.params(values)
                if params is not None:
                    self.study.add_trial(
                        optuna.trial.create_trial(
                            params=params, distributions=self.distributions, value=value
                        )
                    )
            self.told.add(point)
            self.seen.add(point)

    def _adopt_running(self, values: Mapping[str, Value], point: Point) -> None:
        """A point in flight that this study did not ask (another process's, before a
        restart): a running trial, so that it is not asked again."""
        self.seen.add(point)
        params = self.params(values)
        if params is None:
            return
        self.study.enqueue_trial(params, skip_if_exists=False)
        self.asked[point] = self.study.ask(self.distributions).number

    def ask(
        self, explore: random.Random | None, current: Mapping[str, Value]
    ) -> dict[str, Value] | None:
        """The next point's values (None: the sampler asked for a point already seen).

        With ``per_point`` set, the point changes that many constants, chosen at random, and
        keeps the others at the best's values: the sampler models them all, but moves few at
        a time, as a researcher would (a point that moves everything at once is mostly worse
        and says little about why)."""
        names = [p.name for p in self.space.params]
        self.study.sampler = self.sampler
        if explore is not None:
            self.study.enqueue_trial(
                {p.name: _random_value(p, explore) for p in self.space.params},
                skip_if_exists=False,
            )
        elif 0 < self.per_point < len(names):
            free = set(self.rng.sample(names, self.per_point))
            fixed = {
                p.name: p.encode(current[p.name]) for p in self.space.params if p.name not in free
            }
            self.study.sampler = _optuna().samplers.PartialFixedSampler(fixed, self.sampler)
        trial = self.study.ask(self.distributions)
        self.study.sampler = self.sampler
        values = {p.name: p.decode(trial.params[p.name]) for p in self.space.params}
        point = self.point(values)
        if point in self.seen:
            self.study.tell(trial, state=_optuna().trial.TrialState.FAIL)
            return None
        self.asked[point] = trial.number
        self.seen.add(point)
        return values


def _random_value(param: Param, rng: random.Random) -> Value:
    low, high = param.encode(param.low), param.encode(param.high)
    if param.kind != "float":
        step = param.step if param.kind == "int" else 1
        return int(low) + rng.randint(0, (int(high) - int(low)) // step) * step
    if param.log:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return rng.uniform(float(low), float(high))


class OptunaProposer:
    """Tunes the best script's numeric constants with an Optuna sampler (TPE or CMA-ES)."""

    name = names.OPTUNA

    def __init__(
        self,
        *,
        sampler: str = "tpe",
        seed: int = 0,
        overrides: Mapping[str, object] | None = None,
        startup_trials: int = 1,
        per_point: int = 3,
        last_resort: Proposer | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
        self.sampler = sampler
        self.seed = seed
        self.overrides = dict(overrides or {})
        self.startup_trials = startup_trials
        self.per_point = per_point  # constants one point changes (TPE; 0: all)
        self.last_resort = last_resort  # proposes when Optuna cannot (not installed, bad ranges)
        self.on_event = on_event
        self._said: set[str] = set()  # warnings given, each once
        self._lock = threading.Lock()  # drafts are asked for from several threads
        self._study: _Study | None = None
        self._explore = random.Random(seed)
        self._explore_next = True

    # --- the space ---------------------------------------------------------------------

    def space(self, context: ProposalContext) -> SearchSpace:
        """The space of the best script, with the config's and program.md's ranges."""
        overrides = {**self.overrides, **read_program_block(context.program)}
        return build_space(context.best_script, context.device, overrides=overrides)

    # --- proposing ---------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if message not in self._said and self.on_event is not None:
            self._said.add(message)
            self.on_event(AgentEvent("search", message, {"proposer": self.name}))

    def _instead(self, context: ProposalContext, reason: str) -> Proposal:
        """The last resort's proposal, when the optimiser cannot run; NoProposal without one."""
        if self.last_resort is None:
            raise NoProposal(reason)
        self._warn(f"{reason}; the built-in proposer stands in")
        return self.last_resort.propose(context)

    def propose(self, context: ProposalContext) -> Proposal:
        if context.fix is not None:
            raise NoProposal("the optimiser cannot fix a crash, only tune numbers")
        missing = optuna_available()
        if missing is not None:
            return self._instead(context, missing)
        with self._lock:
            try:
                space = self.space(context)
            except SpaceError as exc:
                return self._instead(context, f"the search space cannot be used: {exc}")
            if space.unknown:
                self._warn(
                    f"the search ranges name {', '.join(space.unknown)}, which the script does "
                    "not define as numbers: check the names in config.toml's [search.space] "
                    "and program.md's search block"
                )
            if not space.params:
                raise NoProposal("train.py has no numeric CAPS constants to tune")
            best, device = context.best_script, context.device
            study = self._study_for(best, device, space)
            study.sync(
                [
                    (trial, values_of(trial.script, device, space.names))
                    for trial in context.trials
                    if structure_key(trial.script, device, space.names) == study.key
                ]
            )
            current = values_of(best, device, space.names)
            study.seen.add(study.point(current))
            explore = self._explorer(context)
            tried = set(context.tried_hashes)
            for _ in range(ASK_ATTEMPTS):
                values = study.ask(explore, current)
                if values is None:
                    continue
                script = write_values(best, device, values)
                if script_hash(script) in tried:
                    continue
                return self._proposal(script, current, values, study, explore is not None)
        raise NoProposal(
            f"the {self.sampler} sampler kept asking for points already trained "
            f"({ASK_ATTEMPTS} in a row); the space may be exhausted: {space.describe()}"
        )

    def _explorer(self, context: ProposalContext) -> random.Random | None:
        """On a plateau, every other point is drawn at random from the whole space."""
        if not context.on_plateau:
            self._explore_next = True
            return None
        explore, self._explore_next = self._explore_next, not self._explore_next
        return self._explore if explore else None

    def _study_for(self, best: str, device: str, space: SearchSpace) -> _Study:
        key = structure_key(best, device, space.names)
        study = self._study
        if study is not None and study.key == key and study.space == space:
            return study
        optuna = _optuna()
        distributions = {p.name: _distribution(p) for p in space.params}
        if self.sampler == "cmaes":
            sampler = optuna.samplers.CmaEsSampler(seed=self.seed, warn_independent_sampling=False)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=self.seed,
                n_startup_trials=self.startup_trials,
                multivariate=True,
                constant_liar=True,
            )
        self._study = _Study(
            key=key,
            space=space,
            study=optuna.create_study(direction="minimize", sampler=sampler),
            distributions=distributions,
            sampler=sampler,
            per_point=self.per_point if self.sampler == "tpe" else 0,
            rng=random.Random(f"{self.seed}:{key}"),
        )
        return self._study

    def _proposal(
        self,
        script: str,
        current: Mapping[str, Value],
        values: Mapping[str, Value],
        study: _Study,
        explored: bool,
    ) -> Proposal:
        changed = {name: value for name, value in values.items() if value != current.get(name)}
        trials = len(study.told)
        how = (
            "a random point of the whole space (a plateau)"
            if explored
            else (
                f"the {self.sampler.upper()} sampler's next point after {trials} trials of this structure"
            )
        )
        return Proposal(
            description=describe_change(current, values),
            hypothesis=f"Tuning {len(changed)} constants together, {how}, may lower val_bpb.",
            script=script,
            proposer=self.name,
            details={
                "sampler": self.sampler,
                "explore": explored,
                "trials": trials,
                "changes": {
                    name: {"old": current.get(name), "new": value}
                    for name, value in changed.items()
                },
            },
        )


@functools.cache
def optuna_available() -> str | None:
    """Why Optuna cannot run here (None: it can)."""
    try:
        _optuna()
    except ImportError as exc:  # a broken or missing install
        return f"Optuna cannot be imported ({exc}): pip install optuna cmaes"
    return None
