"""The device probe: before any experiment trusts a device, a short run in exactly the
training's confinement shows that the device works there.

A confinement that breaks the device would otherwise cost the whole night: NVIDIA's driver
(570 and later) names its threads through ``/proc`` in ``cuInit`` and fails with error 304
when that is refused, although ``nvidia-smi`` and NVML still work; every training would crash,
or, decided by a parent that sees the GPU, quietly train on the CPU.

The probe process is the training process without a script (``python -m trainer.confined``
with ``probe`` set): same paths, same environment, same confinement. Its steps are what a
training does: start the device (CUDA's init, which names threads), a bf16 matmul, a
``torch.compile``d function (Inductor; on CUDA, Triton), the export that the evaluator loads
(loaded back here, as the evaluator would), an NVML reading. `decide` turns the outcome into a
verdict:

- it passes: trainings run in full confinement;
- it fails confined but passes unconfined: the confinement broke that step. With
  ``require`` the verdict refuses, saying what to allow; with ``auto`` the weaker layers of
  trainer.confine.LAYERS are tried in order and trainings run in the first that passes, the
  verdict saying which and why;
- it fails unconfined too: the device itself does not work here, and the verdict refuses.
  A GPU that the engine sees is never traded for the CPU behind the researcher's back.

Verdicts are cached in the cache folder per device, driver, torch, kernel and mode, so the
probe costs seconds once, not per experiment; one that is not full confinement is probed again
after `RECHECK_SECONDS`, so that a fixed setting is noticed.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

from trainer import landlock
from trainer.atomic import write_json_atomic
from trainer.confine import FULL, LAYERS, OFF, Confinement, Layer
from trainer.confined import TrainingSpec
from trainer.limits import PROBE_TIMEOUT_SECONDS
from trainer.walls import training_environment, walls_for

PROBE_VERSION = "1"
# The modules whose code a verdict vouches for (see `_confinement_digest`).
CONFINEMENT_MODULES = ("confine.py", "confined.py", "landlock.py", "pidns.py", "probe.py",
                       "sockets.py", "walls.py")  # fmt: skip
CACHE_NAME = "device-probe.json"
RECHECK_SECONDS = 3600.0  # a degraded or refused verdict is probed again after this
# Makes the probe name a thread through /proc as NVIDIA's driver does in cuInit, so that the
# confinement's answer to that can be seen on a machine without an NVIDIA GPU.
THREAD_NAMES_ENV = "COCKPIT_PROBE_THREAD_NAMES"

# What to allow when confinement breaks a step, for the refusal's message.
_ALLOW = {
    "threads": "the writes NVIDIA's driver makes to its threads' names under /proc "
    "(granted where /dev/nvidia* exists; is the driver's device node missing?)",
    "device": "what CUDA's initialisation needs (the /dev/nvidia* nodes, /proc/driver/nvidia; "
    "some kernels refuse CUDA inside an unprivileged user namespace)",
    "compile": "the compiler's caches and tools (Inductor, Triton, CUDA_CACHE_PATH)",
}


@dataclass(frozen=True)
class Step:
    """One thing the probe did: ``ok`` None means it was not needed on this device."""

    name: str
    ok: bool | None
    seconds: float = 0.0
    detail: str = ""
    essential: bool = True  # whether a training needs it on this device

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(
            str(data.get("name")),
            data.get("ok") if isinstance(data.get("ok"), bool) else None,
            float(data.get("seconds") or 0.0),
            str(data.get("detail") or ""),
            bool(data.get("essential", True)),
        )


@dataclass(frozen=True)
class Attempt:
    """The probe run once, at one layer."""

    layer: str
    steps: tuple[Step, ...] = ()
    error: str = ""  # the probe process itself failed: how
    confinement: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> Step | None:
        """The first essential step that failed."""
        return next((s for s in self.steps if s.ok is False and s.essential), None)

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.steps) and self.failed is None

    def what_failed(self) -> str:
        step = self.failed
        if step is not None:
            return f"{step.name} failed ({step.detail})"
        return self.error or "the probe reported nothing"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        confinement = data.get("confinement")
        return cls(
            str(data.get("layer")),
            tuple(Step.from_dict(s) for s in data.get("steps") or () if isinstance(s, dict)),
            str(data.get("error") or ""),
            confinement if isinstance(confinement, dict) else {},
        )


@dataclass(frozen=True)
class DeviceCheck:
    """The verdict on a device: whether trainings may use it, and under which layer."""

    device: str  # "cpu" or "cuda"
    device_name: str
    usable: bool
    layer: str | None  # the layer trainings run under; None: refused
    message: str  # one line: what passed, or what failed and what to do
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False
    checked_at: float = 0.0

    @property
    def degraded(self) -> bool:
        return self.usable and self.layer != FULL.name

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The steps of the attempt the verdict rests on (the last one)."""
        return [asdict(s) for s in self.attempts[-1].steps] if self.attempts else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "usable": self.usable,
            "layer": self.layer,
            "degraded": self.degraded,
            "message": self.message,
            "cached": self.cached,
            "checked_at": self.checked_at,
            "steps": self.steps,
            "attempts": [a.to_dict() for a in self.attempts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceCheck:
        layer = data.get("layer")
        return cls(
            str(data.get("device")),
            str(data.get("device_name")),
            bool(data.get("usable")),
            layer if isinstance(layer, str) else None,
            str(data.get("message")),
            tuple(Attempt.from_dict(a) for a in data.get("attempts") or () if isinstance(a, dict)),
            bool(data.get("cached")),
            float(data.get("checked_at") or 0.0),
        )


# --- the decision --------------------------------------------------------------------------


def decide(
    mode: str, probe: Callable[[Layer], Attempt], device: str, as_root: bool
) -> tuple[bool, str | None, str, tuple[Attempt, ...]]:
    """Whether the device may be used, under which layer, and why: (usable, layer, message,
    attempts). ``probe`` runs the probe at a layer; ``mode`` is auto, require or off."""
    if mode == "off":
        bare = probe(OFF)
        if bare.passed:
            return True, OFF.name, f"{device} works (confinement is off)", (bare,)
        return False, None, _broken(device, bare), (bare,)
    full = probe(FULL)
    if full.passed:
        said = Confinement.from_dict(full.confinement) if full.confinement else None
        if said is not None and not said.enforced:
            # The kernel, not the device, left a part out: the layer is full all the same.
            where = f"all the confinement this kernel allows (not {said.missing}: {said.reason})"
            return True, FULL.name, f"{device} works in {where}", (full,)
        return True, FULL.name, f"{device} works in full confinement", (full,)
    bare = probe(OFF)
    attempts = [full, bare]
    if not bare.passed:
        return False, None, _broken(device, bare), tuple(attempts)
    broke = f"{full.what_failed()} inside the confinement but works outside it"
    allow = _ALLOW.get(full.failed.name if full.failed else "", "what that step needs")
    if mode == "require":
        return False, None, (
            f"{device}: {broke}; require_confinement refuses to train: allow {allow}, or set "
            "[trainer] require_confinement = false to train under the strongest confinement "
            "that works"
        ), tuple(attempts)  # fmt: skip
    skipped = []
    for layer in LAYERS[1:]:
        if not layer.narrow_proc and as_root:
            # Root may write /proc/sys and /proc/sysrq-trigger: no such layer for it.
            skipped.append(f"{layer.name} is never used as root")
            continue
        attempt = probe(layer)
        attempts.append(attempt)
        if attempt.passed:
            return (
                True,
                layer.name,
                f"{device}: {broke}; training runs {layer.label}",
                tuple(attempts),
            )
    return False, None, (
        f"{device}: {broke}, and no weaker confinement lets it work"
        + (f" ({'; '.join(skipped)})" if skipped else "")
        + f"; allow {allow}, or train with --confinement off"
    ), tuple(attempts)  # fmt: skip


def _broken(device: str, bare: Attempt) -> str:
    fix = (
        "check the driver and the torch build (`cockpit doctor`), or set [trainer] device = "
        '"cpu" to train on the CPU'
        if device == "cuda"
        else "check the torch installation (`cockpit doctor`)"
    )
    return f"{device} does not work even without confinement: {bare.what_failed()}; {fix}"


# --- running it ---------------------------------------------------------------------------


def _driver_version() -> str:
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "no NVIDIA driver"


@functools.cache
def _confinement_digest() -> str:
    """A digest of the code that confines a training: a verdict vouches for that code only, so
    a cockpit whose confinement changed (a new namespace, other rules) probes again."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in CONFINEMENT_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()[:16]


def cache_key(device: torch.device, mode: str) -> str:
    """What the verdict depends on: the device, its driver, torch, the kernel, the mode and the
    confinement's own code."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return "|".join(
        [
            PROBE_VERSION,
            _confinement_digest(),
            device.type,
            name,
            _driver_version(),
            torch.__version__,
            mode,
            os.uname().release,
            f"landlock {landlock.abi_version()}",
            "root" if os.geteuid() == 0 else "user",
            os.environ.get(THREAD_NAMES_ENV, ""),
        ]
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_device(
    device: str | torch.device = "auto",
    confinement: str = "auto",
    cache_dir: Path | None = None,
    refresh: bool = False,
    compile_on_cpu: bool = False,
) -> DeviceCheck:
    """The verdict on ``device`` under ``confinement`` (auto, require, off): cached, unless
    ``refresh`` or the cached one is stale; else probed now (seconds; more for a GPU).
    ``compile_on_cpu`` compiles a function on the CPU too (on CUDA it always does)."""
    from trainer.data import default_cache_dir

    if isinstance(device, str):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / CACHE_NAME
    key = cache_key(device, confinement)
    cached = _read_cache(path).get(key)
    if isinstance(cached, dict) and not refresh:
        verdict = DeviceCheck.from_dict(cached)
        fresh = time.time() - verdict.checked_at < RECHECK_SECONDS
        if verdict.layer == FULL.name or fresh:
            return DeviceCheck(**{**verdict.__dict__, "cached": True})
    usable, layer, message, attempts = decide(
        confinement,
        lambda layer: run_probe(device, layer, confinement, cache_dir, compile_on_cpu),
        device.type,
        os.geteuid() == 0,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    verdict = DeviceCheck(device.type, name, usable, layer, message, attempts, False, time.time())
    entries = _read_cache(path)
    entries[key] = verdict.to_dict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, entries)
    return verdict


def run_probe(
    device: torch.device, layer: Layer, mode: str, cache_dir: Path, compile_on_cpu: bool = False
) -> Attempt:
    """Run the probe process once at ``layer``, confined exactly as a training is."""
    compile_cache = cache_dir / "compile"
    compile_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cockpit-probe-") as scratch:
        work_dir = Path(scratch)
        spec = TrainingSpec(
            script="",
            budget_seconds=0.0,
            grace_seconds=0.0,
            device=str(device),
            seed=0,
            seq_len=16,
            threads=1,
            vocab_size=256,
            train_path="",
            work_dir=str(work_dir),
            program_path=str(work_dir / "probe.program"),
            result_path=str(work_dir / "probe.json"),
            pacing_path="",
            pacing_facts=[],
            confinement=mode,
            **walls_for(None, None, work_dir, compile_cache),
            layer=layer.name,
            probe=True,
            probe_compile=compile_on_cpu,
        )
        spec_path = work_dir / "spec.json"
        spec.write(spec_path)
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer.confined", str(spec_path)],
            cwd=work_dir,
            env=training_environment(work_dir, compile_cache),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=PROBE_TIMEOUT_SECONDS[device.type])
        except subprocess.TimeoutExpired:
            _end_tree(process)
            return Attempt(
                layer.name, error=f"the probe ran past {PROBE_TIMEOUT_SECONDS[device.type]:g} s"
            )
        _end_tree(process)
        try:
            report = json.loads(Path(spec.result_path).read_text())
        except (OSError, ValueError):
            tail = output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return Attempt(
                layer.name, error=f"the probe process exited with {process.returncode}: {tail[0]}"
            )
        attempt = Attempt.from_dict({**report, "layer": layer.name})
        return _load_back(attempt, device, Path(spec.program_path))


