"""The workspace's own error, raised by the workspace and the collaborators it delegates to."""

from __future__ import annotations


class WorkspaceError(Exception):
    """A problem with the workspace; ``str(error)`` says what happened and what to do."""
