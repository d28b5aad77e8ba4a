"""`cockpit bench search`: real runs of the engine on fresh default workspaces, their figures
checked against the journals they leave, and the errors a user can cause."""

from __future__ import annotations

import dataclasses
import itertools
import json
import socket
import statistics
from pathlib import Path

import pytest

from cockpit.bench.search_report import render_table
from cockpit.bench.search_runs import (
    SearchOptions,
    SearchRun,
    proposer_figures,
    running_best,
    running_gain,
)
from cockpit.bench.starts import tuned_script
from cockpit.cli import main
from cockpit.store.journal import Journal
from cockpit.store.records import LEDGER_DECISIONS
from cockpit.store.verification import Verification
from tests.conftest import REPO, write_text_corpus
from tests.helpers import cockpit, git
from tests.ollama_server import OllamaDouble, Reply, load_replies

# Commits without a git identity (conftest.py).
pytestmark = pytest.mark.usefixtures("no_git_identity")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def short_trainings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings, through the environment, that keep each training a few seconds: a small text
    corpus, short windows, few evaluation tokens, one training per experiment (the bench
    itself sets the budget, the seed, the proposer and the experiments)."""
    corpus = write_text_corpus(tmp_path / "corpus", documents=30, lines=30)
    for name, value in {
        "COCKPIT_TRAINER__CORPUS": f"text:{corpus}",
        "COCKPIT_TRAINER__SEQ_LEN": "64",
        "COCKPIT_TRAINER__EVAL_TOKENS": "4096",
        "COCKPIT_ENGINE__NOISE_RUNS": "1",
        "COCKPIT_ENGINE__CONFIRM_MULTIPLE": "0",
        "COCKPIT_ENGINE__KEEP_RUNS": "1",
        "COCKPIT_ENGINE__EARLY_ABORT": "false",
        "COCKPIT_ENGINE__SAMPLE_SECONDS": "0.2",
    }.items():
        monkeypatch.setenv(name, value)


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
def test_bench_search_figures_agree_with_the_journals_it_leaves(
    tmp_path: Path, short_trainings: None
) -> None:
    out = tmp_path / "bench"
    result = cockpit(
        "bench", "search", "--proposer", "builtin,optuna", "--experiments", "2", "--budget", "1",
        "--seeds", "1", "--device", "cpu", "--out", str(out), "--verify", "1", "--json",
        "--start", "tuned",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)  # stdout is the JSON alone; the progress went to stderr
    progress = result.stderr
    assert "per run on 1 worker, from tuned (device cpu" in progress.splitlines()[0]
    assert report["start"] == "tuned"
    tuned = tuned_script((REPO / "trainer" / "train.py").read_text())
    assert "[1/2] builtin, seed 0" in progress and "[2/2] optuna, seed 0" in progress, progress
    assert "#0 baseline: val_bpb" in progress and "#2 " in progress, progress

    assert (report["experiments"], report["budget_seconds"], report["seeds"]) == (2, 1.0, 1)
    assert (report["verify"], report["verify_seeds"]) == (1, [1000])
    assert report["settings"]["device"] == "cpu" and report["settings"]["noise_runs"] == 1
    assert [row["proposer"] for row in report["proposers"]] == ["builtin", "optuna"]
    assert [(run["proposer"], run["seed"]) for run in report["runs"]] == [
        ("builtin", 0),
        ("optuna", 0),
    ]
    for run, row in zip(report["runs"], report["proposers"], strict=True):
        workspace = Path(run["workspace"])
        assert workspace == out / f"{run['proposer']}-seed0"
        # A default workspace (program.md as `cockpit init` makes it) begun from the tuned
        # script: the template with its tuned constants.
        assert git(workspace, "show", "main:train.py") == tuned
        assert (workspace / "program.md").read_text() == (
            REPO / "cockpit" / "template" / "program.md"
        ).read_text()

        with Journal.open(workspace / ".cockpit" / "journal.db", readonly=True) as journal:
            recorded = journal.latest_run()
            assert recorded is not None
            experiments = sorted(journal.experiments(recorded.id), key=lambda e: e.number)
        assert recorded.tag == run["tag"] and recorded.status == "finished"
        assert recorded.config["trainer"]["seed"] == 0
        assert recorded.config["trainer"]["budget_seconds"] == 1.0
        assert recorded.config["engine"]["proposer"] == run["proposer"]
        decided = [e for e in experiments if e.number > 0 and e.decision in LEDGER_DECISIONS]
        assert {e.proposer for e in decided} == {run["proposer"]}
        keeps = [e for e in decided if e.decision == "keep"]
        baseline = experiments[0].val_bpb
        assert baseline is not None and run["baseline_val_bpb"] == baseline
        best = min([baseline, *(e.val_bpb for e in keeps if e.val_bpb is not None)])
        assert run["best_val_bpb"] == best
        assert run["gain_bpb"] == pytest.approx(baseline - best)
        assert run["experiments"] == len(decided) == 2
        assert run["keeps"] == len(keeps)
        assert run["keep_rate"] == pytest.approx(len(keeps) / 2)
        assert run["proposed_by"] == {run["proposer"]: 2}
        assert run["model_note"] is None and run["model_experiments"] == 0

        curve = run["running_best"]
        assert len(curve) == 3 and curve[0] == baseline and curve[-1] == best
        assert all(later <= earlier for earlier, later in itertools.pairwise(curve))
        assert run["running_gain"] == pytest.approx([baseline - value for value in curve])

        started = min(e.started_at for e in experiments if e.started_at is not None)
        ended = max(e.ended_at for e in experiments if e.ended_at is not None)
        assert run["wall_seconds"] >= ended - started
        assert run["compute_hours"] == pytest.approx(run["wall_seconds"] / 3600)

        assert row["runs"] == 1 and row["gain_mean"] == pytest.approx(run["gain_bpb"])
        assert row["gain_min"] == row["gain_max"] == pytest.approx(run["gain_bpb"])
        assert row["gain_stdev"] is None  # one seed has no spread
        assert row["keep_rate_mean"] == pytest.approx(run["keep_rate"])
        assert row["experiments_per_run"] == 2
        assert row["gain_per_hour"] == pytest.approx(run["gain_bpb"] / run["compute_hours"])

        # --verify 1: the best script trained again with seed 1000, as `cockpit verify` does.
        verify = workspace / ".cockpit" / "verify" / recorded.tag
        best_commit = recorded.best_commit or recorded.base_commit
        assert (verify / "train.py").read_text() == git(
            workspace, "show", f"{best_commit}:train.py"
        )
        trained = json.loads((verify / "1000" / "summary.json").read_text())
        assert trained["seed"] == 1000 and trained["status"] == "ok"
        assert (
            run["verified"] == [trained["val_bpb"]] and run["verified_best"] == trained["val_bpb"]
        )
        # Against the baseline trained beside it on the same seed, on the plan its trainings
        # recorded (by default). Nothing kept: the best is the baseline's script, which is not
        # trained twice, and its fresh seed is no gain.
        if run["keeps"]:
            beside = json.loads((verify / "baseline" / "1000" / "summary.json").read_text())
            assert beside["seed"] == 1000 and run["verified_baseline"] == [beside["val_bpb"]]
            found = beside["val_bpb"] - trained["val_bpb"]
        else:
            assert run["verified_baseline"] == [] and not (verify / "baseline").exists()
            found = 0.0
        assert run["verified_gain"] == pytest.approx(found)
        assert row["verified_gain_mean"] == pytest.approx(run["verified_gain"])
        assert f"  seed 1000: val_bpb {trained['val_bpb']:.6f}" in progress
        with Journal.open(workspace / ".cockpit" / "journal.db", readonly=True) as journal:
            (event,) = journal.events(recorded.id, kinds=["verify"])
        assert event.data["values"] == run["verified"]

    plot = out / "search.png"
    assert report["plot"] == str(plot)
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.e2e
def test_bench_search_runs_the_hybrid_without_ollama_and_says_so(
    tmp_path: Path, short_trainings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("COCKPIT_AGENT__HOST", host)
    result = cockpit(
        "bench", "search", "--proposer", "hybrid", "--experiments", "1", "--budget", "1",
        "--seeds", "1", "--device", "cpu",
    )  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert output.startswith("search benchmark: hybrid; 1 seed each; 1 experiment of 1 s")
    assert f"Ollama is not running at {host}" in output
    assert "the optimiser proposes in the model's place until it answers" in output
    lines = output.splitlines()
    table = lines[lines.index(next(text for text in lines if text.startswith("proposer "))) :]
    assert table[0].split()[:3] == ["proposer", "gain", "mean"]
    assert table[1].split()[0] == "hybrid"
    line = next(text for text in table if text.startswith("  hybrid seed 0: baseline"))
    assert "of 1 kept" in line
    note = next(text for text in table if text.startswith("note: hybrid: "))
    assert f"Ollama is not running at {host}" in note and "(seed 0)" in note
    assert "the model proposed 0 of 1 experiments: these are the optimiser's figures" in note
    assert "no plot kept: --out DIR keeps DIR/search.png" in output
    # Without --out the runs' workspaces went into a scratch folder, removed at the end.
    assert not Path(line.rsplit("; ", 1)[1].split(", ", 1)[1]).exists()


@pytest.mark.e2e
def test_bench_search_measures_the_hybrid_against_a_model_that_changes_the_structure(
    tmp_path: Path, short_trainings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The yield bench's hybrid, as the README measures it: the test Ollama server answers
    with the scripted structural replies, every run begins from a given script, and the
    model's experiment is counted as the model's."""
    replies = load_replies(REPO / "tests" / "data" / "structural_replies.json")
    start = tmp_path / "mine.py"
    start.write_text(tuned_script((REPO / "trainer" / "train.py").read_text()) + "# mine\n")
    with OllamaDouble(replies=replies, cycle=True) as server:
        monkeypatch.setenv("COCKPIT_AGENT__HOST", server.host)
        result = cockpit(
            "bench", "search", "--proposer", "hybrid", "--experiments", "2", "--budget", "1",
            "--seeds", "1", "--device", "cpu", "--verify", "1", "--start", str(start),
            "--out", str(tmp_path / "bench"), "--json",
        )  # fmt: skip
        chats = server.requests_to("/api/chat")
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    workspace = Path(run["workspace"])
    assert git(workspace, "show", "main:train.py") == start.read_text()
    # The optimiser's turn comes first, the model's second: one experiment each.
    assert run["model_note"] is None and run["model_experiments"] == 1, run["proposed_by"]
    assert len(chats) == 1 and "# mine" in json.dumps(chats[0].body)
    assert isinstance(replies[0], Reply)
    first = json.loads(replies[0].content)
    with Journal.open(workspace / ".cockpit" / "journal.db", readonly=True) as journal:
        recorded = journal.latest_run()
        assert recorded is not None
        by_model = [e for e in journal.experiments(recorded.id) if e.proposer == "llm"]
    assert [e.description for e in by_model] == [first["description"]]
    assert len(run["verified"]) == 1 and run["verified_gain"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--proposer", "builtin,nudger"],
            "unknown proposer 'nudger'; choose from hybrid, llm, optuna, builtin",
        ),
        (["--proposer", "optuna,optuna"], "optuna named twice; name each proposer once"),
        (["--proposer", "builtin,"], "name one or more of hybrid, llm, optuna, builtin"),
        (["--experiments", "0"], "must be a whole number, 1 or more, got 0"),
        (["--seeds", "-1"], "must be a whole number, 1 or more, got -1"),
        (["--budget", "0"], "must be a number of seconds greater than 0"),
    ],
    ids=["unknown", "twice", "empty", "no-experiments", "negative-seeds", "no-budget"],
)
def test_bench_search_refuses_a_bad_option_and_says_what_to_give(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "search", *args])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_search_refuses_an_out_folder_that_holds_runs_already(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out" / "optuna-seed0").mkdir(parents=True)
    code = main(["bench", "search", "--out", str(tmp_path / "out"), "--seeds", "1"])
    assert code == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'optuna-seed0'} exists; give --out a new or empty folder" in error
    assert not (tmp_path / "out" / "builtin-seed0").exists()  # nothing ran


