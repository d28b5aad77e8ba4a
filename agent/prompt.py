"""What the model is asked and what it must answer: the prompt and the structured reply.

Pure functions only. `build_messages` turns a `ProposalContext` into chat messages that fit
the model's context window; `reply_schema` is the JSON schema handed to Ollama as
``format=``; `parse_reply` validates a reply against it and says precisely what was wrong
when it does not fit, in words meant for the model; `add_feedback` makes the retry turn.

The prompt holds, in this order: program.md, the script to edit (verbatim and complete,
never trimmed), the ledger, the researcher's notes and vetoes, what is in flight, the
constants an optimiser tunes beside the model (the hybrid), a plateau's dead ends, in fix
mode the crash, and a closing instruction. When it does not fit ``num_ctx`` the least useful
parts go first: the oldest experiments that were not kept, then the oldest kept ones beyond
the latest few, then old vetoes and notes, then the tail of program.md.

``python -m agent.prompt --experiments 50`` prints the prompt size of a default workspace
after that many experiments.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.options import OllamaOptions
from agent.proposal import (
    DESCRIPTION_LIMIT,
    CrashReport,
    LedgerEntry,
    ProposalContext,
    since_last_keep,
)

CHARS_PER_TOKEN = 3.5  # code and English prose average about this with common tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators of one chat message
REPLY_RESERVE_TOKENS = 1500  # room left for the model's answer
# A retry resends the prompt with the rejected reply and the reason: room for both.
RETRY_RESERVE_TOKENS = 1000
FEEDBACK_REPLY_CHARS = 2000  # how much of a rejected reply is shown back to the model
FEEDBACK_REASON_CHARS = 1500
RECENT_OTHERS = 40  # experiments not kept that are shown at most, newest first
IN_FLIGHT_SHOWN = 16  # experiments in flight that are shown at most, newest last
LATEST_KEPT = 5  # kept experiments that stay in the prompt as long as anything else can go
PLATEAU_DEAD_ENDS = 8  # the latest experiments not kept that a plateau's section lists
CRASH_TAIL_CHARS = 6000
CRASH_DIFF_LINES = 200
KEPT = "keep"

SYSTEM_PROMPT = """\
You are an autonomous machine-learning researcher. You improve a training script, \
{filename}, one experiment at a time. Each experiment you propose is trained for a fixed \
wall-clock budget and scored on held-out data by val_bpb (validation bits per byte, lower is \
better); it is kept only if it beats the best so far.

Answer with one JSON object and nothing else. Its shape is below; each <...> stands for \
text you write yourself (an answer that repeats the <...> is refused):
{reply_shape}

- description: what the experiment changes, at most {limit} characters \
(e.g. "raise the learning rate to 0.004").
- hypothesis: one or two sentences: what you expect to happen, and why.
- edits: SEARCH/REPLACE pairs against {filename}. Each "search" is copied exactly from the \
current {filename}: the same characters, the same indentation, whole lines. It must occur \
exactly once in the file: add a neighbouring line when a line alone is not unique. Keep each \
"search" short: the lines you change and little else. "replace" is the text that takes its \
place. Edits must not overlap.
- In JSON strings, write a newline as \\n and a double quote as \\".
- Only {filename} can change: no other file, no new dependencies.
- The result must be valid Python and differ from every script tried before.
- One idea per experiment, so that its result says what caused it. Keep it simple: a small \
gain that adds ugly complexity is not worth it; equal results with less code are a win.
"""

# The shape of the answer, as the system prompt shows it. Deliberately not JSON: its
# placeholders are not strings, so a model that copies the line gets it refused as an echo
# (`parse_reply`), never applied as an edit.
REPLY_SHAPE = (
    '{"description": <what the experiment changes>, "hypothesis": <what you expect, and why>, '
    '"edits": [{"search": <lines copied from the script>, "replace": <the lines that take '
    "their place>}]}"
)

FEEDBACK_PROMPT = """\
Your reply was rejected, and nothing was trained: {reason}

{filename} is unchanged, as shown above. Answer again with one JSON object (description, \
hypothesis, edits) whose edits apply to it: copy each "search" exactly from the file."""


class PromptTooLarge(ValueError):
    """The script to edit and the instructions alone do not fit the model's context window."""


