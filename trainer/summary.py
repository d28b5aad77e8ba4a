"""The summary block every run ends with, in autoresearch's format, and its parser.

    ---
    val_bpb:          0.997900
    training_seconds: 300.1
    ...

The same figures are written as JSON. The parser reads the block from any command's output,
so a workspace may run a script of its own that prints it (its metric is then self-reported).
"""

from __future__ import annotations

import math
from typing import Any

# Printed first, in this order and with these formats (autoresearch's block), then the rest.
_FORMATS: dict[str, str] = {
    "val_bpb": "{:.6f}",
    "training_seconds": "{:.1f}",
    "total_seconds": "{:.1f}",
    "peak_vram_mb": "{:.1f}",
    "mfu_percent": "{:.2f}",
    "total_tokens_M": "{:.1f}",
    "num_steps": "{:d}",
    "num_params_M": "{:.1f}",
}


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    fmt = _FORMATS.get(key)
    if fmt:
        try:
            return fmt.format(value)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """The block as printed: `---` then one `key: value` line per figure."""
    keys = [k for k in _FORMATS if k in summary] + [k for k in summary if k not in _FORMATS]
    width = max(len(k) for k in keys) + 2 if keys else 0
    lines = ["---"]
    for key in keys:
        value = summary[key]
        if isinstance(value, (dict, list)):
            continue
        lines.append(f"{key + ':':<{width}}{_format_value(key, value)}")
    return "\n".join(lines)


# Figures that are text even when they look like numbers (a fingerprint of digits).
_TEXT_KEYS = frozenset(
    {"status", "reason", "device", "device_name", "corpus", "corpus_fingerprint", "script",
     "harness_version", "torch_version", "shapes"}
)  # fmt: skip


def _parse_value(key: str, text: str) -> Any:
    text = text.strip()
    if text == "n/a":
        return None
    if key in _TEXT_KEYS:
        return text
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_summary(output: str) -> dict[str, Any]:
    """The figures of the last summary block in a run's output ({} when there is none)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    for start in reversed(starts):
        figures: dict[str, Any] = {}
        for line in lines[start + 1 :]:
            key, sep, value = line.partition(":")
            if not sep or not key.strip() or " " in key.strip():
                break
            figures[key.strip()] = _parse_value(key.strip(), value)
        if figures:
            return figures
    return {}
