"""Typed, validated settings for Research Cockpit.

Settings come from four layers; for each setting the first layer that sets it wins:

1. ``overrides``: command-line flags, as dotted keys (``"trainer.budget_seconds"``);
2. the environment: ``COCKPIT_<SECTION>__<KEY>`` (e.g. ``COCKPIT_TRAINER__DEVICE=cpu``);
3. ``<workspace>/config.toml``, when there is one;
4. the shipped defaults: the top-level ``config.toml`` of the project.

Every problem is raised as a :class:`ConfigError` whose message is the complete
user-facing text: it names the setting, where the bad value came from (file and line,
environment variable or command line) and what to do about it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "CONFIG_FILENAME",
    "ENV_PREFIX",
    "ENV_SEPARATOR",
    "NOTIFY_EVENTS",
    "AgentSettings",
    "ConfigError",
    "EngineSettings",
    "ExecutorSettings",
    "NotifySettings",
    "PathsSettings",
    "Settings",
    "TrainerSettings",
    "UISettings",
    "find_key_line",
    "load_settings",
    "parse_env_value",
    "shipped_config_path",
]

CONFIG_FILENAME = "config.toml"
ENV_PREFIX = "COCKPIT_"
# Only variables with this separator are settings: the project also uses plain
# COCKPIT_* variables (e.g. COCKPIT_DEVICE) internally, and those must not be read here.
ENV_SEPARATOR = "__"

# Name under which the per-user cache directory is created.
_APP_NAME = "research-cockpit"

# strict: a quoted "20" in a file must be an error, not silently become 20 (pydantic's
# strict mode still accepts an int for a float field, so `budget_seconds = 20` works).
# frozen: settings are read once and shared; nobody should mutate them behind our back.
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


class ConfigError(Exception):
    """A problem with the settings; ``str(error)`` is the full message for the user."""


class TrainerSettings(BaseModel):
    """The ``[trainer]`` section: how one training run is executed."""

    model_config = _MODEL_CONFIG

    script: str = Field(
        default="train.py",
        min_length=1,
        description="The training script the agent edits, relative to the workspace.",
        json_schema_extra={"allowed": "a non-empty path relative to the workspace"},
    )
    command: str = Field(
        default="",
        description=(
            "Script mode: a shell command, run in the workspace, that trains the script and "
            'prints the summary block itself (e.g. "uv run train.py" in an autoresearch '
            'checkout); "" = the built-in harness. Its metric is self-reported.'
        ),
        json_schema_extra={"allowed": 'a shell command, or "" for the built-in harness'},
    )
    metric: str = Field(
        default="val_bpb",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The summary-block figure that decides keep or discard; lower is better.",
        json_schema_extra={"allowed": "a name from the summary block, such as val_bpb"},
    )
    budget_seconds: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Wall-clock training budget of one run, in seconds.",
        json_schema_extra={"allowed": "a number of seconds greater than 0"},
    )
    grace_seconds: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Time allowed past the budget, in seconds, before the run is stopped as a timeout."
        ),
        json_schema_extra={"allowed": "a number of seconds, 0 or more"},
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Device to train on; auto picks cuda when it is available, else cpu.",
        json_schema_extra={"allowed": '"auto", "cpu", "cuda" or "cuda:N" (e.g. "cuda:1")'},
    )
    seed: int = Field(
        default=42,
        ge=0,
        description="Random seed of a run.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    corpus: str = Field(
        default="stdlib",
        pattern=r"^(stdlib|text:.+|parquet:.+)$",
        description=(
            "Training corpus: stdlib (the Python standard library's sources), "
            "text:DIR (text files under DIR) or parquet:DIR (parquet files under DIR)."
        ),
        json_schema_extra={"allowed": '"stdlib", "text:DIR" or "parquet:DIR"'},
    )
    seq_len: int = Field(
        default=0,
        ge=0,
        description="Sequence length in tokens; 0 = automatic (256 on CPU, 2048 on CUDA).",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = automatic)"},
    )
    eval_tokens: int = Field(
        default=0,
        ge=0,
        description=(
            "Validation tokens per evaluation; 0 = automatic (131072 on CPU, 4194304 on "
            "CUDA). Always capped by the size of the validation split."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = automatic)"},
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads used for training; 0 = all available cores.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = all cores)"},
    )
    require_confinement: bool = Field(
        default=False,
        description=(
            "Refuse to train where the kernel cannot take the training process off the "
            "network (a user and network namespace of its own); false = train unconfined "
            "then, and say so."
        ),
        json_schema_extra={"allowed": "true or false"},
    )


class EngineSettings(BaseModel):
    """The ``[engine]`` section: how the research loop proposes, trains and decides."""

    model_config = _MODEL_CONFIG

    mode: str = Field(
        default="autonomous",
        pattern=r"^(autonomous|supervised)$",
        description=(
            "autonomous: every proposal is trained; supervised: each proposal waits for the "
            "researcher to approve or veto it."
        ),
        json_schema_extra={"allowed": '"autonomous" or "supervised"'},
    )
    proposer: str = Field(
        default="llm",
        pattern=r"^(builtin|llm)$",
        description=(
            "Who proposes experiments: llm (the [agent] model through Ollama; the built-in "
            "proposer stands in while Ollama cannot answer) or builtin (perturbs the numeric "
            "CAPS constants of the script; needs no model)."
        ),
        json_schema_extra={"allowed": '"builtin" or "llm"'},
    )
    experiments: int = Field(
        default=0,
        ge=0,
        description="Experiments to run after the baseline; 0 = until stopped.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = until stopped)"},
    )
    keep_margin_bpb: float = Field(
        default=0.001,
        ge=0,
        allow_inf_nan=False,
        description=(
            "An experiment is kept when its val_bpb beats the best by more than this; within "
            "it, the one with fewer lines of code wins."
        ),
        json_schema_extra={"allowed": "a number, 0 or more"},
    )
    noise_runs: int = Field(
        default=2,
        ge=1,
        description=(
            "Trainings of the baseline at the start of a run, each with its own seed, that "
            "measure the run-to-run spread of val_bpb; 1 turns the noise floor off."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more (1 = off)"},
    )
    noise_multiple: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "The keep margin is this many times the measured spread (its standard deviation), "
            "never less than keep_margin_bpb."
        ),
        json_schema_extra={"allowed": "a number, 0 or more"},
    )
    confirm_multiple: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "An experiment that would be kept with a gain under this many margins is trained "
            "again with another seed, and decided on the mean of both runs; 0 = never."
        ),
        json_schema_extra={"allowed": "a number, 0 or more (0 = never confirm)"},
    )
    test_split_summary: bool = Field(
        default=True,
        description=(
            "At the end of a run, score the baseline and the kept experiments on the test "
            "split (read by no decision) and say the validation gain against the test gain."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    early_abort: bool = Field(
        default=True,
        description=(
            "Stop a training whose loss trails the best run's at the same point of the budget "
            "by more than the early-abort margin, and record it as discarded early."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    early_abort_after: float = Field(
        default=0.3,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="The share of the budget before which no training is stopped early.",
        json_schema_extra={"allowed": "a number greater than 0, at most 1"},
    )
    early_abort_margin: float = Field(
        default=0.02,
        gt=0,
        allow_inf_nan=False,
        description=(
            "The least relative loss gap (0.02 = 2 % higher than the best run's) that stops a "
            "training; once three keeps are recorded, the widest gap a keep showed (plus 0.01) "
            "raises it."
        ),
        json_schema_extra={"allowed": "a number greater than 0"},
    )
    fix_attempts: int = Field(
        default=1,
        ge=0,
        description="How many times a crashed experiment is handed back to the proposer to fix.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Trainings run side by side, each on its own device and git worktree: auto = one "
            "per visible GPU (one on a machine without a GPU), or a number (1 or more)."
        ),
        json_schema_extra={"allowed": '"auto" or an integer, 1 or more'},
    )
    sample_seconds: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between GPU and process readings during training.",
        json_schema_extra={"allowed": "a number greater than 0"},
    )


class AgentSettings(BaseModel):
    """The ``[agent]`` section: the local LLM, served by Ollama, that proposes edits."""

    model_config = _MODEL_CONFIG

    host: str = Field(
        default="",
        description=(
            'Ollama server address; "" = the OLLAMA_HOST environment variable, else '
            "http://127.0.0.1:11434."
        ),
        json_schema_extra={"allowed": 'a URL such as "http://127.0.0.1:11434", or ""'},
    )
    model: str = Field(
        default="qwen2.5-coder:7b",
        min_length=1,
        description="The Ollama model that proposes edits (pull it first: ollama pull NAME).",
        json_schema_extra={"allowed": "a model name as `ollama list` shows it"},
    )
    temperature: float = Field(
        default=0.7,
        ge=0,
        le=2,
        allow_inf_nan=False,
        description="Sampling temperature of the model.",
        json_schema_extra={"allowed": "a number from 0 to 2"},
    )
    num_ctx: int = Field(
        default=16384,
        ge=2048,
        description="The model's context window in tokens; the prompt is trimmed to fit it.",
        json_schema_extra={"allowed": "an integer, 2048 or more"},
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="Sampling seed of the model; 0 = a different one every call.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = unseeded)"},
    )
    timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait for one reply of the model, in seconds.",
        json_schema_extra={"allowed": "a number greater than 0"},
    )
    attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "Replies asked for one proposal: a rejected edit goes back to the model with the "
            "reason, at most this many times in all."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    unload_before_training: bool = Field(
        default=True,
        description=(
            "Unload the model from the GPU (keep_alive=0) before each training on a GPU, so "
            "the two do not fight over its memory. With several workers the model stays "
            "loaded: see reserved_gpus and on_cpu."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    reserved_gpus: list[str] = Field(
        default=[],
        description=(
            "GPUs no worker trains on, as CUDA_VISIBLE_DEVICES names them: the ones Ollama was "
            'started on (e.g. `CUDA_VISIBLE_DEVICES=3 ollama serve` and reserved_gpus = ["3"]).'
        ),
        json_schema_extra={"allowed": 'a list of GPU numbers as strings, e.g. ["3"]'},
    )
    on_cpu: bool = Field(
        default=False,
        description=(
            "Ask Ollama to keep the model off the GPUs (num_gpu = 0): every GPU trains, and "
            "the model answers from main memory, several times slower."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    retry_seconds: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Longest wait between tries to reach Ollama again while the built-in proposer "
            "stands in; waits double from 2 s up to this."
        ),
        json_schema_extra={"allowed": "a number greater than 0"},
    )


class UISettings(BaseModel):
    """The ``[ui]`` section: the terminal cockpit."""

    model_config = _MODEL_CONFIG

    theme: str = Field(
        default="midnight",
        min_length=1,
        description=(
            "Colour theme: midnight, daylight or contrast (high contrast); `t` in the "
            "cockpit cycles them and the choice is remembered."
        ),
        json_schema_extra={"allowed": '"midnight", "daylight" or "contrast"'},
    )


# What [notify] can tell; `cockpit.engine.notify` sends these kinds.
NotifyEvent = Literal["new_best", "crash_streak", "engine_stopped", "agent_lost"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)


class NotifySettings(BaseModel):
    """The ``[notify]`` section: notices sent while a run goes on (off by default)."""

    model_config = _MODEL_CONFIG

    urls: list[Annotated[str, Field(min_length=1)]] = Field(
        default=[],
        description=(
            "Apprise URLs that receive the notices: ntfy://HOST/TOPIC, mailto://..., "
            "json://HOST:PORT/PATH, chat webhooks; [] = none (needs the notify extra)."
        ),
        json_schema_extra={
            "allowed": 'an array of apprise URLs (e.g. ["ntfy://192.168.1.5/cockpit"])'
        },
    )
    command: str = Field(
        default="",
        description=(
            "A shell command run for each notice, with COCKPIT_NOTIFY_KIND, "
            'COCKPIT_NOTIFY_TITLE and COCKPIT_NOTIFY_BODY in its environment; "" = none.'
        ),
        json_schema_extra={"allowed": 'a shell command, or "" for none'},
    )
    events: list[NotifyEvent] = Field(
        default=list(NOTIFY_EVENTS),
        description=(
            "What is notified: new_best (a keep that beats the best), crash_streak, "
            "engine_stopped, agent_lost (Ollama stopped answering)."
        ),
        json_schema_extra={
            "allowed": "an array of event names from "
            + ", ".join(f'"{name}"' for name in NOTIFY_EVENTS)
        },
    )
    crash_streak: int = Field(
        default=3,
        ge=1,
        description="Crashes (or timeouts) in a row that make a crash_streak notice.",
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    min_interval_seconds: float = Field(
        default=300.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Least time between two notices of one kind, in seconds; the ones held back are "
            "counted in the next notice of that kind."
        ),
        json_schema_extra={"allowed": "a number of seconds, 0 or more"},
    )

    @property
    def enabled(self) -> bool:
        """Whether notices go anywhere: off while both ``urls`` and ``command`` are empty."""
        return bool(self.urls or self.command)


class PathsSettings(BaseModel):
    """The ``[paths]`` section: where the cockpit keeps its files."""

    model_config = _MODEL_CONFIG

    cache_dir: str = Field(
        default="",
        description='Directory where encoded corpora are kept; "" = the user cache directory.',
        json_schema_extra={"allowed": 'a directory path, or "" for the user cache directory'},
    )

    def resolved_cache_dir(self) -> Path:
        """Return ``cache_dir`` as a path: ``~`` expanded, ``""`` = the user cache directory."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        # Imported here so that merely reading settings does not need platformdirs.
        import platformdirs

        return platformdirs.user_cache_path(_APP_NAME)


