"""The built-in proposer: perturbs the numeric CAPS constants at the top of train.py.

It needs no model, so research goes on when no LLM is reachable. Each proposal changes one
constant by a factor (doubling or halving sizes, scaling rates), edits the number in place so
that the rest of the file (comments, layout) is untouched, and never proposes a script that
was tried before. Constants written as `A if CUDA else B` have the branch for the device
changed. Bookkeeping constants (how often to report, when to plan) are left alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from agent import names
from agent.constants import Constant, find_constants, format_value, replace_literal
from agent.proposal import DESCRIPTION_LIMIT, NoProposal, Proposal, ProposalContext, script_hash
from agent.space import BOOKKEEPING, SpaceError, build_space, is_fraction, read_program_block

DEFAULT_EXCLUDED = BOOKKEEPING
FLOAT_FACTORS = (0.5, 0.7, 1.4, 2.0)
PAIR_ATTEMPTS = 500


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
    if is_fraction(constant.name, value):  # fractions stay fractions
        options = [v for v in options if v < 1.0] + [1.0 - (1.0 - value) / 2]
    elif value < 1.0:  # a rate or a decay: scaled, up to 1 (as in the optimiser's window)
        options = [v for v in options if v <= 1.0]
    return sorted(
        {float(f"{v:.6g}") for v in options if math.isfinite(v)},
        key=lambda v: abs(math.log(v / value)),
    )


class BuiltinProposer:
    """Perturbs one constant at a time, at random but reproducibly, never twice the same."""

    name = names.BUILTIN

    def __init__(
        self,
        seed: int = 0,
        excluded: frozenset[str] = DEFAULT_EXCLUDED,
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        self._random = random.Random(seed)
        self._excluded = excluded
        self._overrides = dict(overrides or {})
        self._tried: set[str] = set()

    def _movable(self, context: ProposalContext) -> frozenset[str]:
        """The constants it may move: those of the search space, so that a constant the
        researcher pins (config.toml, program.md) stays put."""
        try:
            overrides = {**self._overrides, **read_program_block(context.program)}
            space = build_space(
                context.best_script, context.device, overrides=overrides, excluded=self._excluded
            )
        except SpaceError:  # the optimiser says what is wrong with the ranges
            space = build_space(context.best_script, context.device, excluded=self._excluded)
        return space.names

    def propose(self, context: ProposalContext) -> Proposal:
        if context.fix is not None:
            raise NoProposal("the built-in proposer cannot fix a crash, only perturb constants")
        source = context.best_script
        movable = self._movable(context)
        constants = [c for c in find_constants(source, context.device) if c.name in movable]
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
        parts = [f"{c.name} {format_value(c.value)} -> {format_value(v)}" for c, v in changes]
        reasons = [
            f"{'raising' if v > c.value else 'lowering'} {c.name} from {format_value(c.value)} to {format_value(v)}"
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
