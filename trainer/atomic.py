"""Files written whole: a reader (another process, or the next run) sees the old file or the
whole new one, never half of it. The one way the trainer writes a file that others read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block ends it replaces ``path`` in one
    step (on an error it is removed and ``path`` is left as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(
    path: Path, data: Any, indent: int | None = 2, sort_keys: bool = False
) -> None:
    """JSON, NaN and infinities allowed (a failed run's figures hold them)."""
    text = json.dumps(data, indent=indent, allow_nan=True, sort_keys=sort_keys)
    write_text_atomic(path, text + "\n")