class ExecutorSettings(BaseModel):
    """The ``[executor]`` section: where trainings run (this machine, or a cluster)."""

    model_config = _MODEL_CONFIG

    kind: str = Field(
        default="local",
        pattern=r"^(local|slurm|ray)$",
        description=(
            "local: trainings are processes on this machine; slurm: each training is a SLURM "
            "job, submitted through submitit (the workspace must be on storage the nodes "
            "share); ray: each training runs on a Ray cluster, one GPU each."
        ),
        json_schema_extra={"allowed": '"local", "slurm" or "ray"'},
    )
    partition: str = Field(
        default="",
        description='The SLURM partition of the jobs; "" = the cluster\'s default.',
        json_schema_extra={"allowed": 'a partition name, or ""'},
    )
    gpus_per_job: int = Field(
        default=1,
        ge=0,
        description="GPUs each SLURM job asks for (0 on nodes without GPUs).",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    cpus_per_job: int = Field(
        default=0,
        ge=0,
        description="Cores each SLURM job or Ray training asks for; 0 = one.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    slurm_local: bool = Field(
        default=False,
        description=(
            "Run the SLURM path through submitit's local executor, on this machine: to try "
            "the setup out before a cluster is at hand."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    ray_address: str = Field(
        default="",
        description=(
            'The Ray cluster: "" = start one on this machine, "auto" = the cluster this '
            'machine belongs to, or an address such as "ray://head:10001".'
        ),
        json_schema_extra={"allowed": 'an address, "auto" or ""'},
    )


class Settings(BaseModel):
    """All settings, one attribute per ``[section]`` of config.toml."""

    model_config = _MODEL_CONFIG

    trainer: TrainerSettings = Field(
        default_factory=TrainerSettings, description="How one training run is executed."
    )
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="How the research loop runs."
    )
    agent: AgentSettings = Field(
        default_factory=AgentSettings, description="The local LLM that proposes edits."
    )
    ui: UISettings = Field(default_factory=UISettings, description="The terminal cockpit.")
    paths: PathsSettings = Field(
        default_factory=PathsSettings, description="Where the cockpit keeps its files."
    )
    notify: NotifySettings = Field(
        default_factory=NotifySettings, description="Notices sent while a run goes on."
    )
    executor: ExecutorSettings = Field(
        default_factory=ExecutorSettings, description="Where trainings run."
    )


# --------------------------------------------------------------------------------------
# Where the shipped defaults live


def shipped_config_path() -> Path:
    """Return the path of the shipped default config.toml.

    An installed wheel carries it as ``cockpit/defaults/config.toml``; a source checkout
    or editable install does not have that file, so the repository's top-level
    ``config.toml`` is used instead. Raises :class:`ConfigError` if neither exists.
    """
    here = Path(__file__).resolve().parent
    candidates = (here / "defaults" / CONFIG_FILENAME, here.parent / CONFIG_FILENAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise ConfigError(
        f"the shipped default settings are missing (looked for {tried}). "
        "Reinstall research-cockpit."
    )


# --------------------------------------------------------------------------------------
# Line numbers of keys in TOML text (tomllib does not report them)


def find_key_line(text: str, key: str | tuple[str, ...]) -> int | None:
    """Return the 1-based line on which ``key`` is defined in the TOML ``text``.

    ``key`` is a dotted string (``"trainer.seed"``) or a tuple of key parts, which is
    needed for quoted keys that themselves contain dots. A table is "defined" by its
    ``[header]`` or by the first dotted key that creates it. Returns ``None`` if the
    key does not appear (e.g. it only occurs inside an inline table). Lines inside
    multi-line strings and arrays are never taken for keys.
    """
    parts = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
    return _key_lines(text).get(parts)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path defined in ``text`` to the line where it first appears."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    scan = _ValueScanner()
    # Split on "\n" only: str.splitlines() also breaks on \x0c, \u2028 and others,
    # which would make our numbers disagree with the ones tomllib reports.
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip("\r")
        if scan.continuing:
            # Still inside a multi-line string or array: nothing here is a key.
            scan.feed(line, 0)
            continue
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            start = 2 if stripped.startswith("[[") else 1
            end = _find_unquoted(stripped, "]", start)
            path = _parse_key(stripped[start:end]) if end >= 0 else None
            if path is not None:
                table = path
                _record(lines, path, lineno)
            continue
        equals = _find_unquoted(stripped, "=", 0)
        if equals < 0:
            continue
        path = _parse_key(stripped[:equals])
        if path is not None:
            _record(lines, table + path, lineno)
        scan.feed(stripped, equals + 1)
    return lines


def _record(lines: dict[tuple[str, ...], int], path: tuple[str, ...], lineno: int) -> None:
    """Record ``path`` and its implicitly created parent tables, first occurrence wins."""
    for end in range(1, len(path) + 1):
        lines.setdefault(path[:end], lineno)


def _find_unquoted(s: str, char: str, start: int) -> int:
    """Index of the first ``char`` in ``s`` at or after ``start`` outside quotes, or -1."""
    quote = ""
    i = start
    while i < len(s):
        c = s[i]
        if quote:
            if quote == '"' and c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == char:
            return i
        elif c == "#":
            return -1
        i += 1
    return -1


def _parse_key(key_text: str) -> tuple[str, ...] | None:
    """Parse a TOML key (bare, quoted or dotted) into its parts, or ``None`` if invalid."""
    if not key_text.strip():
        return None
    # Let tomllib do the unquoting and escape handling: it is exactly right by definition.
    try:
        node: Any = tomllib.loads(f"{key_text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict):
        if len(node) != 1:
            return None
        ((name, node),) = node.items()
        parts.append(name)
    return tuple(parts)


class _ValueScanner:
    """Follows a TOML value across lines: open brackets and multi-line strings."""

    def __init__(self) -> None:
        self.depth = 0  # open [ and { brackets
        self.multiline = ""  # the delimiter (\"\"\" or ''') of an open multi-line string

    @property
    def continuing(self) -> bool:
        """Whether the value goes on past the end of the line fed last."""
        return self.depth > 0 or bool(self.multiline)

    def feed(self, s: str, i: int) -> None:
        """Scan ``s`` from index ``i``, updating the bracket depth and string state."""
        n = len(s)
        while i < n:
            if self.multiline:
                if self.multiline == '"""' and s[i] == "\\":
                    i += 2  # an escaped character can never close the string
                    continue
                if s.startswith(self.multiline, i):
                    # Up to two more quotes may follow: they belong to the content,
                    # and the last three of the run close the string.
                    run = 3
                    while run < 5 and i + run < n and s[i + run] == self.multiline[0]:
                        run += 1
                    i += run
                    self.multiline = ""
                    continue
                i += 1
                continue
            c = s[i]
            if c == "#":
                return  # the rest of the line is a comment
            if s.startswith('"""', i) or s.startswith("'''", i):
                self.multiline = s[i : i + 3]
                i += 3
                continue
            if c in "\"'":
                # A single-line string: skip to its closing quote.
                j = i + 1
                while j < n and s[j] != c:
                    j += 2 if c == '"' and s[j] == "\\" else 1
                i = j + 1
                continue
            if c in "[{":
                self.depth += 1
            elif c in "]}":
                self.depth = max(0, self.depth - 1)
            i += 1


# --------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class _Source:
    """Where one value came from, and what the user can do about a bad one."""

    where: str  # message prefix: "path:line", "path", "environment variable X", ...
    fix: str  # advice for a bad value from here


_Layer = dict[tuple[str, str], tuple[Any, _Source]]


def _sections() -> dict[str, type[BaseModel]]:
    """The ``[section]`` names of :class:`Settings` and their models."""
    sections: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        sections[name] = model
    return sections


def parse_env_value(raw: str) -> object:
    """Parse an environment variable's text as a TOML value, else return it unchanged.

    ``"20"`` gives 20, ``"1.5"`` gives 1.5, ``"true"`` gives True, ``'"x"'`` gives
    ``"x"``, and text that is not a TOML value (``cpu``, ``text:/data``) stays a string.
    """
    try:
        doc = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    # A value containing newlines could smuggle in more keys; such text is no single value.
    if list(doc) != ["value"]:
        return raw
    return doc["value"]


def load_settings(
    workspace: Path | None = None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the settings.

    Precedence, highest first: ``overrides`` (command-line flags as dotted keys such as
    ``"trainer.budget_seconds"``; ``None`` values mean "flag not given" and are
    skipped), ``COCKPIT_<SECTION>__<KEY>`` variables in ``environ`` (default
    ``os.environ``), ``<workspace>/config.toml`` if it exists, and the shipped defaults.

    Raises :class:`ConfigError` listing every problem found, one per line.
    """
    problems: list[str] = []
    shipped = shipped_config_path()
    layers: list[_Layer] = [
        _file_layer(
            shipped,
            "This file ships with research-cockpit; reinstall it, or set the value in "
            "the workspace config.toml.",
            problems,
        )
    ]
    if workspace is not None:
        path = Path(workspace) / CONFIG_FILENAME
        if path.exists():
            layers.append(
                _file_layer(path, "Fix it, or delete the line to use the default.", problems)
            )
    layers.append(_env_layer(os.environ if environ is None else environ, problems))
    layers.append(_override_layer(overrides or {}, problems))

    merged: _Layer = {}
    for layer in layers:  # lowest precedence first, so later layers overwrite
        merged.update(layer)

    nested: dict[str, dict[str, Any]] = {name: {} for name in _sections()}
    for (section, key), (value, _source) in merged.items():
        nested[section][key] = value
    try:
        settings = Settings.model_validate(nested)
    except ValidationError as exc:
        problems.extend(_describe_validation_error(exc, merged))
        settings = None
    if problems:
        raise ConfigError("\n".join(problems))
    assert settings is not None
    return settings


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Return the parsed document and the text of the TOML file at ``path``."""
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the settings file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the settings file is not valid UTF-8 text ({exc.reason} at byte "
            f"{exc.start}). Save it as UTF-8."
        ) from exc
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}. Fix the syntax.") from exc


def _file_layer(path: Path, fix: str, problems: list[str]) -> _Layer:
    """Read one config file into a layer; structural problems go to ``problems``."""
    doc, text = _read_toml(path)
    lines = _key_lines(text)
    sections = _sections()

    def where(*parts: str) -> str:
        # A key inside an inline table has no line of its own: fall back to the
        # line of the nearest enclosing key that has one.
        for end in range(len(parts), 0, -1):
            line = lines.get(parts[:end])
            if line is not None:
                return f"{path}:{line}"
        return str(path)

    layer: _Layer = {}
    for section, table in doc.items():
        model = sections.get(section)
        if model is None:
            problems.append(f"{where(section)}: {_unknown_section(section, table)}")
            continue
        if not isinstance(table, dict):
            problems.append(
                f"{where(section)}: '{section}' must be the section [{section}], "
                f"got {_describe(table)}. Write the settings under a [{section}] header."
            )
            continue
        for key, value in table.items():
            if key not in model.model_fields:
                problems.append(f"{where(section, key)}: {_unknown_key(section, key, model)}")
                continue
            layer[section, key] = (value, _Source(where(section, key), fix))
    return layer


def _env_layer(environ: Mapping[str, str], problems: list[str]) -> _Layer:
    """Collect the ``COCKPIT_<SECTION>__<KEY>`` variables into a layer."""
    sections = _sections()
    layer: _Layer = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name[len(ENV_PREFIX) :]:
            continue  # not a setting (e.g. COCKPIT_DEVICE is used internally)
        section, _, key = name[len(ENV_PREFIX) :].partition(ENV_SEPARATOR)
        section, key = section.lower(), key.lower()
        where = f"environment variable {name}"
        model = sections.get(section)
        if model is None:
            problems.append(f"{where}: {_unknown_section(section, {})} Unset or rename it.")
            continue
        if key not in model.model_fields:
            problems.append(f"{where}: {_unknown_key(section, key, model)} Unset or rename it.")
            continue
        raw = environ[name]
        value = parse_env_value(raw)
        annotation = model.model_fields[key].annotation
        if annotation is str and not isinstance(value, str):
            # Every environment value is text; for a text setting, COCKPIT_..=123
            # plainly means the string "123", so do not reject it as a number.
            value = raw
        elif get_origin(annotation) is list and not isinstance(value, list):
            # An array is written as TOML ('["ntfy://host/topic"]'), but one bare item
            # (COCKPIT_NOTIFY__URLS=ntfy://host/topic) plainly means an array of it, and an
            # empty variable an empty array.
            value = [value if isinstance(value, str) else raw] if raw.strip() else []
        layer[section, key] = (value, _Source(where, f"Fix or unset {name}."))
    return layer


def _override_layer(overrides: Mapping[str, object], problems: list[str]) -> _Layer:
    """Turn command-line overrides (dotted keys) into a layer."""
    sections = _sections()
    layer: _Layer = {}
    where = "command line"
    for dotted, value in overrides.items():
        if value is None:
            continue  # the flag was not given
        section, _, key = str(dotted).partition(".")
        model = sections.get(section)
        if model is None:
            problems.append(f"{where}: {_unknown_section(section, {})}")
            continue
        if key not in model.model_fields:
            problems.append(f"{where}: {_unknown_key(section, key, model)}")
            continue
        layer[section, key] = (value, _Source(where, "Fix the value given on the command line."))
    return layer


# --------------------------------------------------------------------------------------
# Messages


def _unknown_section(section: str, value: object) -> str:
    """Message for a section name that :class:`Settings` does not have."""
    sections = _sections()
    valid = ", ".join(f"[{name}]" for name in sorted(sections))
    if not isinstance(value, dict):
        # Likely a setting written above any [section] header.
        homes = [name for name, model in sections.items() if section in model.model_fields]
        if homes:
            return (
                f"setting '{section}' is outside any section. Move it under "
                f"[{homes[0]}] (as {homes[0]}.{section})."
            )
    hint = _did_you_mean(section, sections)
    return f"unknown section [{section}].{hint} Valid sections: {valid}."


def _unknown_key(section: str, key: str, model: type[BaseModel]) -> str:
    """Message for a key that the section's model does not have."""
    valid = ", ".join(sorted(model.model_fields))
    hint = _did_you_mean(key, model.model_fields)
    return f"unknown setting '{section}.{key}'.{hint} Valid settings in [{section}]: {valid}."


def _did_you_mean(name: str, choices: Mapping[str, object]) -> str:
    """`` Did you mean 'x'?`` for a close match among ``choices``, else ``""``."""
    matches = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{matches[0]}'?" if matches else ""


# Wording for pydantic's error types, so messages read like prose, not like pydantic.
_TYPE_PROBLEMS = {
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
    "string_too_short": "must not be empty",
}


def _describe_validation_error(exc: ValidationError, merged: _Layer) -> list[str]:
    """Turn pydantic's errors into messages naming each value's source."""
    messages = []
    seen: set[tuple[str, ...]] = set()
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        # An item of an array setting is named by its position (1 = the first).
        item = error["loc"][2] if len(error["loc"]) > 2 else None
        where_in = f" as item {item + 1}" if isinstance(item, int) else ""
        if len(loc) > 2:
            # A setting of several types (say "auto" or a number) fails once per type, an
            # array once per bad item: one message, in the setting's own words, says what it
            # may be.
            if loc[:2] in seen:
                continue
            seen.add(loc[:2])
            loc = loc[:2]
            error = {**error, "type": "union", "loc": loc}
        entry = merged.get((loc[0], loc[1])) if len(loc) >= 2 else None
        source = entry[1] if entry is not None else None
        key = ".".join(loc[:2])
        problem = _problem(error, loc)
        got = _describe(error["input"]) + where_in
        if source is None:  # cannot happen for our own input, but never hide an error
            messages.append(f"{key} {problem}, got {got}.")
        else:
            default = _default_text(loc)
            messages.append(f"{source.where}: {key} {problem}, got {got}. {source.fix}{default}")
    return messages


def _default_text(loc: tuple[str, ...]) -> str:
    """`` The default is 42.`` for the setting at ``loc``, or ``""`` if unknown."""
    model = _sections().get(loc[0])
    field = model.model_fields.get(loc[1]) if model is not None and len(loc) >= 2 else None
    if field is None or field.default_factory is not None:
        return ""
    default = field.default
    if isinstance(default, bool):
        text = "true" if default else "false"
    elif isinstance(default, (str, list)):
        # JSON arrays of strings are written exactly as TOML writes them.
        text = json.dumps(default, ensure_ascii=False)
    else:
        text = repr(default)
    return f" The default is {text}."


def _problem(error: Mapping[str, Any], loc: tuple[str, ...]) -> str:
    """Describe what is wrong with a value, e.g. ``must be greater than 0``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _TYPE_PROBLEMS:
        return _TYPE_PROBLEMS[kind]
    if kind == "greater_than":
        return f"must be greater than {_format_number(ctx['gt'])}"
    if kind == "greater_than_equal":
        return f"must be at least {_format_number(ctx['ge'])}"
    if kind in ("string_pattern_mismatch", "union", "list_type") and len(loc) >= 2:
        model = _sections().get(loc[0])
        field = model.model_fields.get(loc[1]) if model else None
        extra = field.json_schema_extra if field else None
        if isinstance(extra, dict) and "allowed" in extra:
            return f"must be {extra['allowed']}"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _format_number(value: object) -> str:
    """``0.0`` -> ``0``: bounds read better without a pointless decimal point."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe(value: object) -> str:
    """Describe a value for a message in TOML terms (``the string "fast"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON string syntax matches TOML basic strings closely enough for display.
        return f"the string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (datetime, date, time)):
        return f"the date/time {value.isoformat()}"
    return repr(value)
