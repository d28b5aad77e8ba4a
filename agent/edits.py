"""Applying a model's SEARCH/REPLACE edits to the training script.

Pure functions, no I/O. Each edit's search must match exactly one place of the original
script: first as an exact substring, then line by line, ignoring trailing whitespace, line
endings and a uniform shift of indentation (the replacement is then shifted the same way).
Edit-distance matching is deliberately absent: a near miss goes back to the model with the
closest real lines, so that it copies them exactly, instead of being applied to a guess.
Tabs never stand in for spaces, or spaces for tabs: the model is told which the file uses.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.proposal import script_hash
from agent.syntax import parse

RejectionKind = Literal[
    "empty_search",
    "not_found",
    "ambiguous",
    "overlap",
    "wrong_file",
    "syntax",
    "noop",
    "already_tried",
    "no_edits",
    "numbers_only",
]

CLOSE_ENOUGH = 0.6  # similarity below which no part of the script is offered as the one meant
CONTEXT_LINES = 2  # lines shown either side of the closest match
SHOWN_LINES_LIMIT = 16  # the reason goes back into the prompt: keep it short
QUOTED_CHARS = 50  # of the search line quoted to name an edit


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE pair; ``path`` is the file the model said it is for, if it said."""

    search: str
    replace: str
    path: str | None = None


class EditRejected(Exception):
    """A proposal that cannot be applied; ``message`` goes back to the model as the reason."""

    def __init__(self, kind: RejectionKind, message: str, edit_index: int | None = None) -> None:
        super().__init__(message)
        self.kind: RejectionKind = kind
        self.message = message
        self.edit_index = edit_index  # 1-based; None when the proposal as a whole is at fault


@dataclass(frozen=True)
class _Match:
    index: int  # the edit's 1-based position in the proposal
    start: int  # offsets into the script with LF line endings
    end: int
    replacement: str


# (what the file has in front of each search line, what the search has in front of each
# file line): at most one of the two is non-empty.
_Shift = tuple[str, str]


def _lines_of(text: str) -> list[str]:
    """The lines of ``text``; a final newline ends the last line instead of starting one."""
    lines = text.split("\n") if text else []
    return lines[:-1] if text.endswith("\n") else lines


def _quote(text: str, limit: int = QUOTED_CHARS) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _listing(numbers: Sequence[int], limit: int = 8) -> str:
    text = [str(number) for number in numbers]
    if len(text) > limit:
        return ", ".join(text[:limit]) + " and others"
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _base_name(path: str) -> str:
    return re.split(r"[\\/]", path.strip().strip("`'\""))[-1].casefold()


def _indent_shift(file_lines: Sequence[str], search_lines: Sequence[str]) -> _Shift | None:
    """The uniform indentation shift that makes the search equal to these lines, if any."""
    shift: _Shift | None = None
    for file_line, search_line in zip(file_lines, search_lines, strict=True):
        file_line, search_line = file_line.rstrip(), search_line.rstrip()
        if not file_line or not search_line:
            if file_line or search_line:
                return None
            continue  # blank lines carry no indentation to compare
        if file_line.endswith(search_line):
            candidate = (file_line[: len(file_line) - len(search_line)], "")
        elif search_line.endswith(file_line):
            candidate = ("", search_line[: len(search_line) - len(file_line)])
        else:
            return None
        if "".join(candidate).strip() or shift not in (None, candidate):
            return None
        shift = candidate
    return shift


def _reindent(line: str, shift: _Shift) -> str:
    added_by_file, added_by_search = shift
    if not line.strip():
        return ""
    if line.startswith(added_by_search):
        return added_by_file + line[len(added_by_search) :]
    return added_by_file + line.lstrip()  # less indented than the search's extra: none left


def _exact_matches(script: str, search: str) -> list[int]:
    starts, start = [], script.find(search)
    while start != -1:  # overlapping occurrences count: each is a place the search names
        starts.append(start)
        start = script.find(search, start + 1)
    length = len(search)
    # A search copied as whole lines means those lines, not the same text inside others.
    whole = [
        start
        for start in starts
        if script[start - 1 : start] in ("", "\n")
        and (search.endswith("\n") or script[start + length : start + length + 1] in ("", "\n"))
    ]
    return whole if len(starts) > 1 and len(whole) == 1 else starts


