"""The prompt and the structured reply: what the model is shown, and how its answer is read."""

from __future__ import annotations

import json
import re

import pytest

from agent.prompt import (
    ECHO,
    RECENT_OTHERS,
    REPLY_RESERVE_TOKENS,
    REPLY_SHAPE,
    RETRY_RESERVE_TOKENS,
    PromptTooLarge,
    ReplyRejected,
    add_feedback,
    build_messages,
    estimate_messages,
    main,
    parse_reply,
    reply_schema,
    shorten_description,
)
from agent.proposal import DESCRIPTION_LIMIT, CrashReport, LedgerEntry, ProposalContext
from tests.conftest import REPO

SCRIPT = (REPO / "trainer" / "train.py").read_text()
PROGRAM = (REPO / "cockpit" / "template" / "program.md").read_text()

GOOD = {
    "description": "raise the learning rate to 0.004",
    "hypothesis": "The loss still falls steeply at the end, so a higher rate should help.",
    "edits": [{"search": "LEARNING_RATE = 0.003", "replace": "LEARNING_RATE = 0.004"}],
}


def rejection(text: str) -> str:
    with pytest.raises(ReplyRejected) as caught:
        parse_reply(text)
    assert caught.value.kind == "malformed"
    return caught.value.message


def user_text(context: ProposalContext, num_ctx: int = 16384) -> str:
    build = build_messages(context, num_ctx=num_ctx)
    assert [m["role"] for m in build.messages] == ["system", "user"]
    return build.messages[1]["content"]


def room_beyond_the_script(tokens: int) -> int:
    """A num_ctx with ``tokens`` to spare beyond the script, the instructions and the reply, so
    that trimming tests hold whatever the template script's size."""
    bare = build_messages(ProposalContext(best_script=SCRIPT), num_ctx=10**6)
    return bare.estimated_tokens + REPLY_RESERVE_TOKENS + RETRY_RESERVE_TOKENS + tokens


def big_ledger(entries: int, keep_every: int) -> list[LedgerEntry]:
    statuses = ("discard", "crash", "discard", "timeout")
    return [
        LedgerEntry(
            number,
            f"experiment number {number} changes knob {number % 17} a little",
            "keep" if number % keep_every == 0 else statuses[number % len(statuses)],
            None if number % 4 == 1 else 3.0 + number / 10_000,
            None if number % 4 == 1 else 0.001,
        )
        for number in range(entries)
    ]


# --- the reply -------------------------------------------------------------------------------


def test_the_schema_asks_for_exactly_three_fields_and_search_replace_pairs() -> None:
    schema = reply_schema()
    assert list(schema["properties"]) == ["description", "hypothesis", "edits"]
    assert sorted(schema["required"]) == ["description", "edits", "hypothesis"]
    assert schema["additionalProperties"] is False
    edits = schema["properties"]["edits"]
    assert edits["type"] == "array" and edits["minItems"] == 1
    assert list(edits["items"]["properties"]) == ["search", "replace"]
    assert sorted(edits["items"]["required"]) == ["replace", "search"]
    # Self-contained: Ollama gets no references to resolve.
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema


def test_a_good_reply_is_read_as_sent() -> None:
    reply = parse_reply(json.dumps(GOOD))
    assert reply.description == GOOD["description"]
    assert reply.hypothesis == GOOD["hypothesis"]
    assert [(e.search, e.replace) for e in reply.edits] == [
        ("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.004")
    ]


@pytest.mark.parametrize(
    "wrapped",
    [
        "```json\n{}\n```",
        "```\n{}\n```\n",
        "Here is my proposal:\n```json\n{}\n```\nGood luck!",
        "Sure! {} Hope it helps.",
    ],
)
def test_a_fence_or_prose_around_the_object_is_tolerated(wrapped: str) -> None:
    reply = parse_reply(wrapped.replace("{}", json.dumps(GOOD, indent=2)))
    assert reply.description == GOOD["description"]
    assert reply.edits[0].replace == "LEARNING_RATE = 0.004"


def test_invalid_json_says_where_it_breaks() -> None:
    message = rejection('{"description": "x", "hypothesis": "y" "edits": []}')
    assert "not valid JSON" in message
    assert "Expecting ',' delimiter at line 1, column 40 (character 39" in message
    assert """just after 'tion": "x", "hypothesis": "y" ')""" in message


def test_a_missing_field_is_named() -> None:
    message = rejection(json.dumps({k: v for k, v in GOOD.items() if k != "hypothesis"}))
    assert 'the field "hypothesis" is missing' in message


