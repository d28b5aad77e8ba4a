"""The GPU and process monitor: the real no-driver path of NVML, real process trees, and
the sampling thread fed by scripted GPU readings (there is no GPU on the test machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import psutil
import pynvml
import pytest

from cockpit.engine.monitor import (
    Monitor,
    NvmlGpuSource,
    ProcessTreeMonitor,
    ScriptedGpuSource,
    default_gpu_source,
    describe,
)
from cockpit.store.samples import (
    GPU_ERROR,
    GPU_NO_GPU,
    GPU_OK,
    GpuReading,
    GpuSnapshot,
    MonitorSample,
    ProcessReading,
)

H100 = GpuReading(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-8a3c",
    utilization_percent=87.0,
    memory_used_mb=61.2 * 1024,
    memory_total_mb=80.0 * 1024,
    temperature_c=71.0,
    power_w=412.4,
    power_limit_w=700.0,
    process_memory_mb=60_000.0,
)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def kill_tree(process: subprocess.Popen[Any]) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in [*children]:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.wait(timeout=5)
    psutil.wait_procs(children, timeout=5)


# --- NVML, for real -------------------------------------------------------------------


def machine_has_gpu() -> bool:
    source = NvmlGpuSource()
    try:
        return source.read([]).state == GPU_OK
    finally:
        source.close()


class CountingNvml(NvmlGpuSource):
    """Counts the calls into pynvml and makes chosen ones fail, through the class's seam."""

    def __init__(self, fail: dict[str, BaseException] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail = fail or {}
        self.calls: list[str] = []

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        name = getattr(function, "__name__", repr(function))
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]
        return super()._call(function, *args)


def test_the_real_nvml_source_reports_no_gpu_without_a_driver() -> None:
    source = default_gpu_source()
    try:
        snapshot = source.read([os.getpid()])
    finally:
        source.close()
    if snapshot.state == GPU_OK:
        pytest.skip("this machine has an NVIDIA GPU")
    assert snapshot.state == GPU_NO_GPU, snapshot
    assert snapshot.message.startswith("no NVIDIA GPU (")
    assert snapshot.gpus == ()
    assert describe(snapshot) == snapshot.message


def test_a_failed_start_is_not_retried_for_a_minute() -> None:
    now = [1000.0]
    source = CountingNvml(
        fail={"nvmlInit": pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)},
        clock=lambda: now[0],
    )
    for _ in range(3):
        snapshot = source.read([])
        assert snapshot == GpuSnapshot.no_gpu("no NVIDIA GPU (NVIDIA driver not loaded)")
    assert source.calls.count("nvmlInit") == 1
    now[0] += 30
    source.read([])
    assert source.calls.count("nvmlInit") == 1
    now[0] += 31
    source.read([])
    assert source.calls.count("nvmlInit") == 2
    source.close()
    assert "nvmlShutdown" not in source.calls  # never started, nothing to shut down


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "version mismatch"),
        (pynvml.NVML_ERROR_UNKNOWN, "Unknown Error"),
    ],
)
def test_an_unexpected_nvml_failure_is_an_error_state_that_says_why(error: int, words: str) -> None:
    source = CountingNvml(fail={"nvmlInit": pynvml.NVMLError(error)})
    snapshot = source.read([])
    assert snapshot.state == GPU_ERROR
    assert snapshot.message.startswith("NVML failed to start: ")
    assert words in snapshot.message
    assert describe(snapshot) == snapshot.message


def test_a_missing_pynvml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what an uninstalled package looks like
    snapshot = NvmlGpuSource().read([])
    assert snapshot.state == GPU_ERROR
    assert "nvidia-ml-py" in snapshot.message


@pytest.mark.skipif(not machine_has_gpu(), reason="needs an NVIDIA GPU and driver")
def test_one_failing_metric_is_none_and_the_others_are_read() -> None:
    source = CountingNvml(
        fail={"nvmlDeviceGetTemperature": pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)}
    )
    try:
        snapshot = source.read([os.getpid()])
        again = source.read([os.getpid()])
    finally:
        source.close()
    assert snapshot.state == GPU_OK, snapshot
    for gpu in snapshot.gpus:
        assert gpu.temperature_c is None
        assert gpu.memory_total_mb is not None and gpu.memory_total_mb > 1000
        assert gpu.memory_used_mb is not None
        assert gpu.name and gpu.name != "unknown"
        assert gpu.process_memory_mb == 0.0  # this test process holds no GPU memory
    assert again.state == GPU_OK
    assert source.calls.count("nvmlInit") == 1
    assert source.calls.count("nvmlDeviceGetName") == len(snapshot.gpus)  # cached
    assert source.calls[-1] == "nvmlShutdown"
    assert "N/A" in describe(snapshot)


