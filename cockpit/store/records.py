"""The journal's records and their vocabulary: what a run, an experiment, an event, a command
and a sample are, the statuses and decisions they may hold, and how a record maps to its row
(JSON lives in TEXT columns named ``*_json`` and is exposed decoded, under the name without
the suffix). Only the store's modules turn rows into records and back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cockpit.store.steering import MODES as RUN_MODES
from cockpit.store.steering import Kind

BUSY_TIMEOUT_MS = 5000

RUN_STATUSES = ("active", "finished", "stopped")
EXPERIMENT_STATUSES = (
    "proposed",
    "awaiting_approval",
    "vetoed",
    "committed",
    "training",
    "evaluating",
    "keep",
    "discard",
    "crash",
    "timeout",
    "interrupted",
    "rejected",
)
# Nothing more happens to an experiment in one of these (a re-run after an interruption is an
# explicit update by the engine, with attempt + 1).
FINAL_STATUSES = frozenset(
    {"vetoed", "keep", "discard", "crash", "timeout", "interrupted", "rejected"}
)
UNFINISHED_STATUSES = tuple(s for s in EXPERIMENT_STATUSES if s not in FINAL_STATUSES)
# A script in one of these has been (or is about to be) trained: training it again would only
# spend the budget on a known answer.
TRAINED_STATUSES = (
    "committed",
    "training",
    "evaluating",
    "keep",
    "discard",
    "crash",
    "timeout",
    "interrupted",
)
DECISIONS = ("keep", "discard", "crash", "veto")
# The status an experiment takes with a decision when the caller names none.
DECISION_STATUS = {"keep": "keep", "discard": "discard", "crash": "crash", "veto": "vetoed"}
# Only these reach results.tsv; a veto never trained, so it has no row there.
LEDGER_DECISIONS = ("keep", "discard", "crash")

# The commands the engine understands: the steering vocabulary owns the names.
COMMAND_KINDS = tuple(kind.value for kind in Kind)
COMMAND_STATUSES = ("pending", "done", "failed")

# Enumerated values (statuses, modes, kinds) are checked here in Python rather than with SQL
# CHECK constraints: SQLite can only change a CHECK by rebuilding the table, and new statuses
# are the likeliest schema change.


class JournalError(Exception):
    """A problem with the journal that the user can act on; the message says how."""


def now() -> float:
    """The journal's clock: unix time in float seconds (the store's modules call it as
    ``records.now()``, so that one patch sets the clock of every record they write)."""
    return time.time()


def dumps(value: Any) -> str:
    # default=str: configs hold Paths and the like, which should be recorded, not refused.
    return json.dumps(value, sort_keys=True, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Run:
    """One research run: a tag, its branch and the best result so far."""

    id: int
    tag: str
    branch: str
    base_commit: str
    created_at: float
    mode: str
    proposer: str
    config: dict[str, Any]
    corpus_fingerprint: str
    status: str
    baseline_val_bpb: float | None
    best_val_bpb: float | None
    best_commit: str | None
    target: int | None


@dataclass(frozen=True)
class Experiment:
    """One proposed change to train.py and everything that happened to it."""

    id: int
    run_id: int
    number: int
    parent_commit: str | None
    commit_sha: str | None
    ref: str | None
    proposer: str | None
    model: str | None
    description: str
    hypothesis: str
    diff: str
    script_hash: str | None
    status: str
    outcome: str | None
    exit_code: int | None
    val_bpb: float | None
    peak_memory_mb: float | None
    training_seconds: float | None
    total_seconds: float | None
    num_steps: int | None
    attempt: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    decision: str | None
    decision_reason: str | None
    summary: dict[str, Any] | None
    log_path: str | None
    crash_tail: str | None
    lines_of_code: int | None
    details: dict[str, Any] | None = None

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to this experiment."""
        return self.status in FINAL_STATUSES

    @property
    def short_commit(self) -> str:
        """The first seven characters of the commit, as results.tsv and git show it."""
        return short_commit(self.commit_sha)


def short_commit(sha: str | None) -> str:
    """The first seven characters of a commit, as results.tsv and git show it."""
    return (sha or "")[:7]


