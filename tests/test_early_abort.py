"""Early abort: the rule on curves, the engine stopping a losing training, and the replay."""

from __future__ import annotations

import json
import math
import random
import subprocess
from pathlib import Path

import pytest

from cockpit.bench.early_abort_bench import replay
from cockpit.config import EngineSettings
from cockpit.engine import early_abort
from cockpit.engine.early_abort import (
    CONFIDENCE,
    LAST_STOP,
    MIN_KEEPS,
    SAME_PLAN_TOLERANCE,
    SLACK,
    Watch,
    calibrate,
    compare,
    first_verdict,
    gap,
    judge,
    ledger_note,
    widest_bound,
)
from cockpit.engine.flight import early_abort_watch
from cockpit.store import curves
from cockpit.store.curves import (
    Measured,
    Trace,
    curve_from_metrics,
    mean_loss,
    report_ratio,
    schedule_curve,
    trace,
)
from cockpit.store.journal import Journal
from cockpit.store.trials import measured_loss, measured_trace
from tests.helpers import VALID, cockpit, edit, experiments, git_env, make_workspace, run_llm
from tests.ollama_server import OllamaDouble

# Commits without a git identity (conftest.py).
pytestmark = pytest.mark.usefixtures("no_git_identity")


def decaying(start: float, end: float, points: int = 100) -> list[tuple[float, float]]:
    """A loss curve that falls exponentially from start towards end over the budget."""
    return [
        ((i + 1) / points, end + (start - end) * math.exp(-4 * (i + 1) / points))
        for i in range(points)
    ]


BEST = decaying(5.5, 2.0)


def test_curves_come_from_metric_records_in_progress_order() -> None:
    records = [
        {"progress": 0.2, "loss": 3.0},
        {"progress": 0.1, "loss": 4.0},
        {"progress": 0.3, "loss": None},  # a NaN comes back from SQLite as None
        {"progress": 0.4, "loss": float("inf")},
        {"step": 5, "loss": 2.0},
    ]
    assert curve_from_metrics(records) == [(0.1, 4.0), (0.2, 3.0)]


def records_of(steps: int, planned: int | None, seconds: float, budget: float) -> list[dict]:
    """Metric records of a training whose loss falls with its learning-rate schedule (the
    step plan): the same loss at the same share of the plan, however long a step took."""
    records = []
    for step in range(1, steps + 1):
        record = {
            "t": step * seconds,
            "progress": min(1.0, step * seconds / budget),
            "step": step,
            "loss": 2.0 + 3.5 * math.exp(-4 * step / (planned or steps)),
        }
        if planned is not None and step >= steps // 5:  # the plan is made at 20 % of it
            record["planned_steps"] = planned
        records.append(record)
    return records


def test_curves_are_placed_on_the_scripts_step_plan_where_the_harness_recorded_it() -> None:
    """A plan made while the machine was busy ends at 80 % of the budget; by the clock, its
    warmdown would be set against the middle of another run's. On the plan, the same losses
    at the same point of the schedule show no gap."""
    early = records_of(400, 400, 0.02, 10.0)  # done in 8 of 10 seconds
    full = records_of(400, 400, 0.025, 10.0)
    by_plan_early, by_plan_full = schedule_curve(early), schedule_curve(full)
    assert by_plan_early[0] == (1 / 400, early[0]["loss"])  # before the plan, placed by it
    assert by_plan_early[-1][0] == 1.0
    assert gap(by_plan_full, by_plan_early, 0.8) == pytest.approx(0.0)
    by_clock_gap = gap(curve_from_metrics(full), curve_from_metrics(early), 0.8)
    assert by_clock_gap is not None and by_clock_gap > 0.03  # a false "losing" by the clock
    # Records without a plan (a script that does not ask for one) stay on the clock.
    unplanned = records_of(50, None, 0.1, 10.0)
    assert schedule_curve(unplanned) == curve_from_metrics(unplanned)


