"""The optimiser proposer: Optuna over the script's constants, its study rebuilt from the run."""

from __future__ import annotations

import concurrent.futures
import math
import threading

import pytest

from agent.builtin import BuiltinProposer
from agent.optimiser import OptunaProposer, describe_change
from agent.proposal import (
    RUNNING,
    AgentEvent,
    CrashReport,
    LedgerEntry,
    NoProposal,
    ProposalContext,
    TrialRecord,
)
from agent.space import values_of
from tests.conftest import REPO

SCRIPT = (REPO / "trainer" / "train.py").read_text()
NAMES = ("LEARNING_RATE", "EMBED_LR", "BATCH_SIZE", "WIDTH", "DEPTH", "WARMDOWN_FRACTION")
PROGRAM = "```search\n" + "\n".join(
    f'{name} = "pinned"'
    for name in (
        "HEAD_DIM", "MLP_RATIO", "LOGIT_SOFTCAP", "ROPE_BASE", "WEIGHT_DECAY", "BETA1", "BETA2",
        "WARMUP_STEPS", "FINAL_LR_FRACTION", "GRAD_CLIP",
    )
) + "\n```\n"  # fmt: skip


def loss(values: dict[str, float]) -> float:
    """A smooth made-up val_bpb, lowest at a learning rate of 0.01 and a batch of 8."""
    return (
        1.5
        + (math.log10(float(values["LEARNING_RATE"])) + 2) ** 2
        + 0.1 * (math.log2(float(values["BATCH_SIZE"])) - 3) ** 2
    )


def point(script: str) -> tuple[float, ...]:
    values = values_of(script, "cpu", NAMES)
    return tuple(values[name] for name in NAMES)


def context(trials: list[TrialRecord], **fields: object) -> ProposalContext:
    return ProposalContext(
        best_script=SCRIPT,
        program=PROGRAM,
        trials=tuple(trials),
        tried_hashes=frozenset(),
        **fields,  # type: ignore[arg-type]
    )


def research(proposer: OptunaProposer, trials: list[TrialRecord], count: int) -> None:
    """``count`` proposals of ``proposer``, each scored by `loss` before the next."""
    for _ in range(count):
        proposal = proposer.propose(context(trials))
        values = values_of(proposal.script, "cpu", NAMES)
        trials.append(TrialRecord(len(trials), proposal.script, "discard", loss(values), "optuna"))


def test_the_space_is_the_script_less_what_program_md_pins() -> None:
    space = OptunaProposer().space(context([]))
    assert sorted(space.names) == sorted(NAMES)


def test_a_proposal_changes_only_numbers_of_the_space_and_says_which() -> None:
    proposal = OptunaProposer(seed=3).propose(context([TrialRecord(0, SCRIPT, "keep", 2.0)]))
    assert proposal.proposer == "optuna"
    changed = proposal.details["changes"]
    assert isinstance(changed, dict) and changed and set(changed) <= set(NAMES)
    before, after = SCRIPT.splitlines(), proposal.script.splitlines()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        if old != new:
            assert old.split("=")[0] == new.split("=")[0] and old.split("=")[0].strip() in changed
    first = next(iter(changed))
    assert proposal.description.startswith(first)


def test_a_point_changes_few_constants_at_a_time_but_all_get_tuned() -> None:
    proposer = OptunaProposer(seed=6, per_point=2)
    trials = [TrialRecord(0, SCRIPT, "keep", loss(values_of(SCRIPT, "cpu", NAMES)))]
    moved: set[str] = set()
    for _ in range(12):
        proposal = proposer.propose(context(trials))
        changes = proposal.details["changes"]
        assert isinstance(changes, dict) and 1 <= len(changes) <= 2
        moved.update(changes)
        values = values_of(proposal.script, "cpu", NAMES)
        trials.append(TrialRecord(len(trials), proposal.script, "discard", loss(values)))
    assert moved == set(NAMES)
    everything = OptunaProposer(seed=6, per_point=0).propose(context(trials[:1]))
    assert len(everything.details["changes"]) > 2  # type: ignore[arg-type]


def test_a_study_rebuilt_after_a_restart_asks_no_point_twice() -> None:
    trials = [TrialRecord(0, SCRIPT, "keep", loss(values_of(SCRIPT, "cpu", NAMES)))]
    research(OptunaProposer(seed=1), trials, 8)
    # The engine died with two proposals in flight.
    before = OptunaProposer(seed=1)
    for _ in range(2):
        proposal = before.propose(context(trials))
        trials.append(TrialRecord(len(trials), proposal.script, RUNNING))
    known = {point(t.script) for t in trials}
    assert len(known) == len(trials)
    # A new process: the study comes back from the trials alone.
    after = OptunaProposer(seed=1)
    for _ in range(12):
        proposal = after.propose(context(trials))
        assert point(proposal.script) not in known
        known.add(point(proposal.script))
        trials.append(TrialRecord(len(trials), proposal.script, RUNNING))