class ReplyRejected(Exception):
    """A reply that cannot be used; ``message`` tells the model what to do differently."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- the reply -----------------------------------------------------------------------------


class EditBlock(BaseModel):
    """One SEARCH/REPLACE pair."""

    model_config = ConfigDict(extra="ignore")

    search: str = Field(
        min_length=1, description="Text copied exactly from the file; it must occur once."
    )
    replace: str = Field(description="The text that takes the place of `search`.")


def shorten_description(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``text`` on one line and at most ``limit`` characters, cut at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    # Cut at the last space that keeps a useful part of the description, else mid-word.
    space = cut.rfind(" ")
    cut = cut[:space] if space >= limit // 3 else text[:limit]
    return cut.rstrip(" ,;:-(")


class ProposalReply(BaseModel):
    """The model's answer: one experiment.

    A description longer than `DESCRIPTION_LIMIT` characters is shortened at a word
    boundary, not rejected: a weak local model that got the edit right should not spend a
    whole reply on the length of a label.
    """

    model_config = ConfigDict(extra="ignore")

    description: str = Field(
        min_length=1,
        description=f"What the experiment changes, at most {DESCRIPTION_LIMIT} characters.",
    )
    hypothesis: str = Field(
        min_length=1, description="What is expected to happen, and why (one or two sentences)."
    )
    edits: list[EditBlock] = Field(
        min_length=1, description="SEARCH/REPLACE pairs against the script, applied in order."
    )

    @field_validator("description")
    @classmethod
    def _short_description(cls, value: str) -> str:
        shortened = shorten_description(value)
        if not shortened:
            raise ValueError("description is blank")
        return shortened

    @field_validator("hypothesis")
    @classmethod
    def _hypothesis_said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("hypothesis is blank")
        return value.strip()


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            return _inline_refs(definitions[name], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(value, definitions) for value in node]
    return node


def reply_schema() -> dict[str, Any]:
    """The JSON schema of `ProposalReply`, self-contained (no ``$ref``), for ``format=``.

    Objects admit no other properties, so that a grammar built from the schema keeps the
    model to these three fields.
    """
    schema = ProposalReply.model_json_schema()
    definitions = schema.pop("$defs", {})
    schema.pop("description", None)  # the class docstring speaks to programmers, not the model
    inlined: dict[str, Any] = _inline_refs(schema, definitions)
    inlined["additionalProperties"] = False
    inlined["properties"]["edits"]["items"]["additionalProperties"] = False
    return inlined


_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\r?\n(.*)\r?\n?```", re.DOTALL)
_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the reply"


def _describe_error(error: Any) -> str:
    where = _location(error["loc"])
    kind = error["type"]
    found = _TYPE_NAMES.get(type(error.get("input")), type(error.get("input")).__name__)
    if kind == "missing":
        return f'the field "{where}" is missing'
    if kind == "string_type":
        return f'"{where}" must be a string, not {found}'
    if kind == "list_type":
        return f'"{where}" must be a list of {{"search": ..., "replace": ...}} objects, not {found}'
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f'"{where}" must be an object with "search" and "replace", not {found}'
    if kind == "too_short" and where == "edits":
        return '"edits" is empty: give at least one {"search": ..., "replace": ...} pair'
    if kind in ("too_short", "string_too_short"):
        return f'"{where}" is empty'
    if kind == "value_error":
        return f'"{where}" is blank'
    return f'"{where}": {error["msg"]}'


def _json_payload(text: str) -> str:
    """The JSON object in a reply: the whole text, the inside of a fence, or the span from
    the first ``{`` to the last ``}`` when the model wrapped the object in prose."""
    if text.startswith(("{", "[", '"')):
        return text
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


# A placeholder where a field's text belongs: <words> (the shape of the system prompt), or
# "..." / "…" (the example older prompts showed), quoted or not.
_PLACEHOLDER = r"(?:<[A-Za-z.…][^<>|\"\n]{0,80}>|\.\.\.|…)"
_PLACEHOLDER_FIELD = re.compile(
    rf'"(?:description|hypothesis|search|replace)"\s*:\s*(?:{_PLACEHOLDER}|"\s*{_PLACEHOLDER}\s*")'
)
_PLACEHOLDER_VALUE = re.compile(rf"\s*{_PLACEHOLDER}\s*")
ECHO = "echo"  # the kind of a reply that repeats the shape of the answer instead of filling it
ECHO_MESSAGE = (
    'the reply repeats the placeholders of the answer\'s shape (<...> or "...") instead of '
    "filling them in, so there is nothing to try. Write your own description and hypothesis, "
    'and copy each "search" exactly from the script shown above.'
)


# The placeholders of `REPLY_SHAPE`, in words ("lines copied from the script", ...).
_SHAPE_PLACEHOLDERS = tuple(
    " ".join(text.lower().split()) for text in re.findall(r"<([^<>]+)>", REPLY_SHAPE)
)
_ANGLED = re.compile(r"<([^<>\n]{1,80})>")
_AROUND_A_PLACEHOLDER = " \t\r\n,;:.'\"`"
NEAR_ECHO_SIMILARITY = 0.8


def is_placeholder(value: str) -> bool:
    """Whether a field's text is a placeholder (``<what changes>``, ``...``), not an answer:
    alone, or with stray punctuation around it (``"<lines copied from the script>,"``), or a
    placeholder of the answer's shape with small changes anywhere in it."""
    for text in (value, value.strip(_AROUND_A_PLACEHOLDER)):
        if _PLACEHOLDER_VALUE.fullmatch(text) is not None:
            return True
    for inside in _ANGLED.findall(value):
        words = " ".join(inside.lower().split())
        for shape in _SHAPE_PLACEHOLDERS:
            if difflib.SequenceMatcher(None, words, shape).ratio() >= NEAR_ECHO_SIMILARITY:
                return True
    return False


