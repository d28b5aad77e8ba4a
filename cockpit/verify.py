"""`cockpit verify`: the run's best trained again on seeds no experiment used, on demand
(`cockpit.engine.verification` does the work; the engine does it too at the end of a run).
"""

from __future__ import annotations

import sys

from cockpit.engine.verification import run_settings, verify_best
from cockpit.engine.workspace import Workspace
from cockpit.errors import EngineError
from cockpit.settings import EngineSettings
from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock_held


def cmd_verify(workspace: Workspace, tag: str | None, seeds: int | None) -> int:
    """`cockpit verify`: verify the run (default: the latest) and print what it showed."""
    if engine_lock_held(workspace.path):
        print(
            "error: the engine is running: its trainings and these would share the machine and "
            "measure each other; `cockpit stop` first, then `cockpit verify`",
            file=sys.stderr,
        )
        return 1
    with Journal.open(workspace.paths.journal) as journal:
        run = journal.run_by_tag(tag) if tag is not None else journal.latest_run()
        if run is None:
            where = f"no run tagged {tag}" if tag is not None else "no run yet"
            print(f"error: {where} in {workspace.path}: `cockpit run` first", file=sys.stderr)
            return 1
        settings = run_settings(run)
        if seeds is None:
            field_default = EngineSettings.model_fields["verify_seeds"].default
            seeds = settings.engine.verify_seeds or int(field_default)
        try:
            verification = verify_best(
                workspace, journal, run, settings, seeds, say=lambda line: print(line, flush=True)
            )
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    assert verification is not None  # nothing stops it here but Ctrl-C
    print(f"run {run.tag}: {verification.headline()}")
    return 0
