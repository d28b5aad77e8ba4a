"""The hybrid: the LLM changes the structure, the optimiser tunes the numbers.

Each proposal goes to one of the two. Their shares follow what each has been producing lately
(`Bandit`): an arm's score is its expected gain per experiment over its latest ``window``
decided experiments (the val_bpb gained by its keeps, plus a little for each keep, smoothed by
a prior), weighed by the share of the proposals asked of it that it made: a model that gives
nothing usable, its turns made by a stand-in, loses its share. The shares are the scores'
proportions, with a floor for each arm so that neither stops being tried. The proposals
follow the shares closely and in turn (a smooth weighted round robin), not by luck.

The LLM is told which constants the optimiser tunes: a proposal of the model that only
changes their values in a script already trained is refused, with the reason sent back to
it. A crash is the LLM's to fix. When the optimiser has nothing left to ask, the LLM proposes.
The model's missed turns are said as ``missed`` events, from which an engine that starts again
on the run restores them (`HybridProposer.restore`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from agent import names
from agent.ollama_backend import AgentUnavailable
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

ARMS = (names.LLM, names.OPTUNA)
DEFAULT_FLOOR = 0.2
DEFAULT_WINDOW = 12
KEEP_CREDIT = 0.001  # a keep is worth this much besides its gain (bits per byte)
DECIDED = frozenset({"keep", "discard", "crash", "timeout"})


def arm_of(proposer: str | None) -> str | None:
    """The arm an experiment's proposer belongs to (the built-in nudger tunes numbers too)."""
    if proposer == names.LLM:
        return names.LLM
    if proposer in names.NUMBERS_ONLY:
        return names.OPTUNA
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

    def scores(
        self, ledger: Sequence[LedgerEntry], missed: Mapping[str, Sequence[int]] | None = None
    ) -> dict[str, float]:
        """Each arm's expected gain per proposal asked of it, over its latest ``window``.

        ``missed``: for an arm, the proposals it was asked for and failed to make (the model
        gave nothing usable), each as the number of ledger entries there were then. A miss
        gains nothing, and its stand-in's experiment is the stand-in's: the arm's expected
        gain per experiment is weighed by the share of its proposals it made.
        """
        missed_at = {
            arm: Counter(min(p, len(ledger)) for p in (missed or {}).get(arm, ()))
            for arm in self.arms
        }
        made: dict[str, list[LedgerEntry]] = {arm: [] for arm in self.arms}
        misses = dict.fromkeys(self.arms, 0)

        def room(arm: str) -> bool:
            return len(made[arm]) + misses[arm] < self.window

        for position in range(len(ledger), -1, -1):
            # The misses made when the ledger held ``position`` entries came after them.
            for name in self.arms:
                for _ in range(missed_at[name][position]):
                    if room(name):
                        misses[name] += 1
            if position == 0:
                break
            entry = ledger[position - 1]
            arm = arm_of(entry.proposer)
            if arm in made and entry.status in DECIDED and room(arm):
                made[arm].append(entry)
        scores = {}
        for arm, entries in made.items():
            gained = sum(
                KEEP_CREDIT + max(0.0, -(entry.delta or 0.0))
                for entry in entries
                if entry.status == "keep"
            )
            per_experiment = (gained + KEEP_CREDIT) / (len(entries) + 2)
            made_share = (len(entries) + 1) / (len(entries) + misses[arm] + 1)
            scores[arm] = per_experiment * made_share
        return scores

    def split(
        self, ledger: Sequence[LedgerEntry], missed: Mapping[str, Sequence[int]] | None = None
    ) -> dict[str, float]:
        """The share of each arm, summing to 1, none below the floor."""
        return apply_floor(self.scores(ledger, missed), self.floor)


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

    name = names.HYBRID

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
        # The proposals the model was asked for and failed to make, each as the length of
        # the ledger then (only the latest window's worth can count).
        self.llm_missed: list[int] = []

    def choose(self, split: Mapping[str, float]) -> str:
        """The arm of the next proposal: the one furthest behind its share."""
        for arm in self.credits:
            self.credits[arm] += split[arm]
        arm = max(self.credits, key=lambda name: (self.credits[name], name == names.OPTUNA))
        self.credits[arm] -= 1.0
        return arm

    def propose(self, context: ProposalContext) -> Proposal:
        if context.fix is not None:
            return self.llm.propose(context)
        split = self.bandit.split(context.ledger, {names.LLM: self.llm_missed})
        self._announce(split)
        if self.choose(split) == names.OPTUNA:
            self._asking(self.optimiser)
            try:
                return self.optimiser.propose(context)
            except NoProposal:
                pass  # nothing new to tune: the model proposes
        self._asking(self.llm)
        try:
            return self.llm.propose(self.for_llm(context))
        except (NoProposal, AgentUnavailable):
            # The model's turn gave nothing (a stop's `ReplyCancelled` is no failure of it).
            self._missed(len(context.ledger))
            raise

    def _missed(self, position: int) -> None:
        """The model made no proposal for its turn, with ``position`` entries in the ledger;
        said as an event (``missed``), so that an engine that starts again knows it."""
        self.llm_missed = [*self.llm_missed, position][-self.bandit.window :]
        if self.on_event is not None:
            self.on_event(
                AgentEvent(
                    "missed",
                    "the model made no proposal for its turn of the hybrid",
                    {"arm": names.LLM, "ledger": position},
                )
            )

    def restore(self, missed: Sequence[int]) -> None:
        """The model's missed turns of an earlier engine on this run (each as the length of the
        ledger then, oldest first), as its ``missed`` events said them."""
        self.llm_missed = [*missed, *self.llm_missed][-self.bandit.window :]

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
