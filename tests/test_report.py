"""`cockpit report` on a real journal: a run of a baseline and 99 experiments (kept, discarded,
crashed, timed out, some far off the scale, two vetoes in between) recorded through the
Journal API the way the engine records them. The summary is checked against the results.tsv
the journal exports, the chart is read back as an image, and the errors a user can cause
(unknown tag, no journal, missing matplotlib) are checked word for word."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from cockpit.engine.results_tsv import export_results_tsv
from cockpit.report.markdown import render_markdown
from cockpit.report.plot import (
    CRASH_COLOR,
    KEPT_COLOR,
    MATPLOTLIB_MISSING,
    PROGRESS_PNG,
    plot_progress,
)
from cockpit.report.summary import ReportError, RunSummary, summarize
from cockpit.report.workspace import REPORT_MD, write_report
from cockpit.store.journal import Journal
from tests.conftest import REPO

KEEP_MARGIN_BPB = 0.001
BASELINE_BPB = 3.412345
EXPERIMENT_SECONDS = 330.0
TRAINING_SECONDS = 300.0
START = 1_700_000_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANGES = (
    "raise the learning rate to {value:.4f}",
    "lower the learning rate to {value:.4f}",
    "warm up for {count} steps",
    "set weight decay to {value:.3f}",
    "use {count} layers",
    "swap GELU for SwiGLU in the MLP and shrink the hidden width to keep the parameter count",
    "tie the input and output embeddings",
    "add rotary position embeddings with base {count}",
    "batch size {count} | gradient clipping at 1.0",
    "replace LayerNorm with RMSNorm in every block and drop the final norm",
)


@dataclass
class RecordedRun:
    """What the test wrote into the journal, to check the summary's figures against."""

    tag: str
    first_start: float = 0.0
    last_end: float = 0.0
    training_seconds: float = 0.0
    vetoed: int = 0
    crash_reasons: dict[str, str] = field(default_factory=dict)  # commit -> reason
    proposers: dict[str, int] = field(default_factory=dict)


def commit_for(tag: str, number: int) -> str:
    return hashlib.sha1(f"{tag}/{number}".encode()).hexdigest()


