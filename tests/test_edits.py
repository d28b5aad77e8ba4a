"""Applying SEARCH/REPLACE edits to train.py: matching, refusals and what the model is told."""

from __future__ import annotations

import ast
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

import trainer
from agent.edits import (
    Edit,
    EditRejected,
    apply_edits,
    apply_proposal,
    check_script,
    describe_edits,
)
from agent.proposal import script_hash

TEMPLATE = (Path(trainer.__file__).parent / "train.py").read_text()

BLOCK_FORWARD = """\
    def forward(self, x, cos, sin):
        x = x + self.attention(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))
"""
GRAD_CLIPPING = """\
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
"""
LR_LINE = "LEARNING_RATE = 0.003  # peak AdamW learning rate for the transformer's matrices\n"


def rejection(
    script: str,
    edits: Sequence[Edit],
    *,
    filename: str = "train.py",
    tried_hashes: Collection[str] = (),
) -> EditRejected:
    with pytest.raises(EditRejected) as caught:
        apply_proposal(script, edits, filename=filename, tried_hashes=tried_hashes)
    return caught.value


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_the_snippets_used_here_occur_once_in_the_template() -> None:
    for snippet in (BLOCK_FORWARD, GRAD_CLIPPING, LR_LINE, "    return model\n"):
        assert TEMPLATE.count(snippet) == 1, snippet


# --- exact matches ---------------------------------------------------------------------------


def test_an_exact_search_changes_that_place_and_nothing_else() -> None:
    new_line = LR_LINE.replace("0.003", "0.001")
    result = apply_proposal(TEMPLATE, [Edit(LR_LINE, new_line)])
    assert result == TEMPLATE.replace(LR_LINE, new_line)


def test_a_search_for_part_of_a_line_keeps_the_rest_of_it() -> None:
    result = apply_edits(TEMPLATE, [Edit("LEARNING_RATE = 0.003", "LEARNING_RATE = 0.002")])
    assert "LEARNING_RATE = 0.002  # peak AdamW learning rate for the" in result
    assert len(result.splitlines()) == len(TEMPLATE.splitlines())


def test_a_whole_line_search_means_that_line_not_the_same_text_inside_another() -> None:
    script = "y = 1\nxy = 1\nprint(y, xy)\n"
    assert apply_edits(script, [Edit("y = 1", "y = 2")]) == "y = 2\nxy = 1\nprint(y, xy)\n"


def test_the_replacement_ends_like_the_search_so_lines_neither_merge_nor_split() -> None:
    # The search ends with a newline, the replacement does not: the next line stays apart.
    glued = apply_edits(TEMPLATE, [Edit(LR_LINE, LR_LINE.rstrip("\n").replace("0.003", "0.004"))])
    assert "0.004  # peak AdamW learning rate for the transformer's matrices\nEMBED_LR" in glued
    # The search has no final newline, the replacement has one: no blank line appears.
    split = apply_edits(TEMPLATE, [Edit(LR_LINE.rstrip("\n"), LR_LINE.replace("0.003", "0.005"))])
    assert split == TEMPLATE.replace(LR_LINE, LR_LINE.replace("0.003", "0.005"))


# --- whitespace-tolerant matches -------------------------------------------------------------


def test_a_search_indented_less_than_the_file_is_found_and_the_replacement_shifted_in() -> None:
    search = "\n".join(line[4:] for line in BLOCK_FORWARD.splitlines()) + "\n"
    replace = (
        "def forward(self, x, cos, sin):\n"
        "    x = x + self.attention(rms_norm(x), cos, sin)\n"
        "    if self.training:\n"
        "        x = F.dropout(x, 0.1)\n"
        "    return x + self.mlp(rms_norm(x))\n"
    )
    result = apply_proposal(TEMPLATE, [Edit(search, replace)])
    assert (
        "    def forward(self, x, cos, sin):\n"
        "        x = x + self.attention(rms_norm(x), cos, sin)\n"
        "        if self.training:\n"
        "            x = F.dropout(x, 0.1)\n"
        "        return x + self.mlp(rms_norm(x))\n\n\nclass GPT"
    ) in result


