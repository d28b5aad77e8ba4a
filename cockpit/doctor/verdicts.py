"""A check's verdict (`Check`: pass, warn or fail, a summary and the fix) and how the doctor
shows them: one line each and the last line that says ready or not, or ``--json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASS = "pass"
WARN = "warn"
FAIL = "fail"
STATUSES = (PASS, WARN, FAIL)

GB = 1e9


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``status`` is pass, warn or fail; ``fix`` says what to do
    (on a pass, a tip or ""); ``details`` are the readings behind it, for ``--json``."""

    key: str
    status: str
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(
                f"a check's status is one of {', '.join(STATUSES)}, not {self.status!r}"
            )

    def line(self) -> str:
        """The check in one line, its fix at the end."""
        text = f"{self.status:<4}  {self.key:<8}  {self.summary}"
        if self.fix:
            text += f" | {'tip' if self.status == PASS else 'fix'}: {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """key, status, summary and fix, then the details (which cannot replace those)."""
        head = {"key": self.key, "status": self.status, "summary": self.summary, "fix": self.fix}
        return {**head, **{name: value for name, value in self.details.items() if name not in head}}


def doctor_ok(checks: Sequence[Check]) -> bool:
    """Whether no check failed (warnings allowed)."""
    return all(check.status != FAIL for check in checks)


def doctor_json(checks: Sequence[Check], **extra: Any) -> dict[str, Any]:
    """What ``cockpit doctor --json`` prints."""
    return {"ok": doctor_ok(checks), **extra, "checks": [check.to_dict() for check in checks]}


def verdict(checks: Sequence[Check]) -> str:
    """The last line: ready or not, and how many warnings and failures."""
    failed = sum(check.status == FAIL for check in checks)
    warned = sum(check.status == WARN for check in checks)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}"
    if failed:
        return f"not ready: {failed} check{'s' if failed != 1 else ''} failed, {warnings}"
    return f"ready: no check failed, {warnings}"


def print_doctor(checks: Sequence[Check], workspace: Path, *, as_json: bool) -> int:
    """Print the checks (one line each, or JSON); 0 when none failed, else 1."""
    if as_json:
        print(json.dumps(doctor_json(checks, workspace=str(workspace)), indent=2))
    else:
        print(f"cockpit doctor: workspace {workspace}")
        for check in checks:
            print("  " + check.line())
        print(verdict(checks))
    return 0 if doctor_ok(checks) else 1


def gb_text(amount_bytes: float) -> str:
    """An amount of bytes in GB, as the checks' summaries give it."""
    return f"{amount_bytes / GB:.1f} GB"
