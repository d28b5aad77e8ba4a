"""Tests for cockpit.config: loading, precedence, validation and error messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from cockpit import cli, config
from cockpit.commands import EngineStart
from cockpit.config import (
    AgentSettings,
    ConfigError,
    EngineSettings,
    ExecutorSettings,
    NotifySettings,
    PathsSettings,
    SearchSettings,
    Settings,
    TrainerSettings,
    UISettings,
    find_key_line,
    load_settings,
    parse_env_value,
    shipped_config_path,
)
from cockpit.engine.loop import EngineOptions
from cockpit.engine.workspace import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

SECTIONS: dict[str, type[BaseModel]] = {
    "trainer": TrainerSettings,
    "engine": EngineSettings,
    "agent": AgentSettings,
    "search": SearchSettings,
    "ui": UISettings,
    "paths": PathsSettings,
    "notify": NotifySettings,
    "executor": ExecutorSettings,
}


def write_workspace(tmp_path: Path, text: str) -> Path:
    """Create a workspace whose config.toml holds ``text``; return the workspace."""
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    (workspace / "config.toml").write_text(text, encoding="utf-8")
    return workspace


def load_error(
    workspace: Path | None = None,
    overrides: dict[str, object] | None = None,
    environ: dict[str, str] | None = None,
) -> str:
    """Load settings expecting a ConfigError, and return its message."""
    with pytest.raises(ConfigError) as info:
        load_settings(workspace, overrides, environ or {})
    return str(info.value)


# --------------------------------------------------------------------------------------
# Defaults and the shipped file


def test_defaults_load_and_equal_model_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.trainer.budget_seconds == 300.0
    assert settings.trainer.device == "auto"
    assert settings.paths.cache_dir == ""


def test_settings_sections_are_the_ones_tested_here() -> None:
    # If a section is added to Settings, SECTIONS (and the shipped file) must follow.
    assert {name: f.annotation for name, f in Settings.model_fields.items()} == SECTIONS


def test_every_field_has_a_description() -> None:
    for model in SECTIONS.values():
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_shipped_file_documents_every_setting_with_its_default() -> None:
    path = shipped_config_path()
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0].startswith("#"), "the file starts with a header comment"
    doc = tomllib.loads(text)
    assert set(doc) == set(SECTIONS), "the file has exactly the sections of Settings"
    for section, model in SECTIONS.items():
        assert set(doc[section]) == set(model.model_fields), f"[{section}] keys differ"
        for key, field in model.model_fields.items():
            value = doc[section][key]
            assert value == field.default, f"{section}.{key}: file and model disagree"
            # 300 vs 300.0 would compare equal but document the wrong type.
            assert type(value) is type(field.default), f"{section}.{key}: type differs"
            line = find_key_line(text, (section, key))
            assert line is not None and line >= 2
            above = lines[line - 2].strip()
            assert above.startswith("#"), f"{section}.{key}: no comment on the line above"


def test_shipped_config_path_in_a_checkout_is_the_top_level_file() -> None:
    path = shipped_config_path()
    assert path == Path(config.__file__).resolve().parent.parent / "config.toml"


def test_shipped_config_path_prefers_the_packaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "cockpit"
    (package / "defaults").mkdir(parents=True)
    monkeypatch.setattr(config, "__file__", str(package / "config.py"))
    with pytest.raises(ConfigError, match="shipped default settings are missing"):
        shipped_config_path()
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert shipped_config_path() == (tmp_path / "config.toml").resolve()
    (package / "defaults" / "config.toml").write_text("", encoding="utf-8")
    assert shipped_config_path() == (package / "defaults" / "config.toml").resolve()


def test_settings_are_frozen_and_forbid_extras() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.trainer.seed = 3
    with pytest.raises(ValidationError):
        TrainerSettings.model_validate({"bogus": 1})


def test_resolved_cache_dir(tmp_path: Path) -> None:
    assert PathsSettings(cache_dir=str(tmp_path)).resolved_cache_dir() == tmp_path
    assert PathsSettings().resolved_cache_dir().name  # the per-user cache directory


# --------------------------------------------------------------------------------------
# Precedence


def test_precedence_of_all_four_layers(tmp_path: Path) -> None:
    workspace = write_workspace(
        tmp_path,
        '[trainer]\nbudget_seconds = 20\nseed = 1\ndevice = "cpu"\ncorpus = "text:/data"\n',
    )
    environ = {"COCKPIT_TRAINER__SEED": "2", "COCKPIT_TRAINER__DEVICE": "cuda:1"}
    overrides = {"trainer.device": "cuda:2", "trainer.threads": 4}
    settings = load_settings(workspace, overrides, environ)
    assert settings.trainer.device == "cuda:2"  # flag beats env and file
    assert settings.trainer.threads == 4  # flag beats the shipped default
    assert settings.trainer.seed == 2  # env beats file
    assert settings.trainer.budget_seconds == 20.0  # file beats the shipped default
    assert settings.trainer.corpus == "text:/data"
    assert settings.trainer.grace_seconds == 10.0  # shipped default
    assert settings.trainer.script == "train.py"


def test_env_beats_workspace_file_and_defaults(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nbudget_seconds = 20\n")
    environ = {"COCKPIT_TRAINER__BUDGET_SECONDS": "30", "COCKPIT_PATHS__CACHE_DIR": "/c"}
    settings = load_settings(workspace, environ=environ)
    assert settings.trainer.budget_seconds == 30.0
    assert settings.paths.cache_dir == "/c"


def test_workspace_without_config_file_uses_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}) == Settings()


def test_override_none_means_flag_not_given(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = 7\n")
    settings = load_settings(workspace, {"trainer.seed": None}, {})
    assert settings.trainer.seed == 7


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCKPIT_TRAINER__SEED", "5")
    assert load_settings().trainer.seed == 5


# --------------------------------------------------------------------------------------
# Types and values


def test_int_is_accepted_for_a_float(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nbudget_seconds = 20\ngrace_seconds = 0\n")
    settings = load_settings(workspace, environ={})
    assert settings.trainer.budget_seconds == 20.0
    assert isinstance(settings.trainer.budget_seconds, float)
    assert settings.trainer.grace_seconds == 0.0


def test_string_for_a_number_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    workspace = write_workspace(
        tmp_path, '# my settings\n\n[trainer]\nseed = 3\nbudget_seconds = "fast"\n'
    )
    message = load_error(workspace)
    path = workspace / "config.toml"
    assert message.startswith(
        f'{path}:5: trainer.budget_seconds must be a number, got the string "fast".'
    )
    assert "\n" not in message


def test_quoted_number_is_not_coerced(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, '[trainer]\nseed = "20"\n')
    assert 'config.toml:2: trainer.seed must be an integer, got the string "20"' in load_error(
        workspace
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("seed = 1.5", "trainer.seed must be an integer, got 1.5"),
        ("seed = true", "trainer.seed must be an integer, got true"),
        ("budget_seconds = false", "trainer.budget_seconds must be a number, got false"),
        ("device = 1", "trainer.device must be a string, got 1"),
        ("seq_len = [1]", "trainer.seq_len must be an integer, got an array"),
    ],
)
def test_wrong_types_are_rejected(tmp_path: Path, line: str, expected: str) -> None:
    workspace = write_workspace(tmp_path, f"[trainer]\n{line}\n")
    message = load_error(workspace)
    assert f"config.toml:2: {expected}" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("budget_seconds = -1", "trainer.budget_seconds must be greater than 0, got -1."),
        ("budget_seconds = 0", "trainer.budget_seconds must be greater than 0, got 0."),
        ("budget_seconds = inf", "trainer.budget_seconds must be a finite number, got inf."),
        ("grace_seconds = -0.5", "trainer.grace_seconds must be at least 0, got -0.5."),
        ("seed = -1", "trainer.seed must be at least 0, got -1."),
        ("threads = -2", "trainer.threads must be at least 0, got -2."),
        ('device = "gpu"', 'trainer.device must be "auto", "cpu", "cuda" or "cuda:N"'),
        ('device = "cuda:x"', "trainer.device must be"),
        ('corpus = "text:"', 'trainer.corpus must be "stdlib", "text:DIR" or "parquet:DIR"'),
        ('corpus = "csv:/data"', 'got the string "csv:/data"'),
        ('script = ""', 'trainer.script must not be empty, got the string ""'),
    ],
)
def test_range_and_pattern_errors_name_the_key(tmp_path: Path, line: str, expected: str) -> None:
    workspace = write_workspace(tmp_path, f"[trainer]\n{line}\n")
    message = load_error(workspace)
    assert message.startswith(f"{workspace / 'config.toml'}:2: ")
    assert expected in message
    assert "The default is" in message  # says what to fall back to


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device: str) -> None:
    assert load_settings(overrides={"trainer.device": device}, environ={}).trainer.device == (
        device
    )


@pytest.mark.parametrize("corpus", ["stdlib", "text:/data/books", "parquet:C:\\data"])
def test_valid_corpora(corpus: str) -> None:
    settings = load_settings(overrides={"trainer.corpus": corpus}, environ={})
    assert settings.trainer.corpus == corpus


def test_command_line_errors_name_the_command_line() -> None:
    message = load_error(overrides={"trainer.budget_seconds": 0})
    assert message.startswith("command line: trainer.budget_seconds must be greater than 0")


def test_command_line_unknown_key() -> None:
    message = load_error(overrides={"trainer.budget": 3})
    assert message.startswith("command line: unknown setting 'trainer.budget'.")
    assert "Did you mean 'budget_seconds'?" in message


def test_error_in_an_inline_table_points_at_its_line(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, '# x\ntrainer = { seed = "x" }\n')
    assert "config.toml:2: trainer.seed must be an integer" in load_error(workspace)


def test_value_errors_name_the_layer_that_supplied_the_value(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, '[trainer]\nseed = "bad"\nthreads = -1\n')
    environ = {"COCKPIT_TRAINER__SEED": "3"}
    message = load_error(workspace, environ=environ)
    # The env value replaced the bad seed, so only the threads line is reported.
    assert message.startswith(f"{workspace / 'config.toml'}:3: trainer.threads")
    assert "seed" not in message


def test_all_problems_are_reported_one_per_line(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = -1\nthreads = -1\nbogus = 1\n")
    lines = load_error(workspace).split("\n")
    assert len(lines) == 3
    assert any(":4: unknown setting 'trainer.bogus'" in line for line in lines)
    assert any(":2: trainer.seed" in line for line in lines)
    assert any(":3: trainer.threads" in line for line in lines)


# --------------------------------------------------------------------------------------
# Unknown keys and sections, invalid TOML


def test_unknown_key_names_line_and_valid_keys(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = 1\n\nbudget_secs = 5\n")
    message = load_error(workspace)
    assert message.startswith(
        f"{workspace / 'config.toml'}:4: unknown setting 'trainer.budget_secs'."
    )
    assert "Did you mean 'budget_seconds'?" in message
    assert "Valid settings in [trainer]: budget_seconds, command, corpus, device," in message


def test_unknown_section_names_line(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = 1\n\n[foo]\nbar = 1\n")
    message = load_error(workspace)
    assert message.startswith(f"{workspace / 'config.toml'}:4: unknown section [foo].")
    assert (
        "Valid sections: [agent], [engine], [executor], [notify], [paths], [search], [trainer], [ui]."
        in message
    )


def test_unknown_subtable_of_a_section(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = 1\n[trainer.extra]\nx = 1\n")
    assert "config.toml:3: unknown setting 'trainer.extra'" in load_error(workspace)


def test_setting_outside_a_section(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "budget_seconds = 5\n")
    message = load_error(workspace)
    assert "config.toml:1: setting 'budget_seconds' is outside any section" in message
    assert "[trainer]" in message


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "\ntrainer = 5\n")
    message = load_error(workspace)
    assert "config.toml:2: 'trainer' must be the section [trainer], got 5." in message


def test_invalid_toml(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = = 1\n")
    message = load_error(workspace)
    assert message.startswith(f"{workspace / 'config.toml'}: invalid TOML: ")
    assert "line 2" in message  # tomllib's own location


def test_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    workspace = write_workspace(tmp_path, "[trainer]\nseed = 1\nseed = 2\n")
    assert "invalid TOML" in load_error(workspace)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.toml").write_bytes(b'[trainer]\nscript = "\xff"\n')
    assert "not valid UTF-8" in load_error(workspace)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.toml").write_bytes(b"\xef\xbb\xbf[trainer]\nseed = 9\n")
    assert load_settings(workspace, environ={}).trainer.seed == 9


# --------------------------------------------------------------------------------------
# Environment variables


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("20", 20),
        ("1.5", 1.5),
        ("true", True),
        ('"x y"', "x y"),
        ("'lit'", "lit"),
        ("cpu", "cpu"),
        ("cuda:0", "cuda:0"),
        ("text:/data/books", "text:/data/books"),
        ("", ""),
        ("1\nother = 2", "1\nother = 2"),  # not one value: kept as text
    ],
)
def test_parse_env_value(raw: str, value: object) -> None:
    parsed = parse_env_value(raw)
    assert parsed == value
    assert type(parsed) is type(value)


def test_env_values_are_parsed() -> None:
    environ = {
        "COCKPIT_TRAINER__SEED": "7",  # int
        "COCKPIT_TRAINER__BUDGET_SECONDS": "1.5",  # float
        "COCKPIT_TRAINER__DEVICE": "cpu",  # bare string
        "COCKPIT_TRAINER__CORPUS": '"text:/my data"',  # quoted string
        "COCKPIT_TRAINER__GRACE_SECONDS": "3",  # int for a float
    }
    trainer = load_settings(environ=environ).trainer
    assert trainer.seed == 7
    assert trainer.budget_seconds == 1.5
    assert trainer.device == "cpu"
    assert trainer.corpus == "text:/my data"
    assert trainer.grace_seconds == 3.0


def test_env_number_for_a_string_setting_is_text() -> None:
    settings = load_settings(environ={"COCKPIT_PATHS__CACHE_DIR": "2024"})
    assert settings.paths.cache_dir == "2024"


def test_env_type_error_names_the_variable() -> None:
    message = load_error(environ={"COCKPIT_TRAINER__SEED": "many"})
    assert message.startswith(
        "environment variable COCKPIT_TRAINER__SEED: trainer.seed must be an integer, "
        'got the string "many".'
    )
    assert "unset COCKPIT_TRAINER__SEED" in message


def test_env_range_error_names_the_variable() -> None:
    message = load_error(environ={"COCKPIT_TRAINER__BUDGET_SECONDS": "-5"})
    assert message.startswith(
        "environment variable COCKPIT_TRAINER__BUDGET_SECONDS: "
        "trainer.budget_seconds must be greater than 0, got -5."
    )


def test_unknown_env_key_names_the_variable() -> None:
    message = load_error(environ={"COCKPIT_TRAINER__BUDGET": "5"})
    assert message.startswith(
        "environment variable COCKPIT_TRAINER__BUDGET: unknown setting 'trainer.budget'."
    )
    assert "Did you mean 'budget_seconds'?" in message


def test_unknown_env_section_names_the_variable() -> None:
    message = load_error(environ={"COCKPIT_FOO__BAR": "5"})
    assert message.startswith("environment variable COCKPIT_FOO__BAR: unknown section [foo].")


def test_env_without_double_underscore_is_not_config() -> None:
    environ = {"COCKPIT_DEVICE": "gpu", "COCKPIT_SEED": "x", "OTHER__THING": "1"}
    assert load_settings(environ=environ) == Settings()


# --------------------------------------------------------------------------------------
# The line finder

TRICKY = '''\
# comment with key = 1
title = "x # not a comment [" # 2
"quoted.key" = 1
a.b.c = 2
  spaced . "dot.ted" = 3
"a=b" = 4
arr = [
  "x = 1",
  # y = 2
  [1, 2], { z = 3 },
]
ml = """
inner = 5
[not_a_table]
escaped \\""" quote
"""
after_ml = 6
lit = \'\'\'
w = 7 \\\'\'\'
after_lit = 8
quotes = """ends with quotes"""""
after_quotes = 9

