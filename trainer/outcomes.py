"""How a training run can end: one status name and one exit code each.

The engine classifies a run from the harness's exit code alone, so every failure the harness
recognises has a code of its own. Codes 1 and 2 are left to Python (an uncaught error inside
the harness itself) and argparse (a usage error).
"""

from __future__ import annotations

import enum


class Outcome(enum.IntEnum):
    OK = 0
    CRASH = 3  # the script raised, or could not be imported
    NAN = 4  # a reported loss, or the evaluated loss, was NaN or infinite
    DIVERGED = 5  # the reported loss exploded far above the untrained level
    TIMEOUT = 6  # training (or evaluation) ran past its time and was stopped
    BAD_MODEL = 7  # the returned model breaks the contract (vocabulary, shape, causality)
    OOM = 8  # the device ran out of memory
    SETUP = 9  # the harness could not start: bad corpus, bad device, missing script
    INTERRUPTED = 10  # stopped from outside (SIGTERM, SIGINT)

    @property
    def status(self) -> str:
        return self.name.lower()

    @classmethod
    def from_exit_code(cls, code: int | None) -> Outcome | None:
        """The outcome for a harness exit code, or None for a code the harness never uses."""
        try:
            return cls(code) if code is not None else None
        except ValueError:
            return None


class HarnessStop(BaseException):
    """Ends a run early with an outcome and a one-line reason.

    A BaseException, like KeyboardInterrupt, so that a script's `except Exception:` cannot
    swallow a timeout or a NaN stop."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
