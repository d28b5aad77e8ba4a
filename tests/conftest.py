"""Shared fixtures: a private cache for encoded corpora, small text corpora, and a helper
that runs the real harness in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"


# The suite has two speeds: tests marked ``e2e`` start processes (the engine, the harness, a
# training, a cluster); every other test runs in this process, and the hooks below hold it to
# that, fixtures included, so that ``pytest -m "not e2e"`` stays the fast tier. A test that
# starts a process (even one whose failure the code under test swallows) fails until marked.
PROCESS_STARTS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnv", "execv")
STARTED = pytest.StashKey[list[str]]()


@contextmanager
def _no_process_starts(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("e2e") is not None:
        yield
        return
    started = item.stash.setdefault(STARTED, [])

    def refuse(*args: object, **kwargs: object) -> None:
        started.append(repr(args[:2])[:200])
        raise RuntimeError(
            "this test starts a process: mark it e2e (pytest.mark.e2e) or keep it in-process"
        )

    with ExitStack() as patches:
        patches.enter_context(patch.object(subprocess.Popen, "_execute_child", refuse))
        for name in PROCESS_STARTS:
            if hasattr(os, name):
                patches.enter_context(patch.object(os, name, refuse))
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _no_process_starts(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _no_process_starts(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    started = item.stash.get(STARTED, [])
    if started and report.passed and report.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"started a process but is not marked e2e: {started[0]}"


# Under pytest-xdist, each worker (and every process its tests start: engines, trainings,
# clusters) keeps to one core of its own. A training uses every core it may (threads = 0),
# so unpinned workers would each start trainings of as many threads as the machine has
# cores, and the two would fight over them. A test marked ``cores(n)`` needs more than one
# core (two trainings side by side, the template's pace) and gets back as many for its run.
MACHINE_CORES: list[int] = []


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    MACHINE_CORES[:] = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {MACHINE_CORES[int(worker[2:]) % len(MACHINE_CORES)]})


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml's addopts): one worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture(autouse=True)
def _cores(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("cores")
    if marker is None or not MACHINE_CORES:
        yield
        return
    pinned = os.sched_getaffinity(0)
    wanted = int(marker.args[0])
    others = [core for core in MACHINE_CORES if core not in pinned]
    os.sched_setaffinity(0, pinned | set(others[: max(0, wanted - len(pinned))]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every process it starts) caches corpora in one session-wide folder."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["COCKPIT_CACHE_DIR"] = str(cache)
    return cache


def write_text_corpus(root: Path, documents: int = 40, lines: int = 60) -> Path:
    """A folder of small text files whose bytes say which file they come from."""
    root.mkdir(parents=True, exist_ok=True)
    for number in range(documents):
        body = "".join(
            f"file {number:03d} line {line} says hello to the model\n" for line in range(lines)
        )
        (root / f"doc_{number:03d}.txt").write_text(body)
    return root


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("corpus"))


@dataclass
class HarnessRun:
    exit_code: int
    output: str
    summary: dict[str, Any]
    seconds: float
    metrics: list[dict[str, Any]]


def tagged(output: str, tag: str) -> dict[str, str]:
    """The ``TAG name=value`` lines a test script printed, as a dict."""
    found = {}
    for line in output.splitlines():
        if line.startswith(tag + " "):
            name, _, value = line[len(tag) + 1 :].partition("=")
            found[name] = value
    return found


def run_harness(
    script: str | Path,
    tmp_path: Path,
    *args: str,
    budget: float = 2.0,
    grace: float = 2.0,
    corpus: str | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> HarnessRun:
    """Run `python -m trainer` on a script (a path, or source text to write to a file);
    ``env`` is added to the environment."""
    if isinstance(script, str):
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(script))
    else:
        path = script
    summary_path = tmp_path / "summary.json"
    metrics_path = tmp_path / "metrics.jsonl"
    command = [
        sys.executable, "-m", "trainer", "--script", str(path), "--device", "cpu",
        "--budget", str(budget), "--grace", str(grace),
        "--summary-json", str(summary_path), "--metrics", str(metrics_path),
        "--seq-len", "64", "--eval-tokens", "4096", *args,
    ]  # fmt: skip
    if corpus is not None:
        command += ["--corpus", corpus]
    started = time.monotonic()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    seconds = time.monotonic() - started
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    metrics = []
    if metrics_path.exists():
        metrics = [
            json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()
        ]
    return HarnessRun(
        completed.returncode, completed.stdout + completed.stderr, summary, seconds, metrics
    )


@pytest.fixture
def ollama_server() -> Iterator[OllamaDouble]:
    """An Ollama-compatible server on 127.0.0.1 with scripted replies, stopped afterwards."""
    with OllamaDouble() as server:
        yield server


@pytest.fixture
def served(ollama_server: OllamaDouble, monkeypatch: pytest.MonkeyPatch) -> OllamaDouble:
    """The Ollama test server, with OLLAMA_HOST set so that the processes a test starts
    (`cockpit run`, ...) talk to it."""
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    return ollama_server


@pytest.fixture
def no_git_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits must work without user.name/user.email anywhere: a private HOME and data
    directory, no system git config. The engine tests use it on every test
    (``pytestmark = pytest.mark.usefixtures("no_git_identity")``)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("COCKPIT_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def anyio_backend() -> str:
    """The async tests (the cockpit's pilot) run on asyncio, as Textual does."""
    return "asyncio"


# Imports of the Ollama server fixtures above.
from collections.abc import Iterator  # noqa: E402

from tests.ollama_server import OllamaDouble  # noqa: E402
