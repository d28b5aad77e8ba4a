"""Proposers draft in threads side by side, so the scripts they parse must parse from many
threads at once: CPython 3.11's AST constructor shares its recursion depth across threads
(python/cpython#106905), and a collection that lets another thread run mid-parse once
failed a whole run with "SystemError: AST constructor recursion depth mismatch"."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import trainer
from agent.constants import find_constants
from agent.edits import check_script
from cockpit.engine.integrity import inspect_script

TEMPLATE = (Path(trainer.__file__).parent / "train.py").read_text()


class _YieldsWhenCollected:
    """Garbage in a cycle whose finaliser hands the interpreter to another thread."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        time.sleep(0)


def _at_depth(depth: int, call: Callable[[str], object], script: str) -> object:
    return call(script) if depth == 0 else _at_depth(depth - 1, call, script)


@pytest.fixture
def eager_switches() -> Iterator[None]:
    """Threads switch as often as they can and collections come often, as on a busy host."""
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(100, 1, 1)
    yield
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)


def _inspect(variant: str) -> object:
    return inspect_script(TEMPLATE, variant)


def _check(variant: str) -> object:
    check_script(TEMPLATE, variant)
    return None


def _constants(variant: str) -> object:
    return find_constants(variant)


_CALL_SITES = (_inspect, _check, _constants)


def test_scripts_parse_from_many_threads_at_once(eager_switches: None) -> None:
    failures: list[BaseException] = []

    def draft(thread: int) -> None:
        for attempt in range(12):
            for _ in range(50):
                _YieldsWhenCollected()
            variant = f"{TEMPLATE}\nDRAFT = {thread * 1000 + attempt}\n"  # no cache answers
            parses = _CALL_SITES[(thread + attempt) % len(_CALL_SITES)]
            try:
                _at_depth(thread * 3, parses, variant)
            except Exception as error:  # every failure is the finding
                failures.append(error)

    threads = [threading.Thread(target=draft, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
