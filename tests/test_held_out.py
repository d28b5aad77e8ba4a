"""No held-out byte within the training's reach: the standard library's validation and test
documents come only from packages the training cannot read (the test suite, IDLE, Tk, ...),
the folder of a corpus of one's own is out of its reach, and a real confined training that
walks everything it can open finds none of them, in source or bytecode."""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged
from trainer.data import (
    HELD_OUT_PACKAGES,
    CorpusSpec,
    _iter_documents,
    prepare_corpus,
    stdlib_split_of,
)
from trainer.walls import carve, read_paths

# --- the split --------------------------------------------------------------------------------


def test_the_standard_library_holds_out_only_documents_of_its_held_out_packages() -> None:
    spec = CorpusSpec.parse("stdlib")
    splits = {"train": 0, "val": 0, "test": 0}
    held_out_bytes = total = 0
    for doc_id, data in _iter_documents(spec, spec.files()):
        split = stdlib_split_of(doc_id)
        splits[split] += 1
        total += len(data)
        if split != "train":
            assert doc_id.split("/")[0] in HELD_OUT_PACKAGES, doc_id
            held_out_bytes += len(data)
    assert splits["val"] > 50 and splits["test"] > 20, splits
    # About a tenth of the bytes for validation and a twentieth for test, as before.
    assert 0.08 < held_out_bytes / total < 0.25, held_out_bytes / total
    # The same document ids always fall the same way.
    assert stdlib_split_of("json/decoder.py") == "train"
    assert stdlib_split_of("test/test_grammar.py") == stdlib_split_of("test/test_grammar.py")


# --- the walls ----------------------------------------------------------------------------------


def test_a_tree_that_holds_a_hidden_folder_is_granted_around_it(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "lib" / "held").mkdir(parents=True)
    (tree / "lib" / "held" / "doc.py").write_text("secret")
    (tree / "lib" / "kept").mkdir()
    (tree / "lib" / "module.py").write_text("x = 1")
    (tree / "bin").mkdir()
    (tree / "lib" / "link").symlink_to(tree / "lib" / "held")  # a way round the hole
    (tree / "lib" / "up").symlink_to(tree)  # and a way back to the top
    granted = carve([str(tree), str(tmp_path / "other")], [str(tree / "lib" / "held")])
    assert sorted(granted) == sorted(
        [str(tree / "bin"), str(tree / "lib" / "kept"), str(tree / "lib" / "module.py")]
    )
    # A grant beneath a hidden folder goes; one apart from it stays as it was.
    assert carve([str(tree / "lib" / "held" / "doc.py"), str(tree / "bin")], [str(tree)]) == []
    assert carve([str(tree / "bin")], [str(tree / "lib")]) == [str(tree / "bin")]


def test_what_the_training_may_read_holds_no_held_out_folder() -> None:
    hidden = CorpusSpec.parse("stdlib").hidden()
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    assert os.path.join(stdlib, "test") in hidden
    granted = read_paths(None, None, hidden)
    for path in granted:
        assert not any(path == h or path.startswith(h + "/") for h in hidden), path
        assert not any(h.startswith(path.rstrip("/") + "/") for h in hidden), path
    # Python itself stays readable around the holes.
    assert os.path.join(stdlib, "json") in granted


def test_a_corpus_folder_of_ones_own_is_out_of_reach(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert CorpusSpec.parse(f"text:{corpus}").hidden() == [str(corpus.resolve())]


# --- a confined training looks for them -------------------------------------------------------

LOOKS = """
import hashlib
import os
import sys
import sysconfig

import torch.nn as nn

SIZES = {sizes!r}
HASHES = {hashes!r}
FOLDERS = {folders!r}
ROOTS = ["/usr", "/lib", "/lib64", "/etc", "/opt", "/bin", "/sbin", "/root", "/home", "/tmp",
         "/var", "/srv", "/mnt", sys.prefix, sys.base_prefix, *sys.path,
         sysconfig.get_paths()["stdlib"]]


def train(ctx):
    walked = 0
    for root in ROOTS:
        for directory, subdirs, files in os.walk(root or "/nonexistent"):
            for name in files:
                path = os.path.join(directory, name)
                walked += 1
                try:
                    if os.path.getsize(path) not in SIZES:
                        continue
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    continue
                if hashlib.sha256(data).hexdigest() in HASHES:
                    print(f"FOUND {{path}}=yes", flush=True)
    for folder in FOLDERS:
        try:
            os.listdir(folder)
            print(f"FOUND {{folder}}=listed", flush=True)
        except OSError:
            pass
    print(f"WALK files={{walked}}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""


@pytest.mark.e2e
def test_a_confined_training_finds_no_held_out_document_anywhere(tmp_path: Path) -> None:
    spec = CorpusSpec.parse("stdlib")
    held_out = [
        data
        for doc_id, data in _iter_documents(spec, spec.files())
        if stdlib_split_of(doc_id) != "train"
    ]
    script = LOOKS.format(
        sizes={len(data) for data in held_out},
        hashes={hashlib.sha256(data).hexdigest() for data in held_out},
        folders=spec.hidden(),
    )
    prepare_corpus("stdlib")  # encoded once, outside the training's time
    run = run_harness(
        script, tmp_path, "--threads", "1", budget=120.0, corpus="stdlib", timeout=400
    )
    assert run.exit_code == 0, run.output[-3000:]
    assert int(tagged(run.output, "WALK")["files"]) > 1000  # it did look around
    found = tagged(run.output, "FOUND")
    assert not found, sorted(found)[:20]