def repeats_the_shape(reply: ProposalReply) -> bool:
    """Whether a parsed reply left a placeholder of the answer's shape in any field."""
    fields = [reply.description, reply.hypothesis]
    for block in reply.edits:
        fields += [block.search, block.replace]
    return any(is_placeholder(value) for value in fields)


def parse_reply(text: str) -> ProposalReply:
    """The reply as a `ProposalReply`; `ReplyRejected` when it is not one: kind ``echo`` when
    it repeats the placeholders of the answer's shape, ``malformed`` otherwise.

    A ```` ```json ```` fence around the object is tolerated. The rejection message names
    what was wrong (where the JSON breaks, which field is missing or of the wrong type) so
    that the model can correct it.
    """
    stripped = text.strip()
    if not stripped:
        raise ReplyRejected("malformed", "the reply was empty; answer with one JSON object")
    if _PLACEHOLDER_FIELD.search(stripped):
        # Before parsing: a copy of the shape is not JSON, and it is an echo, not a typo.
        raise ReplyRejected(ECHO, ECHO_MESSAGE)
    payload = _json_payload(stripped)
    try:
        # Not strict: raw newlines and tabs inside strings (a model writing code into one,
        # which llama.cpp's servers let through) are read as the characters they are.
        data = json.loads(payload, strict=False)
    except json.JSONDecodeError as exc:
        before = payload[max(0, exc.pos - 30) : exc.pos]
        # Some of json's messages end in "at" ("Unterminated string starting at").
        what = exc.msg.removesuffix(" at")
        raise ReplyRejected(
            "malformed",
            f"the reply is not valid JSON: {what} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos}, just after {before!r}); "
            "answer with one JSON object and nothing around it, with newlines in strings "
            'written as \\n and double quotes as \\"',
        ) from None
    if not isinstance(data, dict):
        found = _TYPE_NAMES.get(type(data), type(data).__name__)
        raise ReplyRejected(
            "malformed",
            f'the reply must be one JSON object with "description", "hypothesis" and '
            f'"edits", not {found}',
        )
    try:
        reply = ProposalReply.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(error) for error in exc.errors())
        raise ReplyRejected("malformed", f"the reply does not fit the format: {problems}") from None
    if repeats_the_shape(reply):
        raise ReplyRejected(ECHO, ECHO_MESSAGE)
    return reply


