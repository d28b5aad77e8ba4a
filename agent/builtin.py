"""The built-in proposer: perturbs the numeric CAPS constants at the top of train.py.

It needs no model, so research goes on when no LLM is reachable. Each proposal changes one
constant by a factor (doubling or halving sizes, scaling rates), edits the number in place so
that the rest of the file (comments, layout) is untouched, and never proposes a script that
was tried before. Constants written as `A if CUDA else B` have the branch for the device
changed. Bookkeeping constants (how often to report, when to plan) are left alone.
"""

from __future__ import annotations

import ast
import math
import random
from dataclasses import dataclass

from agent.proposal import DESCRIPTION_LIMIT, NoProposal, Proposal, ProposalContext, script_hash

# Constants that steer bookkeeping, not the model or its training.
DEFAULT_EXCLUDED = frozenset({"REPORT_EVERY", "UNTIMED_STEPS", "PLAN_AT", "CUDA", "COMPILE"})
FLOAT_FACTORS = (0.5, 0.7, 1.4, 2.0)
PAIR_ATTEMPTS = 500


@dataclass(frozen=True)
class Constant:
    """A numeric literal assigned to a CAPS name at module level, with its exact position."""

    name: str
    value: int | float
    line: int  # 1-based
    start: int  # column offsets of the literal on that line
    end: int


def _number(node: ast.expr) -> int | float | None:
    # bool is an int subclass, and True is no hyperparameter to scale.
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def find_constants(source: str, device: str = "cpu") -> list[Constant]:
    """The tunable constants of a script, in file order."""
    found: list[Constant] = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        literal: ast.expr = node.value
        if (
            isinstance(literal, ast.IfExp)
            and isinstance(literal.test, ast.Name)
            and literal.test.id == "CUDA"
        ):
            literal = literal.body if device == "cuda" else literal.orelse
        value = _number(literal)
        if value is None or literal.lineno != literal.end_lineno or literal.end_col_offset is None:
            continue
        found.append(
            Constant(target.id, value, literal.lineno, literal.col_offset, literal.end_col_offset)
        )
    return found


def _format(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6g}"
    return text if any(c in text for c in ".e") else text + ".0"


def candidates(constant: Constant) -> list[int | float]:
    """The values a constant may be moved to, nearest first."""
    value = constant.value
    if isinstance(value, int):
        if value <= 0:
            return [1]
        if value & (value - 1) == 0 and value >= 2:  # a power of two stays one
            return [value * 2, value // 2]
        steps = (value + 1, value - 1, round(value * 1.5), round(value / 1.5))
        return list(dict.fromkeys(v for v in steps if v > 0 and v != value))
    if value == 0.0:
        return [0.1, 0.01]
    options = [value * factor for factor in FLOAT_FACTORS]
    if 0.0 < value < 1.0:  # fractions stay fractions
        options = [v for v in options if v < 1.0] + [1.0 - (1.0 - value) / 2]
    return sorted(
        {float(f"{v:.6g}") for v in options if math.isfinite(v)},
        key=lambda v: abs(math.log(v / value)),
    )


def replace_literal(source: str, constant: Constant, value: int | float) -> str:
    lines = source.splitlines(keepends=True)
    line = lines[constant.line - 1]
    # ast columns count UTF-8 bytes; CAPS assignments are ASCII up to the literal.
    encoded = line.encode("utf-8")
    new_line = (
        encoded[: constant.start] + _format(value).encode() + encoded[constant.end :]
    ).decode("utf-8")
    lines[constant.line - 1] = new_line
    return "".join(lines)


class BuiltinProposer:
    """Perturbs one constant at a time, at random but reproducibly, never twice the same."""

    name = "builtin"

    def __init__(self, seed: int = 0, excluded: frozenset[str] = DEFAULT_EXCLUDED) -> None:
        self._random = random.Random(seed)
        self._excluded = excluded
        self._tried: set[str] = set()

    def propose(self, context: ProposalContext) -> Proposal:
        if context.fix is not None:
            raise NoProposal("the built-in proposer cannot fix a crash, only perturb constants")
        source = context.best_script
        constants = [
            c for c in find_constants(source, context.device) if c.name not in self._excluded
        ]
        if not constants:
            raise NoProposal("train.py has no numeric CAPS constants to perturb")
        seen = set(context.tried_hashes) | self._tried | {script_hash(source)}
        options = [(constant, value) for constant in constants for value in candidates(constant)]
        self._random.shuffle(options)
        for constant, value in options:
            proposal = self._proposal(source, [(constant, value)], seen)
            if proposal is not None:
                return proposal
        # Every single change was tried: move two constants at once, as long as that finds
        # something new (this goes on far longer than a night needs).
        for _ in range(PAIR_ATTEMPTS):
            first, second = self._random.sample(options, 2)
            if first[0].name != second[0].name:
                proposal = self._proposal(source, [first, second], seen)
                if proposal is not None:
                    return proposal
        raise NoProposal("every single-constant change of the current best script has been tried")

    def _proposal(
        self, source: str, changes: list[tuple[Constant, int | float]], seen: set[str]
    ) -> Proposal | None:
        script = source
        # Later lines first, so that earlier positions stay valid.
        for constant, value in sorted(changes, key=lambda change: change[0].line, reverse=True):
            script = replace_literal(script, constant, value)
        digest = script_hash(script)
        if digest in seen:
            return None
        self._tried.add(digest)
        parts = [f"{c.name} {_format(c.value)} -> {_format(v)}" for c, v in changes]
        reasons = [
            f"{'raising' if v > c.value else 'lowering'} {c.name} from {_format(c.value)} to {_format(v)}"
            for c, v in changes
        ]
        hypothesis = " and ".join(reasons)
        return Proposal(
            description=", ".join(parts)[:DESCRIPTION_LIMIT],
            hypothesis=f"{hypothesis[0].upper()}{hypothesis[1:]} may lower val_bpb within the same time budget.",
            script=script,
            proposer=self.name,
            details={
                "constant": changes[0][0].name
                if len(changes) == 1
                else [c.name for c, _ in changes],
                "old": changes[0][0].value if len(changes) == 1 else [c.value for c, _ in changes],
                "new": changes[0][1] if len(changes) == 1 else [v for _, v in changes],
            },
        )
