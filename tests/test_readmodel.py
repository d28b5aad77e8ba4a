"""The cockpit's read model on real journals: what a poll finds, and that later polls read
only what changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cockpit.bench.ui_bench import (
    BASELINE_BPB,
    BUDGET_SECONDS,
    MODEL,
    fill_journal,
    release_engine,
    stand_in_engine,
)
from cockpit.store.journal import Journal
from cockpit.store.lock import _flock_listed, engine_lock_held
from cockpit.store.samples import GpuSnapshot, MonitorSample
from cockpit.store.state import EngineState
from cockpit.store.trials import (
    current_trial_start,
    latest_curve,
    paired_curve,
    paired_trace,
    paired_training,
    split_trials,
)
from cockpit.views.poller import JournalPoller
from cockpit.views.readmodel import (
    LedgerRow,
    StatusInfo,
    display_path,
    journal_file,
    read_status,
    with_deltas,
)


def open_journal(workspace: Path) -> Journal:
    return Journal.open(journal_file(workspace))


def row(number: int, val_bpb: float | None, decision: str | None, **fields: object) -> LedgerRow:
    values: dict[str, object] = {
        "id": number + 1,
        "number": number,
        "commit": f"{number:07d}",
        "val_bpb": val_bpb,
        "memory_mb": None,
        "status": decision or "training",
        "decision": decision,
        "proposer": "llm",
        "model": None,
        "description": f"change {number}",
        "decision_reason": None,
    }
    values.update(fields)
    return LedgerRow(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# pure functions


def test_delta_is_measured_against_the_best_at_the_time() -> None:
    rows = with_deltas(
        [
            row(2, 3.30, "discard"),
            row(0, 3.40, "keep"),
            row(1, 3.35, "keep"),
            row(3, None, "crash"),
            row(4, 3.32, "discard", best_before=3.36),
        ]
    )
    assert [r.number for r in rows] == [0, 1, 2, 3, 4]
    deltas = {r.number: r.delta_vs_best for r in rows}
    assert deltas[0] is None  # the baseline is the reference, not compared
    assert deltas[1] == pytest.approx(-0.05)  # against the baseline
    assert deltas[2] == pytest.approx(-0.05)  # against #1, the best when #2 was decided
    assert deltas[3] is None  # a crash has no value
    assert deltas[4] == pytest.approx(-0.04)  # what the engine recorded wins


def test_trials_split_where_the_clock_starts_again() -> None:
    times = [0.5, 1.0, 1.5, 0.4, 0.9, 0.3]
    assert split_trials(times) == [0, 3, 5]
    assert current_trial_start(times, None) == 5
    assert split_trials([]) == []
    # A training that has run 0.2 s cannot have reported t = 15: its points have not come.
    assert current_trial_start([5.0, 10.0, 15.0], elapsed=0.2) == 3
    assert current_trial_start([5.0, 10.0, 15.0], elapsed=16.0) == 0


def test_latest_curve_keeps_the_last_training_and_drops_points_without_a_loss() -> None:
    metrics: list[dict[str, float | None]] = [
        {"t": 1.0, "progress": 0.1, "loss": 5.0},
        {"t": 2.0, "progress": 0.2, "loss": 4.0},
        {"t": 0.5, "progress": 0.05, "loss": 5.5},
        {"t": 1.5, "progress": 0.15, "loss": None},
        {"t": 2.5, "progress": 0.25, "loss": 3.5},
    ]
    assert latest_curve(metrics) == ((0.05, 5.5), (0.25, 3.5))


def test_paired_curve_is_the_latest_training_with_the_first_trainings_seed() -> None:
    """A baseline trained with seeds 42 and 43 (the noise floor) pairs with experiments by
    its seed-42 curve, the one on the same batches; a training cut short and run again with
    the same seed gives way to the rerun."""
    metrics: list[dict[str, float | None]] = [
        {"t": 1.0, "progress": 0.1, "loss": 5.0, "seed": 42},  # cut short
        {"t": 0.5, "progress": 0.05, "loss": 5.2, "seed": 42},  # its rerun
        {"t": 1.5, "progress": 0.15, "loss": 4.2, "seed": 42},
        {"t": 0.4, "progress": 0.04, "loss": 5.9, "seed": 43},
        {"t": 1.4, "progress": 0.14, "loss": 3.9, "seed": 43},
    ]
    assert paired_curve(metrics) == ((0.05, 5.2), (0.15, 4.2))
    assert latest_curve(metrics) == ((0.04, 5.9), (0.14, 3.9))
    unseeded = [{k: v for k, v in m.items() if k != "seed"} for m in metrics]
    assert paired_curve(unseeded) == latest_curve(unseeded)  # an older journal
    # Early abort places the same training on its step plan, where the harness recorded one.
    assert paired_training(metrics) == metrics[1:3]
    planned = [{**m, "step": 10 * (i + 1), "planned_steps": 40} for i, m in enumerate(metrics)]
    assert paired_trace(planned).points == ((0.5, 5.2), (0.75, 4.2))
    assert paired_trace(planned).by_step == {20: 5.2, 30: 4.2}


def test_status_reads_the_engine_state_and_the_run(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=3, phase="training", engine_pid=4242)
        state = journal.engine_state()
    status = read_status("~/ws", state, run, running=True)
    assert status.engine_running and status.phase == "training"
    assert status.experiment == 4 and status.time_left == BUDGET_SECONDS / 2
    assert status.budget_seconds == BUDGET_SECONDS
    assert status.branch == "cockpit/nov26" and status.mode == "supervised"
    assert status.proposer == "llm" and status.model == MODEL and status.agent_state == "ready"
    assert status.baseline_val_bpb == BASELINE_BPB
    assert status.gain == pytest.approx(BASELINE_BPB - (run.best_val_bpb or 0))
    stopped = read_status("~/ws", state, run, running=False)
    assert not stopped.engine_running and stopped.phase == "stopped"
    assert stopped.time_left is None and stopped.awaiting_approval is None


def test_status_reads_the_hybrids_split_while_the_hybrid_proposes(tmp_path: Path) -> None:
    """The split is the journal's ``search_split`` as the hybrid wrote it; one that is not a
    mapping of names to numbers is left out, and so is the split of a hybrid not proposing
    now (a stand-in proposes, or the run is not the hybrid's)."""
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=3, phase="training", engine_pid=4242)
        journal.set_state(proposer="hybrid", search_split={"llm": 0.35, "optuna": 0.65})
        written = journal.all_state()

    def status_with(**values: object) -> StatusInfo:
        state = EngineState.from_state({**written, **values})
        return read_status("~/ws", state, run, running=True)

    status = status_with()
    assert status.proposer == "hybrid" and status.search_split == {"llm": 0.35, "optuna": 0.65}
    whole = status_with(search_split={"llm": 1, "optuna": 0})
    assert whole.search_split == {"llm": 1.0, "optuna": 0.0}  # whole numbers are shares too
    for bad in (None, {}, [0.35, 0.65], "llm 35%", {"llm": "35%"}, {"llm": True}, {1: 0.5}):
        assert status_with(search_split=bad).search_split is None, bad
    for proposer in ("optuna", "llm", "builtin"):
        other = status_with(proposer=proposer)
        assert other.proposer == proposer and other.search_split is None


