"""`cockpit bench trainer`: how fast the default research script trains on this machine.

Runs the script (the workspace's, or the bundled template) under the real harness for the
budget, then a plain PyTorch GPT of the same size with the same attention for the same
budget, and prints tokens per second, MFU, steps, val_bpb and peak memory for both. MFU on
the CPU is against a float32 matmul peak measured on the spot; on a GPU, against the card's
dense bf16 peak.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from cockpit.config import Settings
from cockpit.engine.runner import RunResult, TrainingProcess
from cockpit.training import RunFiles, build_job, script_for

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
        "val_bpb": summary.get("val_bpb"),
        "peak_memory_mb": memory,
        "peak_memory_kind": "GPU (allocated)" if device.startswith("cuda") else "process RSS",
        "num_params_M": summary.get("num_params_M"),
        "training_seconds": summary.get("training_seconds"),
        "total_seconds": summary.get("total_seconds"),
    }


def _run(
    settings: Settings, script: Path, base: Path, directory: Path, env: dict[str, str]
) -> RunResult:
    job = build_job(settings, script, RunFiles.under(directory), base, env=env)
    return TrainingProcess(job).wait()


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    if isinstance(value, (int, float)):
        return format(value, spec) + unit
    return "n/a"


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"trainer benchmark: {report['device_name']} ({report['device']}, {report['threads']} threads), "
        f"budget {report['budget_seconds']:g} s, seq_len {report['seq_len']}"
    )
    peak = report.get("peak_tflops")
    basis = (
        "float32 matmul, measured now" if report["device"] == "cpu" else "dense bf16, data sheet"
    )
    print(f"  peak for MFU: {_fmt(peak, '.3f', ' TFLOP/s')} ({basis})")
    for label, key in (("default script", "script"), ("plain GPT", "reference")):
        row = report.get(key)
        if row is None:
            continue
        if row["status"] != "ok":
            print(f"  {label:<15} {row['status']}: {row['reason']}")
            continue
        print(
            f"  {label:<15} tokens/s {_fmt(row['tokens_per_second'], ',.0f'):>9}   "
            f"MFU {_fmt(row['mfu_percent'], '.1f', '%'):>6}   steps {row['num_steps']:>6}   "
            f"val_bpb {_fmt(row['val_bpb'], '.4f')}   "
            f"peak memory {_fmt(row['peak_memory_mb'], ',.0f', ' MB')} ({row['peak_memory_kind']})"
        )
    if report.get("speed_vs_plain_gpt") is not None:
        print(f"  speed against the plain GPT: {report['speed_vs_plain_gpt']:.2f}x tokens/s")


def run_trainer_bench(
    settings: Settings, workspace: Path | None, as_json: bool, reference: bool
) -> int:
    script = script_for(settings, workspace)
    base = workspace or Path.cwd()
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-") as scratch:
        print(
            f"training {script.name} for {settings.trainer.budget_seconds:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        main = _run(settings, script, base, Path(scratch, "script"), {})
        comparison = None
        if reference:
            print(
                f"training the plain GPT for {settings.trainer.budget_seconds:g} s ...",
                file=sys.stderr,
                flush=True,
            )
            comparison = _run(
                settings, REFERENCE_SCRIPT, base, Path(scratch, "reference"),
                {"COCKPIT_BENCH_TEMPLATE": str(script)},
            )  # fmt: skip
    summary = main.summary
    peak = summary.get("peak_flops")
    report: dict[str, Any] = {
        "device": summary.get("device", settings.trainer.device),
        "device_name": summary.get("device_name", "unknown"),
        "threads": summary.get("threads"),
        "budget_seconds": settings.trainer.budget_seconds,
        "seq_len": summary.get("seq_len"),
        "peak_tflops": peak / 1e12 if isinstance(peak, (int, float)) else None,
        "script": _figures(main),
        "reference": _figures(comparison) if comparison is not None else None,
        "speed_vs_plain_gpt": None,
    }
    if comparison is not None:
        ours = report["script"]["tokens_per_second"]
        theirs = report["reference"]["tokens_per_second"]
        if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs > 0:
            report["speed_vs_plain_gpt"] = ours / theirs
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0 if main.outcome.status == "ok" else int(main.outcome)
