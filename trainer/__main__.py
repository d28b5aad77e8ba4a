"""`python -m trainer`: train a script in a confined process and evaluate its export."""

from __future__ import annotations

import os
import sys

from trainer.harness import main

if __name__ == "__main__":
    code = main()
    # The summary, the metrics and the log are written and flushed by now. Leave without the
    # interpreter's teardown (torch's native threads can abort it after an honest result).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
