"""Corpora on real files: the stable split, what lands in train.bin and val.bin, the cache that
never re-reads a corpus, the content-based fingerprint, what is skipped, parquet shards, and
the errors a bad corpus name or folder gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_text_corpus
from trainer.data import (
    DOC_SEPARATOR,
    SPLIT_RULE,
    SPLITS,
    CorpusError,
    CorpusSpec,
    EncodedCorpus,
    is_validation,
    prepare_corpus,
    split_of,
)

MARKER = re.compile(rb"file (\d{3})")


def documents(data: bytes) -> list[bytes]:
    """A split's documents: every one ends with the separator, so the last piece is empty."""
    assert data == b"" or data.endswith(DOC_SEPARATOR)
    return data.split(DOC_SEPARATOR)[:-1]


def markers(doc: bytes) -> set[str]:
    return {m.decode() for m in MARKER.findall(doc)}


def split_bytes(corpus: EncodedCorpus) -> tuple[bytes, bytes, bytes]:
    return tuple(corpus.path(split).read_bytes() for split in SPLITS)  # type: ignore[return-value]


# --- the split -------------------------------------------------------------------------------


def test_is_validation_is_stable_and_holds_out_about_a_tenth() -> None:
    """The same id always gets the same answer, and about 10 % of 2000 ids are held out."""
    ids = [f"pkg/module_{n}.py" for n in range(2000)]
    first = [is_validation(i) for i in ids]
    second = [is_validation(i) for i in ids]
    assert first == second
    assert 0.07 < sum(first) / len(ids) < 0.13


@pytest.mark.e2e
def test_the_split_does_not_depend_on_the_process_or_hash_seed() -> None:
    """The split is pinned for this SPLIT_RULE, and another interpreter with another hash seed
    agrees: the rule is a content hash, not Python's randomised hash()."""
    # A new rule must re-pin the ids below.
    assert SPLIT_RULE == "doc-sha256-mod-1000:val<100,test<150:v2"
    names = [f"doc_{n:03d}.txt" for n in range(40)]
    here = [[n for n in names if split_of(n) == split] for split in ("val", "test")]
    assert here == [
        ["doc_009.txt", "doc_022.txt"],
        ["doc_015.txt", "doc_016.txt", "doc_025.txt", "doc_038.txt"],
    ]
    assert [n for n in names if is_validation(n)] == here[0]
    code = (
        "import json, sys; from trainer.data import split_of; names = json.loads(sys.argv[1]); "
        "print(json.dumps([[n for n in names if split_of(n) == s] for s in ('val', 'test')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
    ).stdout
    assert json.loads(out) == here


# --- text corpora ----------------------------------------------------------------------------


def test_every_text_file_lands_in_exactly_one_split(tmp_path: Path) -> None:
    """Each file's bytes are one NUL-terminated document in the split its hash names, nothing
    is lost or duplicated, and the metadata counts are the file sizes plus separators."""
    root = write_text_corpus(tmp_path / "corpus", documents=40, lines=5)
    corpus = prepare_corpus(f"text:{root}", tmp_path / "cache")
    train, val, test = split_bytes(corpus)
    contents = {p.name: p.read_bytes() for p in sorted(root.iterdir())}

    for split_data, split in ((train, "train"), (val, "val"), (test, "test")):
        docs = documents(split_data)
        expected = [data for name, data in sorted(contents.items()) if split_of(name) == split]
        assert docs == expected  # whole files, in the corpus's order, one document each
    seen = [m for doc in documents(train) + documents(val) + documents(test) for m in markers(doc)]
    assert sorted(seen) == [f"{n:03d}" for n in range(40)]  # every file exactly once
    assert not markers(train) & markers(val) and not markers(test) & (markers(train) | markers(val))

    val_files = [n for n in contents if split_of(n) == "val"]
    train_files = [n for n in contents if split_of(n) == "train"]
    test_files = [n for n in contents if split_of(n) == "test"]
    assert corpus.val_documents == len(val_files) == 2
    assert corpus.test_documents == len(test_files) == 4
    assert corpus.train_documents == len(train_files) == 34
    assert corpus.train_tokens == sum(len(contents[n]) + 1 for n in train_files) == len(train)
    assert corpus.val_tokens == sum(len(contents[n]) + 1 for n in val_files) == len(val)
    assert corpus.train_path.stat().st_size == corpus.train_tokens
    meta = json.loads((corpus.directory / "meta.json").read_text())
    assert meta["train_tokens"] == corpus.train_tokens and meta["val_tokens"] == corpus.val_tokens
    assert meta["split_rule"] == SPLIT_RULE and meta["vocab_size"] == 256 == corpus.vocab_size
    assert corpus.name == f"text:{root.resolve()}"
    assert corpus.load("train").tobytes() == train and corpus.load("val").tobytes() == val
    # The staging folder was renamed into place: nothing half-written is left behind.
    assert [p.name for p in (tmp_path / "cache" / "corpora").iterdir()] == [corpus.directory.name]