def _load_back(attempt: Attempt, device: torch.device, program: Path) -> Attempt:
    """Load the probe's export as the evaluator loads a training's, and run it."""
    from trainer.program import ProgramError, load_program

    export = next((s for s in attempt.steps if s.name == "export"), None)
    if export is None or not export.ok:
        return attempt
    started = time.perf_counter()
    try:
        loaded = load_program(program, device)
        logits = loaded(torch.zeros((1, 16), dtype=torch.long, device=device))
        ok, detail = (
            bool(torch.isfinite(logits).all()),
            f"loaded back: logits {tuple(logits.shape)}",
        )
    except (ProgramError, RuntimeError) as exc:
        ok, detail = False, f"the evaluator could not load it: {exc}"
    seconds = export.seconds + time.perf_counter() - started
    steps = tuple(
        Step(s.name, ok, seconds, f"{s.detail}; {detail}", s.essential) if s is export else s
        for s in attempt.steps
    )
    return Attempt(attempt.layer, steps, attempt.error, attempt.confinement)


def _end_tree(process: subprocess.Popen[bytes]) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    if process.poll() is None:
        process.kill()
        process.wait()


# --- in the confined process --------------------------------------------------------------


def _error(exc: BaseException) -> str:
    """An error in one line, with its OS error where there is one (EACCES, CUDA's 304...)."""
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        where = f": {exc.filename}" if exc.filename else ""
        return f"{name} ({exc.strerror}){where}"[:400]
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def _name_a_thread() -> str:
    """Name a new thread through /proc, as NVIDIA's driver does in cuInit."""
    failure: list[BaseException] = []

    def named() -> None:
        try:
            path = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/comm"
            with open(path, "w") as handle:
                handle.write("cockpit-probe")
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=named)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return "named a thread through /proc"


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(256, 32)
        self.out = torch.nn.Linear(32, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(idx)))


