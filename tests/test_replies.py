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


def test_a_pause_comes_after_stuck_proposals_in_a_row_and_grows_until_a_usable_one() -> None:
    pause = ModelPause(stuck_proposals=3, pause_proposals=2, max_pause_proposals=4)
    assert not pause.failed(True, "echo") and not pause.failed(False, "mixed")
    assert not pause.failed(True, "echo") and not pause.failed(True, "echo")
    assert pause.failed(True, "echo") and pause.left == 2
    assert not pause.skip() and pause.skip() and not pause.active
    assert pause.failed(True, "echo") and pause.length == 4  # at once, and twice as long
    assert [pause.skip() for _ in range(4)] == [False, False, False, True]
    assert pause.failed(True, "echo") and pause.length == 4  # no longer than the longest
    pause.usable()
    assert not pause.active and not pause.failed(True, "echo")