def test_wrong_types_are_named_with_their_place() -> None:
    message = rejection(json.dumps({**GOOD, "edits": "LEARNING_RATE = 0.004"}))
    assert '"edits" must be a list' in message and "not a string" in message
    message = rejection(json.dumps({**GOOD, "edits": [{"search": 3, "replace": "x"}]}))
    assert '"edits[0].search" must be a string, not a number' in message
    message = rejection(json.dumps({**GOOD, "edits": [GOOD["edits"][0], {"replace": "x"}]}))
    assert 'the field "edits[1].search" is missing' in message


def test_empty_parts_are_refused() -> None:
    assert "at least one" in rejection(json.dumps({**GOOD, "edits": []}))
    assert '"hypothesis" is' in rejection(json.dumps({**GOOD, "hypothesis": "   "}))
    assert "empty" in rejection("  \n")
    assert "not a list" in rejection(json.dumps([GOOD]))


def test_a_long_description_is_cut_at_a_word_boundary() -> None:
    long = "replace the learning rate schedule with a cosine decay and a longer warmup phase"
    reply = parse_reply(json.dumps({**GOOD, "description": long}))
    assert len(reply.description) <= DESCRIPTION_LIMIT
    assert long.startswith(reply.description)
    assert long[len(reply.description)] == " "  # whole words only
    assert reply.description == "replace the learning rate schedule with a cosine decay and a"
    # One word longer than the limit can only be cut inside it.
    assert shorten_description("x" * 80) == "x" * DESCRIPTION_LIMIT
    assert shorten_description("  two\nlines  ") == "two lines"


# --- the prompt ------------------------------------------------------------------------------


def test_the_prompt_holds_the_program_the_whole_script_the_ledger_notes_and_vetoes() -> None:
    context = ProposalContext(
        best_script=SCRIPT,
        ledger=[
            LedgerEntry(0, "baseline", "keep", 3.3, None),
            LedgerEntry(1, "double the batch size", "discard", 3.31, 0.01),
            LedgerEntry(2, "lower WARMDOWN_FRACTION to 0.3", "keep", 3.29, -0.01),
            LedgerEntry(3, "swap relu squared for gelu", "crash"),
        ],
        notes=["try the optimizer's betas next"],
        vetoes=["use a 12-layer model: far too slow on this CPU"],
        program=PROGRAM,
    )
    build = build_messages(context, num_ctx=16384)
    system, user = (m["content"] for m in build.messages)
    assert "JSON" in system and "search" in system and "exactly once" in system
    assert PROGRAM.strip() in user
    assert SCRIPT.rstrip("\n") in user
    assert "The best so far: #2, val_bpb 3.290000." in user
    assert "2  keep       3.290000  -0.010000  lower WARMDOWN_FRACTION to 0.3" in user
    assert "3  crash             -          -  swap relu squared for gelu" in user
    assert "- try the optimizer's betas next" in user
    assert "- use a 12-layer model: far too slow on this CPU" in user
    assert user.index("program.md") < user.index(SCRIPT[:200]) < user.index("Experiments so far")
    assert build.script == SCRIPT
    assert build.estimated_tokens == estimate_messages(build.messages)
    assert build.left_out == {}


def test_on_a_plateau_the_model_is_asked_for_another_direction_with_the_dead_ends() -> None:
    ledger = [LedgerEntry(0, "baseline", "keep", 3.3, None)] + [
        LedgerEntry(n, f"idea {n}", "discard", 3.31, 0.01) for n in range(1, 11)
    ]
    context = ProposalContext(best_script=SCRIPT, ledger=ledger, plateau_after=10)
    user = build_messages(context, num_ctx=16384).messages[1]["content"]
    assert "# A plateau" in user and "The latest 10 experiments kept nothing" in user
    assert "- #3 idea 3 (discard, delta +0.010000)" in user
    assert "- #2 idea 2" not in user  # the latest 8 dead ends only
    calm = ProposalContext(best_script=SCRIPT, ledger=ledger, plateau_after=11)
    assert "# A plateau" not in build_messages(calm, num_ctx=16384).messages[1]["content"]