def _locate(script: str, edit: Edit, index: int, total: int, filename: str) -> _Match:
    """Where one edit applies in the (LF) script, and what replaces it there."""
    which = f"Edit {index} of {total}" if total > 1 else "The edit"
    label = f'{which} (search "{_quote(edit.search)}")'
    if edit.path and _base_name(edit.path) and _base_name(edit.path) != _base_name(filename):
        raise EditRejected(
            "wrong_file",
            f"{which} is for {edit.path.strip()}, but only {filename} may be changed: make "
            f"the change in {filename}, or leave that edit out.",
            index,
        )
    search, replace = edit.search.replace("\r\n", "\n"), edit.replace.replace("\r\n", "\n")
    if not search.strip():
        raise EditRejected(
            "empty_search",
            f"{which} has an empty search, so there is no place for its replacement. Copy the "
            f"lines to change from {filename} into the search; to add code, search for the line "
            "above the new code and repeat it in the replace, followed by the new lines.",
            index,
        )
    starts = _exact_matches(script, search)
    if len(starts) == 1:
        # The model writes both sides as blocks of lines: the replacement ends as the search does.
        if search.endswith("\n") and replace and not replace.endswith("\n"):
            replace += "\n"
        elif not search.endswith("\n") and replace.endswith("\n"):
            replace = replace[:-1]
        return _Match(index, starts[0], starts[0] + len(search), replace)
    lines, search_lines = _lines_of(script), _lines_of(search)
    line_starts = [0, *itertools.accumulate(len(line) + 1 for line in lines)]
    if not starts:
        size = len(search_lines)
        found = [
            (first, shift)
            for first in range(len(lines) - size + 1)
            if (shift := _indent_shift(lines[first : first + size], search_lines)) is not None
        ]
        if len(found) == 1:
            first, shift = found[0]
            start, end = line_starts[first], min(line_starts[first + size], len(script))
            new_lines = [_reindent(line, shift) for line in _lines_of(replace)]
            if script.endswith("\n", 0, end):
                return _Match(index, start, end, "".join(line + "\n" for line in new_lines))
            return _Match(index, start, end, "\n".join(new_lines))
        if not found:
            raise EditRejected("not_found", _not_found(label, lines, search_lines, filename), index)
        starts = [line_starts[first] for first, _ in found]
    numbers = sorted({script.count("\n", 0, start) + 1 for start in starts})
    raise EditRejected(
        "ambiguous",
        f"{label}: its search occurs {len(starts)} times in {filename} (at lines "
        f"{_listing(numbers)}), so which one to change is unclear. Include more of the "
        "surrounding lines in the search, so that it matches exactly one place.",
        index,
    )


def _closest(lines: Sequence[str], search_lines: Sequence[str]) -> tuple[int, int] | None:
    """The run of script lines most like the search (first, end), if any is close enough.

    Similarity is measured against the part of each run that the search aligns with, so that
    a search copied from part of a line finds that line.
    """
    size = min(len(search_lines), len(lines))
    if not size:
        return None
    stripped = [line.strip() for line in lines]
    wanted = {line.strip() for line in search_lines if line.strip()}
    # Only the runs that share the most whole lines with the search, when any do: comparing
    # every run character by character takes a second on a long search.
    firsts = range(len(lines) - size + 1)
    shared = [sum(line in wanted for line in stripped[i : i + size]) for i in firsts]
    most = max(shared)
    search = "\n".join(line.strip() for line in search_lines)
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(search)
    best, best_first = CLOSE_ENOUGH, None
    for first in firsts:
        if shared[first] * 2 < most:
            continue
        matcher.set_seq1("\n".join(stripped[first : first + size]))
        blocks = [block for block in matcher.get_matching_blocks() if block.size]
        span = blocks[-1].a + blocks[-1].size - blocks[0].a if blocks else 0
        score = 2 * sum(block.size for block in blocks) / (len(search) + span)
        if score > best:
            best, best_first = score, first
    return None if best_first is None else (best_first, best_first + size)


def _not_found(label: str, lines: Sequence[str], search_lines: Sequence[str], filename: str) -> str:
    text = f"{label}: its search was not found in {filename}."
    stripped_file = "\n".join(line.strip() for line in lines)
    missing = [line for line in search_lines if line.strip() not in stripped_file]
    if missing:
        text += f' This line of it is not in {filename} at all: "{_quote(missing[0], 100)}".'
    else:
        text += (
            f" Each of its lines is in {filename}, but not one after the other as in the "
            "search: it must not leave out or reorder lines."
        )
    indents = [line[: len(line) - len(line.lstrip())] for line in lines]
    search_indents = [line[: len(line) - len(line.lstrip())] for line in search_lines]
    for char, used, other in (("\t", "tabs", "spaces"), (" ", "spaces", "tabs")):
        if char in "".join(search_indents) and char not in "".join(indents):
            text += f" The search indents with {used}, but {filename} with {other}."
    # A long search is compared from just before its first wrong line: that is the news.
    begin = max(0, search_lines.index(missing[0]) - CONTEXT_LINES) if missing else 0
    closest = _closest(lines, search_lines[begin : begin + SHOWN_LINES_LIMIT])
    if closest is None:
        text += f" Nothing in {filename} is close to it.\n"
    else:
        first = max(0, closest[0] - CONTEXT_LINES)
        end = min(len(lines), closest[1] + CONTEXT_LINES, first + SHOWN_LINES_LIMIT)
        while first < closest[0] and not lines[first].strip():
            first += 1
        while end > closest[1] and not lines[end - 1].strip():
            end -= 1
        excerpt = "\n".join(lines[first:end])
        text += f"\nThe closest lines in {filename} (lines {first + 1}-{end}):\n{excerpt}\n\n"
    return text + "Copy the lines to change exactly from the file, indentation included."


