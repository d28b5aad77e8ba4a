"""What the cockpit remembers between runs (the theme), in the user's state directory.

The file is ``<user state dir>/ui.json``; ``COCKPIT_STATE_DIR`` replaces the directory (tests,
or several setups side by side). A missing or damaged file means "nothing remembered".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cockpit.store.atomic import write_atomic

STATE_DIR_ENV = "COCKPIT_STATE_DIR"
APP_NAME = "research-cockpit"
PREFERENCES_FILE = "ui.json"


def state_dir() -> Path:
    """The directory of the cockpit's remembered state."""
    configured = os.environ.get(STATE_DIR_ENV, "")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return platformdirs.user_state_path(APP_NAME)


def preferences_path() -> Path:
    """The file that holds the remembered choices."""
    return state_dir() / PREFERENCES_FILE


def load_preferences() -> dict[str, object]:
    """The remembered choices; empty when there are none or the file is unreadable."""
    try:
        data = json.loads(preferences_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def saved_theme() -> str | None:
    """The theme chosen last time, if any."""
    theme = load_preferences().get("theme")
    return theme if isinstance(theme, str) and theme else None


def save_theme(name: str) -> None:
    """Remember the theme for the next start (written atomically)."""
    preferences = load_preferences()
    preferences["theme"] = name
    text = json.dumps(preferences, indent=2, sort_keys=True)
    write_atomic(preferences_path(), text.encode("utf-8"))
