"""A verification as the journal holds it: a run's best trained again on seeds no experiment
of the run used, and what that says of the ledger's best.

The ledger's best is the luckiest of many noisy draws: the keep that beat the others is also
the one whose seeds favoured it most. Trained again on fresh seeds, it shows what its script is
worth. Where `[engine] verify_baseline` is on, the run's baseline is trained again beside it,
on the same seeds: a machine slower or faster than during the run (another load, a throttled
device) then moves both, and the verified gain is taken between two trainings of the same seed
and the same hour. `cockpit
verify` (cockpit/verify.py) records one as a ``verify`` event of the run; this module is the
one owner of that event's data and of the figures drawn from it, for the writer and every
reader (the search bench's among them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cockpit.store.journal import Journal
from cockpit.store.trials import ran_short, whole_number

EVENT_KIND = "verify"
# Verification trainings use seeds from here up, skipping any the run used: far above the
# seeds experiments take (the run's seed, plus one per further training of a script).
FIRST_SEED = 1000


def difference_error(spread: float | None, runs: int, reference_runs: int) -> float | None:
    """The standard error of a difference of two means, of ``runs`` and ``reference_runs``
    trainings, each with run-to-run spread ``spread`` (None: not measured yet, or a side with
    no training). Paired seeds share some luck and make the true error smaller: this is the
    error without that help. The keep rule (`cockpit.engine.noise`) uses it too."""
    if spread is None or runs < 1 or reference_runs < 1:
        return None
    return spread * math.sqrt(1 / runs + 1 / reference_runs)


def _measured(values: Sequence[float | None]) -> list[float]:
    """The values of the trainings that gave a val_bpb."""
    return [value for value in values if value is not None and math.isfinite(value)]


def verified_mean(values: Sequence[float | None]) -> float | None:
    """The verified best: the mean of the fresh trainings that gave a val_bpb (None: none
    did). One that ran short of the run's plan counts, and is said: on a shared host it scored
    no worse than the same seed trained again on a plan cut to fit (a median 0.022 better over
    13 pairs), so leaving it out would leave a slow machine's verification with no figure."""
    measured = _measured(values)
    return math.fsum(measured) / len(measured) if measured else None


def _pairs(
    values: Sequence[float | None], baseline_values: Sequence[float | None]
) -> list[tuple[float, float]]:
    """(baseline, best) of each seed on which both trainings gave a val_bpb."""
    return [
        (base, value)
        for base, value in zip(baseline_values, values, strict=False)
        if base is not None and value is not None and math.isfinite(base) and math.isfinite(value)
    ]


def verified_gain(
    baseline: float | None,
    values: Sequence[float | None],
    baseline_values: Sequence[float | None] = (),
) -> float | None:
    """What the best's script gains over the baseline's, trained again: the mean, over the
    fresh seeds both trained on, of the baseline's val_bpb less the best's; without those
    (an older record, a best that is the baseline) the ledger's ``baseline`` less the
    verified best. None: nothing to take it from."""
    pairs = _pairs(values, baseline_values)
    if pairs:
        return math.fsum(base - value for base, value in pairs) / len(pairs)
    mean = verified_mean(values)
    return None if mean is None or baseline is None else baseline - mean


def optimism(
    ledger_best: float | None,
    baseline: float | None,
    values: Sequence[float | None],
    baseline_values: Sequence[float | None] = (),
) -> float | None:
    """How much better the ledger says the best is than its fresh trainings do (positive:
    the ledger promises more than the script gives). With the baseline trained again beside
    it, the ledger's gain less the verified gain: a machine slower now than during the run
    moves both trainings and drops out. Without, the verified best less the ledger's."""
    if _pairs(values, baseline_values) and baseline is not None and ledger_best is not None:
        gain = verified_gain(baseline, values, baseline_values)
        return None if gain is None else (baseline - ledger_best) - gain
    mean = verified_mean(values)
    return None if mean is None or ledger_best is None else mean - ledger_best


def fresh_seeds(used: set[int], count: int) -> list[int]:
    """``count`` seeds from `FIRST_SEED` up that are not in ``used``."""
    seeds: list[int] = []
    seed = FIRST_SEED
    while len(seeds) < count:
        if seed not in used:
            seeds.append(seed)
        seed += 1
    return seeds