@pytest.mark.skipif(not machine_has_gpu(), reason="needs an NVIDIA GPU and driver")
def test_visible_indices_restrict_the_readings() -> None:
    source = NvmlGpuSource(visible_indices=[0, 99])
    absent = NvmlGpuSource(visible_indices=[99])
    try:
        snapshot = source.read([])
        nothing = absent.read([])
    finally:
        source.close()
        absent.close()
    assert [gpu.index for gpu in snapshot.gpus] == [0]
    assert snapshot.message == "GPU 99 not found"
    assert nothing.state == GPU_ERROR
    assert "GPU 99 not found" in nothing.message


# --- process trees, for real ------------------------------------------------------------

CHILD = (
    "import time\n"
    "data = b'x' * (50 * 2**20)\n"  # touched, so it is resident
    "end = time.time() + 8\n"
    "while time.time() < end:\n"
    "    pass\n"
)
PARENT = (
    "import subprocess, sys\n"
    f"children = [subprocess.Popen([sys.executable, '-c', {CHILD!r}]) for _ in range(2)]\n"
    "for child in children:\n"
    "    child.wait()\n"
)


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[Any]]:
    """A Python process with two children that hold 50 MiB each and spin."""
    process = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        yield process
    finally:
        kill_tree(process)


@pytest.mark.e2e
def test_a_process_tree_is_read_with_its_children(busy_tree: subprocess.Popen[Any]) -> None:
    monitor = ProcessTreeMonitor(busy_tree.pid)
    assert wait_until(lambda: len(monitor.pids()) == 3)
    pids = monitor.pids()
    assert pids[0] == busy_tree.pid
    assert set(pids[1:]) == {child.pid for child in psutil.Process(busy_tree.pid).children()}

    readings: list[ProcessReading] = []

    def allocated() -> bool:
        readings.append(monitor.read())
        rss = readings[-1].rss_mb
        return rss is not None and rss >= 100

    assert wait_until(allocated), readings[-1]
    assert readings[0].cpu_percent is None  # no interval yet
    time.sleep(0.3)
    reading = monitor.read()
    assert reading.pids == 3
    assert monitor.last_pids == pids
    assert reading.cpu_percent is not None and reading.cpu_percent > 0
    assert reading.rss_mb is not None and reading.rss_mb >= 100

    # A child that ends is left out, also before its parent has reaped it.
    os.kill(pids[2], 9)
    assert wait_until(lambda: monitor.read().pids == 2)
    assert pids[2] not in monitor.pids()

    kill_tree(busy_tree)
    assert monitor.read() == ProcessReading(0, None, None)
    assert monitor.pids() == []


@pytest.mark.e2e
def test_a_process_that_is_gone_reads_as_an_empty_tree() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    monitor = ProcessTreeMonitor(process.pid)
    assert monitor.pids() == []
    assert monitor.read() == ProcessReading(0, None, None)


# --- the sampling thread ----------------------------------------------------------------


def collect(monitor: Monitor) -> list[MonitorSample]:
    samples: list[MonitorSample] = []
    monitor.on_sample = samples.append
    return samples


def test_the_monitor_samples_once_per_interval_and_stops_promptly() -> None:
    second = GpuSnapshot.ok([H100, GpuReading(1, "NVIDIA H100 80GB HBM3", None)])
    source = ScriptedGpuSource([[H100], second])
    monitor = Monitor(source, interval=0.1, name="test-monitor")
    samples = collect(monitor)
    monitor.start(None)
    thread = next(t for t in threading.enumerate() if t.name == "test-monitor")
    assert thread.daemon
    time.sleep(1.0)
    started = time.monotonic()
    assert monitor.stop()
    assert time.monotonic() - started < 0.6
    assert not monitor.running
    count = len(samples)
    assert 5 <= count <= 15, count
    time.sleep(0.25)
    assert len(samples) == count  # nothing after stop()

    assert samples[0].gpu == GpuSnapshot.ok([H100])
    assert all(sample.gpu == second for sample in samples[1:])  # the last one repeats
    assert all(sample.process is None for sample in samples)
    assert all(pids == () for pids in source.reads)
    assert [s.at for s in samples] == sorted(s.at for s in samples)
    assert monitor.latest is samples[-1]


def test_a_long_interval_does_not_delay_stop() -> None:
    monitor = Monitor(ScriptedGpuSource.no_gpu(), interval=30.0)
    monitor.start()
    assert wait_until(lambda: monitor.latest is not None)  # the first sample comes at once
    started = time.monotonic()
    assert monitor.stop()
    assert time.monotonic() - started < 0.5


