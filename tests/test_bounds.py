"""A training cannot take the machine: past its bound on memory, processes, disk or metrics it
ends as a crash whose reason names the bound and the setting that raises it (trainer.bounds).

Real harness runs of one greedy script that takes a little of each. Under generous bounds (the
protection off, as far as this script goes) it takes all it asks for and its model is scored;
under each tight bound it is stopped by that bound."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HarnessRun, run_harness, tagged
from trainer.bounds import Bounds, folder_usage

GREEDY = """
import os
import threading
import time

import torch.nn as nn


def train(ctx):
    hold = []
    for _ in range(5):  # 250 MB, touched
        hold.append(bytearray(b"x" * 50_000_000))
    with open("/dev/shm/held", "wb") as handle:  # and 45 MB that no process maps
        handle.write(b"x" * 45_000_000)
    print("SEEN memory=300", flush=True)
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(60)]
    for thread in threads:
        thread.start()
    print("SEEN threads=60", flush=True)
    try:
        with open("big.bin", "wb") as handle:  # one file of 60 MB
            for _ in range(6):
                handle.write(b"x" * 10_000_000)
        print("SEEN big_file=60", flush=True)
    except OSError as exc:
        print(f"SEEN big_file=refused {exc.errno}", flush=True)
    for index in range(15):  # 150 MB in files of 10 MB
        with open(f"part{index}.bin", "wb") as handle:
            handle.write(b"x" * 10_000_000)
    print("SEEN disk=150", flush=True)
    for step in range(5_000):  # about 10 MB of metrics
        ctx.report(step=step, loss=3.0, padding="p" * 2000)
    print("SEEN metrics=10", flush=True)
    time.sleep(1.0)  # time for the harness to look
    stop.set()
    model = nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
    while ctx.time_left() > 0:
        ctx.batch(2)
    return model
