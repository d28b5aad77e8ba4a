"""Pacing: how many steps of a script fit in the budget, fixed once per script and machine.

A wall-clock budget makes the number of steps, and with it a step-indexed schedule, depend
on how fast each step happened to run. The first run of a script on a machine times its
steps and asks for a plan; the plan is remembered under the script's content, the device,
the thread count and the budget, and later runs of the same script reuse it. Runs that
differ only by their seed then do identical work, and a rerun with the same seed gives the
same number. A plan that does not fit the budget (the machine got busier) is cut down to the steps
that did fit, so that the runs after it agree again; a remembered plan that now trains much
faster than it did the first time (the machine was busier then) is dropped after the run, so
that the next run plans from the pace of the machine as it is now.

Where plans are remembered decides which runs share them: the engine keeps one file per
experiment run, so that every script of a run is planned under that run's conditions and no
plan made under another load (a test suite, last week's run) decides how much a script trains.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from trainer.atomic import write_json_atomic

# Plans leave this share of the remaining time unused, for step-time jitter, and at least
# MIN_MARGIN_SECONDS (a pause of the machine matters more to a short budget than a long one).
SAFETY = 0.97
MIN_MARGIN_SECONDS = 0.5
# A remembered plan that now trains in less than this share of the time it took before was
# made on a slower (or busier) machine than this one is now: it is dropped after the run.
STALE_BELOW = 0.8


def usable_seconds(seconds_left: float) -> float:
    """The part of the remaining time a plan may fill."""
    left = max(0.0, seconds_left)
    return max(0.0, left - max(left * (1.0 - SAFETY), MIN_MARGIN_SECONDS))


class Pacing:
    """Remembered step plans, in one JSON file: per key, the steps and the seconds of training
    they took the first time they ran to the end (null until then)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.plan: int | None = None
        self.reused = False

    @staticmethod
    def make_key(script: Path, *facts: object) -> str:
        digest = hashlib.sha256(script.read_bytes())
        for fact in facts:
            digest.update(f"|{fact}".encode())
        return digest.hexdigest()[:32]

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        plans = {}
        for key, entry in data.items():
            if isinstance(entry, int):  # a file from before plans kept their seconds
                entry = {"steps": entry, "seconds": None}
            if isinstance(entry, dict) and isinstance(entry.get("steps"), int):
                plans[key] = entry
        return plans

    def _store(self, plans: dict[str, dict[str, Any]]) -> None:
        try:
            write_json_atomic(self.path, plans, indent=1, sort_keys=True)
        except OSError as exc:  # every run then plans afresh; nothing else is lost
            print(
                f"warning: step plans not kept in {self.path} ({exc}): each run plans afresh",
                file=sys.stderr,
            )

    def remember(self, steps: int, seconds: float | None = None) -> None:
        """Remember this script's plan (and the seconds its first full run took)."""
        plans = self._load()
        plans[self.key] = {"steps": steps, "seconds": seconds}
        self._store(plans)

    def plan_steps(self, steps_done: int, seconds_per_step: float, seconds_left: float) -> int:
        """The total number of steps for this run: remembered, or planned from the pace now."""
        remembered = self._load().get(self.key, {}).get("steps")
        if isinstance(remembered, int) and remembered > steps_done:
            self.plan, self.reused = remembered, True
            return remembered
        if not (seconds_per_step > 0 and math.isfinite(seconds_per_step)):
            raise ValueError(f"seconds_per_step must be a positive number, got {seconds_per_step}")
        fits = int(usable_seconds(seconds_left) / seconds_per_step)
        self.plan, self.reused = steps_done + fits, False
        self.remember(self.plan)
        return self.plan

    def settle(self, steps_done: int, training_seconds: float, budget_seconds: float) -> str | None:
        """After the training: cut a plan that ran out of time to what fitted ("shrunk"),
        drop one that now trains much faster than it did before ("stale"), or keep it (None;
        its first run to the end records how long it took)."""
        if self.plan is None:
            return None
        if training_seconds >= budget_seconds:
            self.shrink(steps_done)
            return "shrunk"
        entry = self._load().get(self.key)
        if entry is None or entry["steps"] != self.plan:
            return None  # another run changed the plan meanwhile: it has the say
        took = entry.get("seconds")
        if not isinstance(took, (int, float)):
            self.remember(self.plan, training_seconds)
            return None
        if self.reused and training_seconds < STALE_BELOW * took:
            self.forget()
            return "stale"
        return None

    def shrink(self, steps_done: int) -> None:
        """The plan ran out of time after steps_done steps: remember a plan that fits, so
        that the next runs of the script do the same work (and forget it if none would)."""
        fitted = int(steps_done * SAFETY)
        if fitted < 1:
            self.forget()
            return
        self.remember(fitted)

    def forget(self) -> None:
        """Drop this script's plan: the next run of the script plans afresh."""
        plans = self._load()
        if plans.pop(self.key, None) is not None:
            self._store(plans)