def test_a_cached_corpus_is_not_read_again_until_its_metadata_changes(tmp_path: Path) -> None:
    """A same-size rewrite with the old modification time is invisible to the cache (proof
    that the second call read no file); a new modification time makes a new entry."""
    root = write_text_corpus(tmp_path / "corpus", documents=20, lines=5)
    cache = tmp_path / "cache"
    first = prepare_corpus(f"text:{root}", cache)

    victim = root / "doc_005.txt"
    before = victim.stat()
    original = victim.read_bytes()
    forged = original.replace(b"file 005", b"FAKE 005")
    assert forged != original and len(forged) == len(original)
    victim.write_bytes(forged)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))

    second = prepare_corpus(f"text:{root}", cache)
    assert second.directory == first.directory
    assert second.fingerprint == first.fingerprint
    assert b"FAKE" not in b"".join(split_bytes(second))  # the old encoding, untouched

    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    third = prepare_corpus(f"text:{root}", cache)
    assert third.directory != first.directory
    assert third.fingerprint != first.fingerprint
    assert b"FAKE 005" in b"".join(split_bytes(third))
    assert first.directory.is_dir()  # the older entry is still there for older results
    assert sorted(p.name for p in (cache / "corpora").iterdir()) == sorted(
        [first.directory.name, third.directory.name]
    )


def test_the_fingerprint_depends_on_content_not_on_creation_order_or_times(
    tmp_path: Path,
) -> None:
    """The same files written in reverse order with other modification times, in another
    folder and another cache, give the same fingerprint and the same encoded bytes."""
    first_root = write_text_corpus(tmp_path / "one", documents=25, lines=4)
    second_root = tmp_path / "two"
    second_root.mkdir()
    for index, path in enumerate(sorted(first_root.iterdir(), reverse=True)):
        copy = second_root / path.name
        copy.write_bytes(path.read_bytes())
        os.utime(copy, ns=(10**18 + index * 10**9, 10**18 + index * 10**9))
    first = prepare_corpus(f"text:{first_root}", tmp_path / "cache-one")
    second = prepare_corpus(f"text:{second_root}", tmp_path / "cache-two")
    assert first.directory.name != second.directory.name  # other root and times: other key
    assert first.fingerprint == second.fingerprint
    assert split_bytes(first) == split_bytes(second)

    (second_root / "doc_003.txt").write_text("file 003 now says something else entirely\n")
    changed = prepare_corpus(f"text:{second_root}", tmp_path / "cache-two")
    assert changed.fingerprint != first.fingerprint


