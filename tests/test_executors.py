"""Trainings beyond this machine's processes: SLURM through submitit's local executor, and a
local Ray cluster, each running real trainings end to end through the engine."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.builtin import BuiltinProposer
from cockpit.config import load_settings
from cockpit.engine.jobs import RunFiles, build_job
from cockpit.engine.loop import Engine, EngineOptions
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.errors import EngineError
from cockpit.store.journal import Journal
from tests.conftest import SCRIPTS
from tests.helpers import (
    cockpit,
    experiments,
    git,
    git_env,
    make_workspace,
    trained_side_by_side,
)
from trainer.outcomes import Outcome

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e


def cluster_workspace(root: Path, executor: str) -> None:
    make_workspace(root)
    config = root / "config.toml"
    config.write_text(config.read_text() + executor)
    subprocess.run(
        ["git", "-C", str(root), "commit", "-qam", "executor"], check=True, env=git_env()
    )


def test_slurm_jobs_through_submitits_local_executor_run_the_research(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    cluster_workspace(root, '[executor]\nkind = "slurm"\nslurm_local = true\n')
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--workers", "2", "--experiments", "2",
        "--tag", "slurm",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workers: slurm 0, slurm 1" in result.stdout
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert all(e.is_final and e.outcome == "ok" and e.val_bpb for e in records)
    assert trained_side_by_side(records)
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        assert all(journal.metrics(e.id) for e in records)  # live, through the shared files
    jobs = list((root / ".cockpit" / "submitit").glob("*_result.pkl"))
    assert len(jobs) == 3  # one job per training, each handing its result back
    assert len((root / "results.tsv").read_text().splitlines()) == 4
    git(root, "fsck", "--strict")


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_a_cancelled_slurm_job_ends_as_interrupted(tmp_path: Path, sigint: str) -> None:
    """Stopped in training, the job ends interrupted with nothing evaluated; also when the
    engine started with SIGINT ignored (in the background of a shell without job control),
    which submitit's local controller inherits, and so never sees the SIGINT of a cancel."""
    from cockpit.engine.slurm import SubmititExecutor

    root = tmp_path / "ws"
    make_workspace(root)
    settings = load_settings(
        root,
        overrides={
            "executor.kind": "slurm",
            "executor.slurm_local": True,
            "trainer.budget_seconds": 60.0,
        },
    )
    executor = SubmititExecutor(settings.executor, tmp_path / "jobs", gpus=False)
    files = RunFiles.under(tmp_path / "run")
    job = build_job(settings, SCRIPTS / "tiny_research.py", files, root)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if sigint == "ignored" else None
    try:
        handle = executor.start(job)  # the controller starts with this disposition of SIGINT
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    records: list[dict[str, object]] = []
    deadline = time.monotonic() + 90
    while not any(r.get("event") == "metric" for r in records) and time.monotonic() < deadline:
        assert handle.poll(records.append) is None
        time.sleep(0.1)
    assert records, "the job never reported a metric"
    handle.stop()
    while (outcome := handle.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outcome is not None and outcome.outcome is Outcome.INTERRUPTED
    assert outcome.val_bpb is None  # stopped in training: nothing was evaluated


@pytest.fixture
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_a_local_ray_cluster_runs_the_research(tmp_path: Path, ray_cluster: object) -> None:
    from cockpit.engine.raycluster import RayExecutor

    root = tmp_path / "ws"
    workspace = make_workspace(root)
    settings = load_settings(root, overrides={"executor.kind": "ray", "engine.workers": 2})
    executor = RayExecutor(settings.executor, gpus=False)
    engine = Engine(
        workspace, settings, _builtin(), gpu_source=ScriptedGpuSource.no_gpu(), executor=executor
    )
    assert engine.run(EngineOptions(tag="ray", experiments=2)) == 0
    assert [w.label for w in engine.workers] == ["ray 0", "ray 1"]
    # A training that asks for a GPU the cluster does not have would wait forever: refused.
    with pytest.raises(EngineError, match="the Ray cluster has no GPU"):
        RayExecutor(settings.executor, gpus=True)
    assert RayExecutor(settings.executor, gpus=None).options["num_gpus"] == 0  # "auto"
    records = experiments(root)
    assert [e.number for e in records] == [0, 1, 2]
    assert all(e.is_final and e.outcome == "ok" and e.val_bpb for e in records)
    assert trained_side_by_side(records)
    # Each with as many torch threads as the cores it asked Ray for, not the whole machine's.
    assert {(e.summary or {}).get("threads") for e in records} == {1}
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        assert all(journal.metrics(e.id) for e in records)  # live, through Ray
    for e in records:  # what the node sent back lies where a local training leaves it
        folder = Path(e.log_path or "").parent
        assert (folder / "summary.json").is_file() and (folder / "log.txt").is_file()
        assert (folder / "model.program").is_file() or e.decision != "keep"
    git(root, "fsck", "--strict")

    # A training stopped on the cluster ends as interrupted, its process tree gone with it.
    long = settings.model_copy(
        update={"trainer": settings.trainer.model_copy(update={"budget_seconds": 60.0})}
    )
    files = RunFiles.under(tmp_path / "stopped")
    handle = executor.start(build_job(long, SCRIPTS / "tiny_research.py", files, root))
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 90
    while not any(r.get("event") == "metric" for r in seen) and time.monotonic() < deadline:
        assert handle.poll(seen.append) is None
        time.sleep(0.1)
    handle.stop()
    while (ended := handle.poll(seen.append)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended is not None and ended.outcome is Outcome.INTERRUPTED
    assert time.monotonic() < deadline


def _builtin() -> BuiltinProposer:
    return BuiltinProposer(seed=0)
