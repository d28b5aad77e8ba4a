"""`cockpit verify`: the run's best trained again on fresh seeds, recorded, and shown where
people read the figures."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import pytest

from agent.builtin import BuiltinProposer
from cockpit.bench.ui_bench import build_workspace
from cockpit.cli import main
from cockpit.config import load_settings
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.engine.verification import run_settings, verify_best
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal
from cockpit.store.trials import trained_plan
from cockpit.store.verification import FIRST_SEED, Verification, fresh_seeds, latest_verification
from cockpit.ui.app import create_app
from cockpit.ui.status_line import StatusLine
from cockpit.views.readmodel import journal_file
from tests.helpers import PLANNED_RESEARCH, cockpit, experiments, make_workspace
from trainer.pacing import SAFETY

RECORD = Verification(
    experiment=3,
    commit="a" * 40,
    seeds=(1000, 1001, 1002),
    values=(2.40, 2.42, None),
    ledger_best=2.30,
    ledger_runs=2,
    baseline=2.70,
    spread=0.02,
)


def test_fresh_seeds_skip_every_seed_the_run_used() -> None:
    assert fresh_seeds(set(), 2) == [FIRST_SEED, FIRST_SEED + 1]
    assert fresh_seeds({42, 43, 1000, 1002}, 3) == [1001, 1003, 1004]


def test_the_verified_figures_and_when_they_differ_from_the_ledger_by_more_than_the_noise() -> None:
    assert RECORD.mean == pytest.approx(2.41)  # the training that gave none is left out
    assert RECORD.verified_gain == pytest.approx(0.29)
    assert RECORD.ledger_gain == pytest.approx(0.40)
    assert RECORD.optimism == pytest.approx(0.11)
    assert RECORD.error == pytest.approx(0.02 * math.sqrt(1 / 2 + 1 / 2))
    assert RECORD.differs is True
    text = RECORD.describe()
    assert text.startswith("verified best 2.410000 over 2 fresh seeds (1000-1002)")
    assert "gain +0.290000 against the ledger's +0.400000" in text
    assert "the ledger is optimistic by 0.110000, more than the noise explains" in text
    close = Verification(3, "a" * 40, (1000,), (2.31,), 2.30, 2, 2.70, 0.02)
    assert close.differs is False and "within the noise of the ledger's" in close.describe()
    unmeasured = Verification(3, "a" * 40, (1000,), (2.31,), 2.30, 2, 2.70, None)
    assert unmeasured.differs is None
    assert Verification.from_data(RECORD.to_data()) == RECORD
    assert Verification.from_data({"experiment": 1}) is None


def test_the_baseline_trained_beside_the_best_takes_the_machines_drift_out_of_the_gain() -> None:
    """The machine is slower now than during the run: both scripts score 0.10 worse on the
    fresh seeds. Against the ledger's baseline, the best would look 0.10 worse than its keep
    promised; against the baseline trained beside it on the same seeds, what is left is the
    ledger's luck alone."""
    slower = dataclasses.replace(RECORD, baseline_values=(2.81, 2.79, 2.80))
    assert slower.baseline_now == pytest.approx(2.80)
    assert slower.drift == pytest.approx(0.10)
    # Seed by seed, where both gave a val_bpb (the third seed's best gave none).
    assert slower.verified_gain == pytest.approx(((2.81 - 2.40) + (2.79 - 2.42)) / 2)
    assert slower.optimism == pytest.approx(0.40 - 0.39)  # the ledger's gain less the verified
    assert slower.error == pytest.approx(RECORD.error * math.sqrt(2))
    assert slower.differs is False and RECORD.differs is True  # the drift explained it
    text = slower.describe()
    assert "gain +0.390000 against the ledger's +0.400000" in text
    assert "against the baseline trained again on the same seeds, 2.800000: +0.100000" in text
    assert Verification.from_data(slower.to_data()) == slower
    assert slower.to_data()["drift"] == pytest.approx(0.10)
    # No baseline beside it (an older record, or none measured): the ledger's baseline.
    lost = dataclasses.replace(RECORD, baseline_values=(None, None, None))
    assert lost.verified_gain == RECORD.verified_gain and lost.optimism == RECORD.optimism
    assert lost.baseline_now is None and "trained again on the same seeds" not in lost.describe()


def test_a_verification_training_that_ran_short_of_its_plan_is_said_and_counted() -> None:
    """On a machine slower than during the run, a verification training runs out of its
    budget before the steps the keep trained. The record says so; its mean counts it (a rerun
    on a plan cut to fit scored no better where it was measured)."""
    slow = Verification(
        3, "a" * 40, (1000, 1001, 1002), (2.40, 2.60, 2.42), 2.30, 2, 2.70, 0.02,
        steps=(2655, 1843, 2650), planned=(2655, 2655, 2655),
    )  # fmt: skip
    assert slow.short == (False, True, False)  # 2650 of 2655 is its plan, within 2 %
    assert slow.mean == pytest.approx(2.473333, abs=1e-6)  # what was measured
    assert "ran short (seed 1001 trained 1843 of 2655 planned steps)" in slow.describe()
    assert Verification.from_data(slow.to_data()) == slow
    assert slow.to_data()["short"] == [False, True, False]
    # A script that plans no steps, or a record from before steps were kept: nothing said.
    assert RECORD.short == (False, False, False)
    assert "ran short" not in RECORD.describe()
    unplanned = dataclasses.replace(slow, planned=(None, None, None))
    assert unplanned.short == (False, False, False)