class SlowSource:
    """A GPU source that takes 60 % of the interval to answer, and fails every third read."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, pids: Collection[int]) -> GpuSnapshot:
        self.reads += 1
        time.sleep(0.06)
        if self.reads % 3 == 0:
            raise RuntimeError("the source broke")
        return GpuSnapshot.ok([H100])

    def close(self) -> None:
        pass


def test_slow_and_failing_reads_and_callbacks_neither_stop_nor_slow_the_monitor() -> None:
    delivered: list[MonitorSample] = []

    def fragile(sample: MonitorSample) -> None:
        delivered.append(sample)
        raise ValueError("the callback broke")

    monitor = Monitor(SlowSource(), fragile, interval=0.1)
    monitor.start()
    time.sleep(1.0)
    assert monitor.stop()
    # Reads of 0.06 s on top of 0.1 s sleeps would give about 6; a fixed schedule about 10.
    assert 8 <= len(delivered) <= 15, len(delivered)
    states = [sample.gpu.state for sample in delivered]
    assert states.count(GPU_ERROR) >= 2
    assert states.count(GPU_OK) >= 5
    failed = next(sample.gpu for sample in delivered if sample.gpu.state == GPU_ERROR)
    assert "the source broke" in failed.message
    assert monitor.failure_count >= len(delivered)


@pytest.mark.e2e
def test_set_root_switches_the_process_tree() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        source = ScriptedGpuSource([[H100]])
        monitor = Monitor(source, interval=0.1)
        samples = collect(monitor)
        monitor.start(os.getpid())
        assert wait_until(lambda: len(samples) >= 2)
        assert os.getpid() in source.reads[-1]
        first = samples[-1].process
        assert first is not None and first.pids >= 1 and first.rss_mb is not None
        assert first.cpu_percent is not None  # the second read of the same tree

        monitor.set_root(sleeper.pid)
        assert monitor.root_pid == sleeper.pid
        assert wait_until(lambda: source.reads[-1] == (sleeper.pid,))
        assert wait_until(lambda: samples[-1].process is not None and samples[-1].process.pids == 1)

        monitor.set_root(None)
        assert wait_until(lambda: samples[-1].process is None)
        assert source.reads[-1] == ()
        monitor.close()
        assert source.closed
        assert not monitor.running
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_monitor_can_be_restarted_but_not_started_twice() -> None:
    monitor = Monitor(ScriptedGpuSource.no_gpu(), interval=0.05)
    monitor.start()
    with pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    assert monitor.stop()
    monitor.start()
    assert monitor.running
    assert monitor.stop()


# --- what samples look like --------------------------------------------------------------


def test_samples_are_plain_json_and_come_back_from_it() -> None:
    partial = GpuReading(1, "NVIDIA A100-SXM4-40GB", None, utilization_percent=12.0)
    sample = MonitorSample(
        at=time.time(),
        gpu=GpuSnapshot.ok([H100, partial]),
        process=ProcessReading(pids=3, cpu_percent=None, rss_mb=812.5),
    )
    text = json.dumps(sample.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["gpu"]["gpus"][1]["temperature_c"] is None
    assert data["process"]["cpu_percent"] is None
    assert MonitorSample.from_dict(data) == sample

    bare = MonitorSample(at=1.5, gpu=GpuSnapshot.no_gpu("no NVIDIA GPU (x)"), process=None)
    assert MonitorSample.from_dict(json.loads(json.dumps(bare.to_dict()))) == bare


def test_a_snapshot_state_is_checked() -> None:
    with pytest.raises(ValueError, match="ok, no_gpu, error"):
        GpuSnapshot("fine")


def test_describe_gives_one_line_per_snapshot() -> None:
    assert (
        describe(GpuSnapshot.ok([H100])) == "GPU0 H100 80GB HBM3 87% 61.2/80.0 GiB 71°C 412/700 W"
    )
    partial = GpuReading(1, "NVIDIA A100-SXM4-40GB", None, memory_total_mb=40960.0)
    assert describe(GpuSnapshot.ok([H100, partial])) == (
        "GPU0 H100 80GB HBM3 87% 61.2/80.0 GiB 71°C 412/700 W"
        " | GPU1 A100-SXM4-40GB N/A ?/40.0 GiB N/A N/A"
    )
    message = "no NVIDIA GPU (NVIDIA driver not found)"
    assert describe(GpuSnapshot.no_gpu(message)) == message
    assert describe(GpuSnapshot.error("NVML failed: GPU is lost")) == "NVML failed: GPU is lost"


def test_a_scripted_source_needs_something_to_play() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ScriptedGpuSource([])
    assert ScriptedGpuSource([[]]).read([]).state == GPU_NO_GPU
