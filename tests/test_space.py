"""The optimiser's search space: what it tunes, over what range, and what the researcher says."""

from __future__ import annotations

import pytest

from agent.proposal import ProposalContext
from agent.space import (
    Param,
    SpaceError,
    build_space,
    numbers_only,
    read_program_block,
    structure_key,
    values_of,
    write_values,
)

SCRIPT = '''"""A script with one of each kind of constant."""
import os

CUDA = os.environ.get("COCKPIT_DEVICE") == "cuda"
DEPTH = 8 if CUDA else 4  # blocks
WIDTH = 128  # a power of two
HIDDEN = 768 if CUDA else 96  # a multiple of 128 on a GPU
WARMUP_STEPS = 3
MLP_RATIO = 1
LAYERS_TO_SKIP = 0
OFFSET = -3
LEARNING_RATE = 0.003  # peak rate
WEIGHT_DECAY = 0.1
EPSILON = 0.00001
DROPOUT_SHARE = 0.4
FINAL_LR_FRACTION = 0.0
SOFTCAP = 15.0
ROPE_BASE = 10000.0
SHIFT = -0.5
USE_BIAS = True
ACTIVATION = "gelu"
REPORT_EVERY = 10
COMPILE = CUDA
lowercase = 3


def train(ctx):
    return None
'''


def _space(overrides: dict[str, object] | None = None, device: str = "cpu"):
    space = build_space(SCRIPT, device, overrides=overrides)
    return {p.name: p for p in space.params}, space


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("WIDTH", Param("WIDTH", "pow2", 64, 256, log=True)),  # a power of two stays one
        ("DEPTH", Param("DEPTH", "int", 2, 8)),  # the CPU branch; a count, not a size
        ("WARMUP_STEPS", Param("WARMUP_STEPS", "int", 1, 6)),
        ("MLP_RATIO", Param("MLP_RATIO", "int", 1, 4)),
        ("HIDDEN", Param("HIDDEN", "int", 48, 192, step=16)),  # keeps its granularity
        ("LAYERS_TO_SKIP", Param("LAYERS_TO_SKIP", "int", 0, 8)),
        ("LEARNING_RATE", Param("LEARNING_RATE", "float", 0.00075, 0.012, log=True)),
        ("WEIGHT_DECAY", Param("WEIGHT_DECAY", "float", 0.025, 0.4, log=True)),  # a decay: log
        ("EPSILON", Param("EPSILON", "float", 2.5e-06, 4e-05, log=True)),  # small: log
        ("DROPOUT_SHARE", Param("DROPOUT_SHARE", "float", 0.2, 0.7)),  # a fraction: linear
        ("FINAL_LR_FRACTION", Param("FINAL_LR_FRACTION", "float", 0.0, 0.5)),  # a zero
        ("SOFTCAP", Param("SOFTCAP", "float", 7.5, 30.0, log=True)),
        ("ROPE_BASE", Param("ROPE_BASE", "float", 5000.0, 20000.0, log=True)),
    ],
)
def test_inferred_ranges(name: str, expected: Param) -> None:
    params, _ = _space()
    assert params[name] == expected


def test_the_cuda_branch_is_read_on_a_gpu() -> None:
    params, _ = _space(device="cuda")
    assert params["DEPTH"] == Param("DEPTH", "int", 4, 16, step=2)
    assert params["HIDDEN"] == Param("HIDDEN", "int", 384, 1536, step=128)
    assert params["HIDDEN"].decode(1000) == 1024 and not params["HIDDEN"].contains(1000)


def test_booleans_strings_bookkeeping_and_lowercase_are_left_alone() -> None:
    _, space = _space()
    # A negative number is an expression (a minus and a literal): left alone too.
    left = (
        "USE_BIAS",
        "ACTIVATION",
        "REPORT_EVERY",
        "COMPILE",
        "CUDA",
        "lowercase",
        "OFFSET",
        "SHIFT",
    )
    for name in left:
        assert name not in space.names
    assert len(space.params) == 13


def test_program_md_pins_a_constant() -> None:
    program = 'Notes.\n\n```search\nROPE_BASE = "pinned"\nSOFTCAP = false\n```\n'
    params, space = _space(read_program_block(program))
    assert "ROPE_BASE" not in params and "SOFTCAP" not in params
    assert space.pinned == ("SOFTCAP", "ROPE_BASE")


def test_bounds_given_in_config() -> None:
    params, _ = _space(
        {"LEARNING_RATE": {"low": 0.001, "high": 0.01}, "DEPTH": {"low": 2, "high": 6}}
    )
    assert params["LEARNING_RATE"] == Param("LEARNING_RATE", "float", 0.001, 0.01, log=True)
    # A power of two given plain bounds is searched over every integer between them.
    assert params["DEPTH"] == Param("DEPTH", "int", 2, 6)


def test_a_type_and_scale_can_be_given() -> None:
    params, _ = _space(
        {"WIDTH": {"type": "pow2", "low": 64, "high": 1024}, "SOFTCAP": {"log": False}}
    )
    assert params["WIDTH"] == Param("WIDTH", "pow2", 64, 1024, log=True)
    assert params["SOFTCAP"] == Param("SOFTCAP", "float", 7.5, 30.0, log=False)


def test_a_step_can_be_given() -> None:
    params, _ = _space({"HIDDEN": {"low": 32, "high": 256, "step": 32}})
    assert params["HIDDEN"] == Param("HIDDEN", "int", 32, 256, step=32)