def test_a_search_indented_more_than_the_file_is_found_and_the_replacement_shifted_out() -> None:
    search = (
        "    WARMUP_STEPS = 3  # steps spent ramping the learning rate up\n"
        "    WARMDOWN_FRACTION = 0.4  # share of the planned steps spent decaying it at the end\n"
    )
    result = apply_proposal(
        TEMPLATE, [Edit(search, "    WARMUP_STEPS = 10\n\n    WARMDOWN_FRACTION = 0.5\n")]
    )
    assert "\nWARMUP_STEPS = 10\n\nWARMDOWN_FRACTION = 0.5\nFINAL_LR_FRACTION" in result


def test_a_replacement_line_indented_less_than_the_search_s_extra_lands_at_the_margin() -> None:
    search = "        BETA1 = 0.9\n"  # eight columns more than the file
    result = apply_proposal(TEMPLATE, [Edit(search, "        BETA1 = 0.8\n    EXTRA = 0.5\n")])
    assert "\nBETA1 = 0.8\nEXTRA = 0.5\nBETA2 = 0.95\n" in result


def test_an_indentation_shift_that_is_not_the_same_for_every_line_is_not_a_match() -> None:
    lines = BLOCK_FORWARD.splitlines()
    search = "\n".join(["    " + lines[0], lines[1], lines[2]])  # only the first line shifted
    error = rejection(TEMPLATE, [Edit(search, search.replace("x + self.mlp", "x - self.mlp"))])
    assert error.kind == "not_found"


def test_tabs_never_stand_in_for_spaces_and_the_model_is_told_which_the_file_uses() -> None:
    search = BLOCK_FORWARD.replace("        ", "\t\t").replace("    ", "\t")
    error = rejection(TEMPLATE, [Edit(search, search.replace("+ self.mlp", "- self.mlp"))])
    assert error.kind == "not_found"
    assert "The search indents with tabs, but train.py with spaces." in error.message


def test_spaces_never_stand_in_for_tabs_but_a_shift_in_tabs_is_followed() -> None:
    script = "def decay(step):\n\tif step > 10:\n\t\treturn 0.5\n\treturn 1.0\n"
    error = rejection(script, [Edit("    if step > 10:\n        return 0.5\n", "pass\n")])
    assert "The search indents with spaces, but train.py with tabs." in error.message
    result = apply_proposal(
        script, [Edit("if step > 10:\n\treturn 0.5\n", "if step > 20:\n\treturn 0.1\n")]
    )
    assert result == "def decay(step):\n\tif step > 20:\n\t\treturn 0.1\n\treturn 1.0\n"


def test_trailing_whitespace_in_the_search_is_ignored() -> None:
    search = (
        "    def forward(self, x):   \n        return self.down(ReluSquared.apply(self.up(x)))\t\n"
    )
    replace = (
        "    def forward(self, x):\n        return self.down(ReluSquared.apply(self.up(x)) * 0.5)\n"
    )
    result = apply_proposal(TEMPLATE, [Edit(search, replace)])
    assert "        return self.down(ReluSquared.apply(self.up(x)) * 0.5)\n" in result


def test_trailing_whitespace_in_the_file_is_ignored() -> None:
    script = TEMPLATE.replace("    def forward(self, x):\n", "    def forward(self, x):  \n")
    search = "    def forward(self, x):\n        return self.down(ReluSquared.apply(self.up(x)))\n"
    replace = (
        "    def forward(self, x):\n        return self.down(ReluSquared.apply(self.up(x)) + x)\n"
    )
    result = apply_proposal(script, [Edit(search, replace)])
    assert (
        "    def forward(self, x):\n        return self.down(ReluSquared.apply(self.up(x)) + x)\n"
        in result
    )


