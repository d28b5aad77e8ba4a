"""The optimiser's search space: which constants of the script it tunes, and over what range.

Every numeric CAPS constant of the script is a dimension (`agent.constants`), except the
bookkeeping ones (how often to report, when to plan) and those the researcher pins. Its type
and range are inferred from its value in the current best script, so that the space is a
window around the best that moves with it (a trust region: a night of keeps can take a
constant far from where it started, one step at a time):

- a size (the name says SIZE, WIDTH, DIM, BATCH, ...) that is a power of two stays one: from
  half to twice it;
- another integer: from half to twice it (0 to 8 for a zero, 1 to 4 for a one), in steps of
  the largest power of two that divides it (768 moves by 128, so it still splits into heads);
- a learning rate, a decay (the name says LR, RATE or DECAY) or a float of 0.05 or less: a
  quarter to four times it, on a log scale, never above 1;
- another float between 0 and 1, a fraction: from half of it to halfway to 1;
- a float of 1 or more: half to twice it, on a log scale; a zero: 0 to 0.5.

The researcher overrides any of this, in `config.toml` (``[search.space]``) or in a fenced
``search`` block of program.md, which wins; a range given there stays put, and is widened only
to hold the current value::

    ```search
    LEARNING_RATE = { low = 1e-4, high = 3e-2, log = true }
    DEPTH = { low = 2, high = 8 }
    BATCH_SIZE = { type = "pow2", low = 4, high = 64 }
    ROPE_BASE = "pinned"
    ```

Two scripts that differ only in the values of the space's constants have the same structure
(`structure_key`): for the optimiser they are two points of one study.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from agent.constants import Constant, find_constants, format_value, replace_literal
from agent.proposal import ProposalContext

# Constants that steer bookkeeping, not the model or its training.
BOOKKEEPING = frozenset({"REPORT_EVERY", "UNTIMED_STEPS", "PLAN_AT", "CUDA", "COMPILE"})
PINNED = "pinned"
RATE_WORDS = ("LR", "RATE", "DECAY")
SIZE_WORDS = ("SIZE", "WIDTH", "DIM", "BATCH", "HIDDEN", "EMBD", "EMBED", "LEN", "CTX")
SIGNIFICANT_DIGITS = 3  # a float the optimiser writes is rounded to this many digits
OVERRIDE_KEYS = frozenset({"low", "high", "log", "type", "step"})
_SEARCH_FENCE = re.compile(r"^```search[ \t]*\r?\n(.*?)^```", re.DOTALL | re.MULTILINE)

Kind = Literal["float", "int", "pow2"]
Value = int | float


class SpaceError(ValueError):
    """A range the researcher gave cannot be used; the message says what to write instead."""


@dataclass(frozen=True)
class Param:
    """One dimension: a constant, its type and its range (inclusive, in the script's units)."""

    name: str
    kind: Kind
    low: Value
    high: Value
    log: bool = False
    step: int = 1  # an integer's granularity: its values are multiples of it

    def contains(self, value: Value) -> bool:
        if self.kind == "pow2" and not _is_pow2(value):
            return False
        if self.kind == "int" and (value - self.low) % self.step:
            return False
        return self.low <= value <= self.high

    def including(self, value: Value) -> Param:
        """This range, widened to hold ``value``."""
        if self.kind == "pow2" and not _is_pow2(value):
            return self
        if self.kind == "int" and (value - self.low) % self.step:
            return self
        return replace(self, low=min(self.low, value), high=max(self.high, value))

    def encode(self, value: Value) -> Value:
        """The value as the optimiser sees it (a power of two by its exponent)."""
        return int(value).bit_length() - 1 if self.kind == "pow2" else value

    def decode(self, internal: Value) -> Value:
        """The script's value of what the optimiser asked for, rounded as it is written."""
        if self.kind == "pow2":
            return 2 ** int(internal)
        if self.kind == "int":
            return self.low + round((internal - self.low) / self.step) * self.step
        return rounded(float(internal))

    def describe(self) -> str:
        scale = ", log" if self.log and self.kind == "float" else ""
        kind = "power of 2" if self.kind == "pow2" else self.kind
        step = f" by {self.step}" if self.step > 1 else ""
        return f"{self.name}: {kind} {self.low:g}..{self.high:g}{step}{scale}"


@dataclass(frozen=True)
class SearchSpace:
    """The constants the optimiser tunes, those it leaves alone by request, and overrides
    that name no constant of the script (a typo, or a constant a change removed)."""

    params: tuple[Param, ...]
    pinned: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.params) or "no constants to tune"


def rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _is_pow2(value: Value) -> bool:
    return isinstance(value, int) and value >= 1 and value & (value - 1) == 0


def _granularity(value: int) -> int:
    """The largest power of two that divides ``value`` and is at most a quarter of it."""
    step = 1
    while value % (step * 2) == 0 and step * 2 <= value // 4:
        step *= 2
    return step


def is_fraction(name: str, value: Value) -> bool:
    """Whether a float constant is a share of something (a warmdown fraction, a dropout),
    which stays between 0 and 1, rather than a rate or decay, which scales freely."""
    if not isinstance(value, float) or not 0.0 < value < 1.0:
        return False
    return value > 0.05 and not any(word in name for word in RATE_WORDS)


def infer_param(name: str, value: Value) -> Param:
    """The dimension a constant of this name and value gets when nobody says otherwise."""
    if isinstance(value, int):
        if _is_pow2(value) and value >= 2 and any(word in name for word in SIZE_WORDS):
            return Param(name, "pow2", value // 2, value * 2, log=True)
        if value == 0:
            return Param(name, "int", 0, 8)
        if value == 1:
            return Param(name, "int", 1, 4)
        step = _granularity(value)
        if step > 1:  # 768 stays a multiple of 128: sizes that must divide evenly still do
            low = -(-(value // 2) // step) * step
            return Param(name, "int", low, value * 2, step=step)
        return Param(name, "int", max(1, value // 2), value * 2, log=value >= 8)
    if value == 0.0:
        return Param(name, "float", 0.0, 0.5)
    if is_fraction(name, value):
        return Param(name, "float", rounded(value / 2), rounded(value + (1.0 - value) / 2))
    if value < 1.0:  # a rate or a decay
        return Param(name, "float", rounded(value / 4), min(rounded(value * 4), 1.0), log=True)
    return Param(name, "float", rounded(value / 2), rounded(value * 2), log=True)


def read_program_block(program: str) -> dict[str, object]:
    """The overrides of program.md's fenced ``search`` blocks (later blocks win)."""
    overrides: dict[str, object] = {}
    for number, match in enumerate(_SEARCH_FENCE.finditer(program), start=1):
        try:
            overrides.update(tomllib.loads(match.group(1)))
        except tomllib.TOMLDecodeError as exc:
            raise SpaceError(
                f"program.md's search block {number} is not valid TOML ({exc}): write one "
                "line per constant, NAME = { low = 1e-4, high = 1e-2, log = true } or "
                'NAME = "pinned"'
            ) from None
    return overrides


def _override(name: str, entry: object, inferred: Param | None, value: Value) -> Param | None:
    """The dimension ``entry`` asks for (None: pinned)."""
    if entry == PINNED or entry is False:
        return None
    if not isinstance(entry, Mapping):
        raise SpaceError(
            f"the search range of {name} is {entry!r}: write {name} = {{ low = ..., high = ... }} "
            f'or {name} = "pinned"'
        )
    unknown = set(entry) - OVERRIDE_KEYS
    if unknown:
        raise SpaceError(
            f"the search range of {name} has {', '.join(sorted(unknown))}: only low, high, "
            "log, step and type (int, float or pow2) are understood"
        )
    base = inferred or infer_param(name, value)
    kind = entry.get("type", "int" if base.kind == "pow2" and "low" in entry else base.kind)
    if kind not in ("int", "float", "pow2"):
        raise SpaceError(f"the type of {name}'s search range is {kind!r}: use int, float or pow2")
    if kind != "float" and not isinstance(value, int):
        raise SpaceError(f"{name} = {value} is a float: its search range cannot be {kind}")
    low, high = entry.get("low", base.low), entry.get("high", base.high)
    for bound in (low, high):
        if (
            isinstance(bound, bool)
            or not isinstance(bound, (int, float))
            or not math.isfinite(bound)
        ):
            raise SpaceError(
                f"the search range of {name} has a bound {bound!r}: bounds are numbers"
            )
    log = entry.get("log", base.log if kind == base.kind else False)
    if not isinstance(log, bool):
        raise SpaceError(f"log in the search range of {name} is {log!r}: write true or false")
    if low >= high:
        raise SpaceError(f"the search range of {name} is {low}..{high}: low must be below high")
    if kind == "pow2" and not (_is_pow2(low) and _is_pow2(high)):
        raise SpaceError(f"{name} is searched over powers of two: its low and high must be ones")
    if kind in ("int", "pow2") and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{name} is an integer: its low and high must be whole numbers")
    if log and low <= 0:
        raise SpaceError(f"{name} is searched on a log scale: its low must be above 0")
    step = entry.get("step", base.step if kind == base.kind and "low" not in entry else 1)
    if kind != "int" and "step" in entry:
        raise SpaceError(f"step is for integers: {name}'s search range is {kind}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise SpaceError(
            f"the step of {name}'s search range is {step!r}: a whole number, 1 or more"
        )
    if step > 1 and log:
        raise SpaceError(f"{name} cannot be searched both by steps and on a log scale: drop one")
    if kind != "float":
        low, high = int(low), int(high)
    return Param(name, kind, low, high, log=log, step=step)


def build_space(
    script: str,
    device: str = "cpu",
    *,
    overrides: Mapping[str, object] | None = None,
    excluded: Iterable[str] = BOOKKEEPING,
) -> SearchSpace:
    """The space of ``script``'s constants: ranges inferred from their values, or given."""
    overrides = dict(overrides or {})
    excluded = frozenset(excluded)
    params: list[Param] = []
    pinned: list[str] = []
    constants = find_constants(script, device)
    for constant in constants:
        name, value = constant.name, constant.value
        if name in excluded and name not in overrides:
            continue
        param: Param | None = infer_param(name, value)
        if name in overrides:
            param = _override(name, overrides[name], None, value)
        if param is None:
            pinned.append(name)
            continue
        if param.kind != "float" and not isinstance(value, int):
            raise SpaceError(
                f"{name} = {value} is a float: its search range cannot be {param.kind}"
            )
        params.append(param.including(value))
    names = {c.name for c in constants}
    unknown = tuple(sorted(name for name in overrides if name not in names))
    return SearchSpace(tuple(params), tuple(pinned), unknown)


def _owned(script: str, device: str, names: Iterable[str]) -> list[Constant]:
    wanted = set(names)
    return [c for c in find_constants(script, device) if c.name in wanted]


def values_of(script: str, device: str, names: Iterable[str]) -> dict[str, Value]:
    """The values the script gives these constants."""
    return {c.name: c.value for c in _owned(script, device, names)}


def write_values(script: str, device: str, values: Mapping[str, Value]) -> str:
    """``script`` with these constants set to these values, and nothing else changed."""
    # Later lines first, so that earlier positions stay valid.
    for constant in sorted(_owned(script, device, values), key=lambda c: c.line, reverse=True):
        script = replace_literal(script, constant, values[constant.name])
    return script


def structure_key(script: str, device: str, names: Iterable[str]) -> str:
    """The script's identity up to the values of these constants."""
    lines = script.splitlines(keepends=True)
    for constant in _owned(script, device, names):
        encoded = lines[constant.line - 1].encode("utf-8")
        lines[constant.line - 1] = (
            encoded[: constant.start] + b"?" + encoded[constant.end :]
        ).decode("utf-8")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def numbers_only(script: str, context: ProposalContext) -> str | None:
    """Why ``script`` is not the model's to propose (None: it is): it repeats a script already
    trained up to the values of constants the optimiser tunes."""
    tuned, device = context.tuned, context.device
    if not tuned or structure_key(script, device, tuned) not in context.tuned_structures:
        return None
    before = values_of(context.best_script, device, tuned)
    changed = [
        f"{name} = {format_value(value)}"
        for name, value in values_of(script, device, tuned).items()
        if before.get(name) != value
    ]
    what = f"only sets {', '.join(changed)}" if changed else "only changes numbers"
    return (
        f"This {what}: constants the optimiser tunes ({', '.join(sorted(tuned))}), trying "
        "their values itself, and the rest of the script was already trained. Propose a change "
        "to the code instead: the model, the optimizer, the schedule, the data pipeline."
    )
