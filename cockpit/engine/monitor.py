"""GPU and process readings, sampled about once a second while a training runs.

A sample holds what the GPU gauges show (utilisation, memory, temperature, power of each
GPU, and the GPU memory of the training's own processes) and what the training's process
tree costs the host (CPU, resident memory). The engine stores every sample in the journal
(`MonitorSample.to_dict()`) and the terminal UI draws its gauges from them.

Readings never crash the caller. As in nvitop, one metric that fails (not supported on this
card, no permission) is `None` ("N/A") and the others are still read; a machine without an
NVIDIA driver or without a GPU is the normal state `no_gpu`, not an error; only NVML failing
unexpectedly is `error`, with a message that says what happened.

NVML is reached through `pynvml` (the nvidia-ml-py package), imported only when the first
reading is taken, so that importing this module never needs a driver. Tests and the UI demo
use `ScriptedGpuSource`, which plays back readings it is given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psutil

from cockpit.store.samples import (
    GPU_OK,
    GpuReading,
    GpuSnapshot,
    MonitorSample,
    ProcessReading,
    optional_float,
)

log = logging.getLogger(__name__)


MIB = 2**20
# nvidia-smi and nvitop sample about once a second; NVML's own counters refresh every
# 1/6 s to 1 s, so sampling faster only repeats values.
DEFAULT_INTERVAL_SECONDS = 1.0
# nvmlInit on a machine without a driver is cheap, but on one whose driver is in a bad
# state it can block for seconds: a failed start is tried again at most this often.
INIT_RETRY_SECONDS = 60.0

_T = TypeVar("_T")


class GpuSource(Protocol):
    """Where GPU readings come from: NVML on a real machine, a script in tests."""

    def read(self, pids: Collection[int]) -> GpuSnapshot:
        """Read every monitored GPU; `pids` are the processes whose GPU memory is summed
        into `process_memory_mb`. Never raises."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML's handle)."""
        ...


@dataclass
class _Device:
    """What does not change while NVML is up: a device's handle and identity."""

    index: int
    handle: Any  # None when NVML could not give one; tried again on the next read
    name: str
    uuid: str | None