# --- line endings ----------------------------------------------------------------------------


def test_a_crlf_script_takes_an_lf_edit_and_stays_crlf() -> None:
    script = TEMPLATE.replace("\n", "\r\n")
    edit = Edit(BLOCK_FORWARD, BLOCK_FORWARD.replace("x + self.mlp", "x + 0.5 * self.mlp"))
    result = apply_proposal(script, [edit])
    assert result.count("\n") == result.count("\r\n") == script.count("\r\n")
    assert result.replace("\r\n", "\n") == apply_proposal(TEMPLATE, [edit])


def test_an_lf_script_takes_a_crlf_edit_and_stays_lf() -> None:
    edit = Edit(
        BLOCK_FORWARD.replace("\n", "\r\n"),
        BLOCK_FORWARD.replace("x + self.mlp", "x + 0.5 * self.mlp").replace("\n", "\r\n"),
    )
    result = apply_proposal(TEMPLATE, [edit])
    assert "\r" not in result
    assert "        return x + 0.5 * self.mlp(rms_norm(x))\n" in result


def test_a_crlf_script_with_a_crlf_edit_keeps_every_other_byte() -> None:
    script = TEMPLATE.replace("\n", "\r\n")
    edit = Edit(LR_LINE.replace("\n", "\r\n"), "LEARNING_RATE = 0.001\r\n")
    assert apply_proposal(script, [edit]) == script.replace(
        LR_LINE.replace("\n", "\r\n"), "LEARNING_RATE = 0.001\r\n"
    )


# --- several edits ---------------------------------------------------------------------------


def test_one_failing_edit_rejects_the_whole_proposal_and_names_it() -> None:
    edits = [
        Edit("BETA1 = 0.9", "BETA1 = 0.8"),
        Edit("BETA2 = 0.99", "BETA2 = 0.9"),  # the template says 0.95
        Edit("WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.2"),
    ]
    error = rejection(TEMPLATE, edits)
    assert (error.kind, error.edit_index) == ("not_found", 2)
    assert error.message.startswith('Edit 2 of 3 (search "BETA2 = 0.99")')
    assert "None of the 3 edits was applied" in error.message
    assert "with edit 2 corrected" in error.message


def test_every_failing_edit_is_named_at_once() -> None:
    edits = [
        Edit("BETA1 = 0.9", "BETA1 = 0.8"),
        Edit("", "BETA2 = 0.9"),
        Edit("NOT_A_CONSTANT = 1", "NOT_A_CONSTANT = 2"),
    ]
    error = rejection(TEMPLATE, edits)
    assert (error.kind, error.edit_index) == ("empty_search", 2)
    assert "Edit 2 of 3 has an empty search" in error.message
    assert 'Edit 3 of 3 (search "NOT_A_CONSTANT = 1")' in error.message
    assert "with edits 2 and 3 corrected" in error.message


def test_overlapping_edits_are_rejected_with_both_named() -> None:
    edits = [
        Edit(BLOCK_FORWARD, BLOCK_FORWARD.replace("x + self.mlp", "x - self.mlp")),
        Edit("        return x + self.mlp(rms_norm(x))\n", "        return x\n"),
    ]
    error = rejection(TEMPLATE, edits)
    assert (error.kind, error.edit_index) == ("overlap", 2)
    line = line_of(TEMPLATE, "        return x + self.mlp(rms_norm(x))")
    assert f"Edits 1 and 2 overlap: both change line {line} of train.py" in error.message
    assert "Merge them into one edit" in error.message


def test_the_same_edit_twice_overlaps_itself() -> None:
    edit = Edit(LR_LINE, "LEARNING_RATE = 0.001\n")
    assert rejection(TEMPLATE, [edit, edit]).kind == "overlap"


