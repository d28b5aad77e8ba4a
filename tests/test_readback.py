"""What a training leaves is read back trusting none of it (trainer.readback).

The training process writes the program file and the figures file, and it is untrusted. In
its place it can leave a symbolic link (to another experiment's program, to a file it could not
read itself), a hard link, a FIFO that blocks whoever opens it, a sparse file of gigabytes, a
zip whose members inflate a thousandfold (the program's, or torch's archive inside it), or a
program whose graph allocates without bound. The first half checks the readers on such files
made here; the second half has a real training leave each of them, through the harness.
"""

from __future__ import annotations

import ctypes
import inspect
import io
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SCRIPTS, HarnessRun, run_harness
from tests.models import Tiny
from trainer import readback
from trainer.outcomes import Outcome
from trainer.program import MAX_PROGRAM_BYTES, ProgramError, export_forward, load_program
from trainer.supervise import MAX_FIGURES_BYTES

CPU = torch.device("cpu")
BOMB_BYTES = 2 << 30  # what a bomb member inflates to, from about 2 MB


def write_zip(path: str, members: list[tuple[str, bytes | int]]) -> None:
    """A zip file written by hand, so that a member may be a bomb: each member's content is its
    bytes (stored), or a number of zero bytes it inflates to from about a thousandth of that.
    Standard library only: attacks run it inside the training too."""
    import struct
    import zlib

    chunk = bytes(1 << 20)
    directory = []
    with open(path, "wb") as out:
        for name, content in members:
            encoded = name.encode()
            if isinstance(content, int):
                # After a full flush deflate starts afresh: a block of zeros repeats exactly.
                squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
                block = squeezer.compress(chunk) + squeezer.flush(zlib.Z_FULL_FLUSH)
                data = block * (content >> 20) + squeezer.flush()
                crc = 0
                for _ in range(content >> 20):
                    crc = zlib.crc32(chunk, crc)
                method, size = 8, content
            else:
                data, crc, method, size = content, zlib.crc32(content), 0, len(content)
            offset = out.tell()
            fields = (crc, len(data), size, len(encoded))
            out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 33, *fields, 0))
            out.write(encoded + data)
            directory.append(struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 33, *fields, 0, 0, 0, 0, 0,
                offset,
            ) + encoded)  # fmt: skip
        start = out.tell()
        count, size = len(members), sum(map(len, directory))
        out.write(b"".join(directory))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, 0))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """An honest program's graph.json and weights.pt."""
    path = tmp_path_factory.mktemp("honest") / "tiny.program"
    export_forward(Tiny(), torch.zeros((2, 16), dtype=torch.long), path)
    with zipfile.ZipFile(path) as archive:
        return archive.read("graph.json"), archive.read("weights.pt")


