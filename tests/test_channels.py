"""No channel between experiments: what one training leaves in the compilers' caches, a later
training does not load, unless the researcher shares the caches on purpose
(`[trainer] share_compile_cache`). Real harness runs with one cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

# Each training looks for what an earlier one planted where Inductor keeps its compiled graphs
# (a later training of the same graph would load and run it), then plants its own.
LOOKS_AND_PLANTS = """
import os
from pathlib import Path

import torch.nn as nn


def train(ctx):
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    print(f"CACHE found={(cache / 'planted.py').exists()}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "planted.py").write_text("print('loaded in a later training')")
    print(f"CACHE planted={cache}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""


@pytest.fixture(scope="module")
def corpus(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


def test_what_a_training_leaves_in_the_compile_cache_the_next_does_not_load(
    tmp_path: Path, corpus: str
) -> None:
    cache = tmp_path / "cache"
    own = ("--threads", "1", "--cache-dir", str(cache))
    shared = (*own, "--share-compile-cache")

    def train(name: str, flags: tuple[str, ...]) -> dict[str, str]:
        (tmp_path / name).mkdir()
        run = run_harness(LOOKS_AND_PLANTS, tmp_path / name, *flags, budget=1.0, corpus=corpus)
        assert run.exit_code == 0, run.output
        assert run.summary["compile_cache"] == ("shared" if flags == shared else "own")
        return tagged(run.output, "CACHE")

    first = train("first", own)
    # Its cache was its own, in its folder: nothing of it is where a later training looks,
    # even one that shares the caches.
    assert first["found"] == "False" and not Path(first["planted"]).is_relative_to(cache)
    second = train("second", shared)
    assert second["found"] == "False" and Path(second["planted"]).is_relative_to(cache)
    # Shared on purpose, the caches are the channel the setting's description says they are.
    assert train("third", shared)["found"] == "True"
