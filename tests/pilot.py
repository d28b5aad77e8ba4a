"""Driving the real cockpit through Textual's pilot: the waits the UI tests share."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from cockpit.ui.app import CockpitApp


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and the screen catch up."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def poll(pilot: Pilot[Any]) -> None:
    """Read the journal once more and apply what changed."""
    app = pilot.app
    assert isinstance(app, CockpitApp)
    await settle(pilot)
    worker = app.poll_now()
    assert worker is not None
    await worker.wait()
    await settle(pilot)