def test_the_hybrid_tells_the_model_which_numbers_the_optimiser_tunes() -> None:
    context = ProposalContext(best_script=SCRIPT, tuned=frozenset({"WIDTH", "DEPTH"}))
    user = build_messages(context, num_ctx=16384).messages[1]["content"]
    assert "An optimiser tunes these constants of train.py itself" in user
    assert "DEPTH, WIDTH. Leave their values to it" in user
    alone = build_messages(ProposalContext(best_script=SCRIPT), num_ctx=16384).messages[1]
    assert "optimiser" not in alone["content"]


def test_fix_mode_shows_the_failed_script_and_its_log_tail() -> None:
    crashed = SCRIPT.replace("F.scaled_dot_product_attention(", "F.scaled_dot_product_atention(")
    tail = "Traceback (most recent call last):\nAttributeError: module has no attribute 'scaled_dot_product_atention'"
    context = ProposalContext(
        best_script=SCRIPT,
        ledger=[
            LedgerEntry(0, "baseline", "keep", 3.3),
            LedgerEntry(1, "faster attention", "crash"),
        ],
        fix=CrashReport(1, "faster attention", crashed, "crash", tail),
        program=PROGRAM,
    )
    build = build_messages(context, num_ctx=16384)
    user = build.messages[1]["content"]
    assert build.script == crashed
    assert crashed.rstrip("\n") in user and SCRIPT.rstrip("\n") not in user
    assert tail in user
    assert "Fix the crash of experiment #1" in user
    assert "+        y = F.scaled_dot_product_atention(" in user  # what the experiment changed


def test_a_long_ledger_is_trimmed_to_fit_but_keeps_the_script_and_the_kept_experiments() -> None:
    ledger = big_ledger(500, keep_every=25)
    context = ProposalContext(
        best_script=SCRIPT,
        ledger=ledger,
        notes=[f"note {n}: " + "think about it " * 20 for n in range(3)],
        vetoes=["a veto"],
        program=PROGRAM,
    )
    num_ctx = room_beyond_the_script(2500)
    build = build_messages(context, num_ctx=num_ctx)
    user = build.messages[1]["content"]
    assert build.estimated_tokens + REPLY_RESERVE_TOKENS + RETRY_RESERVE_TOKENS <= num_ctx
    assert SCRIPT.rstrip("\n") in user
    for entry in ledger:
        if entry.status == "keep":
            assert f"  {entry.description}\n" in user
    assert ledger[-1].description in user  # the newest of the rest, too
    assert ledger[1].description not in user  # the oldest of the rest went first
    hidden = build.left_out["experiments_not_kept"]
    assert hidden > 500 - 20 - RECENT_OTHERS  # more than the usual cap: trimmed to fit
    assert f"{hidden} older not kept experiments are left out" in user
    assert PROGRAM.strip() in user  # not needed: program.md is cut only after all of that


def test_a_tight_window_drops_old_keeps_and_notes_then_shortens_program_md() -> None:
    ledger = big_ledger(500, keep_every=5)
    context = ProposalContext(
        best_script=SCRIPT,
        ledger=ledger,
        notes=["the oldest note", "the newest note"],
        program=PROGRAM,
    )
    num_ctx = room_beyond_the_script(500)
    build = build_messages(context, num_ctx=num_ctx)
    user = build.messages[1]["content"]
    assert build.estimated_tokens + REPLY_RESERVE_TOKENS + RETRY_RESERVE_TOKENS <= num_ctx
    assert SCRIPT.rstrip("\n") in user
    kept = [e for e in ledger if e.status == "keep"]
    for entry in kept[-5:]:
        assert f"  {entry.description}\n" in user
    assert "the newest note" in user and "the oldest note" not in user
    assert build.left_out["kept_experiments"] == len(kept) - 5
    assert build.left_out["program_lines"] > 0
    assert "more lines of program.md are left out" in user
    assert PROGRAM.splitlines()[0] in user  # program.md loses its end, not its start


def test_a_window_too_small_for_the_script_says_so_and_names_num_ctx() -> None:
    context = ProposalContext(best_script=SCRIPT, ledger=big_ledger(50, 5), program=PROGRAM)
    with pytest.raises(PromptTooLarge) as caught:
        build_messages(context, num_ctx=4096)
    message = str(caught.value)
    assert "num_ctx = 4096" in message and "train.py" in message
    assert "raise num_ctx" in message and "config.toml" in message


