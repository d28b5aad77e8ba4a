"""What the model's recent replies came to, and when to stop asking it for a while.

`ReplyLog` keeps the unusable replies since the last usable one: how many, why each was
refused, how many repeated a reply refused before. It says so in words a researcher reads in
`cockpit status` ("the last 6 replies were unusable: they repeat the prompt's example"), with
advice when the replies show a model that cannot do the task (it echoes the answer's shape,
or sends the same refused reply again).

`ModelPause` decides when a model that cannot help is left alone: after `STUCK_PROPOSALS`
proposals in a row in which it gave nothing usable (echoes, malformed replies, edits that do
not apply, repeats, replies that did not come in time), the model is not asked for the next
`PAUSE_PROPOSALS` proposals (twice as many after each pause that changed nothing, at most
`MAX_PAUSE_PROPOSALS`), and the stand-in proposes instead. One usable proposal ends it all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.prompt import ECHO

RECOMMENDED_MODEL = "qwen2.5-coder:7b"
STUCK_PROPOSALS = 3
PAUSE_PROPOSALS = 5
MAX_PAUSE_PROPOSALS = 40

# Why replies were refused, by kind: (of one reply, of several).
REASONS: dict[str, tuple[str, str]] = {
    ECHO: ("it repeats the prompt's example", "they repeat the prompt's example"),
    "malformed": ("it is not the JSON object asked for", "they are not the JSON object asked for"),
    "timeout": (
        "it did not come within [agent] timeout_seconds",
        "they did not come within [agent] timeout_seconds",
    ),
    "not_found": (
        "its search text is not in the script",
        "their search text is not in the script",
    ),
    "ambiguous": (
        "its search text occurs more than once in the script",
        "their search text occurs more than once in the script",
    ),
    "syntax": (
        "its edit leaves the script invalid Python",
        "their edits leave the script invalid Python",
    ),
    "noop": ("it changes nothing that trains", "they change nothing that trains"),
    "already_tried": (
        "it makes a script already trained",
        "they make scripts already trained",
    ),
    "wrong_file": ("it edits another file", "they edit another file"),
    "empty_search": ("its search text is empty", "their search text is empty"),
    "no_edits": ("it holds no edit", "they hold no edit"),
    "overlap": ("its edits overlap", "their edits overlap"),
    "numbers_only": (
        "it only changes numbers the optimiser tunes",
        "they only change numbers the optimiser tunes",
    ),
}


def reason_words(kind: str, count: int = 2) -> str:
    """Why ``count`` replies of this kind were refused, in words."""
    one, several = REASONS.get(kind, (f"it was refused ({kind})", f"they were refused ({kind})"))
    return one if count == 1 else several


def model_advice(model: str | None) -> str:
    """What to do about a model that echoes the prompt or repeats refused replies."""
    if model is not None and model.split(":")[0] == RECOMMENDED_MODEL.split(":")[0]:
        better = "try a larger instruction-tuned coding model (`[agent] model` in config.toml)"
    else:
        better = (
            f"try {RECOMMENDED_MODEL} (`ollama pull {RECOMMENDED_MODEL}`, then `[agent] model`)"
        )
    return f"the model seems too small or not instruction-tuned for this task; {better}"


@dataclass(frozen=True)
class Refusal:
    """One unusable reply: why it was refused, and whether it repeated one refused before."""

    kind: str
    repeated: bool = False


class ReplyLog:
    """The unusable replies since the model's last usable proposal."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.refusals: list[Refusal] = []

    def refused(self, refusals: Iterable[Refusal]) -> None:
        """Replies of one proposal that were all refused."""
        self.refusals.extend(refusals)

    def usable(self) -> None:
        """The model made a usable proposal: what came before no longer says anything."""
        self.refusals.clear()

    @property
    def stuck(self) -> bool:
        """Whether the replies show a model that cannot do the task: an echo, or a repeat."""
        return any(r.kind == ECHO or r.repeated for r in self.refusals)

    def summary(self) -> dict[str, object] | None:
        """What `cockpit status` says of the replies (None: nothing to say). Keys: ``count``
        (unusable replies in a row), ``reason`` (the most common kind), ``reason_text``,
        ``by_reason`` (kind: count), ``repeated`` (replies the same as one refused before),
        ``message`` (one line), ``advice`` (None unless the model looks unfit for the task)."""
        if not self.refusals:
            return None
        count = len(self.refusals)
        by_reason = Counter(r.kind for r in self.refusals)
        # The most common reason; among equals, the latest one.
        order = {r.kind: i for i, r in enumerate(self.refusals)}
        reason = max(by_reason, key=lambda kind: (by_reason[kind], order[kind]))
        repeated = sum(1 for r in self.refusals if r.repeated)
        return {
            "count": count,
            "reason": reason,
            "reason_text": reason_words(reason, count),
            "by_reason": dict(by_reason),
            "repeated": repeated,
            "message": unusable_message(count, by_reason, repeated, latest=reason),
            "advice": model_advice(self.model) if self.stuck else None,
        }


