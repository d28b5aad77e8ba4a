"""A script's change carried onto another version of the script.

An experiment changed some lines of the script it was proposed on (its parent). When the best
has moved on since, the same change is made to the new best: each changed block of lines is
found in the new best, by what it was in the parent, and replaced there. Changes next to
each other combine (one experiment raised the learning rate, another the depth on the line
below), which a line merge with context would call a conflict; a block that the new best
changed too, or that it holds more than once, cannot be carried over.
"""

from __future__ import annotations

import difflib

from agent.edits import Edit, EditRejected, apply_edits


def carry_change(parent: str, changed: str, onto: str) -> str | None:
    """``onto`` with the change from ``parent`` to ``changed`` made to it; None when the
    change does not apply there, or is already all there."""
    old = parent.splitlines(keepends=True)
    new = changed.splitlines(keepends=True)
    edits: list[Edit] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, old, new, autojunk=False
    ).get_opcodes():
        if tag == "equal":
            continue
        search, replace = old[i1:i2], new[j1:j2]
        if not search:  # an insertion: anchored on the line before it (or after, at the top)
            if i1 > 0:
                search, replace = [old[i1 - 1]], [old[i1 - 1], *replace]
            elif old:
                search, replace = [old[0]], [*replace, old[0]]
            else:
                return None
        edits.append(Edit(search="".join(search), replace="".join(replace)))
    if not edits:
        return None
    try:
        result = apply_edits(onto, edits)
    except EditRejected:
        return None
    return None if result == onto else result