def test_display_path_shortens_the_home_folder(tmp_path: Path) -> None:
    assert display_path(tmp_path / "ws", home=tmp_path) == "~/ws"
    assert display_path(Path("/elsewhere/ws"), home=tmp_path) == "/elsewhere/ws"


def test_engine_lock_probe_sees_a_held_lock_without_touching_it(tmp_path: Path) -> None:
    import fcntl

    assert not engine_lock_held(tmp_path)
    (tmp_path / ".cockpit").mkdir()
    lock = tmp_path / ".cockpit" / "engine.lock"
    with open(lock, "a+") as handle:
        assert not engine_lock_held(tmp_path)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert engine_lock_held(tmp_path)
        # Read from the kernel's table, not by trying the lock: an engine starting while a
        # screen asks never finds its lock taken by the screen.
        assert _flock_listed(os.stat(lock)) is True
        fcntl.flock(handle, fcntl.LOCK_UN)
        assert _flock_listed(os.stat(lock)) is False
    assert not engine_lock_held(tmp_path)


def test_running_is_the_lock_held_whatever_the_state_says(tmp_path: Path) -> None:
    """One definition for the screen and `cockpit status`: the engine's lock. A pid in the
    state is not enough (a killed engine leaves it behind, and the system reuses pids)."""
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=2, phase="training", engine_pid=os.getpid())
        state = journal.engine_state()
    assert state.pid == os.getpid() and state.phase == "training"
    assert not engine_lock_held(tmp_path)  # its pid is alive, yet no lock is held
    status = JournalPoller(tmp_path).poll().status
    assert status is not None and not status.engine_running and status.phase == "stopped"
    stand_in_engine(tmp_path)
    try:
        assert engine_lock_held(tmp_path)
        status = JournalPoller(tmp_path).poll().status
        assert status is not None and status.engine_running and status.phase == "training"
    finally:
        release_engine(tmp_path)
    assert not engine_lock_held(tmp_path)


