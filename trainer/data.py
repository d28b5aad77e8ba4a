"""Corpora for the research target: discovery, the train/validation split, encoding and caching.

A corpus is a list of documents (a file, or a row of a parquet shard). Each document goes to
training, validation or test by a stable hash of its identifier, so the split never depends on
the order files are found in, the machine, or the Python version. Validation decides every
keep or discard; test is read by no decision, only by the report, to tell whether the keeps
generalise. The splits are encoded
once with the tokenizer and cached; the cache key is built from cheap file metadata, so a
second run reads only the cached arrays, never the corpus itself. The fingerprint, a hash of
the encoded content and the split rule, is recorded with every result: results on different
fingerprints are never compared.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.tokenizer import ByteTokenizer

# Bump when the way documents are split or encoded changes: it invalidates every cache
# entry and changes every fingerprint, so old and new results are never compared.
SPLIT_RULE = "doc-sha256-mod-1000:val<100,test<150:v2"
VAL_PER_MILLE = 100  # 10 % of documents are held out for validation
TEST_PER_MILLE = 50  # and 5 % for the test split
SPLITS = ("train", "val", "test")
# The standard library's held-out documents come only from these packages, which no training
# needs to import (the test suite, IDLE, Tk, 2to3, pydoc's topics, the pip bootstrapper): the
# training process cannot read them (trainer.walls hides them), so it cannot read a held-out
# document in any form, source or bytecode. Their other documents train, through the split.
HELD_OUT_PACKAGES = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data",
                     "ensurepip")  # fmt: skip
STDLIB_VAL_PER_MILLE = 150  # of the documents in those packages: about 10 % of all bytes
STDLIB_TEST_PER_MILLE = 75
STDLIB_SPLIT_RULE = (
    f"stdlib-held-out-in:{','.join(HELD_OUT_PACKAGES)}:doc-sha256-mod-1000:"
    f"val<{STDLIB_VAL_PER_MILLE},test<{STDLIB_VAL_PER_MILLE + STDLIB_TEST_PER_MILLE}:v3"
)
# Where other copies of a standard library may lie, readable by the training (the system's
# Python beside the one that runs it): their held-out packages are hidden too.
OTHER_STDLIBS = ("/usr/lib/python3*", "/usr/local/lib/python3*", "/opt/*/lib/python3*")
# Documents are joined with a NUL byte: source and text files never contain one, so it
# marks a document boundary without a special token outside the byte vocabulary.
DOC_SEPARATOR = b"\x00"


class CorpusError(Exception):
    """A corpus that cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Document:
    """One unit of the split: its stable identifier and a way to read its bytes."""

    doc_id: str
    path: Path
    row: int | None = None  # row index inside a parquet shard


def _bucket(doc_id: str) -> int:
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000


def split_of(doc_id: str) -> str:
    """The split a document of a `text:` or `parquet:` corpus belongs to, by a stable hash of
    its identifier."""
    bucket = _bucket(doc_id)
    if bucket < VAL_PER_MILLE:
        return "val"
    return "test" if bucket < VAL_PER_MILLE + TEST_PER_MILLE else "train"


def stdlib_split_of(doc_id: str) -> str:
    """The split a document of the standard library belongs to: held out only within
    `HELD_OUT_PACKAGES`, by a stable hash of its identifier (its path in the library)."""
    if doc_id.split("/", 1)[0] not in HELD_OUT_PACKAGES or "/" not in doc_id:
        return "train"
    bucket = _bucket(doc_id)
    if bucket < STDLIB_VAL_PER_MILLE:
        return "val"
    return "test" if bucket < STDLIB_VAL_PER_MILLE + STDLIB_TEST_PER_MILLE else "train"


def is_validation(doc_id: str) -> bool:
    """Whether a document is held out for validation."""
    return split_of(doc_id) == "val"


