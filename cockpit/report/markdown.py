"""``report.md``: the figures of a run that a researcher reads in the morning (the headline
figures, the gain by proposer, the kept changes, the crashes, the test split), with a link to
its chart."""

from __future__ import annotations

from collections.abc import Sequence

from cockpit.engine import programs
from cockpit.report.plot import PROGRESS_PNG
from cockpit.report.summary import ProposerGain, RunSummary, one_line


def _render_generalisation(found: programs.Generalisation) -> list[str]:
    lines = ["", "## Test split", ""]
    gains = found.gains()
    if gains is not None:
        lines += [
            f"Validation gain {gains[0]:.4f}, test gain {gains[1]:.4f} bits per byte (the best "
            "kept experiment against the baseline). The test split is read by no decision: "
            "a test gain well below the validation gain means the keeps fit the validation "
            "split more than the task.",
            "",
        ]
    if found.scores:
        lines += ["| # | val_bpb | test_bpb | |", "|--:|--:|--:|---|"]
        for score in found.scores:
            val = "\u2014" if score.val_bpb is None else f"{score.val_bpb:.6f}"
            test = "\u2014" if score.test_bpb is None else f"{score.test_bpb:.6f}"
            lines.append(f"| {score.number} | {val} | {test} | {_cell(score.error)} |")
    else:
        lines.append("No baseline or kept experiment has a score yet.")
    lines += [
        "",
        f"Kept models: {found.programs} ({found.program_bytes / 1e6:.1f} MB on disk; the "
        "baseline's and the kept experiments' are kept, the others pruned once decided).",
    ]
    return lines


def render_markdown(
    summary: RunSummary,
    plot_name: str = PROGRESS_PNG,
    generalised: programs.Generalisation | None = None,
) -> str:
    """The Markdown report of a run: headline figures, the gain by proposer, the kept changes
    with what each gained, the crashes, the test split's figures and a link to the chart
    (``plot_name``, next to the report)."""
    name = summary.tag or "run"
    lines = [f"# Research report: {name}", ""]
    if summary.branch:
        status = f" ({summary.run_status})" if summary.run_status else ""
        lines += [f"Run `{summary.tag}` on branch `{summary.branch}`{status}.", ""]
    lines += ["| | |", "|---|---|"]
    for label, value in _headline_rows(summary):
        lines.append(f"| {label} | {value} |")
    lines.append("")
    if summary.baseline_failure:
        lines += [f"The baseline crashed: {_cell(summary.baseline_failure)}.", ""]
    if (
        summary.branch_commit
        and summary.best_commit
        and summary.branch_commit != summary.best_commit
    ):
        lines += [
            f"Note: the branch `{summary.branch}` points at `{summary.branch_commit}`, "
            f"not at the best result `{summary.best_commit}`: a decision was overridden.",
            "",
        ]
    lines += [
        f"![val_bpb over experiments]({plot_name})",
        "",
        f"The chart is `{plot_name}`, next to this file: val_bpb of every experiment, "
        "kept changes in green, the running best as a line (an experiment stopped early has "
        "no val_bpb and is not drawn).",
        "",
        *_render_proposer_gains(summary.proposer_gains),
        f"## Kept changes ({len(summary.kept_changes)})",
        "",
    ]
    if summary.kept_changes:
        lines += [
            "| # | commit | val_bpb | \u0394 vs best before | change |",
            "|--:|---|--:|--:|---|",
        ]
        for change in summary.kept_changes:
            delta = "\u2014" if change.delta_bpb is None else f"{change.delta_bpb:+.6f}"
            lines.append(
                f"| {change.number} | `{change.commit}` | {change.val_bpb:.6f} | {delta} | "
                f"{_cell(change.description)} |"
            )
    else:
        lines.append("No change beat the baseline.")
    lines += ["", f"## Crashes ({len(summary.crashes)})", ""]
    if summary.crashes:
        lines += ["| # | status | change | reason |", "|--:|---|---|---|"]
        for crash in summary.crashes:
            lines.append(
                f"| {crash.number} | {crash.status} | {_cell(crash.description)} | "
                f"{_cell(crash.reason)} |"
            )
    else:
        lines.append("No experiment crashed.")
    if generalised is not None:
        lines += _render_generalisation(generalised)
    return "\n".join(lines) + "\n"


def _render_proposer_gains(gains: Sequence[ProposerGain]) -> list[str]:
    """The gain by proposer: one table row per proposer (nothing before the first experiment)."""
    if not gains:
        return []
    lines = [
        "## Gain by proposer",
        "",
        "What each proposer's keeps gained: how much each lowered the best val_bpb at the time "
        "it was kept, summed, and the largest of them.",
        "",
        "| proposer | experiments | kept | keep rate | val_bpb gained | best keep |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for gain in gains:
        best = (
            "\u2014"
            if gain.best_gain_bpb is None
            else f"{gain.best_gain_bpb:.6f} (#{gain.best_gain_number})"
        )
        lines.append(
            f"| {_cell(gain.name)} | {gain.experiments} | {gain.kept} | "
            f"{100 * gain.keep_rate:.1f} % | {gain.gained_bpb:.6f} | {best} |"
        )
    return [*lines, ""]


def _headline_rows(summary: RunSummary) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if summary.baseline_val_bpb is not None:
        rows.append(
            (
                "Baseline",
                f"{summary.baseline_val_bpb:.6f} val_bpb (commit `{summary.baseline_commit}`)",
            )
        )
    else:
        rows.append(("Baseline", "none yet"))
    if summary.best_val_bpb is not None:
        rows.append(
            (
                "Best",
                f"**{summary.best_val_bpb:.6f}** val_bpb (#{summary.best_number}, "
                f"commit `{summary.best_commit}`)",
            )
        )
    if summary.total_gain_bpb is not None:
        percent = (
            "" if summary.total_gain_percent is None else f" ({summary.total_gain_percent:.2f} %)"
        )
        rows.append(("Total gain", f"{summary.total_gain_bpb:.6f} bpb{percent}"))
    if summary.verified_message is not None:
        rows.append(("Verified", _cell(summary.verified_message)))
    elif summary.best_number:
        rows.append(("Verified", "not yet: `cockpit verify` trains the best on fresh seeds"))
    stopped = (
        f" ({summary.stopped_early} of them stopped early by early abort, with no val_bpb)"
        if summary.stopped_early
        else ""
    )
    experiments = (
        f"{summary.experiments} after the baseline: {summary.kept} kept, "
        f"{summary.discarded} discarded{stopped}, {summary.crashed} crashed"
    )
    if summary.vetoed:
        experiments += f" ({summary.vetoed} more vetoed before training)"
    rows.append(("Experiments", experiments))
    if summary.keep_rate is not None:
        rows.append(
            (
                "Keep rate",
                f"{100 * summary.keep_rate:.1f} % ({summary.kept} of {summary.experiments})",
            )
        )
    if summary.wall_clock_seconds is not None:
        rows.append(
            (
                "Time spent",
                f"{format_duration(summary.wall_clock_seconds)} wall clock, "
                f"{format_duration(summary.training_seconds)} of it training",
            )
        )
    if summary.proposers:
        rows.append(
            (
                "Proposers",
                ", ".join(f"{_cell(name)}: {count}" for name, count in summary.proposers.items()),
            )
        )
    return rows


def format_duration(seconds: float) -> str:
    """A duration as a person reads it: ``42 s``, ``5 min 03 s``, ``9 h 05 min``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return one_line(text).replace("|", "\\|")
