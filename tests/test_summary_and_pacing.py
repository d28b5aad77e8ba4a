"""The summary block (autoresearch's format) and its parser, the atomic JSON writer, and the
step plans that Pacing remembers per script, on real files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainer.atomic import write_json_atomic
from trainer.pacing import MIN_MARGIN_SECONDS, SAFETY, STALE_BELOW, Pacing, usable_seconds
from trainer.summary import format_summary, parse_summary

AUTORESEARCH_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
]


def a_summary() -> dict[str, object]:
    """Figures in a shuffled order, with extras after autoresearch's keys."""
    return {
        "status": "ok",
        "num_steps": 1234,
        "device": "cpu",
        "corpus": "text:/data/my corpus",
        "val_bpb": 0.9979,
        "mfu_percent": 39.8,
        "training_seconds": 300.14,
        "seed": 42,
        "total_seconds": 325.9,
        "peak_vram_mb": 45060.2,
        "total_tokens_M": 499.6,
        "num_params_M": 50.3,
        "tokens_per_second": 1664582.5,
    }


# --- the summary block --------------------------------------------------------------------------


def test_the_block_starts_with_autoresearchs_keys_in_order() -> None:
    """`---` first, then the eight autoresearch keys in their order and formats, then the
    rest in the order given; nested values are left out."""
    summary = {**a_summary(), "gpu": {"name": "H100"}, "history": [1, 2]}
    lines = format_summary(summary).splitlines()
    assert lines[0] == "---"
    assert [line.split(":")[0] for line in lines[1:9]] == AUTORESEARCH_KEYS
    assert [line.split(":")[0] for line in lines[9:]] == [
        "status",
        "device",
        "corpus",
        "seed",
        "tokens_per_second",
    ]
    assert lines[1].split() == ["val_bpb:", "0.997900"]
    assert lines[2].split() == ["training_seconds:", "300.1"]
    assert lines[5].split() == ["mfu_percent:", "39.80"]
    assert lines[7].split() == ["num_steps:", "1234"]
    assert "gpu" not in format_summary(summary) and "history" not in format_summary(summary)
    # Values line up in one column.
    assert len({line.index(line.split()[1]) for line in lines[1:]}) == 1


def test_the_block_round_trips_through_the_parser() -> None:
    """What format_summary prints, parse_summary reads back (to the printed precision);
    None prints as n/a and comes back as None; a value may contain ':' and spaces."""
    summary = {**a_summary(), "mfu_percent": None, "reason": "bad: it looked ahead"}
    text = format_summary(summary)
    assert "n/a" in text
    parsed = parse_summary(text)
    extras = ["status", "device", "corpus", "seed", "tokens_per_second", "reason"]
    assert list(parsed) == [*AUTORESEARCH_KEYS, *extras]
    assert parsed["val_bpb"] == 0.9979
    assert parsed["training_seconds"] == 300.1
    assert parsed["mfu_percent"] is None
    assert parsed["num_steps"] == 1234 and isinstance(parsed["num_steps"], int)
    assert parsed["seed"] == 42
    assert parsed["corpus"] == "text:/data/my corpus"
    assert parsed["reason"] == "bad: it looked ahead"
    assert parsed["tokens_per_second"] == pytest.approx(1664582.5, rel=1e-5)  # 6 digits


def test_non_finite_values_print_and_parse_back() -> None:
    """A NaN or infinite figure is printed as nan/inf, not crashed on, and reads back."""
    parsed = parse_summary(format_summary({"val_bpb": float("nan"), "val_loss": float("inf")}))
    assert math.isnan(parsed["val_bpb"]) and parsed["val_loss"] == math.inf