def _walk_files(root: Path, suffix: str | None) -> list[Path]:
    """Every regular, non-hidden file below root (optionally with a suffix), in a stable order."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__pycache__")
        for name in files:
            if name.startswith(".") or (suffix is not None and not name.endswith(suffix)):
                continue
            path = Path(directory, name)
            if path.is_file():
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


@dataclass(frozen=True)
class CorpusSpec:
    """A parsed corpus name: `stdlib`, `text:DIR` or `parquet:DIR`."""

    kind: str
    root: Path

    @classmethod
    def parse(cls, name: str) -> CorpusSpec:
        if name == "stdlib":
            return cls("stdlib", Path(sysconfig.get_paths()["stdlib"]).resolve())
        kind, sep, location = name.partition(":")
        if sep and kind in ("text", "parquet") and location:
            root = Path(location).expanduser().resolve()
            if not root.is_dir():
                raise CorpusError(
                    f"corpus {name!r}: {root} is not a directory; point it at a folder of "
                    f"{'text files' if kind == 'text' else '.parquet shards'}"
                )
            return cls(kind, root)
        raise CorpusError(
            f"unknown corpus {name!r}; use 'stdlib', 'text:DIR' (a folder of text files) "
            "or 'parquet:DIR' (a folder of .parquet shards with a 'text' column)"
        )

    @property
    def name(self) -> str:
        return "stdlib" if self.kind == "stdlib" else f"{self.kind}:{self.root}"

    @property
    def split_rule(self) -> str:
        return STDLIB_SPLIT_RULE if self.kind == "stdlib" else SPLIT_RULE

    def split(self, doc_id: str) -> str:
        """The split of one of this corpus's documents."""
        return stdlib_split_of(doc_id) if self.kind == "stdlib" else split_of(doc_id)

    def hidden(self) -> list[str]:
        """What the training process must not read, for it holds held-out documents: the
        held-out packages of the standard library (in every copy of it the training could
        read), or the whole folder of a `text:` or `parquet:` corpus (the training reads its
        split from the encoded cache, never the documents)."""
        if self.kind != "stdlib":
            return [str(self.root)]
        libraries = [str(self.root), *(p for g in OTHER_STDLIBS for p in sorted(glob.glob(g)))]
        found = (os.path.join(library, package) for library in libraries
                 for package in HELD_OUT_PACKAGES)  # fmt: skip
        return sorted({os.path.realpath(path) for path in found if os.path.isdir(path)})

    def files(self) -> list[Path]:
        if self.kind == "stdlib":
            # site-packages differs from machine to machine; the standard library does not.
            return [
                p
                for p in _walk_files(self.root, ".py")
                if "site-packages" not in p.relative_to(self.root).parts
            ]
        if self.kind == "parquet":
            return _walk_files(self.root, ".parquet")
        return _walk_files(self.root, None)

    def manifest_key(self, files: list[Path]) -> str:
        """A cheap key from file names, sizes and modification times: no file is read."""
        h = hashlib.sha256(f"{self.split_rule}|{self.kind}|{self.root}".encode())
        for path in files:
            st = path.stat()
            h.update(
                f"|{path.relative_to(self.root).as_posix()}:{st.st_size}:{st.st_mtime_ns}".encode()
            )
        return h.hexdigest()[:24]

    def cache_entry(self, files: list[Path], cache_dir: Path | None = None) -> Path:
        """The folder that holds (or will hold) these files encoded."""
        root = (cache_dir or default_cache_dir()) / "corpora"
        return root / f"{self.kind}-{self.manifest_key(files)}"


def _read_text_file(path: Path) -> bytes | None:
    """A file's bytes, or None when it is binary: a NUL byte anywhere (text never has one,
    and NUL is the document separator)."""
    data = path.read_bytes()
    return None if DOC_SEPARATOR in data else data


def _iter_documents(spec: CorpusSpec, files: list[Path]) -> Iterator[tuple[str, bytes]]:
    if spec.kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # optional extra
            raise CorpusError(
                "parquet corpora need pyarrow: pip install 'research-cockpit[parquet]'"
            ) from exc
        for path in files:
            rel = path.relative_to(spec.root).as_posix()
            try:
                if "text" not in pq.read_schema(path).names:
                    raise CorpusError(f"{path}: a parquet shard needs a 'text' column")
                column = pq.read_table(path, columns=["text"]).column("text")
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise CorpusError(f"{path}: cannot read this parquet shard ({exc})") from exc
            for row, text in enumerate(column.to_pylist()):
                if text:
                    yield f"{rel}#{row}", text.encode("utf-8").replace(DOC_SEPARATOR, b"")
        return
    for path in files:
        data = _read_text_file(path)
        if data:
            yield path.relative_to(spec.root).as_posix(), data