"""

GENEROUS = ("--memory-limit-mb", "8000", "--max-processes", "1000", "--disk-limit-mb", "2000",
            "--metrics-limit-mb", "200")  # fmt: skip


def greedy(tmp_path: Path, corpus: str, *bounds: str) -> HarnessRun:
    return run_harness(
        GREEDY, tmp_path, "--threads", "1", *GENEROUS, *bounds, budget=1.0, grace=6.0, corpus=corpus
    )


@pytest.fixture(scope="module")
def corpus(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


@pytest.mark.e2e
def test_under_generous_bounds_the_greedy_script_takes_all_it_asks_for(
    tmp_path: Path, corpus: str
) -> None:
    run = greedy(tmp_path, corpus)
    assert run.exit_code == 0, run.output
    assert tagged(run.output, "SEEN") == {
        "memory": "300", "threads": "60", "big_file": "60", "disk": "150", "metrics": "10"
    }  # fmt: skip
    summary = run.summary
    assert summary["peak_memory_mb"] > 300 and summary["peak_processes"] > 60, summary
    # Its own /dev/shm counts: beyond the training's own peak, more than the 45 MB held there
    # (its two small parents, the namespace's init and the process outside, hold about 20 MB).
    assert summary["peak_memory_mb"] - summary["peak_rss_mb"] > 45, summary
    table = summary["confinement"]["bounds"]
    assert table["memory"]["limit_mb"] == 8000 and table["processes"]["limit"] == 1000
    assert table["disk"]["limit_mb"] == 2000 and table["metrics"]["limit_mb"] == 200
    assert "RLIMIT_FSIZE" in table["disk"]["enforced_by"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("flag", "value", "setting", "reached"),
    [
        ("--memory-limit-mb", "250", "memory_limit_mb", {}),
        ("--max-processes", "40", "max_processes", {"memory": "300"}),
        ("--disk-limit-mb", "50", "disk_limit_mb", {"memory": "300", "threads": "60"}),
        ("--metrics-limit-mb", "2", "metrics_limit_mb", {"memory": "300", "threads": "60"}),
    ],
)
def test_past_a_bound_the_training_ends_as_a_crash_that_names_it(
    tmp_path: Path, corpus: str, flag: str, value: str, setting: str, reached: dict[str, str]
) -> None:
    run = greedy(tmp_path, corpus, flag, value)
    assert run.exit_code != 0 and run.summary["status"] == "crash", run.output
    reason = run.summary["reason"]
    assert f"[trainer] {setting}" in reason, reason
    seen = tagged(run.output, "SEEN")
    assert reached.items() <= seen.items(), seen  # it got that far, and no further than the bound
    if flag == "--disk-limit-mb":
        # One file past the bound is refused by the kernel (EFBIG), many smaller by the harness.
        assert seen.get("big_file") == "refused 27", seen
    if flag == "--metrics-limit-mb":
        written = sum(len(str(record)) for record in run.metrics)
        assert written < 4_000_000, written  # what passed on stopped near the bound


@pytest.mark.e2e
def test_the_kernel_part_is_set_in_the_process() -> None:
    # In a process of its own: a hard limit, once lowered, cannot be raised again.
    code = (
        "import json, resource\n"
        "from trainer.bounds import Bounds, apply\n"
        "table = apply(Bounds(disk_mb=5, processes=0), own_user_namespace=False)\n"
        "print(json.dumps([table, resource.getrlimit(resource.RLIMIT_FSIZE)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    table, limit = json.loads(done.stdout)
    assert limit == [5_000_000, 5_000_000]
    assert table["processes"]["enforced_by"] is None and table["processes"]["limit"] is None
    assert table["memory"]["limit_mb"] > 0  # 0 is half the machine's


def test_bounds_refuse_nonsense_and_the_folder_is_added_up_without_following_links(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="whole number"):
        Bounds(disk_mb=-1)
    assert Bounds.from_dict({"disk_mb": "lots"}) is None
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 100_000)
    (tmp_path / "link").symlink_to("/usr")
    used, entries = folder_usage(str(tmp_path), 100)
    assert 200_000 <= used < 300_000 and entries == 4
    assert folder_usage(str(tmp_path), 2)[1] == 3  # the walk stops past its limit


def test_the_harness_defaults_are_the_settings_defaults() -> None:
    from cockpit.settings import TrainerSettings

    settings = TrainerSettings()
    assert Bounds() == Bounds(
        settings.memory_limit_mb,
        settings.max_processes,
        settings.disk_limit_mb,
        settings.metrics_limit_mb,
    )


@pytest.mark.e2e
def test_the_harness_command_line_lists_the_bounds() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, check=True
    )
    for flag in ("--memory-limit-mb", "--max-processes", "--disk-limit-mb", "--metrics-limit-mb"):
        assert flag in done.stdout


def test_a_look_into_the_trainings_mounts_that_does_not_come_back_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import threading

    from trainer import bounds

    released = threading.Event()
    monkeypatch.setattr(bounds, "MOUNT_LOOK_SECONDS", 0.2)
    monkeypatch.setattr(bounds, "_own_tmpfs_bytes", lambda pid, host: released.wait(5) and 0)
    watch = bounds.Watch(Bounds(disk_mb=0), os.getpid(), ".")
    try:
        started = time.monotonic()
        reason = watch.check()  # the look that hangs is let go after 0.2 s, and that ends it
        assert time.monotonic() - started < 2.0
        assert reason is not None and "mounts did not answer" in reason
    finally:
        released.set()
        watch.close()


def test_mountinfo_is_read_with_its_escapes(tmp_path: Path) -> None:
    from trainer.bounds import _mounts

    table = tmp_path / "mountinfo"
    table.write_text(
        "36 35 0:48 / /dev/shm rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=65536k\n"
        "37 35 8:1 /data /mnt/my\\040data rw - ext4 /dev/sda1 rw\n"
        "garbage line\n"
    )
    assert _mounts(str(table)) == [("0:48", "/dev/shm", "tmpfs"), ("8:1", "/mnt/my data", "ext4")]