def test_adjacent_edits_on_consecutive_lines_are_both_applied() -> None:
    edits = [Edit("BETA1 = 0.9\n", "BETA1 = 0.85\n"), Edit("BETA2 = 0.95\n", "BETA2 = 0.99\n")]
    result = apply_proposal(TEMPLATE, edits)
    assert "\nBETA1 = 0.85\nBETA2 = 0.99\nWARMUP_STEPS" in result


def test_two_edits_on_different_parts_of_one_line_are_both_applied() -> None:
    edits = [
        Edit("DEPTH = 8 if CUDA", "DEPTH = 12 if CUDA"),
        Edit("# transformer blocks", "# blocks"),
    ]
    assert "\nDEPTH = 12 if CUDA else 4  # blocks\n" in apply_proposal(TEMPLATE, edits)


def test_edits_out_of_file_order_give_the_same_script_as_in_order() -> None:
    edits = [
        Edit("    return model\n", "    model.eval()\n    return model\n"),
        Edit("BATCH_SIZE = 64 if CUDA else 4", "BATCH_SIZE = 64 if CUDA else 8"),
    ]
    forwards = apply_proposal(TEMPLATE, edits)
    assert apply_proposal(TEMPLATE, edits[::-1]) == forwards
    assert "BATCH_SIZE = 64 if CUDA else 8" in forwards and "model.eval()" in forwards


def test_a_search_matches_the_original_script_never_an_earlier_edit_s_result() -> None:
    edits = [Edit("BETA1 = 0.9\n", "BETA1 = 0.8\n"), Edit("BETA1 = 0.8\n", "BETA1 = 0.7\n")]
    error = rejection(TEMPLATE, edits)
    assert (error.kind, error.edit_index) == ("not_found", 2)


# --- empty and missing edits -----------------------------------------------------------------


def test_an_empty_search_is_rejected_never_appended() -> None:
    error = rejection(TEMPLATE, [Edit("", "EXTRA = 1\n")])
    assert (error.kind, error.edit_index) == ("empty_search", 1)
    assert "The edit has an empty search" in error.message
    assert "search for the line above the new code" in error.message


def test_a_whitespace_only_search_is_rejected_as_empty() -> None:
    error = rejection(TEMPLATE, [Edit("  \n\t\n", "EXTRA = 1\n")])
    assert error.kind == "empty_search"


def test_a_proposal_without_edits_is_rejected() -> None:
    error = rejection(TEMPLATE, [])
    assert (error.kind, error.edit_index) == ("no_edits", None)
    assert "at least one" in error.message and str(error) == error.message


# --- unicode ---------------------------------------------------------------------------------


def test_non_ascii_text_in_script_search_and_replace() -> None:
    script = TEMPLATE.replace(
        "LOGIT_SOFTCAP = 15.0  # logits are squashed into (-cap, cap)",
        "LOGIT_SOFTCAP = 15.0  # logits → (\u2212cap, cap), λ-free, naïve",
    )
    search = "LOGIT_SOFTCAP = 15.0  # logits → (\u2212cap, cap), λ-free, naïve"
    result = apply_proposal(script, [Edit(search, "LOGIT_SOFTCAP = 30.0  # größer: ±30")])
    assert "\nLOGIT_SOFTCAP = 30.0  # größer: ±30\nROPE_BASE" in result
    indented = apply_proposal(
        script, [Edit("    " + search + "\n", "    LOGIT_SOFTCAP = 20.0  # ≈\n")]
    )
    assert "\nLOGIT_SOFTCAP = 20.0  # ≈\nROPE_BASE" in indented


# --- ambiguous and missing searches ----------------------------------------------------------