def test_the_parser_picks_the_last_block_of_noisy_output() -> None:
    """Logs, an earlier block, a stray `---` with nothing after it: the figures are those of
    the last real block, and the block ends at the first line that is not `key: value`."""
    earlier = format_summary({"val_bpb": 1.5, "num_steps": 10})
    last = format_summary({"val_bpb": 1.25, "num_steps": 20, "status": "ok"})
    output = "\n".join(
        [
            "step 1 | loss 5.5",
            earlier,
            "Traceback (most recent call last):",
            "rerunning with a smaller batch",
            last,
            "Run finished in 3.2 s",
            "val_bpb: 9.99",
            "---",
            "",
        ]
    )
    assert parse_summary(output) == {"val_bpb": 1.25, "num_steps": 20, "status": "ok"}
    assert parse_summary("no summary here\nloss: 3.0\n") == {}
    assert parse_summary("") == {}


def test_write_json_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """Parents are created, a second write replaces the first, NaN is allowed, and the folder
    holds the target file alone."""
    target = tmp_path / "runs" / "0001" / "summary.json"
    write_json_atomic(target, {"val_bpb": 1.0, "status": "ok"})
    write_json_atomic(target, {"val_bpb": float("nan"), "status": "nan"})
    data = json.loads(target.read_text())
    assert data["status"] == "nan" and math.isnan(data["val_bpb"])
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


# --- pacing -----------------------------------------------------------------------------------


def fits(seconds_left: float, seconds_per_step: float) -> int:
    return int(usable_seconds(seconds_left) / seconds_per_step)


def steps_in(path: Path) -> dict[str, int]:
    """The plans a file remembers, key by key."""
    return {key: entry["steps"] for key, entry in json.loads(path.read_text()).items()}


def test_the_first_plan_is_stored_and_the_same_key_reuses_it(tmp_path: Path) -> None:
    """A plan is the steps done plus what fits in the time left (less the safety share); a
    later run with the same key gets the same plan whatever its own pace."""
    path = tmp_path / "pacing.json"
    first = Pacing(path, "script-a")
    plan = first.plan_steps(10, 0.5, 100.0)
    assert plan == 10 + fits(100.0, 0.5)
    assert (first.plan, first.reused) == (plan, False)
    assert steps_in(path) == {"script-a": plan}

    again = Pacing(path, "script-a")
    assert again.plan_steps(12, 5.0, 1.0) == plan  # a slower machine, the same work
    assert (again.plan, again.reused) == (plan, True)


def test_a_different_key_plans_afresh_and_keeps_the_other_plan(tmp_path: Path) -> None:
    """Plans of other scripts are independent entries in the same file."""
    path = tmp_path / "pacing.json"
    a_plan = Pacing(path, "script-a").plan_steps(0, 1.0, 20.0)
    other = Pacing(path, "script-b")
    b_plan = other.plan_steps(0, 0.25, 20.0)
    assert other.reused is False
    assert (a_plan, b_plan) == (fits(20.0, 1.0), fits(20.0, 0.25))
    assert steps_in(path) == {"script-a": a_plan, "script-b": b_plan}


def test_forget_drops_only_this_plan(tmp_path: Path) -> None:
    """After forget(), the next run with the key plans from its own pace again."""
    path = tmp_path / "pacing.json"
    Pacing(path, "script-a").plan_steps(0, 1.0, 20.0)
    b_plan = Pacing(path, "script-b").plan_steps(0, 1.0, 10.0)
    Pacing(path, "script-a").forget()
    assert steps_in(path) == {"script-b": b_plan}
    Pacing(path, "script-a").forget()  # nothing to drop: harmless
    fresh = Pacing(path, "script-a")
    assert fresh.plan_steps(0, 2.0, 20.0) == fits(20.0, 2.0)
    assert fresh.reused is False


def test_a_remembered_plan_that_is_already_done_is_ignored(tmp_path: Path) -> None:
    """A plan not larger than the steps already taken is replaced by a new one."""
    path = tmp_path / "pacing.json"
    old = Pacing(path, "key").plan_steps(0, 1.0, 10.0)
    late = Pacing(path, "key")
    plan = late.plan_steps(old, 0.5, 10.0)
    assert plan == old + fits(10.0, 0.5)
    assert late.reused is False
    assert steps_in(path) == {"key": plan}
    # No time left: the plan is the steps already done.
    assert Pacing(tmp_path / "other.json", "k").plan_steps(7, 1.0, -3.0) == 7