# --- the prompt ----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A cautious estimate of how many tokens ``text`` takes in the model's context."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_messages(messages: Sequence[dict[str, str]]) -> int:
    """The estimated tokens of a whole chat, message overheads included."""
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass(frozen=True)
class PromptBuild:
    """The chat to send for one proposal, and what it cost to fit it."""

    messages: list[dict[str, str]]
    estimated_tokens: int
    num_ctx: int
    script: str  # the script the edits apply to: the best one, or the crashed one in fix mode
    filename: str = "train.py"
    left_out: dict[str, int] = field(default_factory=dict)  # what trimming dropped, by part


@dataclass
class _Parts:
    """The trimmable parts of the user message; trimming drops from their front."""

    others: list[LedgerEntry]
    others_hidden: int
    kept: list[LedgerEntry]
    kept_hidden: int
    notes: list[str]
    vetoes: list[str]
    program_lines: list[str]
    refused: list[str] = field(default_factory=list)
    program_cut: int = 0  # lines cut from the end of program.md
    notes_dropped: int = 0
    vetoes_dropped: int = 0
    refused_dropped: int = 0


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6f}" if signed else f"{value:.6f}"


def _ledger_section(ledger: Sequence[LedgerEntry], parts: _Parts) -> str:
    if not ledger:
        return "No experiments yet: this is the first proposal."
    best = next((e for e in reversed(ledger) if e.status == KEPT and e.val_bpb is not None), None)
    lines = []
    if best is not None:
        lines.append(f"The best so far: #{best.number}, val_bpb {best.val_bpb:.6f}.")
    lines.append(
        "delta is against the best at the time; negative is better. Do not repeat what was "
        "tried; build on what was kept."
    )
    lines.append("")
    lines.append(f"{'#':>4}  {'status':<9} {'val_bpb':>9} {'delta':>10}  description")
    shown = sorted(parts.kept + parts.others, key=lambda e: e.number)
    for entry in shown:
        lines.append(
            f"{entry.number:>4}  {entry.status:<9} {_number(entry.val_bpb):>9} "
            f"{_number(entry.delta, signed=True):>10}  {entry.description}"
        )
    hidden = []
    if parts.kept_hidden:
        hidden.append(f"{parts.kept_hidden} older kept")
    if parts.others_hidden:
        hidden.append(f"{parts.others_hidden} older not kept")
    if hidden:
        lines.append(f"({' and '.join(hidden)} experiments are left out for room.)")
    return "\n".join(lines)


def _fence(text: str, language: str = "") -> str:
    # A fence longer than any run of backticks in the text, so that the text cannot close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marker = "`" * max(3, longest + 1)
    return f"{marker}{language}\n{text.rstrip(chr(10))}\n{marker}"


def _device_line(device: str, filename: str) -> str:
    if device == "cuda":
        return f"{filename} trains on an NVIDIA GPU: constants written `A if CUDA else B` take A."
    return f"{filename} trains on the CPU: constants written `A if CUDA else B` take B."


def _crash_section(fix: CrashReport, best_script: str, filename: str) -> str:
    tail = fix.log_tail.strip()
    if len(tail) > CRASH_TAIL_CHARS:
        tail = "…" + tail[-CRASH_TAIL_CHARS:]
    diff = list(
        difflib.unified_diff(
            best_script.splitlines(),
            fix.script.splitlines(),
            f"best/{filename}",
            f"experiment-{fix.number}/{filename}",
            lineterm="",
        )
    )
    if len(diff) > CRASH_DIFF_LINES:
        diff = [*diff[:CRASH_DIFF_LINES], f"... ({len(diff) - CRASH_DIFF_LINES} more lines)"]
    lines = [
        f'Experiment #{fix.number}, "{fix.description}", failed ({fix.outcome}). '
        f"The {filename} below is that experiment's script.",
        "",
        "The last lines of its log:",
        _fence(tail or "(the log was empty)"),
    ]
    if diff:
        lines += ["", "What it changed against the best script:", _fence("\n".join(diff), "diff")]
    return "\n".join(lines)