def peak_growth_mb(action: Any) -> float:
    """How far ``action`` raised this process's peak resident memory, in MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    action()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def refusal(path: Path) -> str:
    with pytest.raises(ProgramError) as refused:
        load_program(path, CPU)
    return str(refused.value)


# --- the readers, on files made here ---------------------------------------------------------


def test_an_honest_program_and_figures_file_are_read(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    program = tmp_path / "model.program"
    write_zip(str(program), [("graph.json", exported[0]), ("weights.pt", exported[1])])
    assert load_program(program, CPU)(torch.zeros((1, 4), dtype=torch.long)).shape == (1, 4, 256)
    figures = tmp_path / "training.json"
    figures.write_text('{"num_steps": 3}')
    assert readback.read_left(figures, MAX_FIGURES_BYTES) == b'{"num_steps": 3}'
    with pytest.raises(FileNotFoundError):
        readback.read_left(tmp_path / "none.json", MAX_FIGURES_BYTES)


def test_a_symbolic_link_is_refused_even_to_a_good_program(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    elsewhere = tmp_path / "another-experiment.program"
    write_zip(str(elsewhere), [("graph.json", exported[0]), ("weights.pt", exported[1])])
    link = tmp_path / "model.program"
    link.symlink_to(elsewhere)
    assert "model.program is a symbolic link" in refusal(link)


def test_a_hard_link_is_refused(tmp_path: Path, exported: tuple[bytes, bytes]) -> None:
    elsewhere = tmp_path / "another-experiment.program"
    write_zip(str(elsewhere), [("graph.json", exported[0]), ("weights.pt", exported[1])])
    os.link(elsewhere, tmp_path / "model.program")
    assert "has 2 hard links" in refusal(tmp_path / "model.program")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "training.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            readback.read_left(fifo, MAX_FIGURES_BYTES)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): release it with a writer, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], readback.Refused)
    assert "training.json is a FIFO, not a regular file" in str(outcome[0])


def test_a_folder_in_place_of_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.program").mkdir()
    assert "model.program is a directory" in refusal(tmp_path / "model.program")


def test_a_sparse_program_past_the_limit_is_refused_before_a_byte_is_read(tmp_path: Path) -> None:
    program = tmp_path / "model.program"
    with open(program, "wb") as file:
        file.truncate(MAX_PROGRAM_BYTES + 1)  # costs no disk: a hole
    assert "more than the 8.6 GB it may be" in refusal(program)


def test_a_figures_file_past_its_limit_is_refused(tmp_path: Path) -> None:
    figures = tmp_path / "training.json"
    figures.write_text(json.dumps({"num_steps": 3, "notes": "x" * MAX_FIGURES_BYTES}))
    with pytest.raises(readback.Refused, match=r"more than the 1\.0 MB it may be"):
        readback.read_left(figures, MAX_FIGURES_BYTES)


def test_a_bomb_in_the_program_is_refused_before_it_inflates(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    program = tmp_path / "model.program"
    write_zip(str(program), [("graph.json", exported[0]), ("weights.pt", BOMB_BYTES)])
    assert program.stat().st_size < 3_000_000
    reasons: list[str] = []
    assert peak_growth_mb(lambda: reasons.append(refusal(program))) < 200
    assert "model.program's member weights.pt inflates" in reasons[0], reasons[0]
    assert "compression bomb" in reasons[0]


def _torch_archive_with_a_bomb(size: int, scratch: Path) -> bytes:
    """torch.save's archive for one uint8 tensor of ``size`` zeros, its record a deflate bomb
    (torch.load inflates compressed records, and sizes the tensor from the pickle)."""
    saved = io.BytesIO()
    torch.save({"embed.weight": torch.zeros(4, dtype=torch.uint8)}, saved)
    with zipfile.ZipFile(saved) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    size_code = b"J" + struct.pack("<i", size)
    pickled = records["archive/data.pkl"]
    for before in (b"K\x04t", b"K\x04\x85"):  # the storage's size, then the tensor's shape
        assert pickled.count(before) == 1
        pickled = pickled.replace(before, size_code + before[2:])
    records["archive/data.pkl"] = pickled
    members: list[tuple[str, bytes | int]] = [
        (name, size if name == "archive/data/0" else data) for name, data in records.items()
    ]
    write_zip(str(scratch), members)
    return scratch.read_bytes()


def test_a_bomb_inside_torchs_archive_is_refused_before_torch_inflates_it(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    weights = _torch_archive_with_a_bomb(1 << 30, tmp_path / "weights.pt")
    assert len(weights) < 2_000_000
    program = tmp_path / "model.program"
    write_zip(str(program), [("graph.json", exported[0]), ("weights.pt", weights)])
    reasons: list[str] = []
    assert peak_growth_mb(lambda: reasons.append(refusal(program))) < 200
    assert "weights.pt's member archive/data/0 inflates" in reasons[0], reasons[0]


def test_a_member_twice_or_an_unexpected_member_is_refused(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    graph, weights = exported
    decoy = json.dumps({"format": "something else"}).encode()
    program = tmp_path / "model.program"
    # Two graphs: readers that take the first and readers that take the last see two programs.
    write_zip(str(program), [("graph.json", decoy), ("graph.json", graph), ("weights.pt", weights)])
    assert "holds 'graph.json' more than once" in refusal(program)
    write_zip(
        str(program), [("graph.json", graph), ("weights.pt", weights), ("payload.bin", b"x" * 99)]
    )
    assert "holds 'payload.bin'; it may hold only graph.json, weights.pt" in refusal(program)


def test_an_archive_of_too_many_members_is_refused_before_its_directory_is_parsed(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    program = tmp_path / "model.program"
    with zipfile.ZipFile(program, "w") as archive:  # zipfile writes the zip64 end record
        archive.writestr("graph.json", exported[0])
        archive.writestr("weights.pt", exported[1])
        for number in range(readback.MAX_ARCHIVE_MEMBERS):
            archive.writestr(f"empty{number}", b"")
    assert "lists 100002 members; at most 100000 are read" in refusal(program)


_LEFT_LOCKED = """
import os, shutil, sys, tempfile
from pathlib import Path
from trainer.readback import remove_tree
outside = tempfile.mkdtemp()
kept = os.path.join(outside, "kept")
open(kept, "w").write("not the training's")
results = []
for remove in (lambda path: shutil.rmtree(path, ignore_errors=True), remove_tree):
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "a", "b", "c"))
    open(os.path.join(root, "a", "b", "c", "f"), "w").write("x")
    os.symlink(outside, os.path.join(root, "a", "link"))  # a link to a folder: never chmodded
    os.chmod(os.path.join(root, "a", "b", "c"), 0)
    os.chmod(os.path.join(root, "a", "b"), 0)
    os.chmod(os.path.join(root, "a"), 0o500)
    remove(Path(root))
    results.append(os.path.exists(root))
