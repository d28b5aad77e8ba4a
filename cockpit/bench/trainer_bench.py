"""`cockpit bench trainer`: how fast the default research script trains on this machine.

Runs the script (the workspace's, or the bundled template) under the real harness for the
budget, then a plain PyTorch GPT of the same size with the same attention for the same
budget, and prints tokens per second, MFU, steps, val_bpb and peak memory for both. MFU on
the CPU is against a float32 matmul peak measured on the spot; on a GPU, against the card's
dense bf16 peak.

The script plans its steps from its pace in this benchmark (a plan file of its own), never
from a plan remembered from another run. With --repeat N the two alternate N times, the
order swapped each round so that a drift of the machine's speed favours neither; the rows
show the run with the median tokens/s, and the speed figure is the median of the rounds'
ratios, with every round's ratio beside it.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from cockpit.config import Settings
from cockpit.engine.jobs import RunFiles, build_job, script_for
from cockpit.engine.runner import RunResult, TrainingProcess

REFERENCE_SCRIPT = Path(__file__).resolve().parent / "reference_gpt.py"


def _figures(result: RunResult) -> dict[str, Any]:
    summary = result.summary
    device = str(summary.get("device", "cpu"))
    memory = (
        summary.get("peak_vram_mb") if device.startswith("cuda") else summary.get("peak_rss_mb")
    )
    return {
        "status": result.outcome.status,
        "reason": result.reason or None,
        "tokens_per_second": summary.get("tokens_per_second"),
        "mfu_percent": summary.get("mfu_percent"),
        "num_steps": summary.get("num_steps"),
        "planned_steps": summary.get("planned_steps"),
        "plan_reused": summary.get("plan_reused"),
        # How the plan settled after the round (trainer.pacing.Pacing.settle): None (kept),
        # "shrunk" (it ran out of time and was cut) or "stale" (dropped: the round ran much
        # faster than the plan's first run); after either, the next round may plan afresh.
        "plan_settled": summary.get("plan_settled"),
        "val_bpb": summary.get("val_bpb"),
        "peak_memory_mb": memory,
        "peak_memory_kind": "GPU (allocated)" if device.startswith("cuda") else "process RSS",
        "num_params_M": summary.get("num_params_M"),
        "training_seconds": summary.get("training_seconds"),
        "total_seconds": summary.get("total_seconds"),
        **_costs(summary),
    }


FIVE_MINUTES = 300.0


def _costs(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run costs beyond its training, and the part the separate, confined evaluation
    adds: the training process's own start-up, the export, and the evaluation's checks."""
    parts = {
        "training_startup_seconds": summary.get("training_startup_seconds"),
        "export_seconds": summary.get("export_seconds"),
        "evaluation_seconds": summary.get("evaluation_seconds"),
        "evaluation_checks_seconds": summary.get("evaluation_checks_seconds"),
    }
    total, training = summary.get("total_seconds"), summary.get("training_seconds")
    beyond = total - training if isinstance(total, float) and isinstance(training, float) else None
    keys = ("training_startup_seconds", "export_seconds", "evaluation_checks_seconds")
    added_parts = [v for v in (parts[k] for k in keys) if isinstance(v, float)]
    added = sum(added_parts) if len(added_parts) == len(keys) else None
    return {
        **parts,
        "beyond_training_seconds": beyond,
        "added_seconds": added,
        "added_percent_of_five_minutes": 100 * added / FIVE_MINUTES if added is not None else None,
    }


def _run(
    settings: Settings,
    script: Path,
    base: Path,
    directory: Path,
    env: dict[str, str],
    pacing: Path,
) -> RunResult:
    job = build_job(settings, script, RunFiles.under(directory), base, env=env, pacing=pacing)
    return TrainingProcess(job).wait()