# ---------------------------------------------------------------------------------------------
# the poller


def test_a_missing_journal_is_a_state_and_appears_when_written(tmp_path: Path) -> None:
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    poller = JournalPoller(tmp_path, workspace_label="~/ws")
    first = poller.poll()
    assert first.reset and first.status is not None and not first.status.journal_exists
    assert poller.poll().empty
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=2, phase="stopped")
    found = poller.poll()
    assert found.reset and found.status is not None and found.status.journal_exists
    assert [r.number for r in found.ledger] == [0, 1, 2]
    poller.close()


def test_first_poll_reads_everything_the_screen_shows(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=6, phase="training", engine_pid=99, gpus=2)
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    poller = JournalPoller(tmp_path, workspace_label="~/ws")
    delta = poller.poll()
    assert delta.reset
    assert delta.status is not None and delta.status.phase == "training"
    assert sorted(r.number for r in delta.ledger) == list(range(8))
    rows = {r.number: r for r in delta.ledger}
    assert rows[7].status == "training" and rows[7].val_bpb is None
    assert all(rows[n].delta_vs_best is not None for n in range(1, 7) if rows[n].val_bpb)
    assert {e.kind for e in delta.events} >= {"decision", "agent", "note"}
    assert delta.current is not None and delta.current.number == 7
    assert "LEARNING_RATE" in delta.current.diff and delta.current.hypothesis
    assert delta.loss is not None and delta.loss.live_number == 7
    assert len(delta.loss.live) == 30 and delta.loss.live[-1][0] == pytest.approx(0.5)
    best = [
        r.number for r in delta.ledger if r.commit and (run.best_commit or "").startswith(r.commit)
    ]
    assert delta.loss.best_number == best[-1] and len(delta.loss.best) == 60
    assert delta.gpu is not None and len(delta.gpu.samples) == 40
    latest = delta.gpu.latest
    assert latest is not None and len(latest.gpu.gpus) == 2 and latest.process is not None
    poller.close()