class _Tally:
    """How many NVML calls one read made and which of them failed."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures: list[BaseException] = []


class NvmlGpuSource:
    """GPU readings from NVML, through `pynvml` (the nvidia-ml-py package).

    NVML is started on the first `read()`. Without a driver or a device every read is a
    `no_gpu` snapshot, and starting NVML is tried again at most once per
    `init_retry_seconds`. Each metric is read on its own: one that fails is None.
    `visible_indices` restricts the readings to those NVML device indices (the GPUs a
    training uses); None reads every GPU. Safe to call from several threads.

    Every call into pynvml goes through `_call()`, the one seam where a subclass can
    observe calls or make one fail.
    """

    def __init__(
        self,
        visible_indices: Sequence[int] | None = None,
        *,
        init_retry_seconds: float = INIT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._visible = None if visible_indices is None else tuple(visible_indices)
        self._init_retry_seconds = init_retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml: Any = None  # the pynvml module once NVML is up
        self._down: GpuSnapshot | None = None  # why NVML is not up, after a failed start
        self._next_start_at = 0.0
        self._devices: list[_Device] | None = None
        self._missing: tuple[int, ...] = ()
        self._process_call_v2 = False  # the driver predates the _v3 process listing

    def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        """Call into pynvml."""
        return function(*args)

    def read(self, pids: Collection[int] = ()) -> GpuSnapshot:
        """Read the GPUs; `process_memory_mb` sums the GPU memory of `pids` on each."""
        with self._lock:
            try:
                return self._read(frozenset(pids))
            except Exception as exc:
                # A read must never take the monitor down; this is a bug or an NVML
                # failure outside the per-metric guards (device count, handles).
                log.debug("NVML read failed", exc_info=True)
                self._stop_nvml(retry_after=self._init_retry_seconds)
                self._down = GpuSnapshot.error(f"NVML failed: {_describe_error(exc)}")
                return self._down

    def close(self) -> None:
        """Shut NVML down if it was started. A later read starts it again."""
        with self._lock:
            self._stop_nvml(retry_after=0.0)
            self._down = None

    def _read(self, pids: frozenset[int]) -> GpuSnapshot:
        down = self._start_nvml()
        if down is not None:
            return down
        devices = self._device_list()
        if devices is None:
            # No device, or none of the requested ones: _device_list said why.
            assert self._down is not None
            return self._down
        tally = _Tally()
        readings = [self._read_device(device, pids, tally) for device in devices]
        unexpected = [exc for exc in tally.failures if not _is_not_supported(exc, self._nvml)]
        if tally.calls and len(tally.failures) == tally.calls and unexpected:
            # Not one value came back (GPU lost, driver unloaded, NVML shut down under
            # us): report it and start NVML afresh later rather than show a row of N/A.
            uninitialized = isinstance(unexpected[0], self._nvml.NVMLError_Uninitialized)
            self._stop_nvml(retry_after=0.0 if uninitialized else self._init_retry_seconds)
            self._down = GpuSnapshot.error(
                f"NVML readings failed: {_describe_error(unexpected[0])}"
            )
            return self._down
        message = ""
        if self._missing:
            message = f"GPU {', '.join(map(str, self._missing))} not found"
        return GpuSnapshot.ok(readings, message)

    def _start_nvml(self) -> GpuSnapshot | None:
        """Start NVML if it is not up; None when it is, else the snapshot to report."""
        if self._nvml is not None:
            return None
        now = self._clock()
        if self._down is not None and now < self._next_start_at:
            return self._down
        self._next_start_at = now + self._init_retry_seconds
        try:
            import pynvml
        except ImportError:
            self._down = GpuSnapshot.error(
                "GPU readings unavailable: the nvidia-ml-py package (module pynvml) is not "
                "installed; pip install nvidia-ml-py"
            )
            return self._down
        try:
            self._call(pynvml.nvmlInit)
        except pynvml.NVMLError_LibraryNotFound:
            self._down = GpuSnapshot.no_gpu("no NVIDIA GPU (NVIDIA driver not found)")
            return self._down
        except pynvml.NVMLError_DriverNotLoaded:
            self._down = GpuSnapshot.no_gpu("no NVIDIA GPU (NVIDIA driver not loaded)")
            return self._down
        except Exception as exc:
            # No permission on /dev/nvidia*, a driver/library version mismatch after an
            # upgrade without a reboot, ...: the user can act on these, so say which.
            self._down = GpuSnapshot.error(f"NVML failed to start: {_describe_error(exc)}")
            return self._down
        self._nvml = pynvml
        self._down = None
        self._devices = None
        return None

    def _stop_nvml(self, retry_after: float) -> None:
        if self._nvml is not None:
            try:
                self._call(self._nvml.nvmlShutdown)
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
        self._nvml = None
        self._devices = None
        self._next_start_at = self._clock() + retry_after

    def _device_list(self) -> list[_Device] | None:
        """The monitored devices, cached once every handle was obtained."""
        if self._devices is not None:
            return self._devices
        nvml = self._nvml
        count = int(self._call(nvml.nvmlDeviceGetCount))
        if count == 0:
            self._stop_nvml(retry_after=self._init_retry_seconds)
            self._down = GpuSnapshot.no_gpu("no NVIDIA GPU (driver loaded, no device)")
            return None
        wanted = range(count) if self._visible is None else self._visible
        indices = [index for index in wanted if 0 <= index < count]
        self._missing = tuple(index for index in wanted if not 0 <= index < count)
        if not indices:
            # A configuration mistake, not a missing GPU: keep NVML up, and say what exists.
            self._down = GpuSnapshot.error(
                f"GPU {', '.join(map(str, self._missing))} not found: this machine has "
                f"{count} GPU{'s' if count > 1 else ''} (NVML index 0 to {count - 1})"
            )
            return None
        devices = [self._open_device(index) for index in indices]
        if all(device.handle is not None for device in devices):
            self._devices = devices
        return devices

    def _open_device(self, index: int) -> _Device:
        nvml = self._nvml
        try:
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, index)
        except Exception:
            log.debug("no NVML handle for GPU %d", index, exc_info=True)
            return _Device(index, None, "unknown", None)
        tally = _Tally()
        name = _text(self._guarded(tally, nvml.nvmlDeviceGetName, handle))
        uuid = _text(self._guarded(tally, nvml.nvmlDeviceGetUUID, handle))
        return _Device(index, handle, name or "unknown", uuid)

    def _guarded(self, tally: _Tally, function: Callable[..., Any], *args: Any) -> Any:
        """One metric: its value, or None (N/A) when the call fails."""
        tally.calls += 1
        try:
            return self._call(function, *args)
        except Exception as exc:
            tally.failures.append(exc)
            return None

    def _read_device(self, device: _Device, pids: frozenset[int], tally: _Tally) -> GpuReading:
        nvml = self._nvml
        handle = device.handle
        if handle is None:
            tally.calls += 1
            tally.failures.append(RuntimeError(f"no NVML handle for GPU {device.index}"))
            return GpuReading(device.index, device.name, device.uuid)
        utilization = self._guarded(tally, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._guarded(tally, nvml.nvmlDeviceGetMemoryInfo, handle)
        temperature = self._guarded(
            tally, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        power_mw = self._guarded(tally, nvml.nvmlDeviceGetPowerUsage, handle)
        # The enforced limit is the one in effect (the lowest of the user's, the board's
        # and the driver's), which is what a gauge should fill up to.
        limit_mw = self._guarded(tally, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuReading(
            index=device.index,
            name=device.name,
            uuid=device.uuid,
            utilization_percent=None if utilization is None else float(utilization.gpu),
            memory_used_mb=None if memory is None else memory.used / MIB,
            memory_total_mb=None if memory is None else memory.total / MIB,
            temperature_c=optional_float(temperature),
            power_w=None if power_mw is None else power_mw / 1000.0,
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            process_memory_mb=self._process_memory(handle, pids, tally),
        )

    def _process_memory(self, handle: Any, pids: frozenset[int], tally: _Tally) -> float | None:
        """GPU memory of `pids` on one device, in MiB."""
        if not pids:
            return None
        nvml = self._nvml
        tally.calls += 1
        try:
            if self._process_call_v2:
                processes = self._call(nvml.nvmlDeviceGetComputeRunningProcesses_v2, handle)
            else:
                try:
                    processes = self._call(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
                except nvml.NVMLLibraryMismatchError:
                    # Drivers before R510 lack the _v3 call that the plain name maps to.
                    self._process_call_v2 = True
                    processes = self._call(nvml.nvmlDeviceGetComputeRunningProcesses_v2, handle)
        except Exception as exc:
            tally.failures.append(exc)
            return None
        # usedGpuMemory is None where the driver cannot tell (Windows WDDM, some MIG
        # setups). Inside a container NVML reports host PIDs, which do not match ours.
        used = [process.usedGpuMemory for process in processes if process.pid in pids]
        known = [amount for amount in used if amount is not None]
        if used and not known:
            return None
        return sum(known) / MIB


def _text(value: Any) -> str | None:
    """NVML strings: str in recent pynvml, bytes in old releases."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _is_not_supported(exc: BaseException, nvml: Any) -> bool:
    return isinstance(exc, nvml.NVMLError_NotSupported)


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def default_gpu_source(visible_indices: Sequence[int] | None = None) -> GpuSource:
    """The GPU source for a real machine: NVML."""
    return NvmlGpuSource(visible_indices)