[ tbl . "sub.x" ]  # header
key = 10
nested.deep = 11
[[points]]
x = 12
[[points]]
x = 13
'''


def test_tricky_toml_is_valid_and_as_described() -> None:
    doc = tomllib.loads(TRICKY)
    assert doc["ml"].startswith("inner = 5")
    assert doc["lit"] == "w = 7 \\"
    assert doc["quotes"] == 'ends with quotes""'
    assert doc["tbl"]["sub.x"]["nested"]["deep"] == 11
    assert "inner" not in doc and "w" not in doc


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("title", 2),
        (("quoted.key",), 3),
        ("a", 4),
        ("a.b", 4),
        ("a.b.c", 4),
        (("spaced", "dot.ted"), 5),
        (("a=b",), 6),
        ("arr", 7),
        ("ml", 12),
        ("after_ml", 17),
        ("lit", 18),
        ("after_lit", 20),
        ("quotes", 21),
        ("after_quotes", 22),
        ("tbl", 24),
        (("tbl", "sub.x"), 24),
        (("tbl", "sub.x", "key"), 25),
        (("tbl", "sub.x", "nested", "deep"), 26),
        ("points", 27),
        ("points.x", 28),  # first occurrence
    ],
)
def test_find_key_line(key: str | tuple[str, ...], line: int) -> None:
    assert find_key_line(TRICKY, key) == line


@pytest.mark.parametrize(
    "key", ["inner", "not_a_table", "w", "x", "y", "z", "arr.z", "missing", "quoted"]
)
def test_find_key_line_ignores_text_inside_values(key: str) -> None:
    assert find_key_line(TRICKY, key) is None


def test_find_key_line_with_crlf_and_form_feed() -> None:
    # \x0c is a line break for str.splitlines() but not for TOML.
    text = '[trainer]\r\nscript = "a\x0cb"\r\nseed = 1\r\n'
    assert find_key_line(text, "trainer.seed") == 3


def test_line_numbers_match_tomllib_errors() -> None:
    text = 'x = """\n\n"""\n[t]\nbad = \n'
    with pytest.raises(tomllib.TOMLDecodeError, match="line 5"):
        tomllib.loads(text)
    assert find_key_line(text, "t.bad") == 5


@pytest.mark.parametrize("line", ["workers = 0", 'workers = "two"', "workers = 1.5"])
def test_workers_is_auto_or_a_positive_count_with_one_message(tmp_path: Path, line: str) -> None:
    workspace = write_workspace(tmp_path, f"[engine]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(workspace, environ={})
    message = str(caught.value)
    assert message.count("engine.workers") == 1
    assert 'must be "auto" or an integer, 1 or more' in message


@pytest.mark.parametrize(("line", "expected"), [("workers = 3", 3), ('workers = "auto"', "auto")])
def test_workers_accepts_auto_and_counts(tmp_path: Path, line: str, expected: object) -> None:
    workspace = write_workspace(tmp_path, f"[engine]\n{line}\n")
    assert load_settings(workspace, environ={}).engine.workers == expected


# --------------------------------------------------------------------------------------
# The settings a detached engine is started with (commands.EngineStart)


def test_the_engine_start_file_gives_back_exactly_the_settings_it_was_written_with(
    tmp_path: Path,
) -> None:
    workspace = write_workspace(tmp_path, '[trainer]\nseed = 3\n[engine]\nworkers = "auto"\n')
    settings = load_settings(
        workspace,
        overrides={"trainer.budget_seconds": 30.0, "engine.proposer": "optuna"},
        environ={"COCKPIT_TRAINER__DEVICE": "cpu"},
    )
    start = EngineStart(
        settings=settings, options=EngineOptions(tag="nov26", experiments=4, adopt=True)
    )
    path = start.write(workspace / ".cockpit")
    assert path.parent == workspace / ".cockpit"
    assert json.loads(path.read_text())["settings"] == settings.model_dump(mode="json")

    read = EngineStart.read(path)
    assert read == start and read.settings == settings
    assert read.options == EngineOptions(tag="nov26", experiments=4, adopt=True)
    trainer, engine = read.settings.trainer, read.settings.engine
    assert (trainer.budget_seconds, trainer.seed, trainer.device) == (30.0, 3, "cpu")
    assert (engine.workers, engine.proposer) == ("auto", "optuna")
    # Each start writes a file of its own, and its engine takes it: read once, then gone.
    assert start.write(workspace / ".cockpit") != path
    assert EngineStart.take(path) == start and not path.exists()


def _start_file_text(edit: str) -> bytes | None:
    """A start file as `cockpit start` writes it, then spoilt as ``edit`` says."""
    data = EngineStart(settings=Settings(), options=EngineOptions()).model_dump(mode="json")
    if edit == "missing":
        return None
    if edit == "not json":
        return b'{"settings": '
    if edit == "bad value":
        data["settings"]["trainer"]["budget_seconds"] = -1
    if edit == "setting left out":
        del data["settings"]["trainer"]["seed"]
    if edit == "unknown setting":
        data["settings"]["trainer"]["budget"] = 30
    if edit == "text for a number":
        data["settings"]["trainer"]["budget_seconds"] = "30"
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("missing", "is not there"),
        ("not json", "Invalid JSON"),
        ("bad value", "settings.trainer.budget_seconds: Input should be greater than 0"),
        ("setting left out", "leaves settings out (trainer.seed)"),
        ("unknown setting", "settings.trainer.budget: Extra inputs are not permitted"),
        ("text for a number", "settings.trainer.budget_seconds: Input should be a valid number"),
    ],
)
def test_a_bad_engine_start_file_says_what_is_wrong_and_what_to_do(
    tmp_path: Path, edit: str, problem: str
) -> None:
    path = tmp_path / "engine-start.json"
    text = _start_file_text(edit)
    if text is not None:
        path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        EngineStart.read(path)
    message = str(caught.value)
    assert str(path) in message and problem in message
    assert "Start the engine with `cockpit start` or `cockpit run`" in message


def test_an_engine_given_a_bad_settings_file_stops_with_that_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = Workspace.init(tmp_path / "ws")
    missing = tmp_path / "gone.json"
    argv = ["run", "--headless", "--workspace", str(workspace.path), "--settings-file"]
    assert cli.main([*argv, str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {missing}: the settings file the engine was to start with")
    assert "`cockpit start`" in error


def test_the_settings_file_is_given_alone_never_beside_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = Workspace.init(tmp_path / "ws")
    path = EngineStart(settings=Settings(), options=EngineOptions()).write(tmp_path)
    argv = ["run", "--headless", "--workspace", str(workspace.path), "--settings-file", str(path)]
    assert cli.main([*argv, "--budget", "30"]) == 2
    assert "give it alone" in capsys.readouterr().err
    assert path.exists()  # refused before the engine took it
