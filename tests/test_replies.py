"""What the model's unusable replies came to, in words, and when the model is paused."""

from __future__ import annotations

from agent.replies import ModelPause, Refusal, ReplyLog, model_advice


def test_the_most_common_reason_is_named_with_how_often() -> None:
    log = ReplyLog("llama3.2:1b")
    log.refused([Refusal("not_found"), Refusal("malformed"), Refusal("not_found")])
    summary = log.summary()
    assert summary is not None
    assert summary["message"] == (
        "the last 3 replies were unusable, most often (2) because their search text is not "
        "in the script"
    )
    assert summary["by_reason"] == {"not_found": 2, "malformed": 1}
    assert summary["advice"] is None  # varied mistakes: the model is trying
    log.refused([Refusal("not_found", repeated=True)])
    summary = log.summary()
    assert summary is not None and summary["count"] == 4
    assert str(summary["message"]).endswith("; 1 was the same as a reply already refused")
    assert "try qwen2.5-coder:7b" in str(summary["advice"])
    log.usable()
    assert log.summary() is None


def test_the_advice_does_not_suggest_the_model_in_use() -> None:
    assert "try qwen2.5-coder:7b" in model_advice("gemma3:270m")
    advice = model_advice("qwen2.5-coder:7b")
    assert "qwen2.5-coder:7b" not in advice and "larger instruction-tuned" in advice


def test_a_pause_comes_after_failed_proposals_in_a_row_and_grows_until_a_usable_one() -> None:
    pause = ModelPause(stuck_proposals=3, pause_proposals=2, max_pause_proposals=4)
    assert not pause.failed("echo") and not pause.failed("mixed")
    assert pause.failed("timeout") and pause.left == 2  # any failure counts, whatever its kind
    assert not pause.skip() and pause.skip() and not pause.active
    assert pause.failed("echo") and pause.length == 4  # at once, and twice as long
    assert [pause.skip() for _ in range(4)] == [False, False, False, True]
    assert pause.failed("echo") and pause.length == 4  # no longer than the longest
    pause.usable()
    assert not pause.active and not pause.failed("echo")


def test_reasons_tied_for_the_most_common_are_all_named() -> None:
    log = ReplyLog()
    log.refused([Refusal("not_found"), Refusal("malformed")] * 3 + [Refusal("echo")])
    summary = log.summary()
    assert summary is not None
    assert summary["message"] == (
        "the last 7 replies were unusable, 3 each because they are not the JSON object asked "
        "for or because their search text is not in the script"
    )
    assert "most often" not in str(summary["message"])


def test_replies_that_do_not_come_in_time_are_named() -> None:
    log = ReplyLog()
    log.refused([Refusal("timeout"), Refusal("timeout")])
    summary = log.summary()
    assert summary is not None and summary["message"] == (
        "the last 2 replies were unusable: they did not come within [agent] timeout_seconds"
    )