class ScriptedGpuSource:
    """A GPU source that plays back the snapshots it was given, in order, and then keeps
    repeating the last one. For tests and the UI's demo mode; records every read's PIDs."""

    def __init__(self, script: Iterable[GpuSnapshot | Sequence[GpuReading]]) -> None:
        self._script = [
            item if isinstance(item, GpuSnapshot) else _snapshot_of(item) for item in script
        ]
        if not self._script:
            raise ValueError("ScriptedGpuSource needs at least one snapshot to play back")
        self._lock = threading.Lock()
        self._position = 0
        self.reads: list[tuple[int, ...]] = []  # the PIDs of each read, in order
        self.closed = False

    @classmethod
    def no_gpu(cls, message: str = "no NVIDIA GPU (scripted)") -> ScriptedGpuSource:
        """A source that always reports no GPU."""
        return cls([GpuSnapshot.no_gpu(message)])

    def read(self, pids: Collection[int] = ()) -> GpuSnapshot:
        """The next scripted snapshot."""
        with self._lock:
            self.reads.append(tuple(pids))
            snapshot = self._script[min(self._position, len(self._script) - 1)]
            self._position += 1
            return snapshot

    def close(self) -> None:
        """Remember that the source was closed."""
        self.closed = True


def _snapshot_of(readings: Sequence[GpuReading]) -> GpuSnapshot:
    if not readings:
        return GpuSnapshot.no_gpu("no NVIDIA GPU (no readings scripted)")
    return GpuSnapshot.ok(readings)