def _plateau_section(ledger: Sequence[LedgerEntry]) -> str:
    """What to do after many experiments without a keep, with the latest dead ends."""
    count = since_last_keep(ledger)
    dead_ends = [e for e in ledger if e.status != KEPT and e.number > 0][-PLATEAU_DEAD_ENDS:]
    lines = [
        f"The latest {count} experiments kept nothing: refining the same direction has stopped "
        "paying. Propose something different in kind from these dead ends (another part of "
        "the model or the training, a simplification, or a bolder change), not a variation "
        "of them:",
        "",
    ]
    lines += [
        f"- #{e.number} {e.description} ({e.status}, delta {_number(e.delta, signed=True)})"
        for e in dead_ends
    ]
    return "\n".join(lines)


def _user_message(context: ProposalContext, parts: _Parts, filename: str) -> str:
    fix = context.fix
    script = fix.script if fix is not None else context.best_script
    sections: list[str] = []
    program_lines = parts.program_lines[: len(parts.program_lines) - parts.program_cut]
    program = "\n".join(program_lines).strip()
    if parts.program_cut:
        program += (
            f"\n\n[{parts.program_cut} more lines of program.md are left out to fit the "
            "model's context window.]"
        )
    if program:
        sections.append(f"# Research program (program.md)\n\n{program}")
    if fix is not None:
        heading = f"# {filename} of experiment #{fix.number}, the one that failed"
    else:
        heading = f"# The current best {filename}"
    sections.append(
        f"{heading}\n\n{_device_line(context.device, filename)}\n\n{_fence(script, 'python')}"
    )
    sections.append(f"# Experiments so far\n\n{_ledger_section(context.ledger, parts)}")
    if parts.notes or parts.notes_dropped:
        lines = [f"- {note}" for note in parts.notes]
        if parts.notes_dropped:
            lines.insert(0, f"({parts.notes_dropped} older notes are left out for room.)")
        sections.append(
            "# Notes from the researcher (oldest first; a newer note overrides an older one, "
            "and notes override program.md)\n\n" + "\n".join(lines)
        )
    if parts.vetoes or parts.vetoes_dropped:
        lines = [f"- {veto}" for veto in parts.vetoes]
        if parts.vetoes_dropped:
            lines.insert(0, f"({parts.vetoes_dropped} older vetoes are left out for room.)")
        sections.append(
            "# Proposals the researcher vetoed (do not propose them again; heed the reasons)\n\n"
            + "\n".join(lines)
        )
    if parts.refused or parts.refused_dropped:
        lines = [f"- {refusal}" for refusal in parts.refused]
        if parts.refused_dropped:
            lines.insert(0, f"({parts.refused_dropped} older refusals are left out for room.)")
        sections.append(
            "# Proposals refused before training (they reach around the harness, the evaluator "
            "or the data; improve the model instead)\n\n" + "\n".join(lines)
        )
    if context.in_flight and fix is None:
        lines = [f"- {description}" for description in context.in_flight[-IN_FLIGHT_SHOWN:]]
        sections.append(
            "# Being trained right now or waiting to be (their results are not in yet; propose "
            "a different idea)\n\n" + "\n".join(lines)
        )
    if context.tuned and fix is None:
        names = ", ".join(sorted(context.tuned))
        sections.append(
            f"# Numbers the optimiser tunes\n\nAn optimiser tunes these constants of {filename} "
            f"itself, trying their values side by side with you: {names}. Leave their values "
            "to it: a proposal that only changes them is refused. Propose changes to the code "
            "(the model, the optimizer, the schedule, the data pipeline); the optimiser then "
            "tunes the numbers of what you build."
        )
    if context.on_plateau and fix is None:
        sections.append(f"# A plateau\n\n{_plateau_section(context.ledger)}")
    if fix is not None:
        sections.append(
            f"# The failure to fix\n\n{_crash_section(fix, context.best_script, filename)}"
        )
        task = (
            f"Fix the {fix.outcome} of experiment #{fix.number}: make the smallest edit to its "
            f"{filename} above that removes the cause shown in the log, and keep the "
            f'experiment\'s idea. Start the description with "fix:". If the idea cannot work '
            "(it runs out of memory or time, or diverges), scale it down instead."
        )
    else:
        task = (
            "Propose the next experiment: one idea, as edits to the current best "
            f"{filename} above, that you expect to lower val_bpb within the time budget."
        )
    sections.append(f"# Your task\n\n{task} Answer with the JSON object only.")
    return "\n\n".join(sections) + "\n"


