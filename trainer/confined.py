"""The training process's entry: ``python -m trainer.confined SPEC.json``.

The harness starts this process to run the untrusted training script. Before anything of
the script (or torch, which starts threads) is loaded, the process confines itself for good:
off the host's network, and able to write only its own folder and read only what Python,
PyTorch and the training split need (see trainer.confine). Then it trains, exports the model's
forward (see trainer.program) and exits; the harness evaluates that export in a process that
never runs the script.

Only the standard library is imported here, so that confinement comes first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import bounds as bounding
from trainer.confine import ENFORCED_BY, Confinement, ConfinementError, confine, layer_named


@dataclass(frozen=True)
class TrainingSpec:
    """Everything the training process needs, written by the harness as JSON."""

    script: str
    budget_seconds: float
    grace_seconds: float
    device: str
    seed: int
    seq_len: int
    threads: int
    vocab_size: int
    train_path: str  # the training split: the only tokens this process may read
    work_dir: str  # the only folder it may write (its temporary folder lives inside)
    program_path: str  # where the exported forward goes
    result_path: str  # where the training figures go (JSON)
    pacing_path: str  # its copy of the step plans
    pacing_facts: list[str]  # what else keys a plan besides the script's content
    metrics_fd: int | None = None
    confinement: str = "auto"
    read: list[str] = field(default_factory=list)
    read_write: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    layer: str = "full"  # the confinement layer (trainer.confine.LAYERS) the probe chose
    layer_reason: str = ""  # why it is not the full one
    nvidia: bool = False  # an NVIDIA device exists: grant what its driver needs in /proc
    probe: bool = False  # run the device probe (trainer.probe) instead of a training
    probe_compile: bool = True  # the probe compiles a function (on CUDA it always does)
    bounds: dict[str, int] | None = None  # trainer.bounds.Bounds; None: none (the probe)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def read_from(cls, path: Path) -> TrainingSpec:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trainer.confined SPEC.json", file=sys.stderr)
        return 2
    spec = TrainingSpec.read_from(Path(argv[0]))
    bounds = bounding.Bounds.from_dict(spec.bounds)
    # Before confinement: Landlock refuses a process's writes to its own oom_score_adj.
    first_to_go = bounds is not None and bounding.first_to_go()
    try:
        confinement: Confinement | Exception = confine(
            spec.confinement,
            spec.read,
            spec.read_write,
            spec.devices,
            layer=layer_named(spec.layer),
            nvidia=spec.nvidia,
            why=spec.layer_reason,
        )
    except (ConfinementError, ValueError) as refused:
        confinement = refused
    if bounds is not None and isinstance(confinement, Confinement):
        table = bounding.apply(bounds, confinement.network == ENFORCED_BY, first_to_go)
        confinement = dataclasses.replace(confinement, bounds=table)
    if spec.probe:
        from trainer.probe import run_steps

        return run_steps(spec, confinement)
    from trainer.training import run_training

    return run_training(spec, confinement)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything is written and flushed by now. Leave without the interpreter's teardown: a
    # native thread of the script's libraries still running there can abort the process after
    # an honest result, and the harness would read SIGABRT instead of the exit code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
