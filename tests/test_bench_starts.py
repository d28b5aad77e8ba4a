"""`cockpit bench search --start`: the tuned start is the template with its tuned constants and
nothing else, a start that cannot be trained stops the bench before its first run, and the
structural replies the hybrid is measured with apply to every start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.edits import Edit, apply_proposal
from agent.prompt import parse_reply
from agent.space import structure_key, values_of
from cockpit.bench.starts import (
    TUNED,
    TUNED_CONSTANTS,
    TUNED_FILE,
    StartError,
    start_script,
    tuned_script,
)
from cockpit.cli import main
from trainer import template_path

STRUCTURAL_REPLIES = Path(__file__).parent / "data" / "structural_replies.json"


def template() -> str:
    return template_path().read_text(encoding="utf-8")


def test_the_tuned_start_is_the_template_with_its_tuned_constants_and_nothing_else() -> None:
    source = template()
    tuned = tuned_script(source)
    assert values_of(tuned, "cpu", TUNED_CONSTANTS) == TUNED_CONSTANTS
    # Every tuned constant moves off the template's value: each one is a finding.
    before = values_of(source, "cpu", TUNED_CONSTANTS)
    assert all(before[name] != value for name, value in TUNED_CONSTANTS.items()), before
    # The rest of the script, and the CUDA branch of a constant that has one, are the
    # template's.
    assert structure_key(tuned, "cpu", TUNED_CONSTANTS) == structure_key(
        source, "cpu", TUNED_CONSTANTS
    )
    branched = [
        name for name in TUNED_CONSTANTS if any(
            line.startswith(f"{name} = ") and " if CUDA else " in line
            for line in source.splitlines()
        )
    ]  # fmt: skip
    assert values_of(tuned, "cuda", branched) == values_of(source, "cuda", branched)
    compile(tuned, "train.py", "exec")


def test_a_template_that_lost_a_tuned_constant_is_refused_by_name() -> None:
    name = next(iter(TUNED_CONSTANTS))
    drifted = template().replace(f"\n{name} = ", f"\n{name.lower()} = ", 1)
    with pytest.raises(StartError, match=f"the template has no {name}: the tuned start"):
        tuned_script(drifted)


def test_start_script_names_the_file_each_start_trains(tmp_path: Path) -> None:
    assert start_script(None, tmp_path) is None
    tuned = start_script(TUNED, tmp_path)
    assert tuned == tmp_path / TUNED_FILE
    assert tuned.read_text(encoding="utf-8") == tuned_script(template())
    mine = tmp_path / "mine.py"
    mine.write_text("LEARNING_RATE = 0.01\n", encoding="utf-8")
    assert start_script(str(mine), tmp_path) == mine


def test_a_start_that_cannot_be_trained_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(StartError, match="no such file; give a training script, or tuned"):
        start_script(str(tmp_path / "missing.py"), tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("def train(:\n", encoding="utf-8")
    with pytest.raises(StartError, match="not a Python script the bench can train"):
        start_script(str(broken), tmp_path)

    out = tmp_path / "out"
    code = main(["bench", "search", "--start", str(broken), "--out", str(out), "--seeds", "1"])
    assert code == 2
    error = capsys.readouterr().err
    assert f"error: --start {broken}: not a Python script the bench can train" in error
    assert not (out / "builtin-seed0").exists()  # no run began


@pytest.mark.parametrize("start", ["template", TUNED])
def test_every_structural_reply_applies_to_the_start(start: str) -> None:
    """tests/data/structural_replies.json is what the test Ollama server answers the hybrid
    with in the yield bench: each reply must apply to the script a run begins from."""
    script = template() if start == "template" else tuned_script(template())
    replies = json.loads(STRUCTURAL_REPLIES.read_text(encoding="utf-8"))
    assert len(replies) >= 5
    for item in replies:
        reply = parse_reply(item["content"])
        edits = [Edit(edit.search, edit.replace) for edit in reply.edits]
        changed = apply_proposal(script, edits)
        # Structural: the constants the optimiser tunes are left as they were.
        assert values_of(changed, "cpu", TUNED_CONSTANTS) == values_of(
            script, "cpu", TUNED_CONSTANTS
        )