def search_run(
    proposer: str, seed: int, gain: float | None, keeps: int, seconds: float
) -> SearchRun:
    baseline = None if gain is None else 2.0
    best = None if gain is None else 2.0 - gain
    return SearchRun(
        proposer=proposer, seed=seed, workspace="", tag="t", baseline_val_bpb=baseline,
        best_val_bpb=best, gain_bpb=gain, experiments=4, keeps=keeps, crashes=0,
        keep_rate=keeps / 4, wall_seconds=seconds, workers=2, running_best=(baseline, best),
    )  # fmt: skip


def test_a_proposers_figures_are_the_mean_and_spread_of_its_seeds() -> None:
    runs = [search_run("optuna", 0, 0.1, 1, 1800.0), search_run("optuna", 1, 0.3, 3, 1800.0)]
    row = proposer_figures("optuna", runs)
    assert row.runs == 2 and row.gain_mean == pytest.approx(0.2)
    assert (row.gain_min, row.gain_max) == (0.1, 0.3)
    assert row.gain_stdev == pytest.approx(statistics.stdev([0.1, 0.3]))
    assert row.keep_rate_mean == pytest.approx(0.5)
    # Two workers for half an hour each: an hour of compute per run.
    assert row.compute_hours == pytest.approx(2.0) and row.compute_hours_per_run == 1.0
    assert row.gain_per_hour == pytest.approx(0.2)
    # A run whose baseline crashed has no gain: its compute counts, its gain is not made up.
    failed = proposer_figures("optuna", [*runs, search_run("optuna", 2, None, 0, 1800.0)])
    assert failed.gain_mean == pytest.approx(0.2) and failed.compute_hours == pytest.approx(3.0)
    assert failed.gain_per_hour == pytest.approx(0.2)


