"""The built-in proposer: one constant at a time, in place, never the same script twice."""

from __future__ import annotations

import ast
import difflib
import math

import pytest

from agent.builtin import BuiltinProposer, candidates
from agent.constants import find_constants
from agent.proposal import NoProposal, ProposalContext, script_hash
from trainer import template_path

TEMPLATE = template_path().read_text()


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    diff = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    removed = [line[1:] for line in diff if line.startswith("-")]
    added = [line[1:] for line in diff if line.startswith("+")]
    return list(zip(removed, added, strict=True))


def module_constants(source: str, device: str) -> dict[str, float]:
    return {c.name: c.value for c in find_constants(source, device)}


def test_the_template_constants_are_found_for_each_device() -> None:
    cpu, cuda = module_constants(TEMPLATE, "cpu"), module_constants(TEMPLATE, "cuda")
    assert cpu["DEPTH"] == 4 and cuda["DEPTH"] == 8
    assert cpu["BATCH_SIZE"] < cuda["BATCH_SIZE"]
    assert cpu["LEARNING_RATE"] == cuda["LEARNING_RATE"] == 0.003
    assert "CUDA" not in cpu and "COMPILE" not in cpu  # not numbers


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_proposal_changes_one_number_in_place_and_still_parses(device: str) -> None:
    proposer = BuiltinProposer(seed=3)
    for _ in range(12):
        proposal = proposer.propose(ProposalContext(best_script=TEMPLATE, device=device))
        ast.parse(proposal.script)
        ((old_line, new_line),) = changed_lines(TEMPLATE, proposal.script)
        name = proposal.details["constant"]
        assert old_line.startswith(f"{name} = ") and new_line.startswith(f"{name} = ")
        # Comments and the other branch of a device-dependent constant are untouched.
        assert old_line.split("#")[1:] == new_line.split("#")[1:]
        after = module_constants(proposal.script, device)[name]
        assert after == proposal.details["new"] != proposal.details["old"]
        other = "cuda" if device == "cpu" else "cpu"
        assert module_constants(proposal.script, other) == module_constants(TEMPLATE, other) or (
            " if CUDA else " not in old_line
        )
        assert proposal.proposer == "builtin" and len(proposal.description) <= 60
        assert name in proposal.description and proposal.hypothesis


def test_bookkeeping_constants_are_never_touched() -> None:
    proposer = BuiltinProposer(seed=0)
    tried: set[str] = set()
    names = set()
    for _ in range(60):
        proposal = proposer.propose(
            ProposalContext(best_script=TEMPLATE, tried_hashes=frozenset(tried))
        )
        tried.add(proposal.script_hash)
        constant = proposal.details["constant"]
        names.update(constant if isinstance(constant, list) else [constant])
    assert not names & {"REPORT_EVERY", "UNTIMED_STEPS", "PLAN_AT"}
    assert len(names) > 8  # it explores many constants, not one


def test_it_never_repeats_a_script_and_says_when_it_has_run_out() -> None:
    source = "import torch\n\nLEARNING_RATE = 0.1  # the only knob\n\ndef train(ctx):\n    pass\n"
    proposer = BuiltinProposer(seed=1)
    seen = {script_hash(source)}
    for _ in range(len(candidates(find_constants(source)[0]))):
        proposal = proposer.propose(ProposalContext(best_script=source))
        assert proposal.script_hash not in seen
        seen.add(proposal.script_hash)
    with pytest.raises(NoProposal, match="every single-constant change"):
        proposer.propose(ProposalContext(best_script=source))


def test_when_single_changes_run_out_two_constants_move_together() -> None:
    source = "LEARNING_RATE = 0.1\nWIDTH = 64\n"
    proposer = BuiltinProposer(seed=4)
    singles = len(candidates(find_constants(source)[0])) + len(
        candidates(find_constants(source)[1])
    )
    scripts = {
        proposer.propose(ProposalContext(best_script=source)).script for _ in range(singles + 3)
    }
    assert len(scripts) == singles + 3
    pair = [s for s in scripts if len(changed_lines(source, s)) == 2]
    assert len(pair) == 3
    values = module_constants(pair[0], "cpu")
    assert values["LEARNING_RATE"] != 0.1 and values["WIDTH"] != 64


def test_scripts_tried_elsewhere_are_skipped() -> None:
    first = BuiltinProposer(seed=5).propose(ProposalContext(best_script=TEMPLATE))
    again = BuiltinProposer(seed=5).propose(
        ProposalContext(best_script=TEMPLATE, tried_hashes=frozenset({first.script_hash}))
    )
    assert again.script_hash != first.script_hash


def test_the_same_seed_gives_the_same_proposals() -> None:
    def run(seed: int) -> list[str]:
        proposer = BuiltinProposer(seed=seed)
        return [
            proposer.propose(ProposalContext(best_script=TEMPLATE)).description for _ in range(5)
        ]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_script_without_constants_has_nothing_to_propose() -> None:
    with pytest.raises(NoProposal, match="no numeric CAPS constants"):
        BuiltinProposer().propose(ProposalContext(best_script="def train(ctx):\n    return None\n"))


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("WIDTH = 128\n", lambda values: set(values) == {256, 64}),
        ("WARMDOWN = 0.4\n", lambda values: all(0 < v < 1 for v in values) and 0.7 in values),
        # A learning rate is scaled, never sent halfway to 1 as a fraction would be.
        ("LEARNING_RATE = 0.003\n", lambda values: values == [0.0042, 0.0021, 0.0015, 0.006]),
        ("EMA_DECAY = 0.9\n", lambda values: max(values) <= 1.0 and 0.95 not in values),
        ("FINAL = 0.0\n", lambda values: values == [0.1, 0.01]),
        ("STEPS = 3\n", lambda values: all(isinstance(v, int) and v > 0 for v in values)),
        (
            "RATE = 3e-4\n",
            lambda values: all(isinstance(v, float) and math.isfinite(v) for v in values),
        ),
    ],
)
def test_candidate_values_keep_the_kind_of_the_constant(source: str, check) -> None:
    (constant,) = find_constants(source)
    values = candidates(constant)
    assert values and check(values), values


def test_floats_stay_float_literals() -> None:
    source = "GRAD_CLIP = 1.0\n"
    proposals = set()
    proposer = BuiltinProposer(seed=2)
    for _ in range(3):
        proposal = proposer.propose(ProposalContext(best_script=source))
        value = ast.literal_eval(proposal.script.split("=")[1].strip())
        assert isinstance(value, float)
        proposals.add(value)
    assert len(proposals) == 3


def test_the_builtin_proposer_declines_to_fix_a_crash() -> None:
    from agent.proposal import CrashReport

    script = "LEARNING_RATE = 0.1\n"
    crash = CrashReport(3, "LEARNING_RATE 0.1 -> 0.2", script, "crash", "Traceback ...")
    with pytest.raises(NoProposal, match="cannot fix"):
        BuiltinProposer().propose(ProposalContext(best_script=script, fix=crash))