def test_the_retry_turn_shows_the_rejected_reply_and_the_reason() -> None:
    build = build_messages(ProposalContext(best_script=SCRIPT, program=PROGRAM), num_ctx=16384)
    bad_reply = json.dumps({**GOOD, "edits": [{"search": "LR = 1", "replace": "LR = 2"}]})
    messages = add_feedback(build, bad_reply, "edit 1: the search text was not found")
    assert messages[:2] == build.messages
    assert [m["role"] for m in messages[2:]] == ["assistant", "user"]
    assert messages[2]["content"] == bad_reply
    assert "edit 1: the search text was not found" in messages[3]["content"]
    # A huge reply goes back shortened, within the room kept for the retry.
    messages = add_feedback(build, "x" * 50_000, "the reply is not valid JSON")
    assert estimate_messages(messages) + REPLY_RESERVE_TOKENS <= build.num_ctx


def test_the_size_command_prints_tokens_and_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--experiments", "50", "--num-ctx", "16384"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["experiments"] == "50"
    assert lines["num_ctx"] == "16384"
    tokens = int(lines["estimated prompt tokens"])
    assert estimate_messages([{"content": SCRIPT}]) < tokens < 16384
    assert main(["--experiments", "50", "--num-ctx", "2048"]) == 1
    assert "num_ctx = 2048" in capsys.readouterr().err


# --- the example of the answer, and replies that copy it ------------------------------------

# What Gemma 3 270M (base) sent to every request of a run, when the prompt showed this example.
OLD_EXAMPLE = (
    '{"description": "...", "hypothesis": "...", "edits": [{"search": "...", "replace": "..."}]}'
)


def candidate_copies(text: str) -> list[str]:
    """What a model could copy out of ``text`` as its answer: every line, and every JSON value
    that starts at a ``{``."""
    found = [line for line in text.splitlines() if line.strip()]
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                _value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            found.append(text[start:end])
    return found


def test_nothing_a_model_can_copy_from_the_prompt_applies_as_an_edit() -> None:
    from agent.edits import Edit, EditRejected, apply_proposal

    fix = CrashReport(7, "rename the embedding", SCRIPT, "crash", "AttributeError: embedding")
    contexts = [
        ProposalContext(best_script=SCRIPT, program=PROGRAM, ledger=big_ledger(12, 4)),
        ProposalContext(best_script=SCRIPT, program=PROGRAM, fix=fix),
    ]
    copies = 0
    for context in contexts:
        build = build_messages(context, num_ctx=16384)
        retry = add_feedback(build, OLD_EXAMPLE, "the reply repeats the placeholders")
        for message in retry:
            for copy in candidate_copies(message["content"]):
                copies += 1
                with pytest.raises((ReplyRejected, EditRejected)):
                    reply = parse_reply(copy)
                    edits = [Edit(block.search, block.replace) for block in reply.edits]
                    apply_proposal(SCRIPT, edits)
    assert copies > 500  # the whole prompt was tried: every line of the script included
    assert OLD_EXAMPLE not in build.messages[0]["content"]


@pytest.mark.parametrize(
    "copy",
    [
        OLD_EXAMPLE,
        REPLY_SHAPE,
        re.sub(r"(<[^<>]*>)", r'"\1"', REPLY_SHAPE),  # as a model held to the schema writes it
        f"```json\n{OLD_EXAMPLE}\n```",
        OLD_EXAMPLE.replace('"...", "replace"', '"LEARNING_RATE = 0.003", "replace"'),
        json.dumps({**GOOD, "description": "<what the experiment changes>"}),
        json.dumps({**GOOD, "edits": [{"search": "…", "replace": "LEARNING_RATE = 0.004"}]}),
    ],
)
def test_a_reply_that_repeats_the_example_is_refused_as_an_echo(copy: str) -> None:
    with pytest.raises(ReplyRejected) as caught:
        parse_reply(copy)
    assert caught.value.kind == ECHO
    assert "placeholders" in caught.value.message and "copy each" in caught.value.message


def test_the_prompt_shows_the_shape_of_the_answer_with_placeholders_that_are_not_json() -> None:
    system = build_messages(ProposalContext(best_script=SCRIPT), num_ctx=16384).messages[0]
    assert REPLY_SHAPE in system["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(REPLY_SHAPE)


def test_code_with_dots_or_angle_brackets_is_not_taken_for_an_echo() -> None:
    line = "    out[..., :half].addcmul_(x[..., half:], sin[..., :half])"
    assert line in SCRIPT
    reply = {
        **GOOD,
        "description": "compare <a> with b...",
        "edits": [{"search": line, "replace": line.replace("addcmul_", "addcmul_ ")}],
    }
    parsed = parse_reply(json.dumps(reply))
    assert parsed.edits[0].search == line