def test_the_running_best_falls_with_each_keep_only() -> None:
    points = [
        (0, "keep", 3.0),
        (1, "discard", 3.1),  # a discard never moves the best
        (2, "keep", 2.8),
        (3, "crash", None),
        # 4: vetoed, no decision recorded
        (5, "keep", 2.9),  # kept as a simpler tie: the best stays
        (6, "keep", 2.7),
    ]
    assert running_best(points) == (3.0, 3.0, 2.8, 2.8, 2.8, 2.8, 2.7)
    assert running_best([(0, "crash", None), (1, "keep", 2.0)]) == (None, 2.0)
    run = search_run("builtin", 0, 0.3, 1, 60.0)
    assert running_gain(run) == pytest.approx([0.0, 0.3])


def test_the_verified_gain_is_the_baseline_minus_the_mean_of_the_best_trained_again() -> None:
    """A best of 1.7 (gain 0.3) that trains again at 1.85 and 1.95 is worth a gain of 0.1: the
    luck that made it the best is gone. A verification that gave no val_bpb is left out, and
    one with none at all gives no verified gain rather than a made-up one."""
    lucky = dataclasses.replace(search_run("optuna", 0, 0.3, 1, 60.0), verified=(1.85, None, 1.95))
    assert lucky.verified_best == pytest.approx(1.9)
    assert lucky.verified_gain == pytest.approx(0.1)
    # Nothing kept: the best is the baseline, whose fresh seeds measure its luck, not a gain.
    frozen = dataclasses.replace(search_run("optuna", 2, 0.0, 0, 60.0), verified=(1.97, 1.99))
    assert frozen.verified_best == pytest.approx(1.98) and frozen.verified_gain == 0.0
    none = dataclasses.replace(search_run("optuna", 1, 0.2, 1, 60.0), verified=(None,))
    assert none.verified_best is None and none.verified_gain is None
    row = proposer_figures("optuna", [lucky, none])
    assert row.gain_mean == pytest.approx(0.25) and row.verified_gain_mean == pytest.approx(0.1)

    options = SearchOptions(proposers=("optuna",), seeds=2, verify=3)
    table = "\n".join(render_table(options, [lucky, none]))
    assert table.splitlines()[0].split()[-3] == "verified"
    assert "verified 1.900000 (1.850000, -, 1.950000), gain 0.100000" in table
    assert "trained again 3 times with seeds 1000..1002" in table
    plain = render_table(SearchOptions(proposers=("optuna",)), [search_run("optuna", 0, 0.3, 1, 6)])
    assert "verified" not in "\n".join(plain)