@pytest.mark.e2e
@pytest.mark.usefixtures("no_git_identity")
def test_cockpit_verify_trains_the_best_on_unused_seeds_and_status_and_report_show_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    planned = tmp_path / "planned_research.py"
    # Its trainings make and share step plans, early enough that a busy host still plans.
    planned.write_text(PLANNED_RESEARCH.replace("step == 20", "step == 5"))
    make_workspace(root, planned)
    ran = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = experiments(root)
    used = {trial["seed"] for e in records for trial in (e.details or {}).get("trials", [])}
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.latest_run()
    assert run is not None and run.best_val_bpb is not None

    # The run's plan file no longer holds the plans its scripts trained on (a plan dropped as
    # stale, or changed since): each verification still trains the plan the best's trials
    # recorded, given to its harness, and leaves the run's plans as they were.
    best = next(e for e in records if e.commit_sha == run.best_commit)
    recorded = trained_plan(best)
    assert recorded is not None, best.details
    plans = root / ".cockpit" / "runs" / run.tag / "pacing.json"
    other = {
        key: {**plan, "steps": recorded * 3} for key, plan in json.loads(plans.read_text()).items()
    }
    plans.write_text(json.dumps(other))
    result = cockpit("verify", "--workspace", str(root), "--seeds", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified best" in result.stdout, result.stdout
    assert json.loads(plans.read_text()) == other
    for seed in (1000, 1001):
        trained = json.loads(
            (root / ".cockpit" / "verify" / run.tag / str(seed) / "summary.json").read_text()
        )
        assert trained.get("planned_steps") == recorded == trained.get("plan_given"), trained

    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["verify_seeds"] == [1000, 1001] and not set(status["verify_seeds"]) & used
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        (event,) = journal.events(run.id, kinds=["verify"])
    assert event.data["planned"] == [recorded, recorded]
    values = event.data["values"]
    assert len(values) == 2 and all(isinstance(v, float) for v in values)
    assert status["verified_best"] == pytest.approx(sum(values) / 2)
    # The baseline trained beside the best on each seed (by default), on the plan its
    # trainings recorded; the verified gain is taken seed by seed (none where the baseline
    # is the best: its script is not trained twice).
    beside = event.data.get("baseline_values") or []
    if run.best_commit == records[0].commit_sha:
        assert beside == [] and status["verified_gain"] == pytest.approx(
            run.baseline_val_bpb - sum(values) / 2
        )
    else:
        for seed, value in zip((1000, 1001), beside, strict=True):
            trained = json.loads(
                (
                    root / ".cockpit" / "verify" / run.tag / "baseline" / str(seed) / "summary.json"
                ).read_text()
            )
            assert trained["val_bpb"] == value and trained["plan_given"] == trained_plan(records[0])
        assert status["verified_gain"] == pytest.approx(sum(beside) / 2 - sum(values) / 2)
    assert event.data["experiment"] == best.number and event.data["commit"] == run.best_commit
    # Each training left its files, under the run's verification folder, with its seed.
    for seed in (1000, 1001):
        summary = json.loads(
            (root / ".cockpit" / "verify" / run.tag / str(seed) / "summary.json").read_text()
        )
        assert summary["seed"] == seed and summary["val_bpb"] in values
    text = cockpit("status", "--workspace", str(root)).stdout
    assert f"#{best.number} verified best" in text, text
    report = json.loads(cockpit("report", "--workspace", str(root), "--json").stdout)
    assert report["verify_seeds"] == [1000, 1001]
    assert report["verified_best"] == pytest.approx(status["verified_best"])
    assert cockpit("report", "--workspace", str(root)).returncode == 0
    markdown = (root / "report" / "report.md").read_text()
    assert "| Verified | #" in markdown and "fresh seeds (1000, 1001)" in markdown

    # The experiment's script as the best, with the baseline trained beside it on the same
    # seed, and a rerun allowed; both recorded plans no training can finish in its budget, as
    # on a host slower than during the run. Each verification runs short of its plan and is
    # trained again on its seed, on the plan its harness cut to what fitted (in a folder and
    # a copy of the plans of its own), and that one is recorded; the verified gain is taken
    # between the two reruns.
    experiment = records[1]
    assert experiment.commit_sha is not None and experiment.val_bpb is not None
    with Journal.open(root / ".cockpit" / "journal.db") as journal:
        for record in (records[0], experiment):
            details = dict(record.details or {})
            details["trials"] = [{**t, "planned": 10**7} for t in details.get("trials", [])]
            journal.update_experiment(record.id, details=details)
    as_best = dataclasses.replace(
        run, best_commit=experiment.commit_sha, best_val_bpb=experiment.val_bpb
    )
    settings = run_settings(run)
    engine = settings.engine.model_copy(update={"short_reruns": 1, "verify_baseline": True})
    said: list[str] = []
    with Journal.open(root / ".cockpit" / "journal.db") as journal:
        latest = verify_best(
            Workspace.open(root),
            journal,
            as_best,
            settings.model_copy(update={"engine": engine}),
            1,
            say=said.append,
        )
    assert (
        sum("short of its plan: trained again on the plan cut to what fitted" in s for s in said)
        == 2
    ), said
    assert any(s.startswith("  the baseline, seed 1000: val_bpb") for s in said), said
    folder = root / ".cockpit" / "verify" / run.tag
    cut = json.loads((folder / "1000" / "summary.json").read_text())
    rerun = json.loads((folder / "1000-2" / "summary.json").read_text())
    assert cut["planned_steps"] == 10**7 and rerun["seed"] == 1000
    assert rerun["planned_steps"] == int(cut["num_steps"] * SAFETY), (cut, rerun)
    assert json.loads(plans.read_text()) == other
    assert latest is not None and latest.experiment == 1
    assert latest.planned == (rerun["planned_steps"],)
    assert latest.values == (rerun["val_bpb"],) and latest.steps == (rerun["num_steps"],)
    beside = json.loads((folder / "baseline" / "1000-2" / "summary.json").read_text())
    assert beside["seed"] == 1000 and latest.baseline_values == (beside["val_bpb"],)
    assert latest.verified_gain == pytest.approx(beside["val_bpb"] - rerun["val_bpb"])
    assert latest.drift == pytest.approx(beside["val_bpb"] - run.baseline_val_bpb)
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["verified_gain"] == pytest.approx(latest.verified_gain)
    assert status["verified_baseline"] == pytest.approx(beside["val_bpb"])


@pytest.mark.usefixtures("no_git_identity")
def test_verify_without_a_run_or_with_the_engine_running_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cockpit.bench.ui_bench import release_engine, stand_in_engine

    root = tmp_path / "ws"
    Workspace.init(root)
    assert main(["verify", "--workspace", str(root)]) == 1
    assert "no run yet" in capsys.readouterr().err
    stand_in_engine(root)
    try:
        assert main(["verify", "--workspace", str(root)]) == 1
        assert "the engine is running" in capsys.readouterr().err
    finally:
        release_engine(root)


@pytest.mark.e2e
@pytest.mark.usefixtures("no_git_identity")
def test_a_finished_run_verifies_its_best_and_the_last_notice_says_what_it_showed(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    workspace = make_workspace(root)
    notices = tmp_path / "notices.txt"
    settings = load_settings(
        root,
        overrides={
            "engine.verify_seeds": 2,
            "notify.command": f'echo "$COCKPIT_NOTIFY_KIND: $COCKPIT_NOTIFY_BODY" >> {notices}',
            "notify.min_interval_seconds": 0.0,
        },
    )
    proposer = BuiltinProposer(seed=0)
    output = io.StringIO()
    engine = Engine(
        workspace, settings, proposer, gpu_source=ScriptedGpuSource.no_gpu(), out=output
    )
    assert engine.run(EngineOptions(tag="night", experiments=1)) == 0
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.run_by_tag("night")
        assert run is not None
        verified = latest_verification(journal, run.id)
        assert journal.engine_state().phase == "stopped"
    assert verified is not None and verified.seeds == (1000, 1001)
    assert verified.ledger_best == run.best_val_bpb and len(verified.measured) == 2
    assert f"#{verified.experiment} verified best" in output.getvalue()
    stopped = [line for line in notices.read_text().splitlines() if "engine_stopped" in line]
    assert len(stopped) == 1, notices.read_text()  # one notice, once it is verified
    body = notices.read_text().split("engine_stopped: ", 1)[1]
    assert "run finished" in body and "verified best" in body, body


@pytest.mark.anyio
@pytest.mark.usefixtures("no_git_identity")
async def test_the_status_line_shows_the_verified_gain_beside_the_ledgers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    root = build_workspace(tmp_path / "home" / "ws", experiments=6)
    with Journal.open(journal_file(root)) as journal:
        run = journal.latest_run()
        assert run is not None and run.best_val_bpb is not None and run.best_commit
        assert run.baseline_val_bpb is not None
        record = Verification(
            experiment=1,
            commit=run.best_commit,
            seeds=(1000, 1001),
            values=(run.best_val_bpb + 0.2, run.best_val_bpb + 0.2),
            ledger_best=run.best_val_bpb,
            ledger_runs=2,
            baseline=run.baseline_val_bpb,
            spread=0.01,
        )
        journal.add_event("verify", record.describe(), run_id=run.id, data=record.to_data())
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        rendered = app.query_one(StatusLine).render()
        text = str(getattr(rendered, "plain", rendered))
    gain = run.baseline_val_bpb - (run.best_val_bpb + 0.2)
    assert f"verified {gain:+.4f}" in text, text
