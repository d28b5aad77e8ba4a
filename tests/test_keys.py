"""The cockpit's keys have one owner (cockpit.ui.keys): the app's bindings, the help screen and
the status line's hint are made from it, and it agrees with the app it names actions of."""

from __future__ import annotations

from cockpit.ui import keys
from cockpit.ui.app import CockpitApp
from cockpit.ui.screens import KEY_HELP


def test_every_action_in_the_table_is_one_the_app_has() -> None:
    for key in keys.KEYS:
        if key.action is not None:
            name = key.action.split("(")[0]
            assert callable(getattr(CockpitApp, f"action_{name}", None)), key


def test_the_app_the_help_and_the_hint_are_made_from_the_table() -> None:
    bound = {(b.key, b.action) for b in CockpitApp.BINDINGS if not isinstance(b, tuple)}  # type: ignore[union-attr]
    assert bound == {(k.name, k.action) for k in keys.KEYS if k.action is not None}
    assert keys.help_lines() == KEY_HELP
    helped = {shown for shown, _ in KEY_HELP}
    # Every key of the footer is on the help screen, under the name the footer shows.
    for key in keys.KEYS:
        if key.in_footer and key.help:
            assert key.shown in helped, key
    assert keys.shown("approve") == "a" and keys.shown("help") == "?"


def test_the_panels_number_keys_are_one_line_of_the_help() -> None:
    lines = dict(keys.help_lines())
    assert lines[f"1-{len(keys.PANELS)}"].startswith("narrow screens: show ledger, diff")