def _initial_parts(context: ProposalContext) -> _Parts:
    kept = [e for e in context.ledger if e.status == KEPT]
    others = [e for e in context.ledger if e.status != KEPT]
    recent_others = others[-RECENT_OTHERS:] if RECENT_OTHERS else []
    return _Parts(
        others=recent_others,
        others_hidden=len(others) - len(recent_others),
        kept=kept,
        kept_hidden=0,
        notes=[n.strip() for n in context.notes if n.strip()],
        vetoes=[v.strip() for v in context.vetoes if v.strip()],
        program_lines=context.program.strip().splitlines(),
        refused=[r.strip() for r in context.refused if r.strip()],
    )


def _trim_once(parts: _Parts, excess_tokens: int) -> bool:
    """Drop the least useful thing left; False when nothing can go."""
    if parts.others:
        parts.others.pop(0)
        parts.others_hidden += 1
    elif len(parts.kept) > LATEST_KEPT:
        parts.kept.pop(0)
        parts.kept_hidden += 1
    elif len(parts.refused) > 1:
        parts.refused.pop(0)
        parts.refused_dropped += 1
    elif parts.vetoes:
        parts.vetoes.pop(0)
        parts.vetoes_dropped += 1
    elif len(parts.notes) > 1:
        parts.notes.pop(0)
        parts.notes_dropped += 1
    elif parts.program_cut < len(parts.program_lines):
        # Cut about as many characters as are too many, in one go, at least one line.
        wanted = excess_tokens * CHARS_PER_TOKEN
        remaining = parts.program_lines[: len(parts.program_lines) - parts.program_cut]
        removed = 0.0
        while remaining and (removed < wanted or not removed):
            removed += len(remaining.pop()) + 1
            parts.program_cut += 1
    elif parts.notes:
        parts.notes.pop(0)
        parts.notes_dropped += 1
    elif parts.refused:
        parts.refused.pop(0)
        parts.refused_dropped += 1
    elif parts.kept:
        parts.kept.pop(0)
        parts.kept_hidden += 1
    else:
        return False
    return True


def build_messages(
    context: ProposalContext, *, num_ctx: int, filename: str = "train.py"
) -> PromptBuild:
    """The system and user messages for the next proposal, trimmed to fit ``num_ctx``.

    The script to edit (the best one, or in fix mode the one that failed) is always there,
    complete. Raises `PromptTooLarge` when it does not fit even with everything else left out.
    """
    system = SYSTEM_PROMPT.format(
        filename=filename, limit=DESCRIPTION_LIMIT, reply_shape=REPLY_SHAPE
    )
    budget = num_ctx - REPLY_RESERVE_TOKENS - RETRY_RESERVE_TOKENS
    parts = _initial_parts(context)
    while True:
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": _user_message(context, parts, filename)},
        ]
        tokens = estimate_messages(messages)
        if tokens <= budget:
            break
        if not _trim_once(parts, tokens - budget):
            script = context.fix.script if context.fix is not None else context.best_script
            raise PromptTooLarge(
                f"{filename} ({len(script)} characters, about {estimate_tokens(script)} tokens) "
                f"and the instructions need about {tokens} tokens, plus "
                f"{REPLY_RESERVE_TOKENS + RETRY_RESERVE_TOKENS} for the model's reply, more "
                f"than its context window of num_ctx = {num_ctx} tokens; raise num_ctx in the "
                "[agent] section of config.toml (and use a model that supports it), or make "
                f"{filename} shorter"
            )
    left_out = {
        name: count
        for name, count in (
            ("experiments_not_kept", parts.others_hidden),
            ("kept_experiments", parts.kept_hidden),
            ("notes", parts.notes_dropped),
            ("vetoes", parts.vetoes_dropped),
            ("program_lines", parts.program_cut),
        )
        if count
    }
    return PromptBuild(
        messages=messages,
        estimated_tokens=tokens,
        num_ctx=num_ctx,
        script=context.fix.script if context.fix is not None else context.best_script,
        filename=filename,
        left_out=left_out,
    )


