"""The exported models of a run: which are kept, and their scores on the test split.

Every training leaves its exported forward (``model.program``) beside its summary. The
baseline's and the kept experiments' are kept: the report scores them on the test split, which
no decision reads, to tell whether a night of keeps generalises or overfits the validation
split. The others are pruned once decided, and so is each training's own folder.

A test score is computed once per program, by ``python -m trainer.score`` (this package does
not import torch), and cached beside the program.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cockpit.store.records import Experiment
from trainer.bounds import MAX_FOLDER_ENTRIES, folder_usage
from trainer.readback import remove_tree

PROGRAM_NAME = "model.program"
TRAINING_DIR = "training"
TEST_SCORE_NAME = "test.json"
SCORE_TIMEOUT_SECONDS = 900.0


def keeps_program(experiment: Experiment) -> bool:
    """The baseline and kept experiments keep their programs; so does an undecided one."""
    return experiment.number == 0 or experiment.decision in (None, "keep")


def _folders_by_number(runs_dir: Path) -> dict[int, list[Path]]:
    """The run folders of each experiment number (attempts and seeds have folders of their
    own: 0007, 0007-2, 0007-seed43), from one listing of the run's folder."""
    folders: dict[int, list[Path]] = {}
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return folders
    for entry in entries:
        head = entry.name.split("-", 1)[0]
        if head.isdigit() and entry.is_dir():
            folders.setdefault(int(head), []).append(Path(entry.path))
    return folders


def prune(runs_dir: Path, experiments: Iterable[Experiment]) -> int:
    """Delete the training folders of decided experiments, and the programs of those that are
    neither the baseline nor kept; return the bytes freed."""
    freed = 0
    folders = _folders_by_number(runs_dir)
    for experiment in experiments:
        if experiment.decision is None:
            continue
        for directory in folders.get(experiment.number, []):
            training = directory / TRAINING_DIR
            if training.is_dir():
                # Walked without recursion: a training can nest its folders thousands deep.
                freed += folder_usage(str(training), MAX_FOLDER_ENTRIES)[0]
                remove_tree(training)
            program = directory / PROGRAM_NAME
            if not keeps_program(experiment) and program.is_file():
                freed += program.stat().st_size
                program.unlink(missing_ok=True)
    return freed


def programs_bytes(runs_dir: Path) -> tuple[int, int]:
    """How many programs a run keeps, and their bytes on disk."""
    programs = list(runs_dir.glob(f"*/{PROGRAM_NAME}")) if runs_dir.is_dir() else []
    return len(programs), sum(p.stat().st_size for p in programs)


@dataclass(frozen=True)
class TestScore:
    """An experiment's score on the test split, or why it has none."""

    number: int
    val_bpb: float | None
    test_bpb: float | None
    error: str = ""


def test_score(experiment: Experiment, folders: list[Path], cache_dir: str = "") -> TestScore:
    """An experiment's test score, from its run folders: the mean over its kept programs (one
    per training of its script, as its val_bpb is the mean over those trainings)."""
    found = [folder / PROGRAM_NAME for folder in sorted(folders)]
    found = [path for path in found if path.is_file()]
    if not found:
        return TestScore(experiment.number, experiment.val_bpb, None, "its model was not kept")
    scores, errors = [], []
    for path in found:
        bpb, error = _score_program(path, experiment.summary or {}, cache_dir)
        if bpb is None:
            errors.append(error)
        else:
            scores.append(bpb)
    if not scores:
        return TestScore(experiment.number, experiment.val_bpb, None, errors[0])
    return TestScore(experiment.number, experiment.val_bpb, sum(scores) / len(scores))


def _score_program(
    program: Path, summary: dict[str, object], cache_dir: str
) -> tuple[float | None, str]:
    """A program's test bits per byte (cached beside it), or None and why not."""
    cached = program.with_name(TEST_SCORE_NAME)
    stamp = program.stat().st_mtime_ns
    try:
        data = json.loads(cached.read_text())
        if data.get("program_mtime_ns") == stamp and isinstance(data.get("bpb"), float):
            return data["bpb"], ""
    except (OSError, ValueError, AttributeError):
        pass
    command = [
        sys.executable, "-m", "trainer.score", str(program), "--split", "test",
        "--corpus", str(summary.get("corpus") or "stdlib"),
        "--seq-len", str(summary.get("seq_len") or 256),
        "--eval-tokens", str(summary.get("eval_tokens") or 131072),
        "--device", "cuda" if str(summary.get("device", "")).startswith("cuda") else "cpu",
    ]  # fmt: skip
    if cache_dir:
        command += ["--cache-dir", str(Path(cache_dir).expanduser())]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SCORE_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "scoring timed out"
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    if not isinstance(result, dict) or not isinstance(result.get("bpb"), float):
        error = result.get("error") if isinstance(result, dict) else None
        return None, str(error)[:200]
    cached.write_text(json.dumps({**result, "program_mtime_ns": stamp}))
    return result["bpb"], ""


@dataclass(frozen=True)
class Generalisation:
    """The baseline's and the kept experiments' scores on the test split (which no decision
    reads), and the disk their kept programs take."""

    scores: tuple[TestScore, ...]
    programs: int
    program_bytes: int

    def gains(self) -> tuple[float, float] | None:
        """(validation gain, test gain) of the best kept experiment that has a test score
        over the baseline's; None without both."""
        baseline = next((s for s in self.scores if s.number == 0), None)
        scored = [s for s in self.scores if s.number > 0 and s.test_bpb is not None]
        if baseline is None or baseline.test_bpb is None or baseline.val_bpb is None or not scored:
            return None
        best = min(scored, key=lambda s: s.val_bpb if s.val_bpb is not None else math.inf)
        if best.val_bpb is None or best.test_bpb is None:
            return None
        return baseline.val_bpb - best.val_bpb, baseline.test_bpb - best.test_bpb


def generalisation(
    runs_dir: Path, experiments: Sequence[Experiment], cache_dir: str = ""
) -> Generalisation:
    """Score the baseline and the kept experiments on the test split (cached per program)."""
    chosen = [e for e in experiments if e.number == 0 or e.decision == "keep"]
    chosen = [e for e in chosen if e.outcome == "ok"]
    count, size = programs_bytes(runs_dir)
    folders = _folders_by_number(runs_dir)  # one listing for every experiment
    scores = tuple(test_score(e, folders.get(e.number, []), cache_dir) for e in chosen)
    return Generalisation(scores, count, size)


def summary_line(found: Generalisation) -> str:
    """One line for the end of a run: the validation gain against the test gain."""
    gains = found.gains()
    size = f"{found.programs} kept models, {found.program_bytes / 1e6:.1f} MB"
    if gains is None:
        return f"test split: no kept experiment to compare with the baseline ({size})"
    return f"test split: validation gain {gains[0]:.4f}, test gain {gains[1]:.4f} ({size})"