def _median_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the median tokens/s (the lower middle one of an even count); a failed
    run's row when no run succeeded."""
    timed = [row for row in rows if isinstance(row.get("tokens_per_second"), (int, float))]
    if not timed:
        return rows[0]
    timed.sort(key=lambda row: row["tokens_per_second"])
    return timed[(len(timed) - 1) // 2]


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    if isinstance(value, (int, float)):
        return format(value, spec) + unit
    return "n/a"


def render_table(report: dict[str, Any]) -> list[str]:
    """The table `cockpit bench trainer` prints for its JSON report (``--json``)."""
    lines = [
        f"trainer benchmark: {report['device_name']} ({report['device']}, {report['threads']} threads), "
        f"budget {report['budget_seconds']:g} s, seq_len {report['seq_len']}"
    ]
    peak = report.get("peak_tflops")
    basis = (
        "float32 matmul, measured now" if report["device"] == "cpu" else "dense bf16, data sheet"
    )
    lines.append(f"  peak for MFU: {_fmt(peak, '.3f', ' TFLOP/s')} ({basis})")
    for label, key in (("default script", "script"), ("plain GPT", "reference")):
        row = report.get(key)
        if row is None:
            continue
        if row["status"] != "ok":
            lines.append(f"  {label:<15} {row['status']}: {row['reason']}")
            continue
        lines.append(
            f"  {label:<15} tokens/s {_fmt(row['tokens_per_second'], ',.0f'):>9}   "
            f"MFU {_fmt(row['mfu_percent'], '.1f', '%'):>6}   steps {row['num_steps']:>6}   "
            f"val_bpb {_fmt(row['val_bpb'], '.4f')}   "
            f"peak memory {_fmt(row['peak_memory_mb'], ',.0f', ' MB')} ({row['peak_memory_kind']})"
        )
    row = report.get("script")
    if row is not None and row.get("added_seconds") is not None:
        lines.append(
            f"  beyond training: {_fmt(row['beyond_training_seconds'], '.1f', ' s')} per run "
            f"(training process start-up {_fmt(row['training_startup_seconds'], '.1f', ' s')}, "
            f"export {_fmt(row['export_seconds'], '.1f', ' s')}, evaluation "
            f"{_fmt(row['evaluation_seconds'], '.1f', ' s')} of which checks "
            f"{_fmt(row['evaluation_checks_seconds'], '.1f', ' s')})"
        )
        lines.append(
            f"  added by the confined training and separate evaluation: "
            f"{row['added_seconds']:.1f} s per experiment, "
            f"{row['added_percent_of_five_minutes']:.1f}% of a five-minute budget"
        )
    if report.get("speed_vs_plain_gpt") is not None:
        line = f"  speed against the plain GPT: {report['speed_vs_plain_gpt']:.2f}x tokens/s"
        rounds = report.get("speed_rounds") or []
        if len(rounds) > 1:
            line += f" (median of {len(rounds)} rounds: {', '.join(f'{r:.2f}' for r in rounds)})"
        lines.append(line)
    return lines


def run_trainer_bench(
    settings: Settings,
    workspace: Path | None,
    as_json: bool,
    reference: bool,
    repeat: int = 1,
) -> int:
    if repeat < 1:
        print(f"cockpit: --repeat must be 1 or more, got {repeat}", file=sys.stderr)
        return 2
    script = script_for(settings, workspace)
    base = workspace or Path.cwd()
    budget = settings.trainer.budget_seconds
    ours: list[RunResult] = []
    theirs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-") as scratch:
        pacing = Path(scratch, "pacing.json")
        for round_index in range(repeat):
            order: list[tuple[str, Path, dict[str, str], list[RunResult]]] = [
                ("script", script, {}, ours)
            ]
            if reference:
                sized_like = {"COCKPIT_BENCH_TEMPLATE": str(script)}
                order.append(("reference", REFERENCE_SCRIPT, sized_like, theirs))
            if round_index % 2:
                order.reverse()
            for name, path, env, results in order:
                label = script.name if name == "script" else "the plain GPT"
                count = f" (round {round_index + 1} of {repeat})" if repeat > 1 else ""
                print(f"training {label} for {budget:g} s{count} ...", file=sys.stderr, flush=True)
                directory = Path(scratch, f"{name}-{round_index + 1}")
                results.append(_run(settings, path, base, directory, env, pacing))
    summary = ours[0].summary
    peak = summary.get("peak_flops")
    script_rows = [_figures(result) for result in ours]
    reference_rows = [_figures(result) for result in theirs]
    rounds: list[float] = []
    for mine, plain in zip(script_rows, reference_rows, strict=False):
        a, b = mine["tokens_per_second"], plain["tokens_per_second"]
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
            rounds.append(a / b)
    report: dict[str, Any] = {
        "device": summary.get("device", settings.trainer.device),
        "device_name": summary.get("device_name", "unknown"),
        "threads": summary.get("threads"),
        "budget_seconds": budget,
        "seq_len": summary.get("seq_len"),
        "peak_tflops": peak / 1e12 if isinstance(peak, (int, float)) else None,
        "repeat": repeat,
        "script": _median_run(script_rows),
        "reference": _median_run(reference_rows) if reference_rows else None,
        "speed_vs_plain_gpt": statistics.median(rounds) if rounds else None,
        "speed_rounds": rounds,
        "script_runs": script_rows,
        "reference_runs": reference_rows,
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(render_table(report)))
    failed = next((result for result in ours if result.outcome.status != "ok"), None)
    return 0 if failed is None else int(failed.outcome)
