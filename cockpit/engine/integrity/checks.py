"""The public checks: a proposed script against the current best, and the flags as lines."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable

from agent.syntax import parse
from cockpit.engine.integrity.flags import SYNTAX, Flag
from cockpit.engine.integrity.scanner import Scanner
from cockpit.engine.integrity.seed import dump, seed_only_change


@functools.lru_cache(maxsize=16)
def _findings(source: str) -> tuple[Flag, ...]:
    """Every finding in a script that parses. Cached, like dump."""
    return tuple(Scanner(parse(source)).scan())


def _parses(source: str) -> bool:
    try:
        dump(source, False)
    except SyntaxError:
        return False
    return True


def inspect_script(old: str, new: str) -> list[Flag]:
    """Static integrity checks of a proposed train.py (`new`) against the current best (`old`).

    Returns the flags found in the new script, sorted by line; an empty list means nothing
    was found. What the old script already did was accepted with it and is not flagged again
    (a researcher's own baseline may do things a proposal may not add); a change that touches
    nothing but the random seed is flagged as seed_only. A new script that does not parse
    gives one syntax flag."""
    try:
        flags = list(_findings(new))
    except SyntaxError as error:
        return [
            Flag(
                SYNTAX,
                error.lineno,
                f"train.py does not parse ({error.msg}): fix the syntax before it can be checked",
            )
        ]
    if _parses(old):
        accepted = Counter((flag.kind, flag.message) for flag in _findings(old))
        kept: list[Flag] = []
        for flag in flags:
            key = (flag.kind, flag.message)
            if accepted[key] > 0:
                accepted[key] -= 1
            else:
                kept.append(flag)
        flags = kept
        seed_flag = seed_only_change(old, new) if old != new else None
        if seed_flag is not None:
            flags.append(seed_flag)
    return sorted(flags, key=lambda flag: (flag.line is None, flag.line or 0, flag.kind))


def describe_flags(flags: Iterable[Flag]) -> str:
    """The flags as lines for the model and the researcher: `line N: [kind] message`."""
    lines = []
    for flag in flags:
        where = f"line {flag.line}" if flag.line is not None else "train.py"
        lines.append(f"{where}: [{flag.kind}] {flag.message}")
    return "\n".join(lines)