def test_plans_of_nearly_the_same_length_are_compared_on_the_same_batches() -> None:
    """Both trainings drew the same batch at each step (the same seed), and a batch's
    difficulty moves its loss by up to 0.4. The live plan is 3 % longer, so at each point of
    the plan it has trained more steps, and is truly a little ahead. Set step against step
    and carried along the reference's trend, the gap finds that; the windows' means alone set
    different batches against each other and miss it by several times as much, and say so
    with a wider uncertainty."""
    rng = random.Random(0)
    difficulty = [rng.uniform(-0.4, 0.4) for _ in range(400)]

    def trend(step: float) -> float:
        return 2.0 + 3.5 * math.exp(-step / 100)

    def records(planned: int) -> list[dict]:
        return [
            {"t": step * 0.05, "step": step, "planned_steps": planned,
             "loss": trend(step) + difficulty[step]}
            for step in range(1, planned + 1)
        ]  # fmt: skip

    longer = round(200 * (1 + SAME_PLAN_TOLERANCE))
    live, reference = trace(records(longer)), trace(records(200))
    assert live.planned == longer and len(live.by_step) == longer
    unpaired_live, unpaired_reference = Trace(live.points), Trace(reference.points)
    paired_errors, unpaired_errors = [], []
    for at in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        truth = trend(longer * (at - 0.05)) / trend(200 * (at - 0.05)) - 1
        assert truth < 0  # more steps by then: ahead
        paired, unpaired = (
            compare(live, reference, at),
            compare(unpaired_live, unpaired_reference, at),
        )
        assert paired is not None and paired.method == "same batches"
        assert unpaired is not None and unpaired.method == "clock"
        paired_errors.append(abs(paired.gap - truth))
        unpaired_errors.append(abs(unpaired.gap - truth))
        assert paired.uncertainty < unpaired.uncertainty / 2
    assert max(paired_errors) < 0.01, paired_errors
    assert max(unpaired_errors) > 2 * max(paired_errors), (paired_errors, unpaired_errors)
    # The same plan: the ratio on the same batches, exactly.
    same = trace(records(200))
    assert gap(same, reference, 0.5) == pytest.approx(0.0)
    # Plans further apart are set point of plan against point of plan.
    further = compare(trace(records(round(200 * (1 + 2 * SAME_PLAN_TOLERANCE)))), reference, 0.5)
    assert further is not None and further.method == "plan"


RECORDED = json.loads(
    (Path(__file__).parent / "data" / "early_abort_longer_plans.json").read_text()
)


def recorded_trace(recorded: dict) -> Trace:
    """A recorded training's trace, from its losses by step and its step plan."""
    first, planned, plan_from = (
        recorded["first_step"],
        recorded["planned_steps"],
        recorded["plan_from_step"],
    )
    return trace(
        {"step": step, "loss": loss, **({"planned_steps": planned} if step >= plan_from else {})}
        for step, loss in enumerate(recorded["losses"], start=first)
    )


NO_WORSE = [e for e in RECORDED["experiments"] if e["val_bpb"] <= RECORDED["best"]["val_bpb"]]


@pytest.mark.parametrize("recorded", NO_WORSE, ids=lambda e: f"#{e['number']} {e['description']}")
def test_a_recorded_run_with_a_longer_plan_that_ended_no_worse_is_never_stopped(
    recorded: dict,
) -> None:
    """Recorded with early abort off on two CPU cores (10 s budget, seed 42): scripts made
    faster (fewer blocks, a narrower model) plan 13-75 % more steps than the best run, and
    ended level with it or better. Step against step, they trail the best run by 2.5-3.7 %
    late in the budget, where its warmdown runs ahead of theirs: that comparison stopped #1
    at 70 %, as worse. At the same point of both plans, with the uncertainty of batches that
    differ, none of them is stopped (the losers of the recording are: see the next tests)."""
    best, live = recorded_trace(RECORDED["best"]), recorded_trace(recorded)
    assert live.planned > best.planned
    margin = calibrate([], after=0.3, floor=0.02)
    verdict = first_verdict(live, best, 0.3, margin)
    assert verdict is None, verdict.describe()