def record_run(path: Path, tag: str, experiments: int, seed: int) -> RecordedRun:
    """Record a baseline and ``experiments`` trained experiments (plus two vetoed proposals)
    with pseudo-random results, deciding each as the engine does."""
    rng = random.Random(seed)
    recorded = RecordedRun(tag=tag, first_start=START)
    veto_before = {experiments // 3, (2 * experiments) // 3}
    with Journal.open(path) as journal:
        run = journal.create_run(
            tag, f"cockpit/{tag}", commit_for(tag, -1), "autonomous", "builtin", {}, "fp1"
        )
        best = BASELINE_BPB
        clock = START
        number = 0
        trained = 0
        while trained <= experiments:
            if trained in veto_before and number > 0:
                veto_before.discard(trained)
                vetoed = journal.add_experiment(
                    run.id,
                    number,
                    commit_sha=commit_for(tag, number),
                    proposer="ollama",
                    model="qwen2.5-coder:7b",
                    description="delete the evaluation call",
                    status="awaiting_approval",
                )
                journal.record_decision(vetoed.id, "veto", "vetoed by the researcher")
                recorded.vetoed += 1
                number += 1
                continue
            proposer, model = (
                ("baseline", None)
                if number == 0
                else rng.choice((("builtin", None), ("ollama", "qwen2.5-coder:7b")))
            )
            description = (
                "baseline"
                if number == 0
                else rng.choice(CHANGES).format(
                    value=rng.uniform(1e-4, 3e-2), count=rng.randint(2, 4096)
                )
            )
            experiment = journal.add_experiment(
                run.id,
                number,
                commit_sha=commit_for(tag, number),
                proposer=proposer,
                model=model,
                description=description,
                status="committed",
            )
            draw = rng.random()
            outcome = "ok"
            if number == 0:
                value: float | None = BASELINE_BPB
            elif draw < 0.07:
                outcome, value = "crash", None
            elif draw < 0.10:
                outcome, value = "timeout", None
            elif draw < 0.15:
                value = best + rng.uniform(0.3, 1.2)  # diverged: far off the chart's scale
            else:
                value = best + rng.gauss(0.012, 0.015)
            ended = clock + (rng.uniform(20, 60) if value is None else EXPERIMENT_SECONDS)
            seconds = rng.uniform(5, 50) if value is None else TRAINING_SECONDS
            journal.update_experiment(
                experiment.id,
                status="evaluating",
                outcome=outcome,
                val_bpb=value,
                peak_memory_mb=None if value is None else 20_000 + 100 * rng.random(),
                training_seconds=seconds,
                started_at=clock,
                ended_at=ended,
            )
            recorded.training_seconds += seconds
            recorded.last_end = ended
            clock = ended + 2.0
            if number > 0:
                label = f"{proposer} ({model})" if model else proposer
                recorded.proposers[label] = recorded.proposers.get(label, 0) + 1
            if value is None:
                reason = f"{outcome}: {'CUDA out of memory' if outcome == 'crash' else 'budget'}"
                status = "timeout" if outcome == "timeout" else "crash"
                journal.record_decision(experiment.id, "crash", reason, status)
                recorded.crash_reasons[commit_for(tag, number)[:7]] = reason
            elif number == 0 or value < best - KEEP_MARGIN_BPB:
                journal.record_decision(
                    experiment.id,
                    "keep",
                    f"val_bpb {value:.6f}",
                    run_update={"best_val_bpb": value, "best_commit": commit_for(tag, number)},
                )
                best = value
            else:
                journal.record_decision(experiment.id, "discard", f"val_bpb {value:.6f}")
            number += 1
            trained += 1
        journal.update_run(run.id, status="finished")
    return recorded


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@dataclass
class Report:
    workspace: Path
    recorded: RecordedRun
    rows: list[dict[str, str]]
    summary: RunSummary
    png: Path
    markdown: Path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    workspace = tmp_path_factory.mktemp("ws")
    journal_path = workspace / ".cockpit" / "journal.db"
    record_run(journal_path, "feb28", experiments=5, seed=7)  # an older run, not the latest
    recorded = record_run(journal_path, "mar5", experiments=99, seed=20240305)
    with Journal.open(journal_path, readonly=True) as journal:
        run = journal.run_by_tag("mar5")
        assert run is not None
        with Journal.open(journal_path) as writable:
            export_results_tsv(writable, run.id, workspace / "results.tsv")
        summary = summarize(journal, run.id)
    png, markdown = write_report(workspace)
    return Report(
        workspace, recorded, read_results(workspace / "results.tsv"), summary, png, markdown
    )


def test_summary_matches_results_tsv(report: Report) -> None:
    rows, summary = report.rows, report.summary
    assert len(rows) == 100  # the baseline and 99 experiments; vetoes have no row
    baseline, later = rows[0], rows[1:]
    assert baseline["description"] == "baseline"
    assert summary.tag == "mar5"
    assert summary.baseline_val_bpb == pytest.approx(float(baseline["val_bpb"]), abs=5e-7)
    assert summary.baseline_commit == baseline["commit"]

    kept_rows = [row for row in rows if row["status"] == "keep"]
    best_row = min(kept_rows, key=lambda row: float(row["val_bpb"]))
    assert summary.best_val_bpb == pytest.approx(float(best_row["val_bpb"]), abs=5e-7)
    assert summary.best_commit == best_row["commit"]
    gain = float(baseline["val_bpb"]) - float(best_row["val_bpb"])
    assert summary.total_gain_bpb == pytest.approx(gain, abs=1e-6)
    assert summary.total_gain_percent == pytest.approx(
        100 * gain / float(baseline["val_bpb"]), abs=1e-4
    )

    statuses = [row["status"] for row in later]
    assert summary.experiments == len(later) == 99
    assert summary.kept == statuses.count("keep")
    assert summary.discarded == statuses.count("discard")
    assert summary.crashed == statuses.count("crash")
    assert summary.kept + summary.discarded + summary.crashed == summary.experiments
    # The mix the test means to cover: every decision, and more than a handful of each.
    assert summary.kept >= 5 and summary.discarded >= 30 and summary.crashed >= 3
    assert summary.keep_rate == pytest.approx(statuses.count("keep") / len(later))
    assert summary.vetoed == report.recorded.vetoed == 2


def test_kept_changes_and_their_deltas_match_results_tsv(report: Report) -> None:
    rows = report.rows
    running_best = float(rows[0]["val_bpb"])
    expected = []
    for row in rows[1:]:
        if row["status"] != "keep":
            continue
        value = float(row["val_bpb"])
        expected.append((row["commit"], row["description"], value, value - running_best))
        running_best = min(running_best, value)
    changes = report.summary.kept_changes
    assert [(c.commit, c.description) for c in changes] == [(e[0], e[1]) for e in expected]
    for change, (_, _, value, delta) in zip(changes, expected, strict=True):
        assert change.val_bpb == pytest.approx(value, abs=5e-7)
        assert change.delta_bpb == pytest.approx(delta, abs=1e-6)
        assert change.delta_bpb is not None and change.delta_bpb < -KEEP_MARGIN_BPB
    numbers = [c.number for c in changes]
    assert numbers == sorted(numbers) and numbers[0] > 0


def test_crashes_times_and_proposers(report: Report) -> None:
    summary, recorded = report.summary, report.recorded
    crash_rows = [row for row in report.rows if row["status"] == "crash"]
    assert [(c.commit, c.description) for c in summary.crashes] == [
        (row["commit"], row["description"]) for row in crash_rows
    ]
    assert {c.commit: c.reason for c in summary.crashes} == recorded.crash_reasons
    assert {c.status for c in summary.crashes} == {"crash", "timeout"}
    assert summary.started_at == pytest.approx(recorded.first_start)
    assert summary.ended_at == pytest.approx(recorded.last_end)
    assert summary.wall_clock_seconds == pytest.approx(recorded.last_end - recorded.first_start)
    assert summary.training_seconds == pytest.approx(recorded.training_seconds)
    assert summary.proposers == recorded.proposers
    assert sum(summary.proposers.values()) == summary.experiments


def test_write_report_picks_the_latest_run_and_writes_both_files(report: Report) -> None:
    assert report.png == report.workspace / "report" / PROGRESS_PNG
    assert report.markdown == report.workspace / "report" / REPORT_MD
    text = report.markdown.read_text()
    # The recorded run trained nothing, so no model was kept to score on the test split.
    assert text.startswith(render_markdown(report.summary).rstrip("\n") + "\n\n## Test split\n")
    assert "| 0 | " in text and "its model was not kept" in text
    assert text.startswith("# Research report: mar5\n")


def test_progress_png_is_a_1600_by_800_chart_with_kept_and_crash_marks(report: Report) -> None:
    data = report.png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(report.png)
    assert pixels.shape[:2] == (800, 1600)
    rgb = pixels[..., :3]

    def pixels_near(color: str) -> int:
        target = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        return int((np.abs(rgb - target).max(axis=-1) < 0.03).sum())

    # Every kept point is a filled green disc of about 9 px across; crashes are red crosses.
    assert pixels_near(KEPT_COLOR) > 30 * report.summary.kept
    assert pixels_near(CRASH_COLOR) > 10 * report.summary.crashed
    assert (rgb.min(axis=-1) > 0.97).mean() > 0.6  # mostly white: not a blot


def test_markdown_has_the_headline_figures_and_every_kept_change(report: Report) -> None:
    summary = report.summary
    text = report.markdown.read_text()
    assert summary.baseline_val_bpb is not None and summary.best_val_bpb is not None
    assert summary.total_gain_bpb is not None and summary.keep_rate is not None
    assert f"| Baseline | {summary.baseline_val_bpb:.6f} val_bpb" in text
    assert f"| Best | **{summary.best_val_bpb:.6f}** val_bpb (#{summary.best_number}" in text
    assert f"| Total gain | {summary.total_gain_bpb:.6f} bpb" in text
    assert f"{100 * summary.keep_rate:.1f} % ({summary.kept} of 99)" in text
    assert f"99 after the baseline: {summary.kept} kept" in text
    assert "| Time spent | " in text and "wall clock" in text
    assert "![val_bpb over experiments](progress.png)" in text
    # A change with a pipe in it stays inside its table cell.
    for change in summary.kept_changes:
        description = change.description.replace("|", "\\|")
        assert (
            f"| {change.number} | `{change.commit}` | {change.val_bpb:.6f} | "
            f"{change.delta_bpb:+.6f} | {description} |\n"
        ) in text
    for crash in summary.crashes:
        description = crash.description.replace("|", "\\|")
        assert f"| {crash.number} | {crash.status} | {description} | {crash.reason} |\n" in text
    kept_rows = [line for line in text.splitlines() if line.startswith("| ") and "` | " in line]
    assert len(kept_rows) == summary.kept
    assert any("\\|" in row for row in kept_rows)  # the seed gives a kept change with a pipe
    for row in kept_rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 6, row


def test_a_tag_picks_an_older_run(report: Report, tmp_path: Path) -> None:
    png, markdown = write_report(report.workspace, tmp_path / "out", tag="feb28")
    assert png == tmp_path / "out" / PROGRESS_PNG and png.read_bytes()[:8] == PNG_SIGNATURE
    text = markdown.read_text()
    assert text.startswith("# Research report: feb28\n")
    assert "5 after the baseline" in text


def test_unknown_tag_lists_the_runs(report: Report) -> None:
    with pytest.raises(ReportError) as caught:
        write_report(report.workspace, tag="apr1")
    assert str(caught.value) == (
        "no run tagged 'apr1' in this workspace; its runs are: feb28, mar5 "
        "(leave out --tag for the latest, 'mar5')"
    )


def test_workspace_without_a_journal_says_to_start_a_run(tmp_path: Path) -> None:
    expected = f"no experiments recorded in {tmp_path} yet: start a run with `cockpit run`"
    with pytest.raises(ReportError) as caught:
        write_report(tmp_path)
    assert str(caught.value) == expected
    Journal.open(tmp_path / ".cockpit" / "journal.db").close()  # a journal with no run yet
    with pytest.raises(ReportError) as caught:
        write_report(tmp_path)
    assert str(caught.value) == expected
    assert not (tmp_path / "report").exists()


def test_missing_workspace_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist; check the path given to --workspace"):
        write_report(tmp_path / "nowhere")


def test_a_crashed_baseline_and_a_bare_list_of_experiments(tmp_path: Path) -> None:
    path = tmp_path / ".cockpit" / "journal.db"
    with Journal.open(path) as journal:
        run = journal.create_run("x", "cockpit/x", "0" * 40, "autonomous", "builtin", {}, "fp")
        baseline = journal.add_experiment(run.id, 0, description="baseline", status="evaluating")
        journal.record_decision(baseline.id, "crash", "crash: SyntaxError in train.py")
        summary = summarize(journal, run.id)
        experiments = journal.experiments(run.id)
    assert summary.baseline_val_bpb is None and summary.best_val_bpb is None
    assert summary.baseline_failure == "crash: SyntaxError in train.py"
    assert summary.experiments == 0 and summary.keep_rate is None and not summary.crashes
    text = render_markdown(summary)
    assert "| Baseline | none yet |" in text
    assert "The baseline crashed: crash: SyntaxError in train.py." in text
    chart = tmp_path / "bare.png"
    plot_progress(experiments, chart)
    assert mpimg.imread(chart).shape[:2] == (800, 1600)


def test_an_experiment_stopped_early_shows_no_value_anywhere(tmp_path: Path) -> None:
    """results.tsv keeps autoresearch's 0.000000 for it, with the reason in its description;
    the summary, the chart and the report give it no value."""
    path = tmp_path / ".cockpit" / "journal.db"
    with Journal.open(path) as journal:
        run = journal.create_run("x", "cockpit/x", "0" * 40, "autonomous", "builtin", {}, "fp")

        def decided(number: int, decision: str, **fields: object) -> None:
            experiment = journal.add_experiment(
                run.id, number, commit_sha=f"{number:040x}", status="evaluating", **fields
            )
            journal.record_decision(experiment.id, decision, "test")

        decided(0, "keep", description="baseline", val_bpb=2.5)
        decided(1, "discard", description="wider", val_bpb=2.6)
        decided(
            2, "discard", description="lr 1e-5",
            details={"early_abort": {"progress": 0.4, "gap": 0.31}},
        )  # fmt: skip
        export_results_tsv(journal, run.id, tmp_path / "results.tsv")
        summary = summarize(journal, run.id)
        experiments = journal.experiments(run.id)
    rows = read_results(tmp_path / "results.tsv")
    assert rows[2]["val_bpb"] == "0.000000" and rows[2]["status"] == "discard"
    assert rows[2]["description"] == (
        "lr 1e-5 (no val_bpb: stopped early at 40% of the budget, loss +31.0% against the best "
        "run's)"
    )
    assert rows[1]["description"] == "wider"
    assert summary.discarded == 2 and summary.stopped_early == 1
    assert [p.val_bpb for p in summary.points] == [2.5, 2.6, None]
    text = render_markdown(summary)
    assert "2 discarded (1 of them stopped early by early abort, with no val_bpb)" in text
    assert "0.000000 val_bpb" not in text and "lr 1e-5" not in text
    chart = tmp_path / "chart.png"
    plot_progress(experiments, chart)
    assert mpimg.imread(chart).shape[:2] == (800, 1600)


@pytest.mark.e2e
def test_without_matplotlib_the_module_imports_and_the_chart_says_how_to_install() -> None:
    code = f"""
        import sys
        from pathlib import Path
        from cockpit.report import plot
        from cockpit.report.summary import ReportError
        assert "matplotlib" not in sys.modules and "textual" not in sys.modules
        sys.modules["matplotlib"] = None  # as if it were not installed
        try:
            plot.plot_progress([], Path("never.png"))
        except ReportError as error:
            assert str(error) == {MATPLOTLIB_MISSING!r}, str(error)
        else:
            raise SystemExit("plot_progress drew a chart without matplotlib")
        assert not Path("never.png").exists()
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_cockpit_report_command_writes_both_files(report: Report, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "cockpit", "report", "--workspace", str(report.workspace),
         "--out", str(out), "--tag", "mar5"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {out / REPORT_MD}" in result.stdout
    assert (out / PROGRESS_PNG).read_bytes()[:8] == PNG_SIGNATURE
    assert (out / REPORT_MD).read_text() == report.markdown.read_text()
    unknown = subprocess.run(
        [sys.executable, "-m", "cockpit", "report", "--workspace", str(report.workspace),
         "--tag", "nosuch"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2 and "mar5" in unknown.stderr


@pytest.mark.e2e
def test_cockpit_report_json_prints_the_figures_of_report_md(
    report: Report, tmp_path: Path
) -> None:
    """--json writes no file and prints what results.tsv and the gain by proposer say."""
    result = subprocess.run(
        [sys.executable, "-m", "cockpit", "report", "--workspace", str(report.workspace),
         "--out", str(tmp_path / "none"), "--json"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "none").exists()
    data = json.loads(result.stdout)
    rows = report.rows
    assert data["tag"] == "mar5" and data["workspace"] == str(report.workspace.resolve())
    assert data["experiments"] == len(rows) - 1 == 99
    assert data["kept"] == [row["status"] for row in rows[1:]].count("keep")
    assert data["baseline_val_bpb"] == pytest.approx(float(rows[0]["val_bpb"]), abs=5e-7)
    kept = [float(row["val_bpb"]) for row in rows if row["status"] == "keep"]
    assert data["best_val_bpb"] == pytest.approx(min(kept), abs=5e-7)
    gains = {gain["proposer"]: gain for gain in data["proposer_gains"]}
    assert sum(g["experiments"] for g in gains.values()) == 99
    assert sum(g["gained_bpb"] for g in gains.values()) == pytest.approx(
        data["total_gain_bpb"], abs=1e-6
    )
    assert [s["number"] for s in data["test_split"]["scores"]][:1] == [0]
    assert len(data["points"]) == 100


def test_the_gain_by_proposer_sums_what_each_proposers_keeps_lowered_the_best(
    tmp_path: Path,
) -> None:
    """Each keep gains the best before it minus its val_bpb, in the run's order, and nothing
    when it lowered nothing; a crash counts as decided, a veto does not, and the model does
    not split a proposer."""
    path = tmp_path / ".cockpit" / "journal.db"
    with Journal.open(path) as journal:
        run = journal.create_run("x", "cockpit/x", "0" * 40, "autonomous", "hybrid", {}, "fp")

        def decided(number: int, proposer: str, decision: str, value: float | None) -> None:
            model = "qwen2.5-coder:7b" if proposer == "llm" else None
            experiment = journal.add_experiment(
                run.id, number, commit_sha=f"{number:040x}", proposer=proposer, model=model,
                description=f"change {number}", status="evaluating", val_bpb=value,
            )  # fmt: skip
            journal.record_decision(experiment.id, decision, "test")

        decided(0, "baseline", "keep", 3.0)
        decided(1, "llm", "keep", 2.9)  # gains 0.1
        decided(2, "optuna", "discard", 2.95)
        decided(3, "optuna", "keep", 2.85)  # gains 0.05
        decided(4, "llm", "crash", None)
        decided(5, "builtin", "keep", 2.86)  # kept by hand, worse than the best: gains 0
        decided(6, "llm", "keep", 2.7)  # gains 0.15
        decided(7, "optuna", "keep", 2.68)  # gains 0.02
        decided(8, "llm", "veto", None)
        decided(9, "recovered", "discard", 2.9)
        summary = summarize(journal, run.id)

    rows = [
        (g.proposer, g.name, g.experiments, g.kept, g.best_gain_number)
        for g in summary.proposer_gains
    ]
    assert rows == [
        ("llm", "LLM", 3, 2, 6),
        ("optuna", "Optuna", 3, 2, 3),
        ("builtin", "built-in", 1, 1, None),
        ("recovered", "recovered", 1, 0, None),
    ]
    llm, optuna, builtin, recovered = summary.proposer_gains
    assert llm.keep_rate == pytest.approx(2 / 3) and recovered.keep_rate == 0.0
    assert llm.gained_bpb == pytest.approx(0.25, abs=1e-12)
    assert llm.best_gain_bpb == pytest.approx(0.15, abs=1e-12)
    assert optuna.gained_bpb == pytest.approx(0.07, abs=1e-12)
    assert optuna.best_gain_bpb == pytest.approx(0.05, abs=1e-12)
    assert builtin.gained_bpb == 0.0 and builtin.best_gain_bpb is None
    assert recovered.gained_bpb == 0.0 and recovered.best_gain_bpb is None
    assert summary.total_gain_bpb == pytest.approx(0.32, abs=1e-12)  # 3.0 - 2.68: the same sum
    assert sum(g.experiments for g in summary.proposer_gains) == summary.experiments == 8

    text = render_markdown(summary)
    table = text[text.index("## Gain by proposer") : text.index("## Kept changes")]
    assert table.splitlines()[-7:] == [
        "| proposer | experiments | kept | keep rate | val_bpb gained | best keep |",
        "|---|--:|--:|--:|--:|--:|",
        "| LLM | 3 | 2 | 66.7 % | 0.250000 | 0.150000 (#6) |",
        "| Optuna | 3 | 2 | 66.7 % | 0.070000 | 0.050000 (#3) |",
        "| built-in | 1 | 1 | 100.0 % | 0.000000 | \u2014 |",
        "| recovered | 1 | 0 | 0.0 % | 0.000000 | \u2014 |",
        "",
    ]

    as_json = json.loads(json.dumps(summary.as_json()))
    assert as_json["proposer_gains"][0] == {
        "proposer": "llm",
        "name": "LLM",
        "experiments": 3,
        "kept": 2,
        "keep_rate": pytest.approx(2 / 3),
        "gained_bpb": pytest.approx(0.25, abs=1e-12),
        "best_gain_bpb": pytest.approx(0.15, abs=1e-12),
        "best_gain_number": 6,
    }
    assert [row["name"] for row in as_json["proposer_gains"]] == [
        "LLM", "Optuna", "built-in", "recovered",
    ]  # fmt: skip
    assert as_json["proposer_gains"][3]["best_gain_bpb"] is None


def test_the_gains_of_a_long_run_add_up_to_its_total_gain(report: Report) -> None:
    summary = report.summary
    assert summary.total_gain_bpb is not None
    assert sum(g.gained_bpb for g in summary.proposer_gains) == pytest.approx(
        summary.total_gain_bpb, abs=1e-9
    )
    counted: dict[str, int] = {}
    for label, count in report.recorded.proposers.items():
        proposer = label.split(" ")[0]  # "ollama (qwen2.5-coder:7b)": the model is not a proposer
        counted[proposer] = counted.get(proposer, 0) + count
    assert {g.proposer: g.experiments for g in summary.proposer_gains} == counted
    assert sum(g.kept for g in summary.proposer_gains) == summary.kept
    gained = [g.gained_bpb for g in summary.proposer_gains]
    assert gained == sorted(gained, reverse=True)
    text = report.markdown.read_text()
    for gain in summary.proposer_gains:
        assert f"| {gain.name} | {gain.experiments} | {gain.kept} | " in text