def test_a_search_found_several_times_is_ambiguous_and_the_message_says_where() -> None:
    error = rejection(
        TEMPLATE,
        [
            Edit(
                "        super().__init__()\n",
                "        super().__init__()\n        self.scale = 1.0\n",
            )
        ],
    )
    assert (error.kind, error.edit_index) == ("ambiguous", 1)
    lines = [
        n for n, line in enumerate(TEMPLATE.splitlines(), 1) if line == "        super().__init__()"
    ]
    assert len(lines) == 4
    assert (
        f"occurs 4 times in train.py (at lines {lines[0]}, {lines[1]}, {lines[2]} and {lines[3]})"
        in error.message
    )
    assert "Include more of the surrounding lines in the search" in error.message


def test_a_search_found_many_times_lists_a_few_of_its_lines() -> None:
    error = rejection(TEMPLATE, [Edit("self.", "this.")])
    count = TEMPLATE.count("self.")
    assert f"its search occurs {count} times in train.py (at lines " in error.message
    listed = error.message.split("(at lines ")[1].split(")")[0]
    assert listed.endswith(" and others") and len(listed.split(", ")) == 8


def test_a_search_found_several_times_only_up_to_whitespace_is_ambiguous_too() -> None:
    error = rejection(TEMPLATE, [Edit("super().__init__()   \n", "pass\n")])
    assert error.kind == "ambiguous" and "occurs 4 times" in error.message


def test_a_mistyped_line_is_not_found_and_the_real_line_is_shown() -> None:
    error = rejection(TEMPLATE, [Edit("LEARNING_RATE = 0.03 # peak", "LEARNING_RATE = 0.01")])
    assert (error.kind, error.edit_index) == ("not_found", 1)
    assert (
        'This line of it is not in train.py at all: "LEARNING_RATE = 0.03 # peak"' in error.message
    )
    assert LR_LINE in error.message
    line = line_of(TEMPLATE, LR_LINE)
    assert f"The closest lines in train.py (lines {line - 2}-{line + 2}):" in error.message


def test_a_multi_line_search_with_one_wrong_line_names_it_and_shows_the_real_block() -> None:
    search = GRAD_CLIPPING.replace("GRAD_CLIP)", "GRAD_CLIPPING)")
    error = rejection(TEMPLATE, [Edit(search, "")])
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIPPING)" in error.message
    assert GRAD_CLIPPING in error.message  # the real lines, indentation included
    assert error.message.endswith(
        "Copy the lines to change exactly from the file, indentation included."
    )


def test_a_search_that_leaves_out_a_line_is_told_so() -> None:
    search = "class MLP(nn.Module):\n    def __init__(self, width, ratio):\n        super().__init__()\n        self.down = nn.Linear(ratio * width, width, bias=False)\n"
    error = rejection(TEMPLATE, [Edit(search, search)])
    assert error.kind == "not_found"
    assert "not one after the other" in error.message
    assert "        self.up = nn.Linear(width, ratio * width, bias=False)" in error.message


def test_a_search_unlike_anything_in_the_file_says_so() -> None:
    error = rejection(TEMPLATE, [Edit("scheduler = CosineAnnealingWarmRestarts(opt, T_0=7)\n", "")])
    assert error.kind == "not_found"
    assert "Nothing in train.py is close to it." in error.message


def test_an_empty_script_has_nothing_to_match() -> None:
    error = rejection("", [Edit("BETA1 = 0.9", "BETA1 = 0.8")])
    assert error.kind == "not_found" and "Nothing in train.py is close to it." in error.message


# --- deleting and whole-file edits -----------------------------------------------------------


def test_an_empty_replace_deletes_the_lines_and_leaves_no_gap() -> None:
    result = apply_proposal(TEMPLATE, [Edit(GRAD_CLIPPING, "")])
    assert "clip_grad_norm_" not in result
    assert "        loss.backward()\n        optimizer.step()\n" in result


def test_an_empty_replace_deletes_whole_lines_after_an_indentation_shift() -> None:
    search = "if GRAD_CLIP > 0:\n    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)"
    result = apply_proposal(TEMPLATE, [Edit(search, "")])
    assert "        loss.backward()\n        optimizer.step()\n" in result


