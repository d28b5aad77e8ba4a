"""Named points where a test can make the engine die, to prove it resumes from anywhere.

`COCKPIT_FAILPOINT=<name>` makes the engine kill itself with SIGKILL when it reaches that
point, exactly as a power cut or an `kill -9` would: nothing after it runs, no cleanup, no
`finally`. Unset (always, outside tests), a failpoint costs one dictionary lookup.

Points: ``committed`` (an experiment is in git but not yet in the journal), ``kept`` (the
branch has advanced but the decision is not yet journaled), ``decided`` (the decision is
journaled but results.tsv is not yet rewritten).
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "COCKPIT_FAILPOINT"
POINTS = ("committed", "kept", "decided")


def failpoint(name: str) -> None:
    """Die here, at once, when the environment names this point."""
    assert name in POINTS, name
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