class ProcessTreeMonitor:
    """CPU and memory of a process and all its descendants.

    The psutil.Process objects are kept from one read to the next, because a process's
    CPU percentage is measured over the time since the previous call on the same object.
    Processes that end between or during reads are left out, never an error. Not
    thread-safe: one reader at a time (the Monitor's thread).
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._root: psutil.Process | None
        try:
            self._root = psutil.Process(root_pid)
        except psutil.Error:
            self._root = None
        self._known: dict[int, psutil.Process] = {}
        self._measured: set[int] = set()  # PIDs whose cpu_percent has a previous call
        self.last_pids: list[int] = []  # the processes the latest read() measured

    def pids(self) -> list[int]:
        """The PIDs of the living processes of the tree now, root first; empty once the
        root has ended."""
        return [process.pid for process in self._tree() if _alive(process)]

    def read(self) -> ProcessReading:
        """Measure the tree now."""
        tree = self._tree()
        current: dict[int, psutil.Process] = {}
        for process in tree:
            known = self._known.get(process.pid)
            # psutil compares PID and creation time, so a reused PID is a new process.
            current[process.pid] = known if known is not None and known == process else process
        self._measured &= {pid for pid in current if current[pid] is self._known.get(pid)}
        self._known = current

        alive: list[int] = []
        cpu_total = 0.0
        cpu_known = False
        rss_total = 0
        for pid, process in current.items():
            try:
                with process.oneshot():
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue  # ended, not yet reaped by its parent
                    cpu = process.cpu_percent(interval=None)
                    rss = process.memory_info().rss
            except psutil.Error:
                # Ended mid-read (NoSuchProcess, ZombieProcess) or not ours to read.
                continue
            alive.append(pid)
            rss_total += rss
            if pid in self._measured:
                cpu_total += cpu
                cpu_known = True
            else:
                # The first call only starts the interval (psutil returns 0.0).
                self._measured.add(pid)
        self.last_pids = alive
        if not alive:
            return ProcessReading(0, None, None)
        return ProcessReading(len(alive), cpu_total if cpu_known else None, rss_total / MIB)

    def _tree(self) -> list[psutil.Process]:
        root = self._root
        if root is None:
            return []
        try:
            # is_running() is False also when the PID now belongs to another process.
            if not root.is_running():
                return []
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Monitor:
    """Samples the GPUs and the training's process tree every `interval` seconds on a
    background thread, and hands each `MonitorSample` to `on_sample`.

    Ticks follow a monotonic clock, so slow reads do not make the rate drift; a tick
    missed altogether (a read slower than the interval, a suspended machine) is skipped
    rather than made up in a burst. An exception from the source, the process readings or
    the callback is logged and counted, and sampling goes on. `on_sample` runs on the
    monitor's thread: it must be quick and thread-safe (hand the sample to a queue or the
    journal).
    """

    def __init__(
        self,
        source: GpuSource | None = None,
        on_sample: Callable[[MonitorSample], None] | None = None,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        name: str = "cockpit-monitor",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the monitor's interval must be positive, not {interval}")
        self.source: GpuSource = source if source is not None else default_gpu_source()
        self.on_sample = on_sample
        self.interval = interval
        self.name = name
        self.sample_count = 0
        self.failure_count = 0
        self._failures_by_place: dict[str, int] = {}
        self._tree: ProcessTreeMonitor | None = None
        self._tree_lock = threading.Lock()
        self._sample_lock = threading.Lock()  # one reading at a time: trees are not shared
        self._latest: MonitorSample | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def latest(self) -> MonitorSample | None:
        """The most recent sample, None before the first."""
        return self._latest

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def root_pid(self) -> int | None:
        """The root of the process tree followed now, if any."""
        tree = self._tree
        return None if tree is None else tree.root_pid

    def start(self, root_pid: int | None = None) -> None:
        """Start sampling, following the process tree under `root_pid` (None: GPUs only).
        The first sample is taken at once. A stopped monitor can be started again."""
        if self.running:
            raise RuntimeError(f"monitor {self.name!r} is already running")
        self.set_root(root_pid)
        # A fresh event per run: a thread that outlived a slow stop() still sees its own.
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name=self.name, daemon=True
        )
        self._thread.start()

    def set_root(self, pid: int | None) -> None:
        """Follow another process tree from the next sample on (None: none)."""
        with self._tree_lock:
            if pid is None:
                self._tree = None
            elif self._tree is None or self._tree.root_pid != pid:
                # The same root keeps its tree, so its CPU interval is not restarted.
                self._tree = ProcessTreeMonitor(pid)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop sampling and wait for the thread (at most `timeout`, by default
        interval + 0.5 s). True when it has ended. No sample is handed on after this
        returns, except one whose callback was already running."""
        self._stopping.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(self.interval + 0.5 if timeout is None else timeout)
        if thread.is_alive():
            log.warning("monitor %r: a reading is still in progress after stop()", self.name)
            return False
        return True

    def close(self) -> None:
        """Stop sampling and close the GPU source."""
        self.stop()
        try:
            self.source.close()
        except Exception:
            log.warning("monitor %r: closing the GPU source failed", self.name, exc_info=True)

    def sample(self) -> MonitorSample:
        """Take one sample now (without calling `on_sample`); it becomes `latest`."""
        with self._sample_lock:
            with self._tree_lock:
                tree = self._tree
            process: ProcessReading | None = None
            pids: list[int] = []
            if tree is not None:
                try:
                    # The tree first, so that the GPU memory is summed over today's PIDs.
                    process = tree.read()
                    pids = tree.last_pids
                except Exception as exc:
                    self._failed("process readings", exc)
            try:
                gpu = self.source.read(pids)
            except Exception as exc:
                self._failed("GPU source", exc)
                gpu = GpuSnapshot.error(f"GPU readings failed: {_describe_error(exc)}")
            sample = MonitorSample(at=time.time(), gpu=gpu, process=process)
            self._latest = sample
            self.sample_count += 1
            return sample

    def _run(self, stopping: threading.Event) -> None:
        next_tick = time.monotonic()
        while not stopping.is_set():
            try:
                sample = self.sample()
                if self.on_sample is not None and not stopping.is_set():
                    self.on_sample(sample)
            except Exception as exc:
                self._failed("on_sample", exc)
            next_tick += self.interval
            now = time.monotonic()
            if next_tick <= now:
                # Behind schedule: go to the next tick still ahead, on the same grid.
                missed = int((now - next_tick) // self.interval) + 1
                next_tick += missed * self.interval
            stopping.wait(next_tick - now)

    def _failed(self, place: str, exc: BaseException) -> None:
        self.failure_count += 1
        count = self._failures_by_place.get(place, 0) + 1
        self._failures_by_place[place] = count
        # Once a second the same failure would flood the log: the first one with its
        # traceback, then one line a minute or so.
        if count == 1:
            log.warning("monitor %r: %s failed", self.name, place, exc_info=exc)
        elif count % 60 == 0:
            log.warning("monitor %r: %s failed %d times, lately: %r", self.name, place, count, exc)


def describe(snapshot: GpuSnapshot) -> str:
    """One line for humans, e.g. `GPU0 H100 80GB HBM3 87% 61.2/80.0 GiB 71°C 412/700 W`,
    GPUs separated by ` | `; the message when there is no reading. N/A marks a metric
    that could not be read, ? one half of a pair."""
    if snapshot.state != GPU_OK or not snapshot.gpus:
        return snapshot.message or snapshot.state
    return " | ".join(_describe_gpu(gpu) for gpu in snapshot.gpus)


def _describe_gpu(gpu: GpuReading) -> str:
    name = gpu.name.removeprefix("NVIDIA ").strip() or gpu.name
    utilization = "N/A" if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f}%"
    used = None if gpu.memory_used_mb is None else gpu.memory_used_mb / 1024
    total = None if gpu.memory_total_mb is None else gpu.memory_total_mb / 1024
    memory = _pair(used, total, "{:.1f}", "GiB")
    temperature = "N/A" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
    power = _pair(gpu.power_w, gpu.power_limit_w, "{:.0f}", "W")
    return f"GPU{gpu.index} {name} {utilization} {memory} {temperature} {power}"


def _pair(value: float | None, limit: float | None, number: str, unit: str) -> str:
    if value is None and limit is None:
        return "N/A"
    left = "?" if value is None else number.format(value)
    right = "?" if limit is None else number.format(limit)
    return f"{left}/{right} {unit}"
