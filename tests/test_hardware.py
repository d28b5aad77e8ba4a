"""The CPU peak that MFU is measured against: cached, and raised when a run beats it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer import hardware


def cache_key() -> str:
    return f"{hardware.cpu_model_name()}|{torch.get_num_threads()}|{torch.__version__}"


def test_the_peak_is_measured_once_and_cached(tmp_path: Path) -> None:
    first = hardware.cpu_peak_flops(tmp_path)
    assert first > 0
    stored = json.loads((tmp_path / "cpu_peak_flops.json").read_text())
    assert stored[cache_key()] == first
    (tmp_path / "cpu_peak_flops.json").write_text(json.dumps({cache_key(): 123.0}))
    assert hardware.cpu_peak_flops(tmp_path) == 123.0  # the cached figure, not a new measurement


def test_a_run_faster_than_the_cached_peak_raises_it(tmp_path: Path) -> None:
    """A peak measured on a busy machine is too low; MFU must not pass 100 %."""
    (tmp_path / "cpu_peak_flops.json").write_text(json.dumps({cache_key(): 1.0}))
    achieved = 5e6
    peak = hardware.cpu_peak_flops(tmp_path, at_least=achieved)
    assert peak >= achieved and peak > 1.0
    stored = json.loads((tmp_path / "cpu_peak_flops.json").read_text())
    assert stored[cache_key()] == peak