def test_later_polls_read_only_what_changed(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=4, phase="training", engine_pid=99)
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    poller = JournalPoller(tmp_path)
    poller.poll()
    assert poller.poll().empty

    with open_journal(tmp_path) as journal:
        training = journal.experiment(run.id, 5)
        assert training is not None
        journal.add_metrics(training.id, [{"t": 200.0, "progress": 0.67, "step": 900, "loss": 2.3}])
        journal.add_sample(run.id, MonitorSample(1.0, GpuSnapshot.no_gpu(), None).to_dict())
        journal.set_state(time_left=99.0)
    delta = poller.poll()
    assert delta.status is not None and delta.status.time_left == 99.0
    assert delta.loss is not None and delta.loss.live[-1] == (0.67, 2.3)
    assert delta.gpu is not None and delta.gpu.latest is not None
    assert delta.gpu.latest.gpu.state == "no_gpu"
    assert delta.ledger == () and delta.events == ()

    with open_journal(tmp_path) as journal:
        journal.update_experiment(training.id, status="evaluating", val_bpb=3.2, outcome="ok")
        journal.record_decision(training.id, "keep", "better", run_update={"best_val_bpb": 3.2})
    delta = poller.poll()
    assert [(r.number, r.status, r.val_bpb) for r in delta.ledger] == [(5, "keep", 3.2)]
    assert [e.kind for e in delta.events] == ["decision"]
    assert delta.status is not None and delta.status.best_val_bpb == 3.2
    poller.close()


def test_an_override_of_an_old_decision_reaches_the_ledger(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=5, phase="stopped")
    poller = JournalPoller(tmp_path)
    rows = {r.number: r for r in poller.poll().ledger}
    discarded = next(n for n, r in sorted(rows.items()) if r.decision == "discard")
    with open_journal(tmp_path) as journal:
        experiment = journal.experiment(run.id, discarded)
        assert experiment is not None
        journal.record_decision(experiment.id, "keep", "kept by the researcher (override)")
    changed = {r.number: r for r in poller.poll().ledger}
    assert changed[discarded].decision == "keep"
    assert changed[discarded].decision_reason == "kept by the researcher (override)"
    poller.close()


def test_a_rerun_shows_only_its_own_loss_points(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=1, phase="stopped", engine_pid=99)
        number = journal.next_number(run.id)
        experiment = journal.add_experiment(
            run.id, number, commit_sha="ab" * 20, status="training", log_path="/runs/a.log"
        )
        journal.add_metrics(
            experiment.id,
            [{"t": t, "progress": t / 10, "loss": 5.0 - t / 10} for t in range(1, 11)],
        )
        journal.set_state(phase="training", experiment=number, time_left=0.0)
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    poller = JournalPoller(tmp_path)
    first = poller.poll()
    assert first.loss is not None and len(first.loss.live) == 10

    with open_journal(tmp_path) as journal:
        # The engine trains the same experiment again (another seed): a new log, t from 0.
        journal.update_experiment(experiment.id, log_path="/runs/a-seed1.log")
        journal.set_state(time_left=BUDGET_SECONDS)
    again = poller.poll()
    assert again.loss is not None and again.loss.live == ()

    with open_journal(tmp_path) as journal:
        journal.add_metrics(experiment.id, [{"t": 1.0, "progress": 0.1, "loss": 4.5}])
    one = poller.poll()
    assert one.loss is not None and one.loss.live == ((0.1, 4.5),)
    with open_journal(tmp_path) as journal:
        journal.add_metrics(experiment.id, [{"t": 2.0, "progress": 0.2, "loss": 4.2}])
    two = poller.poll()
    assert two.loss is not None and two.loss.live == ((0.1, 4.5), (0.2, 4.2))
    poller.close()


def test_a_new_run_resets_what_the_screen_shows(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=3, phase="stopped")
    poller = JournalPoller(tmp_path)
    assert len(poller.poll().ledger) == 4
    with open_journal(tmp_path) as journal:
        run = journal.create_run("dec01", "cockpit/dec01", "f" * 40, "autonomous", "llm", {}, "")
        journal.add_experiment(run.id, 0, description="baseline", status="committed")
    delta = poller.poll()
    assert delta.reset and [r.number for r in delta.ledger] == [0]
    assert delta.status is not None and delta.status.run_tag == "dec01"
    assert delta.status.mode == "autonomous"
    poller.close()