# A chain of folders 1,500 deep, made one folder at a time (its path is past what one call
# can name): shutil.rmtree recurses once per folder and raises RecursionError.
for remove in (lambda path: shutil.rmtree(path, ignore_errors=True), remove_tree):
    root = tempfile.mkdtemp()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("deeper", dir_fd=fd)
        inner = os.open("deeper", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w").close()
    os.fchmod(fd, 0)
    os.close(fd)
    try:
        remove(Path(root))
    except RecursionError:
        pass
    results.append(os.path.exists(root))
print(*results, os.path.exists(kept), oct(os.stat(outside).st_mode & 0o777))
"""


@pytest.mark.e2e
def test_a_training_folder_with_folders_of_mode_000_is_removed_by_its_owner() -> None:
    """A training can chmod folders of its own to 000, or nest folders 1,500 deep. Its owner,
    when not root, cannot empty a folder of mode 000 with shutil.rmtree (the check that the
    test runs without root's override), and shutil.rmtree raises RecursionError on the deep
    chain; remove_tree removes both, without touching what a link inside points to."""

    def drop_root() -> None:
        if os.getuid() == 0:  # root reads and empties any folder: not without these
            libc = ctypes.CDLL(None, use_errno=True)
            for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
                if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone at exec
                    raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")

    result = subprocess.run(
        [sys.executable, "-c", _LEFT_LOCKED],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        preexec_fn=drop_root,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr
    rmtree_left, remove_tree_left, rmtree_deep, remove_tree_deep, kept, outside_mode = (
        result.stdout.split()
    )
    assert rmtree_left == rmtree_deep == "True", result.stdout  # shutil.rmtree leaves them
    assert remove_tree_left == remove_tree_deep == "False", result.stdout  # remove_tree does not
    assert kept == "True", result.stdout
    assert outside_mode == "0o700", result.stdout  # mkdtemp's mode, not chmodded


def test_a_graph_nested_past_pythons_recursion_limit_is_a_refusal_not_a_crash(
    tmp_path: Path, exported: tuple[bytes, bytes]
) -> None:
    program = tmp_path / "model.program"
    write_zip(str(program), [("graph.json", b"[" * 200_000), ("weights.pt", exported[1])])
    assert "model.program is malformed" in refusal(program)


# --- the harness, on what a real training leaves -----------------------------------------------

# Appended to the tiny research script: it trains honestly, then tampers with what it leaves
# once the harness's own code in the training process has written it.
TAMPER = """
import json, os, sys, zipfile
from pathlib import Path

_train = train


def train(ctx):
    model = _train(ctx)
    training = sys.modules["trainer.training"]
    honest_export, honest_finish = training.export_forward, training.Training.finish

    def export_forward(model, example, path):
        result = honest_export(model, example, path)
        leave_program(Path(path))
        return result

    def finish(self, outcome, reason):
        code = honest_finish(self, outcome, reason)
        leave_figures(Path(self.spec.result_path))
        return code

    training.export_forward = export_forward
    training.Training.finish = finish
    return model


def leave_program(path):
    pass


def leave_figures(path):
    pass
"""

ATTACKS = {
    # What it leaves, and the outcome and words of the harness's verdict.
    "program-linked-to-another-experiments": (
        """
def leave_program(path):
    path.unlink()
    path.symlink_to(OTHER_PROGRAM)
""",
        Outcome.BAD_MODEL,
        "the exported model was refused: model.program is a symbolic link",
    ),
    "program-made-a-fifo": (
        """
def leave_program(path):
    path.unlink()
    os.mkfifo(path)
""",
        Outcome.BAD_MODEL,
        "the exported model was refused: model.program is a FIFO, not a regular file",
    ),
    "program-made-a-zip-bomb": (
        inspect.getsource(write_zip)
        + """
def leave_program(path):
    with zipfile.ZipFile(path) as archive:
        graph = archive.read("graph.json")
    write_zip(str(path), [("graph.json", graph), ("weights.pt", 2 << 30)])
""",
        Outcome.BAD_MODEL,
        "compression bomb",
    ),
    "program-graph-hoards-memory": (
        """
def leave_program(path):
    with zipfile.ZipFile(path) as archive:
        graph, weights = json.loads(archive.read("graph.json")), archive.read("weights.pt")
    output = graph["nodes"].pop()
    (logits,) = output["args"][0]
    def call(name, target, *args, **kwargs):
        return {"name": name, "op": "call_function", "target": target, "args": list(args),
                "kwargs": kwargs}
    graph["nodes"] += [  # a gigabyte of ones, summed, times zero: the logits do not change
        call("hoard", "aten::ones.default", [1 << 28], dtype={"dtype": "float32"}),
        call("hoard_sum", "aten::sum.default", {"node": "hoard"}),
        call("nothing", "aten::mul.Scalar", {"node": "hoard_sum"}, 0.0),
        call("same_logits", "aten::add.Tensor", logits, {"node": "nothing"}),
    ]
    graph["nodes"].append(dict(output, args=[[{"node": "same_logits"}]]))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("graph.json", json.dumps(graph))
        archive.writestr("weights.pt", weights)
""",
        Outcome.BAD_MODEL,
        "the exported model was refused: evaluating it grew the harness by",
    ),
    "figures-made-a-fifo": (
        """
def leave_figures(path):
    path.unlink()
    os.mkfifo(path)
""",
        Outcome.CRASH,
        "the training's figures file was refused: training.json is a FIFO",
    ),
    "figures-linked-to-another-experiments": (
        """
def leave_figures(path):
    path.unlink()
    path.symlink_to(OTHER_SUMMARY)
""",
        Outcome.CRASH,
        "training.json is a symbolic link",
    ),
    "figures-grown-past-the-limit": (
        """
def leave_figures(path):
    figures = json.loads(path.read_text())
    path.write_text(json.dumps(dict(figures, notes="x" * (2 << 20))))
""",
        Outcome.CRASH,
        "training.json is 2.1 MB, more than the 1.0 MB it may be",
    ),
}


def trainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "--device", "cpu", "--threads", "1",
            "--seq-len", "64", "--eval-tokens", "4096", *args]  # fmt: skip


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, text_corpus: Path) -> Path:
    """An honest run, started with every path relative to its folder; returns the folder."""
    folder = tmp_path_factory.mktemp("relative")
    (folder / "train.py").write_text((SCRIPTS / "tiny_research.py").read_text())
    completed = subprocess.run(
        trainer_command("--script", "train.py", "--budget", "1", "--corpus", f"text:{text_corpus}",
                        "--summary-json", "out.json", "--metrics", "metrics.jsonl"),
        cwd=folder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return folder


@pytest.mark.e2e
def test_relative_summary_and_metrics_paths_name_files_beside_the_caller(honest: Path) -> None:
    summary = json.loads((honest / "out.json").read_text())
    assert summary["status"] == "ok" and summary["val_bpb"] < 8
    assert summary["program"] == str(honest / "model.program")
    assert (honest / "model.program").is_file() and (honest / "training" / "spec.json").is_file()
    assert '"event": "end"' in (honest / "metrics.jsonl").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(ATTACKS))
def test_what_a_training_leaves_in_place_of_its_files_is_refused(
    tmp_path: Path, text_corpus: Path, honest: Path, name: str
) -> None:
    code, outcome, words = ATTACKS[name]
    code = code.replace("OTHER_PROGRAM", repr(str(honest / "model.program")))
    code = code.replace("OTHER_SUMMARY", repr(str(honest / "out.json")))
    script = (SCRIPTS / "tiny_research.py").read_text() + TAMPER + code
    run: HarnessRun = run_harness(
        script, tmp_path, "--threads", "1", "--eval-memory-mb", "300",
        budget=1.0, corpus=f"text:{text_corpus}", timeout=90,
    )  # fmt: skip
    assert run.exit_code == outcome, run.output
    assert words in run.summary["reason"], run.summary["reason"]
    assert "val_bpb" not in run.summary
    assert run.seconds < 60
