"""`python -m trainer`: run a training script under the harness."""

from __future__ import annotations

import os
import sys

from trainer.confine import Confinement, ConfinementError, confine_network, confinement_mode

if __name__ == "__main__":
    # Off the network before torch is imported: unshare refuses a process with threads.
    try:
        confinement: Confinement | Exception = confine_network(confinement_mode(sys.argv[1:]))
    except (ConfinementError, ValueError) as refused:
        confinement = refused
    from trainer.harness import main

    code = main(confinement=confinement)
    # The summary, the metrics and the log are written and flushed by now. Leave without the
    # interpreter's teardown: a native thread of the script's libraries still running there
    # can abort the process ("terminate called without an active exception") after an
    # honest result, and the runner would read SIGABRT instead of the exit code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