def test_an_override_opts_a_bookkeeping_constant_in() -> None:
    params, _ = _space({"REPORT_EVERY": {"low": 1, "high": 20}})
    assert params["REPORT_EVERY"] == Param("REPORT_EVERY", "int", 1, 20)


def test_a_range_always_holds_the_current_value() -> None:
    params, _ = _space({"LEARNING_RATE": {"low": 0.01, "high": 0.1}})
    assert params["LEARNING_RATE"].low == 0.003


def test_the_window_moves_with_the_best_and_a_given_range_stays_put() -> None:
    best = write_values(SCRIPT, "cpu", {"LEARNING_RATE": 0.012, "WIDTH": 256})
    space = build_space(best, "cpu", overrides={"WIDTH": {"low": 64, "high": 512}})
    assert space.param("LEARNING_RATE") == Param("LEARNING_RATE", "float", 0.003, 0.048, log=True)
    assert space.param("WIDTH") == Param("WIDTH", "int", 64, 512)


def test_an_override_of_no_constant_is_reported() -> None:
    _, space = _space({"LERNING_RATE": {"low": 0.1, "high": 1.0}})
    assert space.unknown == ("LERNING_RATE",)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WIDTH": "frozen"}, 'WIDTH = "pinned"'),
        ({"WIDTH": {"lo": 1}}, "only low, high, log, step and type"),
        ({"LEARNING_RATE": {"low": 0.1, "high": 0.01}}, "low must be below high"),
        ({"LEARNING_RATE": {"low": 0.0, "high": 0.1, "log": True}}, "low must be above 0"),
        ({"WIDTH": {"type": "pow2", "low": 3, "high": 64}}, "must be ones"),
        ({"LEARNING_RATE": {"type": "int"}}, "is a float"),
        ({"LEARNING_RATE": {"type": "complex"}}, "use int, float or pow2"),
        ({"LEARNING_RATE": {"high": "big"}}, "bounds are numbers"),
        ({"LEARNING_RATE": {"step": 2}}, "step is for integers"),
        ({"HIDDEN": {"step": 0}}, "a whole number, 1 or more"),
        ({"HIDDEN": {"low": 32, "high": 256, "step": 32, "log": True}}, "drop one"),
    ],
)
def test_bad_ranges_say_what_to_write(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SpaceError, match=message.replace("(", r"\(")):
        _space(overrides)


def test_a_broken_program_block_says_how_to_write_it() -> None:
    with pytest.raises(SpaceError, match="not valid TOML"):
        read_program_block("```search\nLEARNING_RATE = {low = \n```\n")


def test_values_are_written_in_place() -> None:
    script = write_values(SCRIPT, "cpu", {"DEPTH": 2, "LEARNING_RATE": 0.0041})
    assert "DEPTH = 8 if CUDA else 2  # blocks" in script
    assert "LEARNING_RATE = 0.0041  # peak rate" in script
    assert values_of(script, "cpu", ["DEPTH", "LEARNING_RATE", "WIDTH"]) == {
        "DEPTH": 2,
        "LEARNING_RATE": 0.0041,
        "WIDTH": 128,
    }


def test_values_decoded_as_the_script_writes_them() -> None:
    params, _ = _space()
    assert params["WIDTH"].encode(256) == 8 and params["WIDTH"].decode(8) == 256
    assert params["LEARNING_RATE"].decode(0.00412345) == 0.00412
    assert params["WARMUP_STEPS"].decode(3.6) == 4


def test_structure_ignores_only_the_named_constants() -> None:
    names = ["LEARNING_RATE", "WIDTH"]
    tuned = write_values(SCRIPT, "cpu", {"LEARNING_RATE": 0.01, "WIDTH": 64})
    assert structure_key(tuned, "cpu", names) == structure_key(SCRIPT, "cpu", names)
    other = write_values(SCRIPT, "cpu", {"WARMUP_STEPS": 5})
    assert structure_key(other, "cpu", names) != structure_key(SCRIPT, "cpu", names)
    coded = SCRIPT.replace("return None", "return ctx")
    assert structure_key(coded, "cpu", names) != structure_key(SCRIPT, "cpu", names)


def _hybrid_context(tuned: list[str]) -> ProposalContext:
    return ProposalContext(
        best_script=SCRIPT,
        tuned=frozenset(tuned),
        tuned_structures=frozenset({structure_key(SCRIPT, "cpu", tuned)}),
    )


def test_a_change_of_tuned_numbers_alone_is_refused() -> None:
    context = _hybrid_context(["LEARNING_RATE", "WIDTH"])
    reason = numbers_only(write_values(SCRIPT, "cpu", {"LEARNING_RATE": 0.01}), context)
    assert reason is not None
    assert "only sets LEARNING_RATE = 0.01" in reason and "Propose a change to the code" in reason


def test_a_change_of_a_constant_the_optimiser_does_not_own_is_not_refused() -> None:
    context = _hybrid_context(["LEARNING_RATE", "WIDTH"])
    assert numbers_only(write_values(SCRIPT, "cpu", {"WARMUP_STEPS": 5}), context) is None
    assert numbers_only(SCRIPT.replace('"gelu"', '"relu"'), context) is None
    # Code and tuned numbers changed together: a new structure, the model's to try.
    both = write_values(SCRIPT.replace("return None", "return ctx"), "cpu", {"WIDTH": 64})
    assert numbers_only(both, context) is None


def test_nothing_is_refused_without_an_optimiser() -> None:
    script = write_values(SCRIPT, "cpu", {"LEARNING_RATE": 0.01})
    assert numbers_only(script, ProposalContext(best_script=SCRIPT)) is None