def add_feedback(
    build: PromptBuild, reply_text: str, rejection_message: str
) -> list[dict[str, str]]:
    """The chat for a retry: the prompt, the rejected reply and why it was rejected.

    Only the latest rejected reply goes back, shortened, so that a retry fits the room that
    `build_messages` kept for it.
    """
    reply = reply_text.strip()
    if len(reply) > FEEDBACK_REPLY_CHARS:
        reply = reply[:FEEDBACK_REPLY_CHARS] + "…"
    reason = rejection_message.strip()
    if len(reason) > FEEDBACK_REASON_CHARS:
        reason = reason[:FEEDBACK_REASON_CHARS] + "…"
    return [
        *build.messages,
        {"role": "assistant", "content": reply or "(an empty reply)"},
        {
            "role": "user",
            "content": FEEDBACK_PROMPT.format(reason=reason, filename=build.filename),
        },
    ]


# --- the prompt size of a default workspace --------------------------------------------------


def _template_files() -> tuple[Path, Path]:
    # Located by path: the agent imports nothing of cockpit, and the trainer's harness would
    # pull in torch just to name its template.
    root = Path(__file__).resolve().parent.parent
    return root / "trainer" / "train.py", root / "cockpit" / "template" / "program.md"


def synthetic_context(experiments: int, script: str, program: str) -> ProposalContext:
    """A ledger of ``experiments`` plausible results on ``script``, with a few notes."""
    from agent.constants import find_constants  # the template's own knobs name the experiments

    names = [c.name for c in find_constants(script)] or ["LEARNING_RATE"]
    verbs = ("raise", "lower", "double", "halve", "try a cosine schedule with")
    statuses = ("discard", "discard", "keep", "crash", "discard")
    best = 3.4
    ledger: list[LedgerEntry] = [LedgerEntry(0, "baseline", KEPT, best, None)]
    for number in range(1, experiments):
        status = statuses[number % len(statuses)]
        name = names[number % len(names)]
        description = shorten_description(
            f"{verbs[number % len(verbs)]} {name} and retune warmup for it, run {number}"
        )
        value = None if status == "crash" else best + (-0.01 if status == KEPT else 0.004)
        delta = None if value is None else value - best
        ledger.append(LedgerEntry(number, description, status, value, delta))
        if status == KEPT and value is not None:
            best = value
    return ProposalContext(
        best_script=script,
        ledger=ledger,
        notes=(
            "focus on the optimizer for a while",
            "deeper models have not paid off in this budget",
        ),
        vetoes=("double WIDTH: too slow for the five-minute budget",),
        program=program,
    )


def default_prompt_size(experiments: int, num_ctx: int = OllamaOptions.num_ctx) -> PromptBuild:
    """The prompt of the default workspace (template train.py and program.md) after
    ``experiments`` experiments."""
    script_path, program_path = _template_files()
    context = synthetic_context(
        experiments, script_path.read_text(), program_path.read_text(errors="replace")
    )
    return build_messages(context, num_ctx=num_ctx)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the estimated prompt size of a default workspace after N experiments."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.prompt",
        description="Estimate the prompt size of a default workspace after N experiments.",
    )
    parser.add_argument("--experiments", type=int, default=50, help="ledger length (default 50)")
    parser.add_argument(
        "--num-ctx", type=int, default=OllamaOptions.num_ctx, help="the model's context window"
    )
    parser.add_argument("--show", action="store_true", help="print the messages too")
    args = parser.parse_args(argv)
    if args.experiments < 1:
        parser.error("--experiments must be 1 or more")
    try:
        build = default_prompt_size(args.experiments, args.num_ctx)
    except PromptTooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.show:
        for message in build.messages:
            print(f"--- {message['role']} ---\n{message['content']}")
    left_out = ", ".join(f"{k} {v}" for k, v in build.left_out.items()) or "nothing"
    print(
        f"experiments: {args.experiments}\n"
        f"estimated prompt tokens: {build.estimated_tokens}\n"
        f"reserved for the reply and one retry: {REPLY_RESERVE_TOKENS + RETRY_RESERVE_TOKENS}\n"
        f"num_ctx: {build.num_ctx}\n"
        f"left out: {left_out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
