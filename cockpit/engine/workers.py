"""Workers: the slots trainings run in side by side, each with a device of its own.

One worker per visible GPU by default (one on a machine without one); on a CPU, each worker
gets an equal share of the cores, pinned, and as many torch threads (cores left over when
they do not divide evenly train nothing: unequal shares would make unequal results). Two trainings never
share a device: asking for more workers than there are devices is an error that says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class WorkerError(ValueError):
    """The workers asked for do not fit the machine; the message says what would."""


@dataclass(frozen=True)
class Worker:
    """One slot: where its trainings run."""

    index: int
    device: str  # "cpu", "cuda" or "cuda:N" (N as CUDA_VISIBLE_DEVICES names the card)
    cpus: tuple[int, ...] = ()  # the cores it is pinned to; (): not pinned
    where: str = ""  # the cluster engine that places its trainings ("": this machine)
    threads: int = 0  # torch threads of its trainings; 0: as many as its cores
    # The kind of its device ("NVIDIA H100 80GB HBM3") where the workers' devices are of
    # several kinds; "" where they are all alike. Results compare within a kind only.
    kind: str = ""

    @property
    def label(self) -> str:
        """How the cockpit names its device: ``cuda:1``, ``cpu 0-3``, ``cpu``, ``ray 2``."""
        if self.where:
            return f"{self.where} {self.index}"
        if not self.cpus:
            return self.device
        if list(self.cpus) == list(range(self.cpus[0], self.cpus[-1] + 1)) and len(self.cpus) > 1:
            return f"cpu {self.cpus[0]}-{self.cpus[-1]}"
        return "cpu " + ",".join(str(core) for core in self.cpus)


def visible_gpus(count: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them: its own list when
    it has one (a worker's card must be named the same way to its training), else 0..count-1."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()] if count else []


def plan_workers(
    requested: int | str,
    device: str,
    gpus: Sequence[str],
    cores: Sequence[int],
    reserved: Sequence[str] = (),
    names: Mapping[str, str] | None = None,
) -> list[Worker]:
    """The workers for ``[engine] workers`` (a count or "auto") and ``[trainer] device``, on a
    machine with these GPUs (as CUDA_VISIBLE_DEVICES names them) and these cores; GPUs in
    ``reserved`` (the model server's) train nothing. ``names`` (GPU -> model name) sets the
    workers' kinds where their GPUs are of several models."""
    if reserved and gpus:
        free = [gpu for gpu in gpus if gpu not in set(reserved)]
        if not free:
            raise WorkerError(
                f"every GPU ({', '.join(gpus)}) is reserved for the model ([agent] "
                "reserved_gpus): leave one for training, or set [agent] on_cpu = true"
            )
        gpus = free
    if requested != "auto" and (not isinstance(requested, int) or requested < 1):
        raise WorkerError(f'workers must be "auto" or a number, 1 or more, not {requested!r}')
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        if requested not in ("auto", 1):
            raise WorkerError(
                f"device {device} is one GPU, so one worker; two trainings never share a "
                f'device. Use device = "cuda" for a worker on each GPU, or --workers 1'
            )
        return [Worker(0, device)]
    on_gpu = kind == "cuda" or (kind == "auto" and len(gpus) > 0)
    if kind == "cuda" and not gpus:
        raise WorkerError('device "cuda" but no GPU is visible; use device = "cpu" or "auto"')
    if on_gpu:
        count = len(gpus) if requested == "auto" else int(requested)
        if count > len(gpus):
            raise WorkerError(
                f"{count} workers need {count} GPUs, and {len(gpus)} "
                f"{'is' if len(gpus) == 1 else 'are'} visible: two trainings never share a "
                f"device. Use --workers {len(gpus)} or fewer"
            )
        if count == 1 and len(gpus) == 1:
            return [Worker(0, device if kind == "cuda" else "auto")]
        chosen = list(gpus[:count])
        models = [(names or {}).get(gpu, "") for gpu in chosen]
        several = len(set(models)) > 1
        return [
            Worker(number, f"cuda:{gpu}", kind=model if several else "")
            for number, (gpu, model) in enumerate(zip(chosen, models, strict=True))
        ]
    count = 1 if requested == "auto" else int(requested)
    if count == 1:
        return [Worker(0, device)]  # the whole machine, as a single training has it
    if count > len(cores):
        raise WorkerError(
            f"{count} workers need {count} cores, and this machine gives {len(cores)}: two "
            f"trainings never share a core. Use --workers {len(cores)} or fewer"
        )
    # Equal shares: a worker with more cores would train further in the same time, and its
    # results would be compared unfairly; the cores left over train nothing.
    share = len(cores) // count
    return [
        Worker(number, "cpu", tuple(cores[number * share : (number + 1) * share]))
        for number in range(count)
    ]


def cluster_workers(
    requested: int | str, device: str, where: str, threads: int = 1
) -> list[Worker]:
    """Workers whose trainings a cluster engine places (SLURM, Ray): as many as asked for
    ("auto": one), each training on whatever device the engine gives it, with as many torch
    threads as the cores it asks for (more would fight over them)."""
    count = 1 if requested == "auto" else int(requested)
    if count < 1:
        raise WorkerError(f'workers must be "auto" or a number, 1 or more, not {requested!r}')
    return [Worker(number, device, where=where, threads=threads) for number in range(count)]