def test_a_verification_that_ran_short_of_its_plan_is_counted_and_said() -> None:
    """A verification training on a machine slower than during the run trains fewer steps
    than the keep did, and so would one trained again on a plan cut to fit: part of the
    optimism is the machine's. The verified best counts it, as `cockpit verify` does, and the
    run's line and the verdict say so; a run whose every verification ran short still has a
    figure."""
    slowed = dataclasses.replace(
        search_run("optuna", 0, 0.3, 1, 60.0),
        verified=(1.75, 1.95, 1.85),
        verified_short=(False, True, False),
    )
    assert slowed.verified_best == pytest.approx(1.85)
    assert (
        slowed.verified_best
        == Verification(0, "a" * 40, (1, 2, 3), slowed.verified, 1, 1, 2, None).mean
    )
    assert slowed.optimism == pytest.approx(0.15) and slowed.verified_ran_short == 1
    assert slowed.as_json()["verified_short"] == [False, True, False]
    options = SearchOptions(proposers=("optuna",), verify=3)
    table = "\n".join(render_table(options, [slowed]))
    assert "verified 1.850000 (1.750000, 1.950000 short, 1.850000)" in table
    assert "1 verification training ran short of the run's plan" in table
    assert "counted, and part of the optimism is the machine's" in table
    allshort = dataclasses.replace(slowed, verified_short=(True, True, True))
    assert allshort.verified_best == pytest.approx(1.85) and allshort.verified_ran_short == 3
    # The baseline trained beside it on the same seeds scores 0.05 worse than in the ledger:
    # the gain and the optimism are taken seed by seed against it (0.05 of the 0.15 was the
    # machine's), and the line says it.
    beside = dataclasses.replace(slowed, verified_baseline=(1.95, 2.15, 2.05))
    assert beside.verified_gain == pytest.approx(0.2) and beside.optimism == pytest.approx(0.1)
    assert beside.as_json()["verified_baseline_mean"] == pytest.approx(2.05)
    line = "\n".join(render_table(options, [beside]))
    assert "gain 0.200000 against the baseline trained again, 2.050000" in line


