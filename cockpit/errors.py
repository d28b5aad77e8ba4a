"""The engine's own error."""

from __future__ import annotations


class EngineError(Exception):
    """The engine cannot go on; the message says why and what to do."""
