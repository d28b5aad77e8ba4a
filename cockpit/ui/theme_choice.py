"""Which theme the cockpit starts with: the one asked for on the command line, else the one
remembered from last time (`cockpit.ui.preferences`), else the workspace's ``ui.theme``."""

from __future__ import annotations

from pathlib import Path

from themes import DEFAULT_THEME, THEMES, resolve_theme


def choose_theme(requested: str | None, saved: str | None, configured: str) -> str:
    """The theme to start with: the one asked for, else the one saved last time, else the
    configured one. An unknown requested or configured name is a ValueError that lists the
    valid ones; an unknown saved one is ignored (the file may come from another version)."""
    if requested is not None:
        return resolve_theme(requested).name
    if saved is not None and saved in THEMES:
        return saved
    try:
        return resolve_theme(configured).name
    except ValueError as exc:
        raise ValueError(f"{exc} (set ui.theme in the workspace's config.toml)") from None


def configured_theme(workspace: Path) -> str:
    """The theme the workspace's settings name (the default when they cannot be read: the
    engine reports a broken config.toml itself)."""
    from cockpit.config import ConfigError, load_settings

    try:
        return load_settings(workspace).ui.theme
    except ConfigError:
        return DEFAULT_THEME