def test_a_search_spanning_the_whole_file_replaces_it() -> None:
    new = TEMPLATE.replace("DEPTH = 8 if CUDA else 4", "DEPTH = 6 if CUDA else 4")
    assert apply_proposal(TEMPLATE, [Edit(TEMPLATE, new)]) == new


def test_edits_at_the_very_start_and_the_very_end_of_the_file() -> None:
    first_line = TEMPLATE.splitlines()[0]
    edits = [
        Edit("    return model\n", "    model.eval()\n    return model\n"),
        Edit(first_line, '"""A small GPT on bytes, trained against the clock.'),
    ]
    result = apply_proposal(TEMPLATE, edits)
    assert result.startswith('"""A small GPT on bytes, trained against the clock.\n\nThis is')
    assert result.endswith(
        "        ctx.report(step=step, loss=loss.item(), lr_scale=scale)\n    model.eval()\n    return model\n"
    )


def test_a_file_without_a_final_newline_keeps_it_that_way() -> None:
    script = "a = 1\nif a:\n    b = 2"
    assert (
        apply_edits(script, [Edit("a = 1", "a = 10"), Edit("    b = 2", "    b = 20")])
        == "a = 10\nif a:\n    b = 20"
    )
    assert (
        apply_edits(script, [Edit("b = 2\n", "b = 3\nc = 4\n")])
        == "a = 1\nif a:\n    b = 3\n    c = 4"
    )


# --- checks on the result --------------------------------------------------------------------


def test_a_result_that_does_not_parse_is_rejected_with_its_line() -> None:
    broken = "        return x + self.mlp(rms_norm(x)\n"
    result = apply_edits(TEMPLATE, [Edit("        return x + self.mlp(rms_norm(x))\n", broken)])
    error = rejection(TEMPLATE, [Edit("        return x + self.mlp(rms_norm(x))\n", broken)])
    assert (error.kind, error.edit_index) == ("syntax", None)
    assert (
        f"The edited train.py is not valid Python: line {line_of(result, broken)}:" in error.message
    )
    assert broken.rstrip() in error.message
    assert "Fix the edits so that the whole script parses." in error.message


def test_a_result_with_broken_indentation_is_rejected() -> None:
    error = rejection(TEMPLATE, [Edit("BETA1 = 0.9\n", "  BETA1 = 0.9\n")])
    assert error.kind == "syntax"
    assert f"line {line_of(TEMPLATE, 'BETA1 = 0.9')}: unexpected indent" in error.message


def test_an_edit_whose_replace_equals_its_search_is_a_noop() -> None:
    error = rejection(TEMPLATE, [Edit(LR_LINE, LR_LINE)])
    assert (error.kind, error.edit_index) == ("noop", None)
    assert "leave train.py unchanged" in error.message


@pytest.mark.parametrize(
    ("search", "replace"),
    [
        ("# peak AdamW learning rate", "# peak learning rate of AdamW"),  # a comment
        ("rms_norm(x), cos, sin)\n        return", "rms_norm(x),  cos,  sin)\n\n        return"),
        ("LEARNING_RATE = 0.003", "LEARNING_RATE = 3e-3"),  # the same number, written otherwise
        ('"""Warm up, hold, then decay', '"""Warm up, keep steady, then decay'),  # a docstring
    ],
)
def test_changing_only_comments_whitespace_or_docstrings_is_a_noop(
    search: str, replace: str
) -> None:
    error = rejection(TEMPLATE, [Edit(search, replace)])
    assert error.kind == "noop"
    assert "only comments, whitespace, formatting or docstrings" in error.message


def test_a_script_that_did_not_parse_may_be_fixed() -> None:
    crashed = TEMPLATE.replace("BETA2 = 0.95", "BETA2 = 0.95)")
    assert apply_proposal(crashed, [Edit("BETA2 = 0.95)", "BETA2 = 0.95")]) == TEMPLATE


