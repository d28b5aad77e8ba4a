"""A workspace's report: a run of its journal, picked by tag or the latest, read into a
`RunReport` (its summary and its test-split scores) and written as ``progress.png`` and
``report.md``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cockpit.engine import programs
from cockpit.report.markdown import render_markdown
from cockpit.report.plot import PROGRESS_PNG, plot_progress
from cockpit.report.summary import ReportError, RunSummary, summarize
from cockpit.store.atomic import write_atomic
from cockpit.store.journal import Journal
from cockpit.store.paths import WorkspacePaths
from cockpit.store.records import JournalError, Run

REPORT_MD = "report.md"
REPORT_DIRNAME = "report"


def workspace_journal_path(workspace_dir: Path) -> Path:
    """Where a workspace's journal is, without touching the workspace."""
    return WorkspacePaths(Path(workspace_dir)).journal


def select_run(journal: Journal, tag: str | None) -> Run:
    """The run tagged ``tag``, or the latest when tag is None; ReportError when there is none."""
    if tag is None:
        run = journal.latest_run()
        if run is None:
            raise ReportError(_no_experiments(journal.path.parent.parent))
        return run
    run = journal.run_by_tag(tag)
    if run is None:
        tags = [r.tag for r in journal.runs()]
        if not tags:
            raise ReportError(_no_experiments(journal.path.parent.parent))
        raise ReportError(
            f"no run tagged {tag!r} in this workspace; its runs are: {', '.join(tags)} "
            f"(leave out --tag for the latest, {tags[-1]!r})"
        )
    return run


@dataclass(frozen=True)
class RunReport:
    """What a report says of one run of a workspace: its summary and its test-split scores."""

    workspace: Path
    tag: str
    summary: RunSummary
    generalised: programs.Generalisation

    def as_json(self) -> dict[str, Any]:
        """``cockpit report --json``: the summary, with the test split's scores and gains."""
        gains = self.generalised.gains()
        return {
            "workspace": str(self.workspace),
            "tag": self.tag,
            **self.summary.as_json(),
            "test_split": {
                "validation_gain": None if gains is None else gains[0],
                "test_gain": None if gains is None else gains[1],
                "scores": [dataclasses.asdict(score) for score in self.generalised.scores],
                "programs": self.generalised.programs,
                "program_bytes": self.generalised.program_bytes,
            },
        }


def read_report(workspace_dir: Path, tag: str | None = None, cache_dir: str = "") -> RunReport:
    """The report of a run of the workspace: the one tagged ``tag``, or the latest.

    The journal is opened read-only, so a report can be made while the engine runs. Raises
    ReportError (the message says what to do) for a missing workspace, a workspace with no
    experiments, an unknown tag or a journal that cannot be read."""
    workspace = Path(workspace_dir).expanduser().resolve()
    if not workspace.is_dir():
        raise ReportError(
            f"workspace {workspace} does not exist; check the path given to --workspace"
        )
    path = workspace_journal_path(workspace)
    if not path.exists():
        raise ReportError(_no_experiments(workspace))
    try:
        with Journal.open(path, readonly=True) as journal:
            run = select_run(journal, tag)
            summary = summarize(journal, run.id)
            experiments = journal.experiments(run.id)
    except JournalError as error:
        raise ReportError(str(error)) from error
    generalised = programs.generalisation(
        WorkspacePaths(workspace).runs(run.tag), experiments, cache_dir
    )
    return RunReport(workspace, run.tag, summary, generalised)


def write_report(
    workspace_dir: Path, out_dir: Path | None = None, tag: str | None = None, cache_dir: str = ""
) -> tuple[Path, Path]:
    """Write ``progress.png`` and ``report.md`` of a run of the workspace into ``out_dir``
    (default ``<workspace>/report/``); their paths, in that order.

    Raises ReportError as ``read_report`` does, and for a missing matplotlib."""
    report = read_report(workspace_dir, tag, cache_dir)
    target = report.workspace / REPORT_DIRNAME if out_dir is None else Path(out_dir).expanduser()
    png_path = target / PROGRESS_PNG
    markdown_path = target / REPORT_MD
    plot_progress(report.summary, png_path)
    markdown = render_markdown(report.summary, PROGRESS_PNG, report.generalised)
    write_atomic(markdown_path, markdown.encode("utf-8"))
    return png_path, markdown_path


def _no_experiments(workspace: Path) -> str:
    return f"no experiments recorded in {workspace} yet: start a run with `cockpit run`"
