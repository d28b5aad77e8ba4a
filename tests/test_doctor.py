"""`cockpit doctor`: each check decided from what it is given, and the real command on this
machine (its GPUs or none, the real device probe, a child trying a user namespace, the disk,
the corpus cache, Ollama at a dead port or the test server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cockpit import cli
from cockpit.doctor import checkup
from cockpit.doctor.confinement import UsernsTrial, check_landlock, check_probe, check_userns
from cockpit.doctor.gpu import DriverInfo, TorchBuild, check_gpus, check_torch
from cockpit.doctor.model_server import OllamaState, check_ollama
from cockpit.doctor.storage import DiskPlace, check_corpus, check_disk, read_corpus_state
from cockpit.doctor.terminal import check_terminal
from cockpit.doctor.verdicts import FAIL, PASS, WARN, Check
from cockpit.engine.monitor import ScriptedGpuSource
from cockpit.store.samples import GpuReading, GpuSnapshot
from tests.conftest import write_text_corpus
from tests.ollama_server import OllamaDouble
from trainer.data import prepare_corpus
from trainer.probe import DeviceCheck

REPO = Path(__file__).resolve().parent.parent
KEYS = ["torch", "gpus", "probe", "landlock", "userns", "disk", "corpus", "ollama", "terminal"]
H100 = GpuReading(0, "NVIDIA H100 80GB HBM3", "GPU-1", memory_total_mb=81559.0)
ONE_GPU = GpuSnapshot.ok([H100])
NO_GPU = GpuSnapshot.no_gpu("no NVIDIA GPU (NVIDIA driver not found)")
DRIVER = DriverInfo("550.54.15", (12, 4))


def closed_port() -> int:
    """A port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_doctor_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", "doctor", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def checks_by_key(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["key"]: check for check in report["checks"]}


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A private home and data directory, and Ollama's address at a port where nothing
    listens, for the commands a test starts."""
    (tmp_path / "home").mkdir()
    return {
        "HOME": str(tmp_path / "home"),
        "COCKPIT_DATA_DIR": str(tmp_path / "data"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}",
    }


# ---------------------------------------------------------------------------------------------
# the real command


@pytest.mark.e2e
def test_doctor_json_on_this_machine_gives_every_check_with_its_status_and_fix(
    tmp_path: Path, home: dict[str, str]
) -> None:
    workspace = tmp_path / "ws"
    made = subprocess.run(
        [sys.executable, "-m", "cockpit", "init", str(workspace)],
        env={**os.environ, **home},
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    result = run_doctor_cli("--json", "--workspace", str(workspace), env=home)
    report = json.loads(result.stdout)
    checks = checks_by_key(report)
    assert [check["key"] for check in report["checks"]] == KEYS
    for check in report["checks"]:
        assert check["status"] in (PASS, WARN, FAIL), check
        assert isinstance(check["summary"], str) and check["summary"], check
        assert isinstance(check["fix"], str), check
        if check["status"] != PASS:
            assert check["fix"], f"a {check['status']} without a fix: {check}"
    failed = [check["key"] for check in report["checks"] if check["status"] == FAIL]
    assert report["ok"] is (not failed)
    assert result.returncode == (0 if not failed else 1), result.stderr
    if checks["gpus"]["state"] == "no_gpu":
        assert checks["gpus"]["summary"].startswith("no NVIDIA GPU: trainings run on the CPU")
        assert checks["probe"]["device"] == "cpu"
    # Nothing listens at Ollama's address: a warning that says how to start it.
    assert checks["ollama"]["status"] == WARN
    assert "ollama serve" in checks["ollama"]["fix"]
    assert checks["disk"]["places"][0]["path"] == str(workspace)
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_too_little_free_disk_fails_the_doctor_and_names_the_folder(
    tmp_path: Path, home: dict[str, str]
) -> None:
    """On the default workspace, which the doctor reads and never creates."""
    result = run_doctor_cli("--min-free-gb", "1000000000", env=home)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if " disk " in line]
    default = tmp_path / "data" / "workspace"
    assert line.strip().startswith("fail  disk") and str(default) in line, line
    assert "| fix: free space" in line
    assert result.stdout.splitlines()[-1].startswith("not ready: ")
    assert not default.exists()


@pytest.mark.e2e
def test_ollama_answering_that_the_model_is_not_pulled_fails_the_doctor(
    home: dict[str, str],
) -> None:
    with OllamaDouble(models=()) as server:
        result = run_doctor_cli("--json", env={**home, "OLLAMA_HOST": server.host})
    assert result.returncode == 1, result.stdout + result.stderr
    ollama = checks_by_key(json.loads(result.stdout))["ollama"]
    assert ollama["status"] == FAIL
    assert ollama["fix"].startswith("ollama pull qwen2.5-coder:7b")


@pytest.mark.e2e
def test_a_gpu_that_nvml_sees_beside_a_cpu_build_of_torch_fails_the_doctor(
    tmp_path: Path,
    home: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command in this process, with NVML's reading and the torch build supplied."""
    for name, value in home.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(checkup, "default_gpu_source", lambda: ScriptedGpuSource([ONE_GPU]))
    monkeypatch.setattr(checkup, "read_driver", lambda: DRIVER)
    monkeypatch.setattr(checkup, "read_torch_build", lambda: TorchBuild("2.5.1+cpu", None))
    code = cli.main(["doctor", "--json", "--device", "cpu"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    checks = checks_by_key(report)
    assert checks["torch"]["status"] == FAIL
    assert "install a CUDA build of torch" in checks["torch"]["fix"]
    assert checks["gpus"]["status"] == PASS
    assert "NVIDIA H100 80GB HBM3" in checks["gpus"]["summary"]


# ---------------------------------------------------------------------------------------------
# each check from what it is given


def test_a_cpu_build_of_torch_is_right_without_a_gpu_and_wrong_beside_one() -> None:
    cpu_build = TorchBuild("2.5.1+cpu", None)
    assert check_torch(cpu_build, NO_GPU, None).status == PASS
    wrong = check_torch(cpu_build, ONE_GPU, DRIVER)
    assert wrong.status == FAIL
    assert "NVML sees 1 NVIDIA GPU" in wrong.summary
    assert "CUDA 12.4 or older" in wrong.fix and "whl/cu124" in wrong.fix


def test_a_cuda_build_is_matched_against_the_drivers_cuda_version() -> None:
    matched = check_torch(TorchBuild("2.5.1+cu124", "12.4", True, 1), ONE_GPU, DRIVER)
    assert matched.status == PASS and "supports CUDA 12.4" in matched.summary
    newer_minor = check_torch(TorchBuild("2.7.0+cu126", "12.6", True, 1), ONE_GPU, DRIVER)
    assert newer_minor.status == WARN and "update the NVIDIA driver" in newer_minor.fix
    newer_major = check_torch(TorchBuild("2.9.0+cu130", "13.0", False, 0), ONE_GPU, DRIVER)
    assert newer_major.status == FAIL and "CUDA will not start" in newer_major.summary
    unusable = check_torch(
        TorchBuild("2.5.1+cu124", "12.4", False, 0, error="no CUDA-capable device"), ONE_GPU, DRIVER
    )
    assert unusable.status == FAIL and "no CUDA-capable device" in unusable.summary
    assert check_torch(None, NO_GPU, None).status == FAIL


def test_no_gpu_is_said_plainly_and_an_nvml_failure_is_a_failure() -> None:
    none = check_gpus(NO_GPU, None)
    assert none.status == WARN
    assert none.summary == "no NVIDIA GPU: trainings run on the CPU (NVIDIA driver not found)"
    broken = check_gpus(GpuSnapshot.error("NVML failed to start: Driver/library mismatch"), None)
    assert broken.status == FAIL and "nvidia-smi" in broken.fix
    two = GpuSnapshot.ok([H100, GpuReading(1, H100.name, "GPU-2", memory_total_mb=81559.0)])
    found = check_gpus(two, DRIVER)
    assert found.status == PASS
    assert found.summary == "2 x NVIDIA H100 80GB HBM3, 80 GiB; driver 550.54.15 (CUDA 12.4)"


def test_the_probe_passes_in_full_confinement_warns_degraded_and_fails_refused() -> None:
    full = DeviceCheck("cuda", "H100", True, "full", "cuda works in full confinement")
    assert check_probe(full).status == PASS
    degraded = DeviceCheck(
        "cuda", "H100", True, "proc-wide", "cuda: threads failed; training runs without ..."
    )
    warned = check_probe(degraded)
    assert warned.status == WARN and "degraded to proc-wide" in warned.summary
    refused = check_probe(
        DeviceCheck("cuda", "H100", False, None, "cuda does not work", cached=True)
    )
    assert refused.status == FAIL
    assert "(cached)" in refused.summary and 'device = "cpu"' in refused.fix
    missing = check_probe(None, "cuda asked for, but torch cannot use a GPU here")
    assert missing.status == FAIL and "cannot use a GPU" in missing.summary


def test_landlock_and_user_namespaces_name_the_setting_to_change() -> None:
    assert check_landlock(6, "", required=False).status == PASS
    off = check_landlock(0, "add landlock to lsm= and reboot", required=False)
    assert off.status == WARN and off.fix == "add landlock to lsm= and reboot"
    assert check_landlock(0, "no", required=True).status == FAIL

    refused = UsernsTrial({"network": None, "reason": "a user namespace was refused (EACCES)"})
    ubuntu = check_userns(
        refused, {"apparmor": "1", "debian": None, "max": "63000"}, required=False
    )
    assert ubuntu.status == WARN
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in ubuntu.fix
    debian = check_userns(refused, {"apparmor": None, "debian": "0", "max": "63000"}, required=True)
    assert debian.status == FAIL and "kernel.unprivileged_userns_clone=1" in debian.fix
    limited = check_userns(refused, {"apparmor": None, "debian": None, "max": "0"}, required=False)
    assert "user.max_user_namespaces" in limited.fix
    works = check_userns(
        UsernsTrial({"network": "a network namespace of its own"}), {}, required=True
    )
    assert works.status == PASS
    no_pidns = check_userns(
        UsernsTrial({"network": "x", "pid_namespace_refused": "unsharing a PID ... was refused"}),
        {},
        required=False,
    )
    assert no_pidns.status == WARN and "can outlive it" in no_pidns.summary


@pytest.mark.e2e
def test_the_user_namespace_trial_here_also_has_its_pid_namespace() -> None:
    from cockpit.doctor.confinement import try_userns
    from trainer import pidns

    trial = try_userns()
    assert trial.confinement is not None, trial.error
    if trial.confinement["network"] is None:
        pytest.skip("no user namespaces on this machine")
    check = check_userns(trial, {}, required=True)
    assert check.status == PASS and pidns.ENFORCED_BY in check.summary, check


def test_disk_warns_below_a_few_gigabytes_and_fails_below_one() -> None:
    def places(free: float) -> list[DiskPlace]:
        return [
            DiskPlace("workspace", Path("/w"), int(free * 1e9), device=1),
            DiskPlace("runs", Path("/w/.cockpit/runs"), int(free * 1e9), device=1),
            DiskPlace("caches", Path("/c"), 500 * 10**9, device=2),
        ]

    plenty = check_disk(places(100))
    assert plenty.status == PASS
    assert "100.0 GB free for the workspace and runs (/w)" in plenty.summary
    assert "500.0 GB free for the caches (/c)" in plenty.summary
    assert check_disk(places(3)).status == WARN
    tight = check_disk(places(0.5))
    assert tight.status == FAIL and "/w" in tight.fix


def test_the_corpus_is_a_warning_until_it_is_encoded_in_the_cache(tmp_path: Path) -> None:
    corpus = write_text_corpus(tmp_path / "corpus", documents=20, lines=10)
    name = f"text:{corpus}"
    before = check_corpus(read_corpus_state(name, tmp_path / "cache"))
    assert before.status == WARN
    assert "the first training builds it (about 1 s)" in before.summary
    assert "prepare_corpus" in before.fix
    prepare_corpus(name, tmp_path / "cache")
    after = check_corpus(read_corpus_state(name, tmp_path / "cache"))
    assert after.status == PASS and "encoded in the cache" in after.summary
    missing = check_corpus(read_corpus_state(f"text:{tmp_path / 'nowhere'}", tmp_path / "cache"))
    assert missing.status == FAIL


def test_ollama_down_is_a_warning_a_missing_model_a_failure_and_size_is_weighed() -> None:
    def state(kind: str, **extra: Any) -> OllamaState:
        return OllamaState(kind, "message", "http://127.0.0.1:11434", "qwen2.5-coder:7b", **extra)

    down = check_ollama(state("server_down"), NO_GPU, "hybrid")
    assert down.status == WARN and "ollama serve" in down.fix
    assert check_ollama(state("server_down"), NO_GPU, "optuna").status == PASS
    assert check_ollama(state("model_missing"), NO_GPU, "llm").status == FAIL
    small = 5 * 10**9
    unloaded = check_ollama(state("ready", model_bytes=small), ONE_GPU, "hybrid")
    assert unloaded.status == PASS and "unloaded before each training" in unloaded.summary
    two = GpuSnapshot.ok([H100, GpuReading(1, H100.name, "GPU-2", memory_total_mb=81559.0)])
    assert check_ollama(state("ready", model_bytes=small), two, "hybrid").status == PASS
    big = check_ollama(state("ready", model_bytes=60 * 10**9), two, "hybrid")
    assert big.status == WARN and "reserved_gpus" in big.fix


def test_the_terminal_wants_room_and_suggests_tmux() -> None:
    roomy = check_terminal((200, 50), {"TERM": "xterm-256color", "TMUX": "/tmp/tmux-0/default"})
    assert roomy.status == PASS and roomy.fix == ""
    assert "256 colours" in roomy.summary and "inside tmux" in roomy.summary
    small = check_terminal((80, 24), {"TERM": "xterm", "COLORTERM": "truecolor"})
    assert small.status == WARN and "100x30" in small.fix and "tmux" in small.fix
    dumb = check_terminal((120, 40), {"TERM": "dumb", "STY": "1.pts"})
    assert dumb.status == WARN and "TERM=xterm-256color" in dumb.fix


def test_a_check_line_carries_its_fix_and_json_keeps_its_own_fields_first() -> None:
    check = Check("disk", FAIL, "0.5 GB free", "free space", {"key": "not this", "places": []})
    assert check.line() == "fail  disk      0.5 GB free | fix: free space"
    assert Check("terminal", PASS, "80x40", "use tmux").line().endswith("| tip: use tmux")
    assert list(check.to_dict()) == ["key", "status", "summary", "fix", "places"]
    assert check.to_dict()["key"] == "disk"