def _overlap(text: str, matches: Sequence[_Match], filename: str) -> EditRejected | None:
    for before, after in itertools.pairwise(sorted(matches, key=lambda m: (m.start, m.end))):
        if after.start < before.end:
            first = text.count("\n", 0, after.start) + 1
            last = text.count("\n", 0, min(before.end, after.end) - 1) + 1
            where = f"line {first}" if first == last else f"lines {first}-{last}"
            low, high = sorted((before.index, after.index))
            return EditRejected(
                "overlap",
                f"Edits {low} and {high} overlap: both change {where} of {filename}. Merge "
                "them into one edit, or make their searches cover separate lines.",
                high,
            )
    return None


def apply_edits(script: str, edits: Sequence[Edit], *, filename: str = "train.py") -> str:
    """``script`` with every edit applied, each to the one place its search matches.

    Searches match the original script, never each other's results, so the order of the
    edits does not matter; overlapping edits are refused. If any edit fails, none is applied
    and `EditRejected` names it. The result keeps the script's predominant line ending.
    """
    if not edits:
        raise EditRejected(
            "no_edits",
            f'The reply has no edits: give at least one {{"search": ..., "replace": ...}} '
            f"pair that changes {filename}.",
        )
    newline = "\r\n" if script.count("\r\n") * 2 > script.count("\n") else "\n"
    text = script.replace("\r\n", "\n")
    matches: list[_Match] = []
    failures: list[EditRejected] = []
    for index, edit in enumerate(edits, start=1):
        try:
            matches.append(_locate(text, edit, index, len(edits), filename))
        except EditRejected as exc:
            failures.append(exc)
    overlap = None if failures else _overlap(text, matches, filename)
    if overlap is not None:
        failures.append(overlap)
    if failures:
        message = "\n\n".join(failure.message for failure in failures)
        if len(edits) > 1:
            failed = [failure.edit_index or 0 for failure in failures]
            which = f"edit {failed[0]}" if len(failed) == 1 else f"edits {_listing(failed)}"
            message += (
                f"\n\nNone of the {len(edits)} edits was applied: send them all again, "
                f"with {which} corrected."
            )
        raise EditRejected(failures[0].kind, message, failures[0].edit_index)
    pieces, cursor = [], 0
    for match in sorted(matches, key=lambda m: m.start):
        pieces += [text[cursor : match.start], match.replacement]
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces).replace("\n", newline)


def _code_dump(tree: ast.Module) -> str:
    """The tree without docstrings, positions or comments: what running the script depends on."""
    for node in ast.walk(tree):
        documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, documented) and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def check_script(
    original: str, result: str, *, tried_hashes: Collection[str] = (), filename: str = "train.py"
) -> None:
    """Refuse an edited script that does not parse, changes nothing that runs, or was tried."""
    if result == original:
        raise EditRejected(
            "noop",
            f"The edits leave {filename} unchanged: each replace equals its search. Propose "
            "an actual change to the code.",
        )
    try:
        tree = parse(result, filename=filename)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, before Python 3.12
        line = getattr(exc, "lineno", None)
        lines = result.splitlines()
        shown = lines[line - 1].rstrip() if line and line <= len(lines) else ""
        where = f"line {line}: {getattr(exc, 'msg', exc)}" if line else str(exc)
        where += "" if where.endswith((".", "?", "!")) else "."
        raise EditRejected(
            "syntax",
            f"The edited {filename} is not valid Python: {where}"
            + (f"\n{shown}\n" if shown.strip() else " ")
            + "Fix the edits so that the whole script parses.",
        ) from None
    try:
        unchanged = _code_dump(parse(original)) == _code_dump(tree)
    except (SyntaxError, ValueError):
        unchanged = False  # a script that crashed may not parse: any script that does differs
    if unchanged:
        raise EditRejected(
            "noop",
            f"The edits change only comments, whitespace, formatting or docstrings of "
            f"{filename}, which does not change training. Change the code itself.",
        )
    if script_hash(result) in tried_hashes:
        raise EditRejected(
            "already_tried",
            f"This exact {filename} was already trained in an earlier experiment (its result "
            "is in the ledger). Propose a different change.",
        )


def apply_proposal(
    script: str,
    edits: Sequence[Edit],
    *,
    filename: str = "train.py",
    tried_hashes: Collection[str] = (),
) -> str:
    """The script a proposal's edits make, checked: `EditRejected` says why it is unusable."""
    result = apply_edits(script, edits, filename=filename)
    check_script(script, result, tried_hashes=tried_hashes, filename=filename)
    return result


def describe_edits(original: str, result: str, *, filename: str = "train.py") -> str:
    """A unified diff of the change, for logs; empty when nothing changed."""
    diff = difflib.unified_diff(
        original.splitlines(), result.splitlines(), f"a/{filename}", f"b/{filename}", lineterm=""
    )
    text = "\n".join(diff)
    return text + "\n" if text else ""