def test_step_against_step_the_recorded_longer_plan_reads_as_losing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replay case's bias, shown: with same-batch pairing allowed for any two plans, the
    faster script that ended better (#1, 173 steps against 153) trails step for step by more
    than the margin, and its gap grows as the best run's warmdown pulls ahead."""
    best = recorded_trace(RECORDED["best"])
    faster = recorded_trace(next(e for e in RECORDED["experiments"] if e["number"] == 1))
    monkeypatch.setattr(early_abort, "SAME_PLAN_TOLERANCE", 1.0)
    margin = calibrate([], after=0.3, floor=0.02)
    verdict = first_verdict(faster, best, 0.3, margin)
    assert verdict is not None and verdict.comparison.method == "same batches"
    early, late = compare(faster, best, 0.4), compare(faster, best, 0.85)
    assert early is not None and late is not None and early.gap < 0.01 < 0.03 < late.gap


def test_the_gap_compares_mean_losses_over_the_same_window() -> None:
    worse = [(p, loss * 1.1) for p, loss in BEST]
    assert gap(worse, BEST, 0.5) == pytest.approx(0.1)
    assert gap(BEST, BEST, 0.5) == pytest.approx(0.0)
    assert gap(worse, BEST, 0.0) is None  # nothing in the window yet
    assert mean_loss(BEST, 0.05) == pytest.approx(sum(loss for _, loss in BEST[:5]) / 5)
    assert mean_loss([], 0.5) is None


def test_no_verdict_before_the_share_of_the_budget_nor_within_the_margin() -> None:
    margin = calibrate([], after=0.3, floor=0.05)
    worse = [(p, loss * 1.2) for p, loss in BEST]
    assert judge(worse[:20], BEST, 0.2, 0.3, margin) is None  # too early
    assert judge(worse, BEST, 0.95, 0.3, margin) is None  # too late to save much
    assert judge(worse, BEST, LAST_STOP, 0.3, margin) is not None
    slightly = [(p, loss * 1.03) for p, loss in BEST]
    assert first_verdict(slightly, BEST, 0.3, margin) is None  # within 5 %
    verdict = first_verdict(worse, BEST, 0.3, margin)
    assert verdict is not None and verdict.progress == pytest.approx(0.3)
    assert verdict.gap == pytest.approx(0.2)
    text = verdict.describe()
    assert "discarded early at 30% of the budget" in text and "+20.0%" in text
    assert verdict.evidence()["margin"] == 0.05


def test_a_verdict_quotes_the_numbers_it_was_decided_on() -> None:
    """Whatever the comparison, the losses the verdict quotes are the ones whose ratio is the
    gap, and the gap less its uncertainty is what cleared the margin."""
    margin = calibrate([], after=0.3, floor=0.02)
    best = recorded_trace(RECORDED["best"])
    loser = recorded_trace(next(e for e in RECORDED["experiments"] if e["number"] == 6))
    nudged = trace(
        {"step": step, "loss": loss * 1.06, "planned_steps": best.planned}
        for step, loss in best.by_step.items()
    )
    by_clock = [(p, loss * 1.06) for p, loss in BEST]
    for live, reference, method in (
        (loser, best, "plan"),
        (nudged, best, "same batches"),
        (by_clock, BEST, "clock"),
    ):
        verdict = first_verdict(live, reference, 0.3, margin)
        assert verdict is not None, method
        comparison = verdict.comparison
        assert comparison.method == method
        assert comparison.live_loss / comparison.reference_loss - 1 == pytest.approx(verdict.gap)
        assert comparison.bound == pytest.approx(
            comparison.gap - CONFIDENCE * comparison.uncertainty
        )
        assert comparison.bound > margin.value
        text = verdict.describe()
        for quoted in (
            f"{comparison.live_loss:.4f}",
            f"{comparison.reference_loss:.4f}",
            f"{comparison.gap:+.1%}",
            f"{comparison.uncertainty:.1%}",
            f"{comparison.bound:+.1%}",
            f"margin {margin.value:.1%}",
        ):
            assert quoted in text, (quoted, text)
        evidence = verdict.evidence()
        assert evidence["method"] == method and evidence["gap"] == round(comparison.gap, 6)
        assert evidence["live_loss"] == round(comparison.live_loss, 6)
        assert evidence["reference_loss"] == round(comparison.reference_loss, 6)
        if method == "clock":
            assert "of the budget, against the best run's" in text
        else:
            first, last = (round(v) for v in comparison.live_span)
            assert f"over steps {first}-{last} of {comparison.live_planned} planned" in text
        if method == "same batches":
            assert f"{comparison.same_batches_loss:.4f} on the same batches" in text
        if method == "plan":
            first, last = (round(v) for v in comparison.reference_span)
            assert f"steps {first}-{last} of {best.planned} planned" in text
    note = ledger_note(first_verdict(by_clock, BEST, 0.3, margin).evidence())  # type: ignore[union-attr]
    assert note == "stopped early at 30% of the budget, loss +6.0% against the best run's"
    assert ledger_note({}) == "stopped early"


def test_a_gap_within_the_noise_of_its_windows_stops_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two level runs whose batches scatter each loss by up to a tenth, as on small CPU
    batches: their windows' means stray several percent apart. Judged on the gap alone, most
    would be stopped at some checkpoint; judged on the gap less its uncertainty, few are. A
    run truly 8 % behind is still stopped."""
    margin = calibrate([], after=0.3, floor=0.02)

    def noisy(factor: float, rng: random.Random) -> list[tuple[float, float]]:
        return [(p, loss * factor * rng.uniform(0.9, 1.1)) for p, loss in BEST]

    def stopped(factor: float) -> int:
        pairs = [(noisy(factor, rng), noisy(1.0, rng)) for rng in map(random.Random, range(40))]
        return sum(first_verdict(live, best, 0.3, margin) is not None for live, best in pairs)

    assert stopped(1.08) >= 38
    assert stopped(1.0) <= 2
    monkeypatch.setattr(early_abort, "CONFIDENCE", 0.0)
    assert stopped(1.0) >= 30


def test_a_watch_judges_a_live_training_at_each_checkpoint_once_as_the_replay_does() -> None:
    """Records arrive as the training goes; the watch judges the checkpoints reached since it
    last looked, each once, and stops at the first the replay of the whole curve stops at."""
    margin = calibrate([], after=0.3, floor=0.05)
    worse = [(p, loss * 1.2) for p, loss in BEST]
    level = [(p, loss * (1.0 if p < 0.5 else 1.2)) for p, loss in BEST]  # falls behind at half
    for curve in (worse, level):
        watch = Watch(Trace(tuple(BEST)), margin, after=0.3)
        assert watch.check() is None  # nothing yet
        for index, (progress, loss) in enumerate(curve):
            watch.add({"progress": progress, "loss": loss})
            if index % 7 == 0 and watch.check() is not None:
                break
        verdict = watch.check()
        expected = first_verdict(curve, BEST, 0.3, margin)
        assert verdict is not None and expected is not None
        assert verdict.progress == expected.progress
        assert watch.check() is verdict  # it stands
        assert watch.judged_through == verdict.progress


def test_the_margin_widens_to_spare_keeps_that_started_slowly() -> None:
    # A keep that trails by 12 % at 30 % of the budget and wins at the end.
    late_bloomer = [(p, loss * (1.12 - 0.2 * p)) for p, loss in BEST]
    assert widest_bound(late_bloomer, BEST, 0.3) == pytest.approx(0.12 - 0.2 * 0.3, abs=0.02)
    keeps = [(late_bloomer, BEST)] * MIN_KEEPS
    margin = calibrate(keeps, after=0.3, floor=0.05)
    assert margin.keeps == MIN_KEEPS
    assert margin.value == pytest.approx(margin.widest_keep_bound + SLACK)
    assert first_verdict(late_bloomer, BEST, 0.3, margin) is None
    # Fewer keeps than MIN_KEEPS: the floor alone.
    assert calibrate(keeps[:1], after=0.3, floor=0.05).value == 0.05


@pytest.mark.e2e
def test_the_engine_stops_a_losing_training_early_and_the_replay_counts_it(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    config = root / "config.toml"
    # A wide floor: only the hopeless run is stopped, not a bigger batch that starts slower.
    config.write_text(
        config.read_text().replace(
            "early_abort = false", "early_abort = true\nearly_abort_margin = 0.5"
        )
    )
    served.script(
        edit("a learning rate far too small", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.00001"),
        VALID[1],
    )
    output = run_llm(root, 2, budget=4)
    records = experiments(root)
    stopped = records[1]
    assert stopped.decision == "discard", output
    assert stopped.decision_reason.startswith("discarded early at"), stopped.decision_reason
    evidence = stopped.details["early_abort"]
    assert 0.3 <= evidence["progress"] < 0.9 and evidence["gap"] > evidence["margin"]
    assert stopped.training_seconds is None or stopped.training_seconds < 4
    assert records[2].description == "double the batch"  # the run went on
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        # Each point says which training it came from: curves are compared seed with seed.
        for record in records:
            assert {point.get("seed") for point in journal.metrics(record.id)} == {42}
    rows = (root / "results.tsv").read_text().splitlines()
    assert rows[2].split("\t")[3] == "discard"

    # The replay leaves out what was stopped when recorded: its curve is cut short.
    bench = cockpit("bench", "early-abort", "--workspace", str(root), "--json")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    report = json.loads(bench.stdout)
    assert report["left_out"] == 1 and report["experiments"] == 1
    assert set(report) >= {"saved_share", "keeps_lost_share", "discarded", "keeps", "other_plans"}


@pytest.mark.e2e
def test_the_replay_of_a_recording_with_early_abort_off(
    tmp_path: Path, served: OllamaDouble
) -> None:
    """Recorded in full, a clearly losing run is counted as saved, the keep is not lost. The
    loss the harness measured and the losses the script reported are in the same units (nats
    per token): the baseline's last reports lie near its measured loss, where bits would be
    off by a factor of 1.44."""
    root = tmp_path / "ws"
    make_workspace(root)
    served.script(
        edit("a learning rate far too small", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.00001"),
        VALID[1],
    )
    run_llm(root, 2, budget=3)
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.latest_run()
        assert run is not None
        decisions = [e.decision for e in journal.experiments(run.id)]
        baseline = journal.experiments(run.id)[0]
        ratio = report_ratio(measured_trace(baseline, journal.metrics(baseline.id), "#0"))
    assert ratio is not None and 0.8 < ratio < 1.25, ratio
    bench = cockpit("bench", "early-abort", "--workspace", str(root))
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "compute saved on discarded runs" in bench.stdout
    assert "keeps that would have been stopped" in bench.stdout
    report = json.loads(cockpit("bench", "early-abort", "--workspace", str(root), "--json").stdout)
    assert report["experiments"] == 2 and report["left_out"] == 0
    assert decisions[1] == "discard" and report["discarded_stopped"] == 1
    # The losing run is stopped before half of its 3 s. The share counts every discard's
    # seconds, so it passes a half only when the doubled batch (within the noise) is kept.
    assert report["saved_training_seconds"] > 0.5 * 3
    if decisions[2] == "keep":
        assert report["saved_share"] > 0.5
        assert report["keeps_lost"] == 0


# A script whose reported loss is a function of where it is in its step plan, and whose plan
# covers 1 / PLAN_SHARE of what its budget fits: at PLAN_SHARE = 2 it is done at half time.
ON_ITS_PLAN = """
import torch

PLAN_SHARE = 2.0  # the budget's steps divided by the planned steps
SIZE = 192  # of the matrix products that pace a step


class Bigram(torch.nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.table(idx)
        if targets is None:
            return logits
        losses = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction
        )
        return losses.view(targets.shape) if reduction == "none" else losses


def train(ctx):
    torch.manual_seed(ctx.seed)
    torch.set_num_threads(1)  # a steady pace, whatever else the machine runs
    work = torch.randn(SIZE, SIZE)
    step, planned = 0, None
    while ctx.time_left() > 0 and (planned is None or step < planned):
        for _ in range(10):
            work = torch.nn.functional.normalize(work @ work, dim=1)
        step += 1
        if planned is None and step == 20:
            pace = (ctx.budget_seconds - ctx.time_left()) / step
            planned = ctx.plan_steps(step, PLAN_SHARE * pace)
        ctx.report(step=step, loss=5.0 - 3.0 * step / (planned or 1000))
    return Bigram(ctx.vocab_size)
"""


@pytest.mark.e2e
def test_the_engine_compares_the_live_training_on_its_step_plan(
    tmp_path: Path, served: OllamaDouble
) -> None:
    """The baseline plans half of what its budget fits and is done at half time; the
    experiment plans all of it. Both report the same loss at the same point of their plans.
    By the clock the experiment would trail by a quarter at 30 % of the budget and be
    stopped; on its plan it keeps level and trains to the end."""
    script = tmp_path / "on_its_plan.py"
    script.write_text(ON_ITS_PLAN)
    root = tmp_path / "ws"
    make_workspace(root, script)
    config = root / "config.toml"
    config.write_text(config.read_text().replace("early_abort = false", "early_abort = true"))
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "plan"], check=True, env=git_env())
    served.script(edit("plan the whole budget", "PLAN_SHARE = 2.0", "PLAN_SHARE = 1.0"))
    output = run_llm(root, 1, budget=4)
    baseline, whole = experiments(root)
    assert whole.description == "plan the whole budget", output
    assert not whole.decision_reason.startswith("discarded early"), whole.decision_reason
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        metrics = [journal.metrics(baseline.id), journal.metrics(whole.id)]
    by_clock = [curve_from_metrics(m) for m in metrics]
    assert by_clock[0][-1][0] < 0.75  # the baseline was done early
    margin = calibrate([], after=0.3, floor=0.02)
    assert first_verdict(by_clock[1], by_clock[0], 0.3, margin) is not None
    on_plans = [schedule_curve(m) for m in metrics]
    assert first_verdict(on_plans[1], on_plans[0], 0.3, margin) is None


# --- What a kept script says about itself -------------------------------------------------
# The default corpus is evaluated one byte per token: the harness's val_loss (nats per token)
# is val_bpb times ln 2, and the training reports its cross-entropy in nats per token too.
NATS_PER_BIT = math.log(2)


def recorded(number: int | None) -> dict:
    """A recorded training: the baseline (None) or an experiment trained from it."""
    if number is None:
        return RECORDED["best"]
    return next(e for e in RECORDED["experiments"] if e["number"] == number)


def metric_records(recorded: dict, reports=lambda step, loss: loss) -> list[dict]:
    """A recorded training's metric records as the engine journals them (seed 42), its losses
    as ``reports`` has the script report them."""
    planned, plan_from = recorded["planned_steps"], recorded["plan_from_step"]
    return [
        {
            "t": step * 10.0 / planned,
            "progress": min(1.0, step / planned),
            "step": step,
            "loss": reports(step, loss),
            "seed": 42,
            **({"planned_steps": planned} if step >= plan_from else {}),
        }
        for step, loss in enumerate(recorded["losses"], start=recorded["first_step"])
    ]


def honest(step: int, loss: float) -> float:
    return loss


def trained(journal: Journal, experiment, source: dict, reports, decision: str):
    """The experiment with a recorded training journalled as the engine does it: its points,
    the harness's result (its trials and summary: val_bpb and val_loss) and its decision."""
    value = source["val_bpb"]
    journal.add_metrics(experiment.id, metric_records(source, reports))
    journal.update_experiment(
        experiment.id, status="evaluating", outcome="ok", val_bpb=value,
        training_seconds=10.0,
        summary={"val_bpb": value, "val_loss": value * NATS_PER_BIT},
        details={"seed": 42, "trials": [{"seed": 42, "val_bpb": value}]},
    )  # fmt: skip
    return journal.record_decision(experiment.id, decision, decision)


def lineage_journal(path: Path, best_reports) -> tuple[Journal, list]:
    """A journal of the baseline (recorded), a keep trained from it whose script reports its
    losses as ``best_reports`` has it (the recorded narrower model, #4), and an experiment
    made from that keep, still to train."""
    journal = Journal.open(path)
    run = journal.create_run("t", "cockpit/t", "0" * 40, "autonomous", "builtin", {}, "fp")
    made = []
    for number in (0, 1, 2):
        parent = f"c{number - 1}" if number else None
        made.append(
            journal.add_experiment(
                run.id, number, parent_commit=parent, commit_sha=f"c{number}", description="x"
            )
        )
    trained(journal, made[0], recorded(None), honest, "keep")
    made[1] = trained(journal, made[1], recorded(4), best_reports, "keep")
    return journal, [run, *made]


@pytest.mark.parametrize("scale", [0.56, 0.1])
def test_a_kept_script_that_scales_its_reports_cannot_get_an_honest_successor_stopped(
    tmp_path: Path, scale: float
) -> None:
    """The kept script reports its loss times a constant (it reads as a units conversion):
    its curve, taken at its word, has every honest successor trailing by far. The harness
    measured what the kept script's model is worth, and the engine's watch over the honest
    successor (the recorded script with fewer blocks, #1, level with the keep at the end;
    early abort on, from 30 % of the budget at a 2 % margin) lets it train to the end, as it
    does when the kept script reports honestly; and so does the replay of the run."""
    engine = EngineSettings(early_abort=True, early_abort_after=0.3, early_abort_margin=0.02)
    successor = metric_records(recorded(1))
    for reports in (honest, lambda step, loss: loss * scale):
        journal, (run, *_, made) = lineage_journal(tmp_path / f"{reports(1, 1.0)}.db", reports)
        with journal:
            watch = early_abort_watch(journal, engine, run, made)
            assert watch is not None
            for record in successor:
                watch.add(record)
                verdict = watch.check()
                assert verdict is None, verdict.describe()
            trained(journal, made, recorded(1), honest, "discard")  # level: within the noise
            results, left_out = replay(journal, run.id, after=0.3, floor=0.02)
        assert left_out == 0 and [r.number for r in results] == [1, 2]
        assert results[1].stopped_at is None


def measured(number: int | None, reports=honest, label: str = "the best run") -> Measured:
    """A recorded training's curve as its script reports it, with the loss the harness
    measured for it (nats per token)."""
    source = recorded(number)
    return Measured(trace(metric_records(source, reports)), source["val_bpb"] * NATS_PER_BIT, label)


BASELINE = measured(None, label="the baseline #0")
NO_WORSE_THAN_THE_KEEP = (1, 7)  # recorded runs that ended level with #4 or better


def clear_loser(number: int) -> Trace:
    """A recorded run with every loss 15 % higher: clearly losing all along."""
    return trace(metric_records(recorded(number), lambda step, loss: loss * 1.15))


@pytest.mark.parametrize("scale", [0.56, 0.1])
def test_a_best_whose_reports_are_scaled_is_held_to_the_loss_the_harness_measured(
    scale: float,
) -> None:
    """Taken at its word, the scaled best stops its honest successors at the first
    checkpoint. Held to its measured loss, its curve is scaled back to where the honest
    one stands (to within the spread of the ratio among the runs it is set against), and it
    stops what the honest best stops: no honest successor, every clear loser."""
    margin = calibrate([], after=0.3, floor=0.02)
    truthful = curves.reference(measured(4), [BASELINE])
    scaled = curves.reference(measured(4, lambda step, loss: loss * scale), [BASELINE])
    assert truthful is not None and scaled is not None
    assert scaled.best.scale == pytest.approx(truthful.best.scale / scale)
    assert truthful.best.scale >= 1.0  # never stricter than its reports
    for number in NO_WORSE_THAN_THE_KEEP:
        successor = trace(metric_records(recorded(number)))
        at_its_word = first_verdict(
            successor, measured(4, lambda step, loss: loss * scale).trace, 0.3, margin
        )
        assert at_its_word is not None and at_its_word.progress == pytest.approx(0.3)
        for against in (truthful, scaled):
            verdict = first_verdict(successor, against, 0.3, margin)
            assert verdict is None, verdict.describe()
            assert first_verdict(clear_loser(number), against, 0.3, margin) is not None


def test_reports_scaled_up_are_taken_at_their_word_the_lenient_way() -> None:
    """A best that reports its loss higher than it is only makes its successors' reference
    more lenient; it is never scaled down."""
    inflated = curves.reference(measured(4, lambda step, loss: loss * 1.5), [BASELINE])
    assert inflated is not None and inflated.best.scale == 1.0
    margin = calibrate([], after=0.3, floor=0.02)
    assert first_verdict(trace(metric_records(recorded(1))), inflated, 0.3, margin) is None


def test_a_best_that_reports_low_early_and_honest_late_is_held_to_the_baselines_curve() -> None:
    """Its last reports agree with its measured loss, so no scale undoes what it said before:
    its early losses, at 0.56 of the truth, would stop every successor. Its reference also
    holds the baseline's curve carried to the loss the best was measured to end with, and a
    run is stopped only when it trails every curve: the honest successors train on, a clear
    loser is still stopped, and the verdict names the curve it was decided against."""
    margin = calibrate([], after=0.3, floor=0.02)
    planned = recorded(4)["planned_steps"]
    early_low = curves.reference(
        measured(4, lambda step, loss: loss * (0.56 if step < planned / 2 else 1.0)), [BASELINE]
    )
    assert early_low is not None and early_low.best.scale < 1.1  # its end agrees
    for number in NO_WORSE_THAN_THE_KEEP:
        successor = trace(metric_records(recorded(number)))
        verdict = first_verdict(successor, early_low, 0.3, margin)
        assert verdict is None, verdict.describe()
        stopped = first_verdict(clear_loser(number), early_low, 0.3, margin)
        assert stopped is not None and stopped.comparison.against == "the baseline #0"
        assert stopped.comparison.carried
        assert "carried to the loss the harness measured at the best run's end" in (
            stopped.describe()
        )
        assert stopped.evidence()["reference"] == "the baseline #0"


def test_nothing_is_compared_with_a_curve_the_harness_did_not_measure() -> None:
    """A best without a measured loss (a script-mode command's figures are its own) is no
    reference: nothing is stopped against it. Nor is a curve too short to tell its end."""
    assert curves.reference(Measured(measured(4).trace, None)) is None
    assert report_ratio(Measured(Trace(()), 2.0)) is None


def test_the_measured_loss_is_in_the_units_of_a_reported_training_loss(tmp_path: Path) -> None:
    """The trials record val_bpb; the summary's val_loss (mean nats per token, as a script's
    cross-entropy) over its val_bpb converts it. With two trainings of a script, the
    measurement is the one of the points' seed, and script mode measures nothing."""
    with Journal.open(tmp_path / "journal.db") as journal:
        run = journal.create_run("t", "cockpit/t", "0" * 40, "autonomous", "builtin", {}, "fp")
        experiment = journal.add_experiment(run.id, 0, commit_sha="c0", description="#0")
        experiment = journal.update_experiment(
            experiment.id,
            summary={"val_bpb": 3.1, "val_loss": 3.1 * 0.8},  # the summary of seed 43's run
            details={"trials": [{"seed": 42, "val_bpb": 3.0}, {"seed": 43, "val_bpb": 3.1}]},
        )
        assert measured_loss(experiment, 42) == pytest.approx(3.0 * 0.8)
        assert measured_loss(experiment, 44) is None
        assert measured_loss(experiment, 42, kind="cuda") is None  # not measured there
        points = [{**record, "seed": 43} for record in metric_records(recorded(None))]
        points += metric_records(recorded(None))  # seed 42's training came later
        assert measured_trace(experiment, points, "x").loss == pytest.approx(3.1 * 0.8)
        scripted = journal.update_experiment(
            experiment.id, summary={"val_bpb": 3.0, "val_loss": 2.0, "self_reported": True}
        )
        assert measured_loss(scripted, 42) is None