def test_a_script_trained_before_is_rejected() -> None:
    edits = [Edit("BETA1 = 0.9\n", "BETA1 = 0.8\n")]
    result = apply_edits(TEMPLATE, edits)
    error = rejection(TEMPLATE, edits, tried_hashes={script_hash(TEMPLATE), script_hash(result)})
    assert (error.kind, error.edit_index) == ("already_tried", None)
    assert "already trained in an earlier experiment" in error.message
    assert apply_proposal(TEMPLATE, edits, tried_hashes={script_hash(TEMPLATE)}) == result


def test_check_script_accepts_a_real_change() -> None:
    result = TEMPLATE.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    check_script(TEMPLATE, result, tried_hashes={script_hash(TEMPLATE)})
    assert ast.parse(result)


# --- files -----------------------------------------------------------------------------------


def test_an_edit_for_another_file_is_rejected() -> None:
    error = rejection(
        TEMPLATE, [Edit("BETA1 = 0.9", "BETA1 = 0.8"), Edit("x", "y", path="prepare.py")]
    )
    assert (error.kind, error.edit_index) == ("wrong_file", 2)
    assert "Edit 2 of 2 is for prepare.py, but only train.py may be changed" in error.message


@pytest.mark.parametrize(
    "path",
    [None, "", "train.py", "./train.py", "workspace/train.py", "C:\\w\\train.py", "`train.py`"],
)
def test_an_edit_for_train_py_under_any_spelling_is_applied(path: str | None) -> None:
    result = apply_proposal(TEMPLATE, [Edit("BETA1 = 0.9", "BETA1 = 0.8", path=path)])
    assert "\nBETA1 = 0.8\n" in result


def test_the_file_name_is_the_one_given() -> None:
    error = rejection("x = 1\n", [Edit("x = 1", "x = 2", path="train.py")], filename="model.py")
    assert error.kind == "wrong_file" and "only model.py may be changed" in error.message
    assert apply_proposal("x = 1\n", [Edit("x = 1", "x = 2")], filename="model.py") == "x = 2\n"


# --- messages and diffs ----------------------------------------------------------------------


def test_every_kind_of_rejection_has_its_own_message() -> None:
    tried = apply_edits(TEMPLATE, [Edit("BETA1 = 0.9", "BETA1 = 0.8")])
    cases: dict[str, tuple[list[Edit], set[str]]] = {
        "empty_search": ([Edit(" ", "x")], set()),
        "not_found": ([Edit("BETA1 = 0.1", "x")], set()),
        "ambiguous": ([Edit("super().__init__()", "x")], set()),
        "overlap": ([Edit("BETA1 = 0.9\nBETA2", "BETA2"), Edit("BETA2 = 0.95", "")], set()),
        "wrong_file": ([Edit("BETA1", "b", path="data.py")], set()),
        "syntax": ([Edit("BETA1 = 0.9", "BETA1 = (")], set()),
        "noop": ([Edit("BETA1 = 0.9", "BETA1 = 0.9")], set()),
        "already_tried": ([Edit("BETA1 = 0.9", "BETA1 = 0.8")], {script_hash(tried)}),
        "no_edits": ([], set()),
    }
    messages = {}
    for kind, (edits, hashes) in cases.items():
        error = rejection(TEMPLATE, edits, tried_hashes=hashes)
        assert error.kind == kind
        assert str(error) == error.message
        messages[kind] = error.message
    assert len(set(messages.values())) == len(cases)


def test_describe_edits_is_a_unified_diff_of_train_py() -> None:
    result = apply_proposal(TEMPLATE, [Edit("BETA1 = 0.9", "BETA1 = 0.8")])
    diff = describe_edits(TEMPLATE, result)
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n@@ ")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[1:2] not in "+-"]
    assert changed == ["-BETA1 = 0.9", "+BETA1 = 0.8"]
    assert describe_edits(TEMPLATE, TEMPLATE) == ""
