"""The journal on real SQLite files: its schema and WAL mode, round trips of every record,
the guards (duplicate numbers, unknown fields, unknown commands), the one-transaction
decision, other processes posting commands and reading during a write, a kill -9 in the
middle of the loop, and the exact, atomic results.tsv."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.engine.results_tsv import export_results_tsv
from cockpit.store.journal import Journal
from cockpit.store.records import COMMAND_KINDS, JournalError, Run
from cockpit.store.schema import SCHEMA_VERSION
from tests.conftest import REPO


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ws" / ".cockpit" / "journal.db"


@pytest.fixture
def journal(path: Path) -> Any:
    with Journal.open(path) as opened:
        yield opened


def new_run(journal: Journal, tag: str = "mar5", **kwargs: Any) -> Run:
    return journal.create_run(
        tag, f"cockpit/{tag}", "0" * 40, "autonomous", "builtin", {"budget": 300}, "fp1", **kwargs
    )


def python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter that can import the cockpit; fail on a non-zero exit."""
    result = python_process(code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = result.communicate(timeout=timeout)
    assert result.returncode == 0, err
    return subprocess.CompletedProcess(result.args, result.returncode, out, err)


def python_process(code: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env, text=True, **popen
    )


def wait_until(condition: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- schema -----------------------------------------------------------------------------------


def test_schema_is_created_once_in_wal_mode(path: Path) -> None:
    with Journal.open(path) as journal:
        run = new_run(journal)
    assert path.is_file()
    with Journal.open(path) as journal:  # a second open keeps what is there
        assert journal.run_by_tag("mar5") == run
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        raw.close()
    assert {"runs", "experiments", "events", "metrics", "samples", "commands", "state"} <= tables


@pytest.mark.e2e
def test_processes_opening_a_new_journal_at_once_all_succeed(path: Path) -> None:
    code = """
        import sys
        from pathlib import Path
        from cockpit.store.journal import Journal
        with Journal.open(Path(sys.argv[1])) as journal:
            journal.post_command("note", {"who": sys.argv[2]})
    """
    processes = [python_process(code, str(path), str(n)) for n in range(3)]
    assert [p.wait(timeout=30) for p in processes] == [0, 0, 0]
    with Journal.open(path) as journal:
        assert sorted(c.payload["who"] for c in journal.pending_commands()) == ["0", "1", "2"]


def test_a_journal_from_a_newer_cockpit_is_refused(path: Path) -> None:
    Journal.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    for readonly in (False, True):
        with pytest.raises(JournalError, match=r"newer.*upgrade research-cockpit"):
            Journal.open(path, readonly=readonly)


def test_a_file_that_is_not_a_database_is_a_journal_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite at all, just some bytes " * 100)
    with pytest.raises(JournalError, match="not a usable journal"):
        Journal.open(path)


def test_read_only_needs_a_journal_and_refuses_writes(path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(path, readonly=True)
    assert not path.exists()
    with Journal.open(path) as journal:
        new_run(journal)
    with Journal.open(path, readonly=True) as reader:
        assert reader.readonly
        latest = reader.latest_run()
        assert latest is not None and latest.tag == "mar5"
        with pytest.raises(JournalError, match="read-only"):
            reader.post_command("pause")


# -- runs -------------------------------------------------------------------------------------


def test_run_round_trip_and_update(journal: Journal) -> None:
    assert journal.latest_run() is None
    first = new_run(journal, "first", target=20)
    second = new_run(journal, "second")
    assert first.status == "active" and first.config == {"budget": 300} and first.target == 20
    assert first.branch == "cockpit/first" and first.corpus_fingerprint == "fp1"
    assert first.best_val_bpb is None and first.baseline_val_bpb is None
    assert journal.run(first.id) == journal.run_by_tag("first") == first
    assert journal.latest_run() == second
    assert journal.runs() == [first, second]
    assert journal.run_by_tag("nope") is None
    updated = journal.update_run(
        first.id, status="finished", best_val_bpb=0.99, best_commit="abc", config={"x": [1, 2]}
    )
    assert updated.status == "finished" and updated.best_val_bpb == 0.99
    assert updated.best_commit == "abc" and updated.config == {"x": [1, 2]}
    assert journal.run(first.id) == updated
    with pytest.raises(JournalError, match="no run"):
        journal.update_run(999, status="stopped")


def test_duplicate_tag_is_a_journal_error_that_suggests_a_free_one(journal: Journal) -> None:
    new_run(journal, "mar5")
    with pytest.raises(JournalError, match="'mar5-2'"):
        new_run(journal, "mar5")


def test_unique_tag(journal: Journal) -> None:
    assert journal.unique_tag("mar5") == "mar5"
    new_run(journal, "mar5")
    assert journal.unique_tag("mar5") == "mar5-2"
    new_run(journal, "mar5-2")
    new_run(journal, "mar5-4")
    assert journal.unique_tag("mar5") == "mar5-3"
    new_run(journal, "mar5-3")
    assert journal.unique_tag("mar5") == "mar5-5"
    new_run(journal, "a_b")  # LIKE wildcards in the base match only themselves
    assert journal.unique_tag("a%b") == "a%b"
    assert journal.unique_tag("a_b") == "a_b-2"


def test_whitelists_and_choices_reject_unknown_values(journal: Journal) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(run.id, 0)
    with pytest.raises(ValueError, match="cannot set tag"):
        journal.update_run(run.id, tag="other")
    with pytest.raises(ValueError, match="cannot set colour"):
        journal.update_run(run.id, colour="blue")
    with pytest.raises(ValueError, match="run status must be one of"):
        journal.update_run(run.id, status="paused")
    with pytest.raises(ValueError, match="run mode must be one of"):
        journal.create_run("x", "b", "c", "lazy", "builtin", {}, "fp")
    with pytest.raises(ValueError, match="cannot set decision"):
        journal.update_experiment(experiment.id, decision="keep")
    with pytest.raises(ValueError, match="cannot set number"):
        journal.update_experiment(experiment.id, number=3)
    with pytest.raises(ValueError, match="cannot set bogus"):
        journal.add_experiment(run.id, 1, bogus=1)
    with pytest.raises(ValueError, match="experiment status must be one of"):
        journal.update_experiment(experiment.id, status="done")
    assert journal.experiment_by_id(experiment.id) == experiment
    assert journal.run(run.id) == run


# -- experiments ------------------------------------------------------------------------------


def test_experiment_round_trip(journal: Journal, tmp_path: Path) -> None:
    run = new_run(journal)
    assert journal.next_number(run.id) == 0
    fields: dict[str, Any] = {
        "parent_commit": "p" * 40,
        "commit_sha": "c" * 40,
        "ref": "refs/cockpit/mar5/0",
        "proposer": "ollama",
        "model": "qwen2.5-coder:7b",
        "description": "baseline",
        "hypothesis": "none",
        "diff": "--- a\n+++ b\n",
        "script_hash": "h0",
        "status": "committed",
        "outcome": "ok",
        "exit_code": 0,
        "val_bpb": 0.9979,
        "peak_memory_mb": 45060.2,
        "training_seconds": 300.1,
        "total_seconds": 325.9,
        "num_steps": 953,
        "attempt": 2,
        "started_at": 1.5,
        "ended_at": 2.5,
        "summary": {"val_bpb": 0.9979, "mfu_percent": 39.8},
        "log_path": tmp_path / "run.log",
        "crash_tail": None,
        "lines_of_code": 630,
    }
    added = journal.add_experiment(run.id, 0, **fields)
    for name, value in fields.items():
        expected = str(value) if isinstance(value, Path) else value
        assert getattr(added, name) == expected, name
    assert added.run_id == run.id and added.number == 0 and added.decision is None
    assert added.short_commit == "ccccccc" and not added.is_final
    assert journal.experiment(run.id, 0) == journal.experiment_by_id(added.id) == added
    assert journal.experiment(run.id, 1) is None

    defaults = journal.add_experiment(run.id, 1)
    assert defaults.status == "proposed" and defaults.attempt == 1
    assert defaults.description == defaults.hypothesis == defaults.diff == ""
    assert defaults.summary is None and defaults.commit_sha is None and defaults.short_commit == ""
    assert defaults.created_at >= added.created_at
    updated = journal.update_experiment(defaults.id, status="training", commit_sha="d" * 40)
    assert updated.status == "training" and updated.commit_sha == "d" * 40
    assert journal.next_number(run.id) == 2
    with pytest.raises(JournalError, match="no experiment"):
        journal.update_experiment(999, status="training")


def test_duplicate_experiment_number_is_a_journal_error(journal: Journal) -> None:
    run = new_run(journal)
    journal.add_experiment(run.id, 0, description="baseline")
    journal.add_experiment(run.id, 1)
    with pytest.raises(JournalError, match=r"already has an experiment #1.*next_number\(\) \(2\)"):
        journal.add_experiment(run.id, 1)
    other = new_run(journal, "other")
    journal.add_experiment(other.id, 1)  # numbers are per run
    with pytest.raises(JournalError, match="no run with id 999"):
        journal.add_experiment(999, 0)


def test_listing_unfinished_and_script_hashes(journal: Journal) -> None:
    run = new_run(journal)
    other = new_run(journal, "other")
    statuses = ["keep", "training", "vetoed", "proposed", "discard", "rejected", "committed"]
    for number, status in reversed(list(enumerate(statuses))):
        journal.add_experiment(run.id, number, status=status, script_hash=f"h{number}")
    journal.add_experiment(other.id, 0, status="keep", script_hash="elsewhere")
    assert [e.number for e in journal.experiments(run.id)] == list(range(len(statuses)))
    unfinished = journal.unfinished_experiments(run.id)
    assert [(e.number, e.status) for e in unfinished] == [
        (1, "training"),
        (3, "proposed"),
        (6, "committed"),
    ]
    trained = {f"h{n}" for n, s in enumerate(statuses) if s in ("keep", "training", "discard")}
    trained.add("h6")  # committed: about to be trained
    for number in range(len(statuses)):
        assert journal.has_script_hash(run.id, f"h{number}") == (f"h{number}" in trained)
    assert not journal.has_script_hash(run.id, "elsewhere")
    training = journal.experiment(run.id, 1)
    assert training is not None
    assert not journal.has_script_hash(run.id, "h1", exclude_experiment_id=training.id)


# -- decisions --------------------------------------------------------------------------------


def test_record_decision_writes_experiment_event_and_run_together(journal: Journal) -> None:
    run = new_run(journal)
    baseline = journal.add_experiment(run.id, 0, status="evaluating", val_bpb=0.998)
    decided = journal.record_decision(
        baseline.id,
        "keep",
        "baseline",
        run_update={"baseline_val_bpb": 0.998, "best_val_bpb": 0.998, "best_commit": "abc"},
    )
    assert decided.decision == "keep" and decided.status == "keep"
    assert decided.decision_reason == "baseline" and decided.ended_at is not None
    updated_run = journal.run(run.id)
    assert updated_run is not None
    assert (updated_run.baseline_val_bpb, updated_run.best_val_bpb, updated_run.best_commit) == (
        0.998,
        0.998,
        "abc",
    )
    (event,) = journal.events(run.id, kinds=["decision"])
    assert event.experiment_id == baseline.id and event.run_id == run.id
    assert event.data is not None and event.data["decision"] == "keep"
    assert event.data["previous_decision"] is None and "baseline" in event.message

    # Overriding is a second decision; the event remembers the first.
    journal.record_decision(baseline.id, "discard", "override by the user")
    override = journal.events(run.id, kinds=["decision"])[-1]
    assert override.data is not None and override.data["previous_decision"] == "keep"

    crashed = journal.add_experiment(run.id, 1, status="training")
    timed_out = journal.record_decision(crashed.id, "crash", "ran past the budget", "timeout")
    assert (timed_out.decision, timed_out.status) == ("crash", "timeout")
    proposal = journal.add_experiment(run.id, 2)
    vetoed = journal.record_decision(proposal.id, "veto", "user", events=[("veto", "#2: user")])
    assert vetoed.status == "vetoed" and vetoed.is_final
    assert [e.message for e in journal.events(run.id, kinds=["veto"])] == ["#2: user"]
    # Its events are written with the decision or not at all.
    other = journal.add_experiment(run.id, 3)
    with pytest.raises(ValueError, match="event"):
        journal.record_decision(other.id, "veto", "user", events=[("", "no kind")])
    assert journal.experiment_by_id(other.id).decision is None  # type: ignore[union-attr]
    assert len(journal.events(run.id, kinds=["veto"])) == 1
    with pytest.raises(ValueError, match="decision must be one of"):
        journal.record_decision(crashed.id, "maybe", "?")
    with pytest.raises(ValueError, match="status of a decided experiment"):
        journal.record_decision(crashed.id, "keep", "?", "training")
    with pytest.raises(JournalError, match="no experiment"):
        journal.record_decision(999, "keep", "?")


def test_record_decision_writes_nothing_when_any_part_fails(journal: Journal, path: Path) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(run.id, 0, status="evaluating", val_bpb=0.99)

    def untouched() -> None:
        assert journal.experiment_by_id(experiment.id) == experiment
        assert journal.run(run.id) == run
        assert journal.events(kinds=["decision"]) == []

    with pytest.raises(ValueError, match="cannot set best"):
        journal.record_decision(experiment.id, "keep", "better", run_update={"best": 0.99})
    untouched()

    # A failure at the very end of the transaction (the run update, after the experiment and
    # the event are written) must roll back the two writes before it.
    raw = sqlite3.connect(path)
    raw.execute(
        "CREATE TRIGGER fail_run_update BEFORE UPDATE ON runs "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    raw.commit()
    raw.close()
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        journal.record_decision(
            experiment.id, "keep", "better", run_update={"best_val_bpb": 0.99, "best_commit": "x"}
        )
    untouched()
    journal.add_event("engine", "still writable after the rollback")
    assert len(journal.events()) == 1


# -- events, metrics, samples, state ----------------------------------------------------------


def every_message(events: list[Any]) -> list[str]:
    return [e.message for e in events]


def test_events_round_trip_and_filters(journal: Journal) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(run.id, 0)
    first = journal.add_event("engine", "started", data={"pid": 123})
    journal.add_event("phase", "training", run_id=run.id, experiment_id=experiment.id)
    journal.add_event("fallback", "model missing", run_id=run.id, data={"model": "m"})
    journal.add_event("phase", "evaluating", run_id=run.id, experiment_id=experiment.id)
    every = journal.events()
    assert [e.message for e in every] == ["started", "training", "model missing", "evaluating"]
    assert every[0].id == first and every[0].data == {"pid": 123} and every[0].run_id is None
    assert every[1].data is None and every[1].experiment_id == experiment.id
    assert [e.message for e in journal.events(run.id)] == every_message(every[1:])
    assert [e.message for e in journal.events(kinds=["phase"])] == ["training", "evaluating"]
    assert [e.message for e in journal.events(since_id=every[1].id)] == every_message(every[2:])
    assert [e.message for e in journal.events(limit=2)] == ["started", "training"]
    assert [e.message for e in journal.events(limit=2, latest=True)] == [
        "model missing",
        "evaluating",
    ]
    assert [e.at for e in every] == sorted(e.at for e in every)


def test_metrics_round_trip_in_one_batch(journal: Journal) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(run.id, 0)
    points: list[dict[str, Any]] = [
        {"event": "metric", "t": 0.5, "progress": 0.1, "step": 1, "loss": 5.5, "lr": 0.001},
        {"t": 1.0, "progress": 0.2, "step": 2, "loss": float("inf")},
        {"t": 1.5, "step": 3, "loss": float("nan")},
    ]
    assert journal.add_metrics(experiment.id, points) == 3
    assert journal.add_metrics(experiment.id, []) == 0
    stored = journal.metrics(experiment.id)
    assert stored[0] == {"t": 0.5, "step": 1, "progress": 0.1, "loss": 5.5, "lr": 0.001}
    assert stored[1] == {"t": 1.0, "step": 2, "progress": 0.2, "loss": float("inf")}
    assert stored[2] == {"t": 1.5, "step": 3, "progress": None, "loss": None}  # NaN is NULL
    assert [p["step"] for p in journal.metrics(experiment.id, after_t=0.5)] == [2, 3]
    assert journal.metrics(experiment.id + 1) == []


def test_samples_round_trip(journal: Journal) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(run.id, 0)
    for n in range(5):
        journal.add_sample(run.id, {"gpu_util": n * 10}, experiment_id=experiment.id if n else None)
    every = journal.samples(run.id)
    assert [s.data["gpu_util"] for s in every] == [0, 10, 20, 30, 40]
    assert every[0].experiment_id is None and every[1].experiment_id == experiment.id
    assert [s.data["gpu_util"] for s in journal.samples(run.id, limit=2)] == [30, 40]
    since = journal.samples(run.id, since=every[2].at)
    assert {s.id for s in since} <= {s.id for s in every[2:]} and since[-1].id == every[-1].id
    assert journal.samples(new_run(journal, "other").id) == []


def test_state_round_trip(journal: Journal) -> None:
    assert journal.get_state("phase") is None
    assert journal.get_state("phase", "idle") == "idle"
    journal.set_state(phase="training", pid=4242, confinement={"level": "full", "checks": ["a"]})
    journal.set_state(phase="evaluating", experiment=None)
    journal.set_state()
    assert journal.get_state("phase") == "evaluating"
    assert journal.get_state("experiment", "default") is None  # set, to null
    assert journal.all_state() == {
        "confinement": {"level": "full", "checks": ["a"]},
        "experiment": None,
        "phase": "evaluating",
        "pid": 4242,
    }
    state = journal.engine_state()
    assert (state.phase, state.pid, state.experiment) == ("evaluating", 4242, None)
    assert state.confinement == {"level": "full", "checks": ["a"]}


def test_a_state_key_no_reader_knows_is_refused(journal: Journal) -> None:
    """The keys are EngineState's fields: a misspelt key fails where it is written, not
    silently on a screen that never shows it."""
    with pytest.raises(ValueError, match=r"no engine state key phsae.*cockpit/store/state\.py"):
        journal.set_state(phase="training", phsae="evaluating")
    assert journal.get_state("phase") is None  # nothing of the refused write was kept
    with pytest.raises(ValueError, match="no engine state key ollama"):
        journal.get_state("ollama")


def test_the_engine_state_reads_what_it_cannot_use_as_unknown(journal: Journal) -> None:
    """A value of the wrong type (another version's journal, a hand edit) reads as unknown:
    a reader never fails on the state."""
    journal.set_state(pid="4242", experiment=True, time_left="soon", workers=[1, {"worker": 0}])
    journal.set_state(train_pids=[7, "8", None], stopping={"now": True}, search_split=[0.5])
    state = journal.engine_state()
    assert state.pid is None and state.experiment is None and state.time_left is None
    assert state.workers == ({"worker": 0},) and state.train_pids == (7,)
    assert state.stopping is None and state.search_split is None


def test_one_journal_shared_by_threads(journal: Journal) -> None:
    run = new_run(journal)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(40):
                journal.add_event("engine", f"{worker}-{n}", run_id=run.id)
                journal.set_state(train_pids=[worker, n])
                journal.events(run.id, limit=5, latest=True)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(journal.events(run.id)) == 160
    assert journal.get_state("train_pids")[1] == 39  # each writer's last write is whole


# -- commands and other processes -------------------------------------------------------------


def test_command_kinds_are_checked(journal: Journal) -> None:
    with pytest.raises(ValueError, match="valid commands: pause, resume, stop_run"):
        journal.post_command("reboot")
    assert "set_mode" in COMMAND_KINDS
    command_id = journal.post_command("set_mode", {"mode": "supervised"})
    command = journal.command(command_id)
    assert command is not None and command.kind == "set_mode"
    assert command.payload == {"mode": "supervised"} and command.status == "pending"
    assert command.handled_at is None and command.result == ""
    journal.finish_command(command_id, "failed", "already supervised")
    command = journal.command(command_id)
    assert command is not None and (command.status, command.result) == (
        "failed",
        "already supervised",
    )
    assert command.handled_at is not None
    with pytest.raises(JournalError, match="already failed"):
        journal.finish_command(command_id)
    with pytest.raises(JournalError, match="no command"):
        journal.finish_command(999)
    with pytest.raises(ValueError, match="command status"):
        journal.finish_command(command_id, "pending")
    assert journal.command(999) is None


@pytest.mark.e2e
def test_commands_posted_by_another_process_reach_the_engine(journal: Journal, path: Path) -> None:
    assert journal.pending_commands() == []
    out = python(
        """
        import sys
        from pathlib import Path
        from cockpit.store.journal import Journal
        with Journal.open(Path(sys.argv[1])) as journal:
            print(journal.post_command("pause"))
            print(journal.post_command("note", {"text": "try rotary embeddings"}))
            print(journal.post_command("resume"))
        """,
        str(path),
    ).stdout
    posted = [int(line) for line in out.split()]
    pending = journal.pending_commands()
    assert [c.id for c in pending] == posted == sorted(posted)
    assert [c.kind for c in pending] == ["pause", "note", "resume"]
    assert pending[1].payload == {"text": "try rotary embeddings"} and pending[0].payload == {}
    assert all(c.status == "pending" for c in pending)
    journal.finish_command(posted[0], result="paused")
    assert [c.kind for c in journal.pending_commands()] == ["note", "resume"]
    journal.finish_command(posted[1])
    journal.finish_command(posted[2], "failed", "not paused")
    assert journal.pending_commands() == []


@pytest.mark.e2e
def test_readers_in_other_processes_are_not_blocked_by_a_writer(
    journal: Journal, path: Path
) -> None:
    new_run(journal, "committed")
    # The writer holds the write lock with an uncommitted row for as long as the readers run.
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO runs (tag, branch, base_commit, created_at, mode, proposer) "
        "VALUES ('uncommitted', 'b', 'c', 0, 'autonomous', 'builtin')"
    )
    try:
        out = python(
            """
            import sys, time
            from pathlib import Path
            from cockpit.store.journal import Journal
            for readonly in (True, False):
                start = time.monotonic()
                with Journal.open(Path(sys.argv[1]), readonly=readonly) as journal:
                    tags = [run.tag for run in journal.runs()]
                print(readonly, tags, round(time.monotonic() - start, 3))
            """,
            str(path),
        ).stdout
    finally:
        writer.execute("COMMIT")
        writer.close()
    lines = out.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "True ['committed']",
        "False ['committed']",
    ]
    assert all(float(line.rsplit(" ", 1)[1]) < 2.0 for line in lines)  # never waited on busy
    assert [run.tag for run in journal.runs()] == ["committed", "uncommitted"]


KILLED_LOOP = """
    import sys
    from pathlib import Path
    from cockpit.store.journal import Journal
    journal = Journal.open(Path(sys.argv[1]))
    run = journal.run_by_tag("kill") or journal.create_run(
        "kill", "cockpit/kill", "0" * 40, "autonomous", "builtin", {}, "fp"
    )
    # Resume as the engine would: what the last kill cut short is marked interrupted.
    for experiment in journal.unfinished_experiments(run.id):
        journal.record_decision(experiment.id, "crash", "engine was killed", "interrupted")
    print("ready", flush=True)
    best = journal.run(run.id).best_val_bpb
    number = journal.next_number(run.id)
    while True:
        experiment = journal.add_experiment(
            run.id, number, status="training", description=f"exp {number}", script_hash=str(number)
        )
        journal.add_metrics(experiment.id, [{"t": i, "step": i, "loss": 2.0} for i in range(25)])
        val_bpb = 1.0 - number * 1e-4 if number % 3 else 1.5
        journal.update_experiment(experiment.id, status="evaluating", val_bpb=val_bpb)
        keep = best is None or val_bpb < best
        best = val_bpb if keep else best
        journal.record_decision(
            experiment.id,
            "keep" if keep else "discard",
            f"val_bpb {val_bpb}",
            run_update={"best_val_bpb": best, "best_commit": str(number)} if keep else None,
        )
        journal.add_sample(run.id, {"n": number}, experiment_id=experiment.id)
        number += 1
"""


def kill_the_loop_midway(path: Path, delay: float) -> None:
    """Start the loop (resuming the journal), let it decide 20 experiments, SIGKILL it."""
    child = python_process(KILLED_LOOP, str(path), stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with Journal.open(path, readonly=True) as reader:
            run = reader.run_by_tag("kill")
            assert run is not None
            goal = reader.next_number(run.id) + 20
            wait_until(lambda: reader.next_number(run.id) >= goal, 15, "20 more experiments")
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.e2e
def test_kill_9_in_the_middle_of_the_loop_leaves_whole_records(path: Path) -> None:
    # Each kill lands at a random point of the loop; several make a torn write likely to show.
    for cycle in range(12):
        kill_the_loop_midway(path, delay=0.003 * cycle)
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            raw.close()

    with Journal.open(path) as journal:
        run = journal.run_by_tag("kill")
        assert run is not None
        experiments = journal.experiments(run.id)
        assert [e.number for e in experiments] == list(range(len(experiments)))
        assert len(experiments) >= 12 * 20
        decision_events = journal.events(run.id, kinds=["decision"], limit=100_000)
        events_by_experiment = {e.experiment_id: e for e in decision_events}
        assert len(events_by_experiment) == len(decision_events)  # one event per decision
        for experiment in experiments:
            decided = experiment.decision is not None
            assert decided == (experiment.id in events_by_experiment), experiment.number
            assert decided == experiment.is_final, experiment.number
            assert len(journal.metrics(experiment.id)) in (0, 25), experiment.number
        undecided = [e for e in experiments if e.decision is None]
        assert undecided in ([], experiments[-1:])  # only the one being worked on
        kept = [e for e in experiments if e.decision == "keep"]
        assert run.best_val_bpb == min(e.val_bpb for e in kept if e.val_bpb is not None)
        assert run.best_commit == str(kept[-1].number)
        # A restart can carry on: the journal takes writes again.
        journal.update_experiment(experiments[-1].id, status="interrupted")
        journal.add_experiment(run.id, journal.next_number(run.id))


# -- results.tsv ------------------------------------------------------------------------------


def test_results_tsv_is_autoresearch_ledger_byte_for_byte(journal: Journal, tmp_path: Path) -> None:
    run = new_run(journal)

    def decided(number: int, decision: str, status: str | None = None, **fields: Any) -> None:
        experiment = journal.add_experiment(run.id, number, **fields)
        journal.record_decision(experiment.id, decision, "test", status)

    decided(0, "keep", commit_sha="a1b2c3d4e5f6", val_bpb=0.9979, peak_memory_mb=45056.0,
            description="baseline")  # fmt: skip
    decided(1, "discard", commit_sha="b2c3d4e5f6a7", val_bpb=1.0012346, peak_memory_mb=45158.4,
            description="wider\tmlp")  # fmt: skip
    decided(2, "crash", commit_sha="c3d4e5f6a7b8", description="double the depth\nand width",
            outcome="oom")  # fmt: skip
    # A timeout is decided crash: zeros, even with a number from the harness.
    decided(3, "crash", "timeout", commit_sha="d4e5f6a7b8c9", val_bpb=1.7, peak_memory_mb=2048,
            description="slow")  # fmt: skip
    decided(4, "veto", commit_sha=None, description="vetoed, never trained")
    journal.add_experiment(run.id, 5, status="training", commit_sha="e5f6", description="running")
    decided(6, "keep", commit_sha="f6a7b8c9d0e1", val_bpb=0.99, peak_memory_mb=512.0,
            description="lr 0.04 ")  # fmt: skip
    # Stopped by early abort: no measurement, autoresearch's zero, and the reason in words.
    decided(7, "discard", commit_sha="a7b8c9d0e1f2", peak_memory_mb=512.0,
            description="lr 0.0001", details={"early_abort": {"progress": 0.65, "gap": 0.0221}})  # fmt: skip

    results = tmp_path / "ws" / "results.tsv"
    assert export_results_tsv(journal, run.id, results) == 6
    assert results.read_bytes() == (
        b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        b"a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        b"b2c3d4e\t1.001235\t44.1\tdiscard\twider mlp\n"
        b"c3d4e5f\t0.000000\t0.0\tcrash\tdouble the depth and width\n"
        b"d4e5f6a\t0.000000\t0.0\tcrash\tslow\n"
        b"f6a7b8c\t0.990000\t0.5\tkeep\tlr 0.04 \n"
        b"a7b8c9d\t0.000000\t0.5\tdiscard\tlr 0.0001 (no val_bpb: stopped early at 65% of the "
        b"budget, loss +2.2% against the best run's)\n"
    )
    empty = new_run(journal, "empty")
    export_results_tsv(journal, empty.id, tmp_path / "empty.tsv")
    assert (
        tmp_path / "empty.tsv"
    ).read_bytes() == b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"


def test_results_tsv_is_replaced_atomically(
    journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = new_run(journal)
    experiment = journal.add_experiment(
        run.id, 0, commit_sha="abcdef0123", val_bpb=1.0, peak_memory_mb=1024, description="b"
    )
    journal.record_decision(experiment.id, "keep", "baseline")
    folder = tmp_path / "workspace"
    folder.mkdir()
    results = folder / "results.tsv"
    results.write_text("old ledger\n")
    results.chmod(0o640)
    old_inode = results.stat().st_ino

    # A failure before the rename leaves the old ledger whole and no temporary file behind.
    def refuse(*args: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="disk full"):
            export_results_tsv(journal, run.id, results)
    assert results.read_text() == "old ledger\n"
    assert [p.name for p in folder.iterdir()] == ["results.tsv"]

    export_results_tsv(journal, run.id, results)
    assert results.read_text().splitlines()[1] == "abcdef0\t1.000000\t1.0\tkeep\tb"
    assert results.stat().st_ino != old_inode  # a new file renamed over the old one
    assert results.stat().st_mode & 0o777 == 0o640  # the user's permissions are kept
    assert [p.name for p in folder.iterdir()] == ["results.tsv"]


def test_a_journal_of_the_first_schema_is_read_and_brought_up_to_date(path: Path) -> None:
    """Version 1 had no experiment details: read-only it reads as None, a writer adds it."""
    with Journal.open(path) as journal:
        run = new_run(journal)
        journal.add_experiment(run.id, 0, description="baseline", status="committed")
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE experiments DROP COLUMN details_json")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Journal.open(path, readonly=True) as journal:
        (old,) = journal.experiments(run.id)
        assert old.description == "baseline" and old.details is None
    with Journal.open(path) as journal:
        (experiment,) = journal.experiments(run.id)
        journal.update_experiment(experiment.id, details={"fix_of": 3})
        assert journal.experiments(run.id)[0].details == {"fix_of": 3}
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    finally:
        raw.close()