def run_steps(spec: TrainingSpec, confinement: Confinement | Exception) -> int:
    """The probe's steps, in the confined process; their outcomes go to ``spec.result_path``."""
    from trainer.program import export_forward

    report: dict[str, Any] = {"steps": []}
    if isinstance(confinement, Exception):
        report["error"] = f"confinement refused: {confinement}"
    else:
        report["confinement"] = confinement.to_dict()
        device = torch.device(spec.device)
        cuda = device.type == "cuda"

        def step(
            name: str, action: Callable[[], str], needed: bool = True, essential: bool = True
        ) -> None:
            if not needed:
                report["steps"].append(asdict(Step(name, None, 0.0, "not needed here", essential)))
                return
            started = time.perf_counter()
            try:
                ok, detail = True, action()
            except BaseException as exc:  # every failure is a finding, not a crash
                ok, detail = False, _error(exc)
                if not isinstance(exc, (OSError, RuntimeError)):
                    traceback.print_exc()
            seconds = time.perf_counter() - started
            report["steps"].append(asdict(Step(name, ok, seconds, detail, essential)))

        def start_device() -> str:
            if cuda:
                torch.cuda.init()
            torch.zeros(1, device=device)
            if cuda:
                torch.cuda.synchronize(device)
                return torch.cuda.get_device_name(device)
            return "cpu"

        def matmul() -> str:
            a = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
            product = a @ a
            if not bool(torch.isfinite(product.float()).all()):
                raise RuntimeError("a bf16 matmul gave non-finite values")
            return "bf16 256x256"

        def compiled() -> str:
            function = torch.compile(lambda x: torch.nn.functional.gelu(x) * 2.0 + 1.0)
            x = torch.randn(64, device=device)
            if not torch.allclose(function(x), torch.nn.functional.gelu(x) * 2.0 + 1.0, atol=1e-5):
                raise RuntimeError("the compiled function gave other values than eager")
            return "Inductor" + (" and Triton" if cuda else " (C++)")

        def export() -> str:
            model = _Tiny().to(device)
            example = torch.zeros((2, spec.seq_len), dtype=torch.long, device=device)
            written = export_forward(model, example, Path(spec.program_path))
            return f"{written['nodes']} nodes"

        def nvml() -> str:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                return f"{pynvml.nvmlDeviceGetCount()} GPU(s), {int(memory.total) >> 20} MiB"
            finally:
                pynvml.nvmlShutdown()

        names = spec.nvidia or os.environ.get(THREAD_NAMES_ENV) == "1"
        step("threads", _name_a_thread, names)
        step("device", start_device)
        step("matmul", matmul)
        # The template compiles on CUDA only: on the CPU a failed compile is a warning, and
        # the compiler's start (about ten seconds here) is paid only when asked.
        step("compile", compiled, needed=cuda or spec.probe_compile, essential=cuda)
        step("export", export)
        step("nvml", nvml, needed=cuda, essential=False)
    write_json_atomic(Path(spec.result_path), report, indent=None)
    return 0
