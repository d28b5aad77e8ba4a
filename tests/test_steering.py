"""The steering vocabulary: one typed form of the researcher's commands."""

from __future__ import annotations

import pytest

from cockpit.store.journal import Journal
from cockpit.store.records import COMMAND_KINDS
from cockpit.store.steering import Kind, Steer


@pytest.mark.parametrize(
    "steer",
    [
        Steer(Kind.PAUSE),
        Steer(Kind.RESUME),
        Steer(Kind.STOP_RUN),
        Steer(Kind.STOP_RUN, experiment=3),
        Steer(Kind.STOP_ENGINE, now=True),
        Steer(Kind.SET_MODE, mode="supervised"),
        Steer(Kind.NOTE, text="try a longer warmup"),
        Steer(Kind.APPROVE, experiment=2),
        Steer(Kind.VETO, experiment=2, reason="too big"),
        Steer(Kind.OVERRIDE_KEEP, experiment=4),
        Steer(Kind.OVERRIDE_DISCARD, experiment=4),
    ],
)
def test_every_command_survives_the_journal(tmp_path, steer: Steer) -> None:
    with Journal.open(tmp_path / "journal.db") as journal:
        journal.post_command(steer.kind.value, steer.payload())
        (row,) = journal.pending_commands()
    assert Steer.parse(row.kind, row.payload) == steer


def test_the_journal_accepts_exactly_the_vocabulary() -> None:
    assert set(COMMAND_KINDS) == {kind.value for kind in Kind}


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        ("reboot", {}, "unknown command 'reboot'; the commands are pause"),
        ("set_mode", {"mode": "turbo"}, "unknown mode 'turbo'"),
        ("note", {"text": "  "}, "a note needs text"),
        ("override_keep", {}, "override_keep needs an experiment number"),
        ("pause", {"experiment": 3}, "pause does not take an experiment"),
        ("approve", {"experiment": "3"}, "the experiment must be a number"),
        ("approve", {"experiment": True}, "the experiment must be a number"),
    ],
)
def test_a_malformed_command_is_refused_with_the_reason(
    kind: str, payload: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Steer.parse(kind, payload)
