"""No channel between experiments: what one training leaves in the compilers' caches, a later
training does not load, unless the researcher shares the caches on purpose
(`[trainer] share_compile_cache`). Real harness runs with one cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged

# The first training plants a file where Inductor keeps its compiled graphs (a later training
# of the same graph would load and run it); the second looks for it.
PLANTS = """
import os
from pathlib import Path

import torch.nn as nn


def train(ctx):
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "planted.py").write_text("print('loaded in a later training')")
    print(f"CACHE planted={{cache}}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""

LOOKS = """
import os
from pathlib import Path

import torch.nn as nn


def train(ctx):
    found = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"], "planted.py").exists()
    print(f"CACHE found={{found}}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""


@pytest.fixture(scope="module")
def corpus(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


@pytest.mark.parametrize("shared", [False, True], ids=["own caches", "shared on purpose"])
def test_what_a_training_leaves_in_the_compile_cache_the_next_does_not_load(
    tmp_path: Path, corpus: str, shared: bool
) -> None:
    cache = tmp_path / "cache"
    flags = ("--threads", "1", "--cache-dir", str(cache))
    flags += ("--share-compile-cache",) if shared else ()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = run_harness(PLANTS.format(), tmp_path / "first", *flags, budget=1.0, corpus=corpus)
    assert first.exit_code == 0, first.output
    assert first.summary["compile_cache"] == ("shared" if shared else "own")
    second = run_harness(LOOKS.format(), tmp_path / "second", *flags, budget=1.0, corpus=corpus)
    assert second.exit_code == 0, second.output
    assert tagged(second.output, "CACHE")["found"] == str(shared)
    # The training's own cache lies in its own folder, not in the shared cache folder.
    planted = Path(tagged(first.output, "CACHE")["planted"])
    assert planted.is_relative_to(cache) == shared