def test_the_study_learns_from_the_trials() -> None:
    trials = [TrialRecord(0, SCRIPT, "keep", loss(values_of(SCRIPT, "cpu", NAMES)))]
    research(OptunaProposer(seed=0), trials, 30)
    best = min(t.val_bpb for t in trials if t.val_bpb is not None)
    assert best < trials[0].val_bpb - 0.2  # the baseline's rate is 0.003: far from 0.01


def test_asks_side_by_side_give_distinct_points() -> None:
    proposer = OptunaProposer(seed=2)
    trials = [TrialRecord(0, SCRIPT, "keep", 2.0)]
    research(proposer, trials, 3)
    start = threading.Barrier(6)

    def ask() -> tuple[float, ...]:
        start.wait()
        return point(proposer.propose(context(trials)).script)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        points = list(pool.map(lambda _: ask(), range(6)))
    assert len(set(points)) == 6
    assert not set(points) & {point(t.script) for t in trials}


def test_cma_es_improves_on_the_baseline() -> None:
    trials = [TrialRecord(0, SCRIPT, "keep", loss(values_of(SCRIPT, "cpu", NAMES)))]
    research(OptunaProposer(sampler="cmaes", seed=0), trials, 24)
    points = [point(t.script) for t in trials]
    assert len(set(points)) == len(points)
    assert min(t.val_bpb for t in trials if t.val_bpb is not None) < trials[0].val_bpb


def test_a_crash_counts_as_bad_as_the_worst_result() -> None:
    proposer = OptunaProposer(seed=4)
    trials = [TrialRecord(0, SCRIPT, "keep", 2.0)]
    research(proposer, trials, 2)
    crashed = proposer.propose(context(trials))
    trials.append(TrialRecord(len(trials), crashed.script, "crash", None))
    proposer.propose(context(trials))
    study = proposer._study
    assert study is not None
    values = [t.value for t in study.study.trials if t.state.name == "COMPLETE"]
    assert max(values) == max(t.val_bpb for t in trials if t.val_bpb is not None)
    assert len(values) == 4  # the baseline, two results and the crash


def test_a_crash_is_not_the_optimisers_to_fix() -> None:
    fix = CrashReport(1, "x", SCRIPT, "crash", "Traceback")
    with pytest.raises(NoProposal, match="cannot fix a crash"):
        OptunaProposer().propose(context([], fix=fix))


def test_on_a_plateau_every_other_point_is_drawn_at_random() -> None:
    proposer = OptunaProposer(seed=5)
    trials = [TrialRecord(0, SCRIPT, "keep", 2.0)]
    research(proposer, trials, 3)
    ledger = [LedgerEntry(n, "x", "discard", 2.1, 0.1, "optuna") for n in range(1, 5)]
    explored = [
        proposer.propose(context(trials, ledger=ledger, plateau_after=4)).details["explore"]
        for _ in range(4)
    ]
    assert explored == [True, False, True, False]
    calm = proposer.propose(context(trials, ledger=ledger, plateau_after=5))
    assert calm.details["explore"] is False


def test_bad_ranges_hand_over_to_the_nudger_and_say_why() -> None:
    events: list[AgentEvent] = []
    proposer = OptunaProposer(last_resort=BuiltinProposer(seed=0), on_event=events.append)
    broken = ProposalContext(
        best_script=SCRIPT, program="```search\nLEARNING_RATE = { low = 1, high = 0.1 }\n```\n"
    )
    assert proposer.propose(broken).proposer == "builtin"
    assert proposer.propose(broken).proposer == "builtin"
    assert len(events) == 1  # said once
    assert "low must be below high" in events[0].message
    assert "built-in proposer stands in" in events[0].message
    with pytest.raises(NoProposal, match="low must be below high"):
        OptunaProposer().propose(broken)


def test_a_range_naming_no_constant_is_said() -> None:
    events: list[AgentEvent] = []
    proposer = OptunaProposer(overrides={"LERNING_RATE": "pinned"}, on_event=events.append)
    proposer.propose(context([]))
    assert [e.kind for e in events] == ["search"] and "LERNING_RATE" in events[0].message


def test_descriptions_fit_the_ledger() -> None:
    old = {f"CONSTANT_{n}": 1 for n in range(10)}
    new = {name: 2 for name in old}
    text = describe_change(old, new)
    assert len(text) <= 60 and text.endswith("more") and text.startswith("CONSTANT_0 2")
    assert describe_change({"A": 1, "B": 2}, {"A": 1, "B": 3}) == "B 3"
