"""`python -m trainer`: run a training script under the harness."""

from __future__ import annotations

import sys

from trainer.harness import main

if __name__ == "__main__":
    sys.exit(main())
