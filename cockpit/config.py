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
from typing import Any, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from pydantic import BaseModel, ValidationError

from cockpit.settings import (
    NOTIFY_EVENTS,
    AgentSettings,
    EngineSettings,
    ExecutorSettings,
    NotifySettings,
    PathsSettings,
    SearchSettings,
    Settings,
    TrainerSettings,
    UISettings,
)

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
    "SearchSettings",
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


class ConfigError(Exception):
    """A problem with the settings; ``str(error)`` is the full message for the user."""


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