@dataclass(frozen=True)
class LedgerEntry:
    """An experiment as a ledger lists it: the columns a row of the screen shows, read without
    its diff, hypothesis, summary or details, so that a run of ten thousand reads at once."""

    id: int
    number: int
    commit_sha: str | None
    val_bpb: float | None
    peak_memory_mb: float | None
    status: str
    decision: str | None
    proposer: str | None
    model: str | None
    description: str
    decision_reason: str | None
    best_before: Any  # the best when it was decided, as the decision's evidence recorded it
    log_path: str | None
    attempt: int


LEDGER_COLUMNS = (
    "id, number, commit_sha, val_bpb, peak_memory_mb, status, decision, proposer, model, "
    "description, decision_reason, {best_before} AS best_before, log_path, attempt"
)


@dataclass(frozen=True)
class Event:
    """A line of the run's story: a decision, a phase change, a fallback, a rejection…"""

    id: int
    run_id: int | None
    experiment_id: int | None
    at: float
    kind: str
    message: str
    data: dict[str, Any] | None


@dataclass(frozen=True)
class Command:
    """A request from the user (through the TUI or the CLI) for the engine."""

    id: int
    created_at: float
    kind: str
    payload: dict[str, Any]
    status: str
    handled_at: float | None
    result: str


@dataclass(frozen=True)
class Sample:
    """One monitor reading (GPU and process figures) taken while a run goes on."""

    id: int
    run_id: int
    experiment_id: int | None
    at: float
    data: dict[str, Any]


_R = TypeVar("_R", Run, Experiment, Event, Command, Sample)

# The record fields stored as JSON, in a column named <field>_json.
JSON_FIELDS: dict[type, frozenset[str]] = {
    Run: frozenset({"config"}),
    Experiment: frozenset({"summary", "details"}),
    Event: frozenset({"data"}),
    Command: frozenset({"payload"}),
    Sample: frozenset({"data"}),
}
# What update_run may change: never the id, the tag (it names the branch) or the birth date.
RUN_UPDATABLE = frozenset(
    {
        "branch",
        "base_commit",
        "mode",
        "proposer",
        "config",
        "corpus_fingerprint",
        "status",
        "baseline_val_bpb",
        "best_val_bpb",
        "best_commit",
        "target",
    }
)
# What add_experiment/update_experiment may set. The decision is left out on purpose: only
# record_decision writes it, so that a decision never exists without its event.
EXPERIMENT_UPDATABLE = frozenset(f.name for f in dataclasses.fields(Experiment)) - {
    "id",
    "run_id",
    "number",
    "created_at",
    "decision",
    "decision_reason",
}


def from_row(cls: type[_R], row: sqlite3.Row) -> _R:
    json_fields = JSON_FIELDS[cls]
    present = set(row.keys())  # a journal of an older schema, opened read-only, lacks some
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        column = f"{f.name}_json" if f.name in json_fields else f.name
        if column not in present:
            continue  # the field's default stands in
        values[f.name] = loads(row[column]) if f.name in json_fields else row[column]
    return cls(**values)


def to_columns(cls: type, fields: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Turn record-field keyword arguments into column values, refusing anything unlisted."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(
            f"cannot set {', '.join(unknown)} on {cls.__name__.lower()}; "
            f"settable fields: {', '.join(sorted(allowed))}"
        )
    json_fields = JSON_FIELDS[cls]
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name in json_fields:
            columns[f"{name}_json"] = None if value is None else dumps(value)
        elif isinstance(value, os.PathLike):
            columns[name] = os.fspath(value)
        else:
            columns[name] = value
    return columns


def check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def check_run_fields(fields: Mapping[str, Any]) -> None:
    if "mode" in fields:
        check_choice("run mode", fields["mode"], RUN_MODES)
    if "status" in fields:
        check_choice("run status", fields["status"], RUN_STATUSES)


def check_experiment_fields(fields: Mapping[str, Any]) -> None:
    if "status" in fields:
        check_choice("experiment status", fields["status"], EXPERIMENT_STATUSES)


def set_clause(columns: Mapping[str, Any]) -> str:
    # Column names come from the whitelists above, never from the caller, so this is safe.
    return ", ".join(f"{name} = ?" for name in columns)


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