def test_binary_hidden_and_empty_files_are_skipped(tmp_path: Path) -> None:
    """Hidden files, hidden folders and __pycache__ are never listed; a file with a NUL byte
    anywhere (near its start, or far in) and an empty file are listed but contribute no
    document, so NUL stays the document separator."""
    root = write_text_corpus(tmp_path / "corpus", documents=20, lines=3)
    (root / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + b"file 900 binary\n" * 10)
    (root / ".hidden.txt").write_text("file 901 hidden file\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("file 902 hidden folder\n")
    (root / "sub" / ".secret").mkdir(parents=True)
    (root / "sub" / ".secret" / "notes.txt").write_text("file 903 nested hidden folder\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "cached.txt").write_text("file 904 pycache\n")
    (root / "sub" / "visible.txt").write_text("file 905 a nested visible file\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "late_nul.txt").write_bytes(b"file 906 " + b"a" * 9000 + b"\x00" + b"b" * 100)

    spec = CorpusSpec.parse(f"text:{root}")
    listed = [p.relative_to(root).as_posix() for p in spec.files()]
    assert listed == sorted(listed)
    assert "sub/visible.txt" in listed and "image.bin" in listed and "empty.txt" in listed
    assert not [n for n in listed if any(part.startswith(".") for part in n.split("/"))]
    assert not [n for n in listed if "__pycache__" in n]
    assert len(listed) == 24

    corpus = prepare_corpus(f"text:{root}", tmp_path / "cache")
    train, val, test = split_bytes(corpus)
    found = markers(train) | markers(val) | markers(test)
    assert found == {f"{n:03d}" for n in range(20)} | {"905"}
    assert corpus.train_documents + corpus.val_documents + corpus.test_documents == 21
    assert b"PNG" not in train + val + test
    assert (train + val + test).count(b"\x00") == 21  # one separator per document, no stray NULs


# --- parquet corpora -------------------------------------------------------------------------


def test_parquet_rows_are_documents_split_by_shard_and_row(tmp_path: Path) -> None:
    """Each non-empty row of a `text` column is a document whose id is `shard#row`; NUL bytes
    inside a row are dropped so that they cannot fake a document boundary."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "shards"
    (root / "sub").mkdir(parents=True)
    rows: dict[str, list[str | None]] = {
        "a.parquet": [f"shard a row {i:02d} " * 4 for i in range(30)],
        "sub/b.parquet": [f"shard b row {i:02d} " * 4 for i in range(30)],
    }
    rows["a.parquet"][3] = None
    rows["a.parquet"][4] = ""
    rows["sub/b.parquet"][7] = "shard b row 07 with a \x00 NUL inside"
    for rel, texts in rows.items():
        pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), root / rel)
    (root / "README.md").write_text("not a shard\n")

    corpus = prepare_corpus(f"parquet:{root}", tmp_path / "cache")
    expected: dict[str, list[bytes]] = {split: [] for split in SPLITS}
    for rel in ("a.parquet", "sub/b.parquet"):  # the shards' sorted order
        for row, text in enumerate(rows[rel]):
            if text:
                data = text.encode().replace(b"\x00", b"")
                expected[split_of(f"{rel}#{row}")].append(data)
    train, val, test = split_bytes(corpus)
    assert documents(train) == expected["train"]
    assert documents(val) == expected["val"]
    assert documents(test) == expected["test"]
    assert expected["val"] and expected["train"]
    assert corpus.train_documents + corpus.val_documents + corpus.test_documents == 58
    assert b"shard b row 07 with a  NUL inside" in train + val + test
    assert corpus.name == f"parquet:{root.resolve()}"


def test_a_parquet_shard_without_a_text_column_is_a_corpus_error(tmp_path: Path) -> None:
    """The error names the shard and the missing column, and no cache entry is left."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "shards"
    root.mkdir()
    pq.write_table(pa.table({"body": ["one", "two", "three"]}), root / "bad.parquet")
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match="'text' column") as info:
        prepare_corpus(f"parquet:{root}", cache)
    assert "bad.parquet" in str(info.value)
    assert list((cache / "corpora").iterdir()) == []


def test_a_corrupt_parquet_shard_is_a_corpus_error_that_says_so(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    root = tmp_path / "shards"
    root.mkdir()
    (root / "broken.parquet").write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(CorpusError, match="cannot read this parquet shard") as info:
        prepare_corpus(f"parquet:{root}", tmp_path / "cache")
    assert "broken.parquet" in str(info.value)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wikipedia", "text:", "csv:/tmp", "parquet", ""])
def test_an_unknown_corpus_name_says_which_names_exist(name: str) -> None:
    """Anything but stdlib, text:DIR and parquet:DIR is refused with the accepted forms."""
    with pytest.raises(CorpusError, match="unknown corpus") as info:
        CorpusSpec.parse(name)
    assert "'stdlib'" in str(info.value) and "text:DIR" in str(info.value)


def test_a_missing_folder_or_a_file_is_not_a_corpus(tmp_path: Path) -> None:
    """A path that does not exist, or is a file, is refused with what it should point at."""
    with pytest.raises(CorpusError, match=r"is not a directory.*text files"):
        prepare_corpus(f"text:{tmp_path / 'nowhere'}", tmp_path / "cache")
    a_file = tmp_path / "file.txt"
    a_file.write_text("hello\n")
    with pytest.raises(CorpusError, match=r"is not a directory.*\.parquet shards"):
        prepare_corpus(f"parquet:{a_file}", tmp_path / "cache")


def test_an_empty_folder_has_no_files(tmp_path: Path) -> None:
    """A folder with nothing readable (hidden files only) says no files were found."""
    root = tmp_path / "empty"
    root.mkdir()
    (root / ".only-hidden").write_text("file 001\n")
    with pytest.raises(CorpusError, match="no files found"):
        prepare_corpus(f"text:{root}", tmp_path / "cache")


def test_a_single_document_cannot_be_split(tmp_path: Path) -> None:
    """One readable document (a binary neighbour does not count) is refused: both splits need
    one; the error counts the readable documents."""
    root = tmp_path / "one"
    root.mkdir()
    (root / "only.txt").write_text("file 001 the only document\n" * 20)
    (root / "blob.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CorpusError, match=r"has 1 readable documents.*at least two"):
        prepare_corpus(f"text:{root}", tmp_path / "cache")


def test_documents_all_on_one_side_of_the_split_are_refused(tmp_path: Path) -> None:
    """Two training-side documents and no held-out one: the error says to add files."""
    names = [n for n in (f"t{i}.txt" for i in range(50)) if not is_validation(n)][:2]
    root = tmp_path / "lopsided"
    root.mkdir()
    for name in names:
        (root / name).write_text(f"{name} " * 50)
    with pytest.raises(CorpusError, match="all fell on one side"):
        prepare_corpus(f"text:{root}", tmp_path / "cache")


# --- stdlib ---------------------------------------------------------------------------------


def test_the_stdlib_corpus_lists_sorted_standard_library_sources_only() -> None:
    """The stdlib listing holds os.py, only .py files, no site-packages or __pycache__, in
    the order of their relative paths (the machine-independent order)."""
    spec = CorpusSpec.parse("stdlib")
    assert spec.name == "stdlib" and spec.kind == "stdlib"
    files = spec.files()
    relative = [p.relative_to(spec.root).as_posix() for p in files]
    assert "os.py" in relative
    assert relative == sorted(relative)
    assert len(relative) > 500
    assert all(name.endswith(".py") for name in relative)
    assert not [p for p in files if "site-packages" in p.parts or "__pycache__" in p.parts]
    assert not [name for name in relative if any(part.startswith(".") for part in name.split("/"))]