def unusable_message(
    count: int, by_reason: Mapping[str, int], repeated: int, *, latest: str = ""
) -> str:
    """One line on the unusable replies, such as "the last 6 replies were unusable: they
    repeat the prompt's example". Reasons tied for the most common are all named, the
    ``latest`` of them first."""
    top = max(by_reason.values())
    tied = sorted((kind for kind, n in by_reason.items() if n == top), key=lambda k: k != latest)
    if count == 1:
        line = f"the last reply was unusable: {reason_words(tied[0], 1)}"
    elif top == count:
        line = f"the last {count} replies were unusable: {reason_words(tied[0])}"
    elif len(tied) == 1:
        line = (
            f"the last {count} replies were unusable, most often ({top}) because "
            f"{reason_words(tied[0], top)}"
        )
    else:
        because = " or because ".join(reason_words(kind, top) for kind in tied)
        line = f"the last {count} replies were unusable, {top} each because {because}"
    if repeated:
        same = "was the same as" if repeated == 1 else "were the same as"
        line += f"; {repeated} {same} a reply already refused"
    return line


class ModelPause:
    """Counts proposals in a row in which the model gave nothing usable, and pauses it after
    `STUCK_PROPOSALS` of them. Proposals the model was not asked for (another proposer's
    turn) neither count nor reset the count."""

    def __init__(
        self,
        stuck_proposals: int = STUCK_PROPOSALS,
        pause_proposals: int = PAUSE_PROPOSALS,
        max_pause_proposals: int = MAX_PAUSE_PROPOSALS,
    ) -> None:
        self.stuck_proposals = stuck_proposals
        self.pause_proposals = pause_proposals
        self.max_pause_proposals = max_pause_proposals
        self.stuck_in_a_row = 0
        self.left = 0  # proposals the model is still left out of
        self.length = 0  # proposals of the current (or last) pause
        self.reason = ""  # why the model is paused, in words

    @property
    def active(self) -> bool:
        return self.left > 0

    def usable(self) -> None:
        """A usable proposal: the model is trusted again, and a next pause starts short."""
        self.stuck_in_a_row = self.left = self.length = 0
        self.reason = ""

    def failed(self, reason: str) -> bool:
        """The model gave nothing usable for a proposal (``reason``: why, in words); whether
        it is paused from now on."""
        self.stuck_in_a_row += 1
        if self.stuck_in_a_row < self.stuck_proposals:
            return False
        self.length = (
            self.pause_proposals
            if not self.length
            else min(self.length * 2, self.max_pause_proposals)
        )
        self.left = self.length
        self.reason = reason
        # Once the pause is over, one more stuck proposal pauses the model again.
        self.stuck_in_a_row = self.stuck_proposals - 1
        return True

    def skip(self) -> bool:
        """One proposal goes by without the model; whether the pause just ended."""
        if self.left:
            self.left -= 1
            return self.left == 0
        return False

    def summary(self) -> dict[str, object] | None:
        """What `cockpit status` says of the pause (None: the model is not paused). Keys:
        ``proposals_left`` (proposals the model still sits out), ``proposals`` (the pause's
        length), ``reason``."""
        if not self.active:
            return None
        return {"proposals_left": self.left, "proposals": self.length, "reason": self.reason}
