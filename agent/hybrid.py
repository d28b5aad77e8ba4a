"""The hybrid: the LLM changes the structure, the optimiser tunes the numbers.

Each proposal goes to one of the two. Their shares follow what each has been producing lately
(`Bandit`): an arm's score is its expected gain per experiment over its latest ``window``
decided experiments (the val_bpb gained by its keeps, plus a little for each keep, smoothed by
a prior), and the shares are the scores' proportions, with a floor for each arm so that
neither stops being tried. The proposals follow the shares closely and in turn (a smooth
weighted round robin), not by luck.

The LLM is told which constants the optimiser tunes: a proposal of the model that only
changes their values in a script already trained is refused, with the reason sent back to
it. A crash is the LLM's to fix. When the optimiser has nothing left to ask, the LLM proposes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from agent.proposal import (
    AgentEvent,
    EventSink,
    LedgerEntry,
    NoProposal,
    Proposal,
    ProposalContext,
    Proposer,
)
from agent.space import SearchSpace, structure_key

ARMS = ("llm", "optuna")
DEFAULT_FLOOR = 0.2
DEFAULT_WINDOW = 12
KEEP_CREDIT = 0.001  # a keep is worth this much besides its gain (bits per byte)
DECIDED = frozenset({"keep", "discard", "crash", "timeout"})


def arm_of(proposer: str | None) -> str | None:
    """The arm an experiment's proposer belongs to (the built-in nudger tunes numbers too)."""
    if proposer == "llm":
        return "llm"
    if proposer in ("optuna", "builtin"):
        return "optuna"
    return None


class Bandit:
    """The shares of the next experiments between the arms, from their recent results."""

    def __init__(
        self,
        arms: Sequence[str] = ARMS,
        *,
        floor: float = DEFAULT_FLOOR,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not 0 <= floor * len(arms) <= 1:
            raise ValueError(f"a floor of {floor} for {len(arms)} arms is more than everything")
        self.arms = tuple(arms)
        self.floor = floor
        self.window = window

    def scores(self, ledger: Sequence[LedgerEntry]) -> dict[str, float]:
        """Each arm's expected gain per experiment over its latest ``window`` experiments."""
        recent: dict[str, list[LedgerEntry]] = {arm: [] for arm in self.arms}
        for entry in reversed(ledger):
            arm = arm_of(entry.proposer)
            if arm in recent and entry.status in DECIDED and len(recent[arm]) < self.window:
                recent[arm].append(entry)
        scores = {}
        for arm, entries in recent.items():
            gained = sum(
                KEEP_CREDIT + max(0.0, -(entry.delta or 0.0))
                for entry in entries
                if entry.status == "keep"
            )
            scores[arm] = (gained + KEEP_CREDIT) / (len(entries) + 2)
        return scores

    def split(self, ledger: Sequence[LedgerEntry]) -> dict[str, float]:
        """The share of each arm, summing to 1, none below the floor."""
        return apply_floor(self.scores(ledger), self.floor)


def apply_floor(scores: Mapping[str, float], floor: float) -> dict[str, float]:
    """Proportional shares of the scores, raised to the floor where below it (the others give
    way in proportion)."""
    shares = {arm: 1.0 / len(scores) for arm in scores}
    total = sum(scores.values())
    if total > 0:
        shares = {arm: score / total for arm, score in scores.items()}
    fixed: dict[str, float] = {}
    while True:
        free = {arm: share for arm, share in shares.items() if arm not in fixed}
        room = 1.0 - sum(fixed.values())
        scale = room / sum(free.values()) if sum(free.values()) > 0 else 0.0
        low = [arm for arm, share in free.items() if share * scale < floor]
        if not low:
            return {**fixed, **{arm: share * scale for arm, share in free.items()}}
        fixed.update(dict.fromkeys(low, floor))


class HybridProposer:
    """Sends each proposal to the LLM or to the optimiser, by the bandit's shares."""

    name = "hybrid"

    def __init__(
        self,
        llm: Proposer,
        optimiser: Proposer,
        space: Callable[[ProposalContext], SearchSpace],
        *,
        bandit: Bandit | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.llm = llm
        self.optimiser = optimiser
        self.space = space
        self.bandit = bandit or Bandit()
        self.on_event = on_event
        self.credits = dict.fromkeys(self.bandit.arms, 0.0)
        self.latest_split: dict[str, float] | None = None

    def choose(self, split: Mapping[str, float]) -> str:
        """The arm of the next proposal: the one furthest behind its share."""
        for arm in self.credits:
            self.credits[arm] += split[arm]
        arm = max(self.credits, key=lambda name: (self.credits[name], name == "optuna"))
        self.credits[arm] -= 1.0
        return arm

    def propose(self, context: ProposalContext) -> Proposal:
        if context.fix is not None:
            return self.llm.propose(context)
        split = self.bandit.split(context.ledger)
        self._announce(split)
        if self.choose(split) == "optuna":
            self._asking(self.optimiser)
            try:
                return self.optimiser.propose(context)
            except NoProposal:
                pass  # nothing new to tune: the model proposes
        self._asking(self.llm)
        return self.llm.propose(self.for_llm(context))

    def _asking(self, proposer: Proposer) -> None:
        if self.on_event is not None:
            self.on_event(
                AgentEvent("asking", f"asking the {proposer.name}", {"proposer": proposer.name})
            )

    def for_llm(self, context: ProposalContext) -> ProposalContext:
        """The context the LLM gets: which constants the optimiser tunes, and the structures
        already trained, so that a change of numbers alone is refused."""
        names = self.space(context).names
        device = context.device
        structures = {structure_key(context.best_script, device, names)}
        structures.update(structure_key(t.script, device, names) for t in context.trials)
        return dataclasses.replace(
            context, tuned=frozenset(names), tuned_structures=frozenset(structures)
        )

    def _announce(self, split: dict[str, float]) -> None:
        rounded = {arm: round(share, 3) for arm, share in split.items()}
        if rounded == self.latest_split:
            return
        self.latest_split = rounded
        if self.on_event is not None:
            text = " · ".join(f"{arm} {share:.0%}" for arm, share in rounded.items())
            self.on_event(AgentEvent("split", f"the hybrid's split: {text}", {"split": rounded}))