@dataclass(frozen=True)
class Verification:
    """The best of a run, trained again: its seeds and what each training measured."""

    experiment: int  # the best's experiment number
    commit: str  # the best's commit
    seeds: tuple[int, ...]
    values: tuple[float | None, ...]  # val_bpb per seed (None: that training gave none)
    ledger_best: float  # the best's value in the ledger (the mean of its trainings)
    ledger_runs: int  # how many trainings that value is the mean of
    baseline: float | None  # the run's baseline value
    spread: float | None  # the run's run-to-run spread when it was verified
    multiple: float = 2.0  # how many standard errors make a difference more than the noise
    # Per seed, the steps each training ran and the steps planned for it (the run's plan;
    # None: not known, as for a script that plans no steps, or a record from before).
    steps: tuple[int | None, ...] = ()
    planned: tuple[int | None, ...] = ()
    # Per seed, the run's baseline script trained on that seed beside the best (None: that
    # training gave none); empty where the best is the baseline, or for a record from before.
    baseline_values: tuple[float | None, ...] = ()
    at: str = field(default="", compare=False)  # when it was recorded (the event's time)

    @property
    def measured(self) -> list[float]:
        return _measured(self.values)

    @property
    def short(self) -> tuple[bool, ...]:
        """Per seed, whether its training ran short of its plan (`trials.ran_short`): it
        measured a shorter training than the keep's, not the script as the ledger trained it."""
        return tuple(
            index < len(self.steps)
            and index < len(self.planned)
            and ran_short(self.steps[index], self.planned[index])
            for index in range(len(self.seeds))
        )

    @property
    def mean(self) -> float | None:
        """The verified best (`verified_mean`)."""
        return verified_mean(self.values)

    @property
    def verified_gain(self) -> float | None:
        return verified_gain(self.baseline, self.values, self.baseline_values)

    @property
    def baseline_now(self) -> float | None:
        """The baseline's script trained again on the fresh seeds (None: it was not)."""
        return verified_mean(self.baseline_values)

    @property
    def drift(self) -> float | None:
        """How much worse the baseline's script scores now than in the ledger (positive: the
        machine trains fewer steps in the budget than during the run). Part of it is the
        fresh seeds' luck."""
        now = self.baseline_now
        return None if now is None or self.baseline is None else now - self.baseline

    @property
    def ledger_gain(self) -> float | None:
        return None if self.baseline is None else self.baseline - self.ledger_best

    @property
    def optimism(self) -> float | None:
        """How much better the ledger says the best is than its fresh trainings do (see
        `optimism`)."""
        return optimism(self.ledger_best, self.baseline, self.values, self.baseline_values)

    @property
    def error(self) -> float | None:
        """The standard error of the difference between the ledger's mean and the verified
        one (None before the spread is measured, or with nothing verified). Taken between two
        gains (the baseline trained again beside the best), each side has two noisy means:
        √2 times as much, a bound, since the two trainings of a seed share some luck."""
        error = difference_error(self.spread, len(self.measured), self.ledger_runs)
        if error is None or not _pairs(self.values, self.baseline_values):
            return error
        return error * math.sqrt(2)

    @property
    def differs(self) -> bool | None:
        """Whether the ledger and the fresh trainings differ by more than the noise explains
        (None: no spread to tell by)."""
        optimism, error = self.optimism, self.error
        if optimism is None or error is None:
            return None
        return abs(optimism) > self.multiple * error

    def describe(self) -> str:
        """One line for `cockpit status`, the report and the notifications."""
        mean = self.mean
        seeds = _seed_range(self.seeds)
        if mean is None:
            return f"verified on seeds {seeds}: no training gave a val_bpb"
        text = f"verified best {mean:.6f} over {len(self.measured)} fresh seeds ({seeds})"
        gain, ledger_gain = self.verified_gain, self.ledger_gain
        if gain is not None and ledger_gain is not None:
            text += f": gain {gain:+.6f} against the ledger's {ledger_gain:+.6f}"
        now, drift = self.baseline_now, self.drift
        if now is not None and drift is not None:
            text += (
                f" (against the baseline trained again on the same seeds, {now:.6f}: "
                f"{drift:+.6f} on the ledger's)"
            )
        differs, optimism, error = self.differs, self.optimism, self.error
        if differs and optimism is not None and error is not None:
            side = "optimistic" if optimism > 0 else "pessimistic"
            text += (
                f"; the ledger is {side} by {abs(optimism):.6f}, more than the noise "
                f"explains ({self.multiple:g} standard errors: {self.multiple * error:.6f})"
            )
        elif differs is False:
            text += "; within the noise of the ledger's"
        short = [
            f"seed {seed} trained {self.steps[index]} of {self.planned[index]} planned steps"
            for index, seed in enumerate(self.seeds)
            if self.short[index]
        ]
        if short:
            text += (
                f"; ran short ({'; '.join(short)}): the machine was slower than when the run "
                "planned them"
            )
        return text

    def headline(self) -> str:
        """`describe` of the best it verified (#N ...): the line every reader shows."""
        return f"#{self.experiment} {self.describe()}"

    def to_data(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "commit": self.commit,
            "seeds": list(self.seeds),
            "values": list(self.values),
            "ledger_best": self.ledger_best,
            "ledger_runs": self.ledger_runs,
            "baseline": self.baseline,
            "spread": self.spread,
            "multiple": self.multiple,
            "steps": list(self.steps),
            "planned": list(self.planned),
            "baseline_values": list(self.baseline_values),
            # Derived, for readers of the raw journal (the fields above are what is read back).
            "verified_best": self.mean,
            "verified_gain": self.verified_gain,
            "differs": self.differs,
            "short": list(self.short),
            "baseline_now": self.baseline_now,
            "drift": self.drift,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any], at: str = "") -> Verification | None:
        """The verification an event's data holds (None: not one)."""
        try:
            return cls(
                experiment=int(data["experiment"]),
                commit=str(data["commit"]),
                seeds=tuple(int(seed) for seed in data["seeds"]),
                values=_values(data["values"]),
                ledger_best=float(data["ledger_best"]),
                ledger_runs=int(data["ledger_runs"]),
                baseline=None if data.get("baseline") is None else float(data["baseline"]),
                spread=None if data.get("spread") is None else float(data["spread"]),
                multiple=float(data.get("multiple", 2.0)),
                steps=_counts(data.get("steps")),
                planned=_counts(data.get("planned")),
                baseline_values=_values(data.get("baseline_values") or ()),
                at=at,
            )
        except (KeyError, TypeError, ValueError):
            return None


def _values(data: Any) -> tuple[float | None, ...]:
    return tuple(None if value is None else float(value) for value in data)


def _counts(data: Any) -> tuple[int | None, ...]:
    return tuple(whole_number(value) for value in data) if isinstance(data, list) else ()


def _seed_range(seeds: Sequence[int]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(seed) for seed in seeds)


def latest_verification(journal: Journal, run_id: int) -> Verification | None:
    """The run's latest verification, if any."""
    for event in journal.events(run_id, kinds=[EVENT_KIND], limit=1, latest=True):
        found = Verification.from_data(event.data or {}, at=str(event.at))
        if found is not None:
            return found
    return None