def test_answered_commands_are_reported_once(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=1, phase="stopped")
        command_id = journal.post_command("pause")
    poller = JournalPoller(tmp_path)
    poller.watch_command(command_id)
    assert poller.poll().answered == ()
    with open_journal(tmp_path) as journal:
        journal.finish_command(command_id, "done", "paused after the current step")
    answered = poller.poll().answered
    assert [(c.id, c.status, c.result) for c in answered] == [
        (command_id, "done", "paused after the current step")
    ]
    assert poller.poll().answered == ()
    poller.close()


def test_a_thousand_experiments_load_once_and_idle_polls_find_nothing(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=999, phase="stopped", samples=5)
    poller = JournalPoller(tmp_path)
    first = poller.poll()
    assert len(first.ledger) == 1000
    assert sum(r.decision == "keep" for r in first.ledger) >= 2
    assert all(r.delta_vs_best is not None for r in first.ledger if r.val_bpb and r.number)
    assert all(poller.poll().empty for _ in range(5))
    poller.close()


def test_a_quiet_journal_costs_a_poll_one_pragma_and_a_change_wakes_it(tmp_path: Path) -> None:
    """Wake only on change: while nothing is written and no engine starts or dies, a poll
    asks SQLite one question and reads nothing; a commit by the engine, or its lock taken or
    let go (an engine killed writes nothing), makes the next poll read."""
    with open_journal(tmp_path) as journal:
        run = fill_journal(journal, experiments=30, phase="stopped", samples=5)
    poller = JournalPoller(tmp_path)
    assert len(poller.poll().ledger) == 31
    statements: list[str] = []
    assert poller._journal is not None
    poller._journal._conn.set_trace_callback(statements.append)
    assert all(poller.poll().empty for _ in range(5))
    assert statements == ["PRAGMA data_version"] * 5, statements

    with open_journal(tmp_path) as journal:
        journal.add_event("note", "a note from the researcher", run_id=run.id)
    statements.clear()
    woken = poller.poll()
    assert [line.message for line in woken.events] == ["a note from the researcher"]
    assert len(statements) > 1 and poller.poll().empty

    stand_in_engine(tmp_path)  # an engine takes the lock and starts training
    try:
        with open_journal(tmp_path) as journal:
            journal.set_state(phase="training", pid=os.getpid())
        started = poller.poll().status
        assert started is not None and started.engine_running and started.phase == "training"
        assert poller.poll().empty
    finally:
        release_engine(tmp_path)  # ... and is killed: it writes nothing more
    gone = poller.poll().status
    assert gone is not None and not gone.engine_running and gone.phase == "stopped"
    poller.close()


def test_the_poller_reopens_after_the_journal_goes_away(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        fill_journal(journal, experiments=1, phase="stopped")
    poller = JournalPoller(tmp_path)
    assert poller.poll().ledger
    poller.close()
    for name in os.listdir(tmp_path / ".cockpit"):
        (tmp_path / ".cockpit" / name).unlink()
    gone = poller.poll()
    assert gone.status is not None and not gone.status.journal_exists
    poller.close()


def test_the_detail_shows_every_run_of_a_confirmed_script_and_its_flags(tmp_path: Path) -> None:
    from cockpit.views.readmodel import experiment_detail_without_curve

    with Journal.open(tmp_path / "journal.db") as journal:
        run = journal.create_run("t", "cockpit/t", "0" * 40, "supervised", "llm", {}, "fp")
        experiment = journal.add_experiment(
            run.id,
            1,
            description="wider model",
            details={
                "trials": [{"seed": 42, "val_bpb": 2.401}, {"seed": 43, "val_bpb": 2.405}],
                "flags": [{"kind": "sleep", "line": 7, "message": "sleeps"}],
            },
        )
        detail = experiment_detail_without_curve(experiment)
    assert detail.trials == ((42, 2.401), (43, 2.405))
    assert detail.flags == ("line 7: [sleep] sleeps",)
