"""Keep, discard, train again or re-apply: the decision on a trained experiment, as a pure
function of its trials, the best's and the noise.

With several workers, the best may move while an experiment trains: it was proposed on a best
that is no longer the best. It is then judged against the script it was made from (its
parent). A gain there does not make it a keep, since keeping it would throw away the keep that
moved the best; its change is re-applied onto the new best and trained there, and only that
can be kept. A keep therefore always descends from the best it beat.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from cockpit.engine.integrity import SEED_ONLY
from cockpit.engine.noise import NoiseFloor, compare, needs_confirmation

# Pairs of scripts of the same shapes, trained on two seeds in common, that measure the paired
# spread before a gain on one run is judged with it: until then such a gain is trained again.
PAIRED_BOOTSTRAP = 2


class Action(str, enum.Enum):
    KEEP = "keep"  # the branch advances to it
    DISCARD = "discard"
    TRAIN_AGAIN = "train_again"  # one more training with the next seed, then decide again
    REAPPLY = "reapply"  # its change goes onto the new best, to be trained and decided there

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Standing:
    """A trained script as a decision sees it."""

    number: int  # its experiment number
    value: float  # its val_bpb (the mean of its trials)
    trials: Mapping[int, float] = field(default_factory=dict)  # seed -> val_bpb
    lines_of_code: int | None = None
    shapes: str | None = None  # its weights' fingerprint, where every trial had the same one


@dataclass(frozen=True)
class Rules:
    """The settings a decision follows (their defaults are the settings' own: `[engine]`
    noise_runs, keep_runs, max_runs and confirm_multiple, `[trainer]` metric)."""

    noise_runs: int  # trainings of the baseline before it is decided
    keep_runs: int  # trainings (seeds) a keep needs at least
    max_runs: int  # trainings an experiment gets at most, while its gain is in doubt
    confirm_multiple: float  # gains under this many margins are trained again first
    metric: str = "val_bpb"  # the name the reasons quote
    source: str = "harness"  # or "self-reported"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    value: float  # the mean of the experiment's trials
    evidence: dict[str, Any] = field(default_factory=dict)


def decide(
    number: int,
    trials: Mapping[int, float],
    *,
    lines_of_code: int | None,
    best: Standing | None,
    parent: Standing | None,
    noise: NoiseFloor,
    rules: Rules,
    flags: Collection[str] = (),
    shapes: str | None = None,
    next_seed: int | None = None,
) -> Decision:
    """The decision on experiment ``number`` with these trials (seed -> val_bpb).

    ``best`` is the best when it finishes (None only before the baseline is decided);
    ``parent`` the script it was proposed on, when that is no longer the best (None: it
    descends from the best). ``noise`` is the floor measured so far, its trials included.
    ``shapes``: the fingerprint of its weights (None: unknown); where it is the reference's
    and every seed of its was the reference's too, the two are compared seed by seed.
    ``next_seed``: the seed its next training would get (`cockpit.store.trials.next_seed`;
    None: not known, and another training is then taken to unpair a paired comparison)."""
    if not trials:
        raise ValueError(f"experiment #{number} has no trial to decide on")
    value = math.fsum(trials.values()) / len(trials)
    runs = f"the mean of {len(trials)} runs" if len(trials) > 1 else "one run"
    if number == 0:
        if len(trials) < rules.noise_runs:
            return Decision(Action.TRAIN_AGAIN, "noise floor: baseline run", value)
        return Decision(
            Action.KEEP, f"baseline: val_bpb {value:.6f} ({runs}); {noise.describe()}", value
        )
    if best is None:
        raise ValueError("an experiment is decided only once the baseline is")
    margin = noise.margin
    against = best if parent is None else parent
    comparison = compare(trials, against.trials, against.value)
    count = len(trials)
    reference_runs = len(comparison.seeds) or max(1, len(against.trials))
    paired = shapes is not None and shapes == against.shapes and set(trials) <= set(against.trials)
    error, needed = noise.test(count, reference_runs, paired)
    evidence: dict[str, Any] = {
        "metric": rules.metric,
        "source": rules.source,
        "runs": list(trials.values()),
        "margin": margin,
        "spread": noise.spread,
        "best_before": best.value,
        # What the decision set it against: the reference's runs with the same seeds, when it
        # had one for each (paired), else its mean.
        "compared_with": comparison.reference,
        "paired_seeds": list(comparison.seeds),
        "reference_runs": reference_runs,
        # The standard error of the difference of the two means, and the gain a keep needed;
        # paired: from the spread of differences between scripts of the same shapes.
        "difference_error": error,
        "needed": needed,
        "paired": paired,
        "paired_spread": noise.paired,
    }
    if parent is not None:
        evidence["parent"] = parent.number
    gain = -comparison.delta
    fewer_lines = (
        lines_of_code is not None
        and against.lines_of_code is not None
        and lines_of_code < against.lines_of_code
    )
    # Another seed only re-rolls a seed-only change's luck: it is never trained again.
    # The next training's seed keeps a paired comparison paired only where the reference was
    # trained on it too; else it would make it unpaired, and looser.
    next_paired = paired and next_seed is not None and next_seed in against.trials
    # A paired comparison before the paired spread is measured is unpaired: a gain of the
    # best's shapes on one run is trained again, so that the pair measures it.
    unmeasured = next_paired and noise.pairs < PAIRED_BOOTSTRAP and count == 1 and gain > 0
    again = (
        None
        if SEED_ONLY in flags
        else _train_again(
            gain,
            count,
            margin,
            needed,
            error,
            fewer_lines,
            rules,
            unmeasured,
            helps=next_paired or not paired,
        )
    )
    if again is not None:
        return Decision(Action.TRAIN_AGAIN, again, value, evidence)
    keep, reason = comparison.verdict(against.value, margin, fewer_lines, runs, needed=needed)
    if keep and SEED_ONLY in flags:
        # Approved despite its flag: whatever it measured, another seed is only noise.
        return Decision(
            Action.DISCARD, f"{reason}, but it changes nothing but the random seed", value, evidence
        )
    if parent is None:
        return Decision(Action.KEEP if keep else Action.DISCARD, reason, value, evidence)
    moved = f"the best moved to #{best.number} ({best.value:.6f}) while it trained"
    reason = reason.replace("the best", f"its parent #{parent.number}", 1)
    if keep:
        return Decision(
            Action.REAPPLY,
            f"{reason}; {moved}: its change is re-applied there, to be confirmed",
            value,
            evidence,
        )
    return Decision(Action.DISCARD, f"{reason}; {moved}", value, evidence)


def _train_again(
    gain: float,
    runs: int,
    margin: float,
    needed: float,
    error: float | None,
    fewer_lines: bool,
    rules: Rules,
    unmeasured: bool = False,
    helps: bool = True,
) -> str | None:
    """Why the experiment is trained once more with the next seed, or None: decide now.

    A keep becomes the best, and every later experiment is judged against its value: one
    lucky training must not set it. So an experiment that would be kept (a gain beyond the
    margin, or a tie by a shorter script) is trained on `keep_runs` seeds at least (two, under
    `confirm_multiple` margins, where that is one). Past that, a gain that falls short of what
    a keep needs by less than one standard error of the difference is still in doubt, and
    trained again, up to `max_runs`, after one training as after several: the extra trainings
    go where they can change the decision, not to gains far beyond the noise or to losses.

    ``unmeasured``: a gain on one run of the best's shapes while the paired spread is measured
    on fewer than `PAIRED_BOOTSTRAP` pairs: its second seed measures one more. ``helps``:
    whether another seed can sharpen the comparison (not where it would unpair it)."""
    band = min(margin, needed)  # within it, a gain is noise (paired, the band is narrower)
    tie = fewer_lines and abs(gain) <= band
    wanted = max(1, rules.keep_runs)
    if needs_confirmation(gain, band, rules.confirm_multiple, runs):
        wanted = max(wanted, 2)
    if (gain > band or tie) and runs < wanted:
        if wanted == 2 and rules.keep_runs < 2:
            return f"confirming a gain of {gain:.6f} (margin {margin:.6f}): another run"
        return (
            f"a gain of {gain:.6f} over {runs} run{'s' if runs != 1 else ''} (margin "
            f"{margin:.6f}): a keep is trained on {wanted} seeds at least, another run"
        )
    # Just short of a keep: one more seed can still make it one. On a single run too, so
    # that a spread measured high on one noisy pair (a margin no single run clears) is
    # measured again on the experiments that came closest, instead of freezing the run.
    near = needed - error < gain <= needed if error is not None else False
    if near and helps and runs < rules.max_runs and not tie:
        return (
            f"a gain of {gain:.6f} over {runs} run{'s' if runs != 1 else ''}, short of the "
            f"{needed:.6f} a keep needs by less than its standard error {error:.6f}: another run"
        )
    if unmeasured and runs < rules.max_runs:
        return (
            f"a gain of {gain:.6f} over 1 run, of the best's shapes: another seed measures how "
            "much of a seed's luck such scripts share (the paired spread), another run"
        )
    return None