@pytest.mark.parametrize("seconds_per_step", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_pace_is_a_value_error(tmp_path: Path, seconds_per_step: float) -> None:
    """Zero, negative, NaN and infinite seconds per step cannot be planned from."""
    pacing = Pacing(tmp_path / "pacing.json", "key")
    with pytest.raises(ValueError, match="seconds_per_step"):
        pacing.plan_steps(0, seconds_per_step, 10.0)
    assert not (tmp_path / "pacing.json").exists()


def test_an_unwritable_cache_only_loses_the_memory(tmp_path: Path) -> None:
    """A plan file under a regular file cannot be written: plans are still made, never
    remembered, and forget() does not raise either."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    path = blocker / "cache" / "pacing.json"
    first = Pacing(path, "key")
    assert first.plan_steps(0, 1.0, 10.0) == fits(10.0, 1.0)
    second = Pacing(path, "key")
    assert second.plan_steps(0, 0.5, 10.0) == fits(10.0, 0.5)
    assert second.reused is False
    second.forget()
    assert blocker.read_text() == "a file where a folder should be\n"


def test_a_corrupt_plan_file_is_treated_as_empty(tmp_path: Path) -> None:
    """Broken JSON, or JSON that is not an object, does not stop a run: it plans afresh."""
    path = tmp_path / "pacing.json"
    for junk in ("{not json", "[1, 2, 3]"):
        path.write_text(junk)
        pacing = Pacing(path, "key")
        assert pacing.plan_steps(0, 1.0, 10.0) == fits(10.0, 1.0)
        assert steps_in(path) == {"key": fits(10.0, 1.0)}


def test_the_key_follows_the_script_content_and_the_facts(tmp_path: Path) -> None:
    """Same content and facts, same key (wherever the file is); any change, another key."""
    one = tmp_path / "a.py"
    two = tmp_path / "b.py"
    one.write_text("def train(ctx):\n    pass\n")
    two.write_text("def train(ctx):\n    pass\n")
    key = Pacing.make_key(one, "cpu", 2, 300.0)
    assert Pacing.make_key(two, "cpu", 2, 300.0) == key
    assert Pacing.make_key(one, "cpu", 4, 300.0) != key
    assert Pacing.make_key(one, "cpu", 2, 301.0) != key
    two.write_text("def train(ctx):\n    return 1\n")
    assert Pacing.make_key(two, "cpu", 2, 300.0) != key


def test_flags_stay_booleans_and_fingerprints_stay_text() -> None:
    text = format_summary({"val_bpb": 1.5, "plan_reused": True, "corpus_fingerprint": "1234e5"})
    parsed = parse_summary(text)
    assert parsed["plan_reused"] is True
    assert parsed["corpus_fingerprint"] == "1234e5"


def test_plans_keep_a_share_of_the_time_and_at_least_half_a_second() -> None:
    assert usable_seconds(300.0) == pytest.approx(300.0 * SAFETY)  # long budgets: the share
    assert usable_seconds(5.0) == pytest.approx(5.0 - MIN_MARGIN_SECONDS)  # short: the minimum
    assert usable_seconds(0.3) == 0.0 and usable_seconds(-1.0) == 0.0


def test_a_plan_that_ran_out_of_time_is_cut_to_what_fitted(tmp_path: Path) -> None:
    """The next runs then do the same, smaller amount of work, and agree with each other."""
    path = tmp_path / "pacing.json"
    first = Pacing(path, "script-a")
    planned = first.plan_steps(10, 0.01, 10.0)
    first.shrink(planned - 40)  # it managed 40 steps fewer before the budget ran out
    again = Pacing(path, "script-a")
    assert again.plan_steps(10, 0.5, 10.0) == int((planned - 40) * SAFETY)
    assert again.reused
    Pacing(path, "script-a").shrink(0)  # nothing fitted: the plan is dropped
    fresh = Pacing(path, "script-a")
    fresh.plan_steps(10, 0.01, 10.0)
    assert not fresh.reused


def test_settle_records_how_long_a_plan_took_and_keeps_it_while_the_pace_holds(
    tmp_path: Path,
) -> None:
    """The first run to the end records its seconds; a rerun about as fast keeps the plan,
    even when the plan fills little of the budget (a short budget, a slow start)."""
    path = tmp_path / "pacing.json"
    first = Pacing(path, "key")
    plan = first.plan_steps(10, 0.1, 10.0)
    assert json.loads(path.read_text())["key"] == {"steps": plan, "seconds": None}
    assert first.settle(plan, 4.0, 10.0) is None
    assert json.loads(path.read_text())["key"] == {"steps": plan, "seconds": 4.0}
    again = Pacing(path, "key")
    again.plan_steps(10, 0.05, 10.0)
    assert again.settle(plan, STALE_BELOW * 4.0 + 0.01, 10.0) is None
    assert json.loads(path.read_text())["key"] == {"steps": plan, "seconds": 4.0}


def test_settle_drops_a_remembered_plan_that_now_trains_much_faster(tmp_path: Path) -> None:
    """The machine is faster now than when the plan was made: this run keeps its result, and
    the next run of the script plans from the pace it measures itself."""
    path = tmp_path / "pacing.json"
    first = Pacing(path, "key")
    slow = first.plan_steps(10, 0.5, 10.0)  # planned on a busy machine
    first.settle(slow, 9.5, 10.0)
    Pacing(path, "other").plan_steps(0, 1.0, 10.0)
    reused = Pacing(path, "key")
    assert reused.plan_steps(10, 0.1, 10.0) == slow and reused.reused
    assert reused.settle(slow, STALE_BELOW * 9.5 - 0.01, 10.0) == "stale"
    assert steps_in(path) == {"other": fits(10.0, 1.0)}
    fresh = Pacing(path, "key")
    assert fresh.plan_steps(10, 0.1, 10.0) == 10 + fits(10.0, 0.1) > slow
    assert not fresh.reused


def test_settle_cuts_a_plan_that_ran_out_of_time(tmp_path: Path) -> None:
    path = tmp_path / "pacing.json"
    first = Pacing(path, "key")
    first.plan_steps(10, 0.01, 10.0)
    first.settle(900, 8.0, 10.0)  # its first run fitted
    late = Pacing(path, "key")
    late.plan_steps(10, 0.5, 10.0)
    assert late.settle(500, 10.0, 10.0) == "shrunk"  # a later one ran out of time
    # The cut plan's seconds are unknown until a run of it ends.
    assert json.loads(path.read_text()) == {"key": {"steps": int(500 * SAFETY), "seconds": None}}
    assert Pacing(path, "unplanned").settle(5, 1.0, 10.0) is None  # no plan was asked for


def test_plans_in_the_older_file_format_are_still_used(tmp_path: Path) -> None:
    """A file of bare step counts (before plans kept their seconds) is read, not discarded."""
    path = tmp_path / "pacing.json"
    path.write_text('{"key": 77}')
    pacing = Pacing(path, "key")
    assert pacing.plan_steps(10, 1.0, 10.0) == 77 and pacing.reused
    assert pacing.settle(77, 5.0, 10.0) is None
    assert json.loads(path.read_text()) == {"key": {"steps": 77, "seconds": 5.0}}


def test_plans_that_cannot_be_kept_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    pacing = Pacing(blocked / "pacing.json", "script-a")
    assert pacing.plan_steps(10, 0.5, 100.0) > 10  # the run still plans
    assert "step plans not kept in" in capsys.readouterr().err


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "figures.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"new": object()})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]