def test_the_bench_says_its_optimism_and_each_proposers_yield_against_the_nudgers() -> None:
    """Optimism is the verified mean minus the kept best; the yield is the verified gain over
    the compute hours of the runs that have one, and the verdict divides it by builtin's."""
    nudger = dataclasses.replace(search_run("builtin", 0, 0.3, 1, 1800.0), verified=(1.9,))
    optimiser = dataclasses.replace(search_run("optuna", 0, 0.4, 2, 900.0), verified=(1.7, 1.8))
    assert nudger.optimism == pytest.approx(0.2)  # kept 1.7, verified 1.9
    assert optimiser.optimism == pytest.approx(0.15)  # kept 1.6, verified 1.75
    unverified = search_run("optuna", 1, 0.2, 1, 900.0)
    assert unverified.optimism is None
    rows = {
        row.proposer: row
        for row in (
            proposer_figures("builtin", [nudger]),
            proposer_figures("optuna", [optimiser, unverified]),
        )
    }
    # builtin: gain 0.1 verified over one hour of compute (two workers, half an hour).
    assert rows["builtin"].verified_gain_per_hour == pytest.approx(0.1)
    # optuna: 0.25 over the half hour of its one verified run; the other's hours do not count.
    assert rows["optuna"].verified_gain_per_hour == pytest.approx(0.5)
    assert rows["optuna"].optimism_mean == pytest.approx(0.15)

    options = SearchOptions(proposers=("builtin", "optuna"), seeds=2, verify=2)
    table = render_table(options, [nudger, optimiser, unverified])
    assert table[0].split()[-3:] == ["verified", "verified/h", "optimism"]
    assert table[1].split()[-3:] == ["0.100000", "0.1000", "0.200000"]
    assert table[2].split()[-3:] == ["0.250000", "0.5000", "0.150000"]
    assert "mean optimism 0.175000 over 2 runs (largest 0.200000)" in table
    assert "verified gain per compute hour against builtin's: optuna 5.00x" in table
    # Without the nudger there is nothing to divide by, and the verdict says only the optimism.
    alone = render_table(SearchOptions(proposers=("optuna",), verify=2), [optimiser])
    assert not any("against builtin" in line for line in alone)