@dataclass(frozen=True)
class EncodedCorpus:
    """Paths to a cached, encoded corpus and what identifies it."""

    directory: Path
    name: str
    fingerprint: str
    vocab_size: int
    train_tokens: int
    val_tokens: int
    train_documents: int
    val_documents: int
    test_tokens: int = 0
    test_documents: int = 0
    hidden: tuple[str, ...] = ()  # what the training must not read (CorpusSpec.hidden)

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
        return self.directory / f"{split}.bin"

    @property
    def train_path(self) -> Path:
        return self.path("train")

    def load(self, split: str) -> np.ndarray:
        """A split's tokens, read into memory (uint8 for the byte tokenizer)."""
        return np.fromfile(self.path(split), dtype=np.uint8)


def default_cache_dir() -> Path:
    """Where encoded corpora are kept: COCKPIT_CACHE_DIR, else the user cache directory."""
    override = os.environ.get("COCKPIT_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("research-cockpit"))


def _encode(spec: CorpusSpec, files: list[Path], destination: Path) -> dict[str, object]:
    tokenizer = ByteTokenizer()
    counts = dict.fromkeys(SPLITS, 0)
    docs = dict.fromkeys(SPLITS, 0)
    content_hash = hashlib.sha256(f"{spec.split_rule}|{tokenizer.name}".encode())
    with contextlib.ExitStack() as stack:
        outputs = {s: stack.enter_context(open(destination / f"{s}.bin", "wb")) for s in SPLITS}
        for doc_id, data in _iter_documents(spec, files):
            split = spec.split(doc_id)
            encoded = tokenizer.encode(data) + DOC_SEPARATOR
            outputs[split].write(encoded)
            counts[split] += len(encoded)
            docs[split] += 1
            content_hash.update(f"{split}|{doc_id}|{len(encoded)}|".encode())
            content_hash.update(encoded)
    total = sum(docs.values())
    if total < 2:
        raise CorpusError(
            f"corpus {spec.name!r} has {total} readable documents; "
            "it needs at least two (one for training, one held out for validation)"
        )
    if spec.kind == "stdlib" and docs["val"] == 0:
        raise CorpusError(
            f"the standard library at {spec.root} has no held-out documents: they come only "
            f"from its packages {', '.join(HELD_OUT_PACKAGES)}, and none is here; install "
            "Python's test suite (Debian and Ubuntu: libpython3.X-testsuite), or use a corpus "
            "of your own ([trainer] corpus = 'text:DIR')"
        )
    if docs["val"] == 0 or docs["train"] == 0:
        raise CorpusError(
            f"corpus {spec.name!r}: its {total} documents all fell on one "
            "side of the train/validation split; add more files (about one in ten is held out)"
        )
    return {
        "name": spec.name,
        "fingerprint": content_hash.hexdigest()[:16],
        "vocab_size": tokenizer.vocab_size,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "train_documents": docs["train"],
        "val_documents": docs["val"],
        "test_tokens": counts["test"],
        "test_documents": docs["test"],
        "split_rule": spec.split_rule,
        "tokenizer": tokenizer.name,
    }


def prepare_corpus(name: str, cache_dir: Path | None = None) -> EncodedCorpus:
    """Encode a corpus once and return its cached form; later calls only read the cache."""
    spec = CorpusSpec.parse(name)
    files = spec.files()
    if not files:
        raise CorpusError(f"corpus {name!r}: no files found under {spec.root}")
    entry = spec.cache_entry(files, cache_dir)
    cache_root = entry.parent
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".encoding-", dir=cache_root))
        try:
            meta = _encode(spec, files, staging)
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
            try:
                staging.rename(entry)  # atomic: concurrent runs either win or find it done
            except OSError:
                if not meta_path.is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    meta = json.loads(meta_path.read_text())
    return EncodedCorpus(
        directory=entry,
        name=meta["name"],
        fingerprint=meta["fingerprint"],
        vocab_size=meta["vocab_size"],
        train_tokens=meta["train_tokens"],
        val_tokens=meta["val_tokens"],
        train_documents=meta["train_documents"],
        val_documents=meta["val_documents"],
        test_tokens=meta.get("test_tokens", 0),
        test_documents=meta.get("test_documents", 0),
        hidden=tuple(spec.hidden()),
    )
