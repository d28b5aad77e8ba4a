"""Python's parser behind one lock, for every script the cockpit's process reads.

CPython 3.11 keeps the AST constructor's recursion depth in state the whole interpreter
shares (python/cpython#106905). Two threads that parse at once, from different stack
depths, can then fail with "SystemError: AST constructor recursion depth mismatch" when a
garbage collection inside one lets the other run. Proposers draft in threads side by side,
so every parse in this process goes through `parse`, which lets one thread at a time in.
"""

from __future__ import annotations

import ast
import threading

_PARSER = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, one thread at a time."""
    with _PARSER:
        return ast.parse(source, filename=filename)
