"""The device probe runs in exactly the training's confinement before any training trusts the
device. Its decision chain is tried with probe results a test supplies, one per layer, as a
GPU box could give them; and for real on this machine, where naming a thread through /proc
(what NVIDIA's driver does in cuInit) is refused by the confinement unless the NVIDIA rule is
on, which it is only where an NVIDIA device exists."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import SCRIPTS, run_harness, tagged
from trainer.confine import FULL, LAYERS, OFF, Layer
from trainer.device import resolve_device
from trainer.outcomes import HarnessStop, Outcome
from trainer.probe import THREAD_NAMES_ENV, Attempt, Step, check_device, decide
from trainer.walls import allowed_environment, nvidia_present

AS_ROOT = os.geteuid() == 0
PASSES = (Step("device", True), Step("matmul", True), Step("export", True))
CUDA_304 = "RuntimeError: CUDA error: OS call failed or operation not supported (304)"


def prober(failing: dict[str, Step]) -> tuple[Callable[[Layer], Attempt], list[str]]:
    """A probe that fails the given step at the named layers and passes elsewhere; and the
    layers it was asked for, in order."""
    asked: list[str] = []

    def probe(layer: Layer) -> Attempt:
        asked.append(layer.name)
        step = failing.get(layer.name)
        return Attempt(layer.name, (step,) if step is not None else PASSES)

    return probe, asked


def test_a_device_that_works_in_full_confinement_is_used_there() -> None:
    probe, asked = prober({})
    usable, layer, message, _ = decide("auto", probe, "cuda", as_root=True)
    assert (usable, layer, asked) == (True, "full", ["full"])
    assert message == "cuda works in full confinement"


def test_a_kernel_that_leaves_a_part_out_is_not_called_full_confinement() -> None:
    partial = {"network": "a network namespace", "files": None, "reason": "no Landlock"}

    def probe(layer: Layer) -> Attempt:
        return Attempt(layer.name, PASSES, confinement=partial)

    usable, layer, message, _ = decide("auto", probe, "cpu", as_root=False)
    assert (usable, layer) == (True, "full")
    assert message == "cpu works in all the confinement this kernel allows (not files: no Landlock)"


@pytest.mark.parametrize("as_root", [False, True], ids=["user", "root"])
def test_where_confinement_breaks_the_device_the_strongest_layer_that_works_is_chosen(
    as_root: bool,
) -> None:
    # cuInit fails wherever Landlock narrows /proc (driver 570's thread names), not beyond.
    broken = Step("device", False, detail=CUDA_304)
    narrowed = {layer.name: broken for layer in LAYERS if layer.landlock and layer.narrow_proc}
    probe, asked = prober(narrowed)
    usable, layer, message, attempts = decide("auto", probe, "cuda", as_root=as_root)
    if as_root:
        # Root may write /proc/sys: the /proc-wide layer is never offered to it.
        assert (usable, layer) == (True, "no-landlock")
        assert asked == ["full", "off", "no-userns", "no-landlock"]
    else:
        assert (usable, layer) == (True, "proc-wide")
        assert asked == ["full", "off", "proc-wide"]
    chosen = next(known for known in LAYERS if known.name == layer)
    assert message == (
        f"cuda: device failed ({CUDA_304}) inside the confinement but works outside it; "
        f"training runs {chosen.label}"
    )
    assert [a.passed for a in attempts][-1] is True


def test_each_layer_is_tried_in_order_until_one_passes() -> None:
    broken = Step("compile", False, detail="EACCES (Permission denied): /opt/triton")
    for count in range(1, len(LAYERS)):
        failing = {layer.name: broken for layer in LAYERS[:count]}
        probe, asked = prober(failing)
        usable, layer, _, _ = decide("auto", probe, "cuda", as_root=False)
        assert usable and layer == LAYERS[count].name
        assert asked == ["full", "off", *(known.name for known in LAYERS[1 : count + 1])]


def test_require_confinement_refuses_with_what_to_allow() -> None:
    probe, asked = prober({"full": Step("threads", False, detail="EACCES: /proc/7/task/9/comm")})
    usable, layer, message, _ = decide("require", probe, "cuda", as_root=False)
    assert (usable, layer, asked) == (False, None, ["full", "off"])
    assert message.startswith(
        "cuda: threads failed (EACCES: /proc/7/task/9/comm) inside the confinement but works "
        "outside it; require_confinement refuses to train: allow the writes NVIDIA's driver "
        "makes to its threads' names under /proc"
    )
    assert "require_confinement = false" in message


def test_no_layer_working_is_a_refusal_not_an_unconfined_run() -> None:
    broken = Step("device", False, detail=CUDA_304)
    probe, asked = prober({layer.name: broken for layer in LAYERS})
    usable, layer, message, _ = decide("auto", probe, "cuda", as_root=True)
    assert (usable, layer) == (False, None)
    assert asked == ["full", "off", "no-userns", "no-landlock"]
    assert "no weaker confinement lets it work (proc-wide is never used as root)" in message
    assert message.endswith("or train with --confinement off")


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_a_gpu_that_fails_even_unconfined_is_refused_never_traded_for_the_cpu(mode: str) -> None:
    broken = Step("device", False, detail="RuntimeError: CUDA driver version is insufficient")
    probe, asked = prober({"full": broken, "off": broken})
    usable, layer, message, _ = decide(mode, probe, "cuda", as_root=False)
    assert (usable, layer, asked) == (False, None, ["full", "off"])
    assert message == (
        "cuda does not work even without confinement: device failed (RuntimeError: CUDA "
        "driver version is insufficient); check the driver and the torch build (`cockpit "
        'doctor`), or set [trainer] device = "cpu" to train on the CPU'
    )


def test_a_probe_that_died_counts_as_failed_and_a_skipped_step_does_not() -> None:
    assert not Attempt("full", error="the probe ran past 300 s").passed
    assert not Attempt("full").passed  # it reported nothing
    skipped = Attempt("full", (Step("nvml", None), *PASSES))
    assert skipped.passed
    optional = Attempt("full", (Step("compile", False, essential=False), *PASSES))
    assert optional.passed  # a compile on the CPU is a warning, not a refusal


def test_confinement_off_only_checks_that_the_device_works() -> None:
    probe, asked = prober({})
    assert decide("off", probe, "cpu", as_root=False)[:2] == (True, "off")
    assert asked == ["off"]


def test_the_nvidia_rule_is_on_only_where_an_nvidia_device_exists() -> None:
    assert not nvidia_present(["/dev/null", "/dev/urandom", "/dev/dri"])
    assert nvidia_present(["/dev/null", "/dev/nvidia0", "/dev/nvidiactl"])
    assert nvidia_present(["/dev/nvidia-caps"])


# --- for real, on this machine ---------------------------------------------------------------


@pytest.mark.e2e
def test_the_real_probe_passes_in_full_confinement_and_is_cached(tmp_path: Path) -> None:
    first = check_device("cpu", "auto", tmp_path, compile_on_cpu=True)
    assert (first.usable, first.layer, first.cached) == (True, "full", False)
    steps = {step["name"]: step for step in first.steps}
    assert steps["device"]["ok"] and steps["matmul"]["ok"]
    assert steps["compile"]["ok"], steps["compile"]["detail"]  # Inductor, confined
    assert steps["export"]["ok"] and "loaded back" in steps["export"]["detail"]
    assert steps["nvml"]["ok"] is None and steps["threads"]["ok"] is None  # no NVIDIA here
    confinement = first.attempts[0].confinement
    assert confinement["layer"] == "full" and confinement["enforced"]
    again = check_device("cpu", "auto", tmp_path)
    assert again.cached and again.layer == "full" and again.message == first.message
    assert json.loads((tmp_path / "device-probe.json").read_text())


@pytest.mark.e2e
def test_for_real_a_confinement_that_refuses_thread_names_degrades_or_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no NVIDIA device the rule is off, so naming a thread as the driver does is refused
    in full confinement: the real chain then finds the strongest layer that allows it."""
    monkeypatch.setenv(THREAD_NAMES_ENV, "1")
    degraded = check_device("cpu", "auto", tmp_path)
    expected = "no-landlock" if AS_ROOT else "proc-wide"
    assert (degraded.usable, degraded.layer, degraded.degraded) == (True, expected, True)
    full = degraded.attempts[0]
    assert full.layer == "full" and full.failed is not None and full.failed.name == "threads"
    assert full.failed.detail.startswith("EACCES (Permission denied): /proc/")
    assert degraded.attempts[1].layer == "off" and degraded.attempts[1].passed
    refused = check_device("cpu", "require", tmp_path)
    assert not refused.usable and refused.layer is None
    assert "require_confinement refuses to train" in refused.message


@pytest.mark.e2e
def test_a_refused_device_stops_the_harness_with_the_reason(tmp_path: Path) -> None:
    run = run_harness(
        SCRIPTS / "tiny_research.py",
        tmp_path,
        "--confinement",
        "require",
        env={THREAD_NAMES_ENV: "1"},
    )
    assert run.exit_code == int(Outcome.SETUP)
    assert run.summary["status"] == Outcome.SETUP.status
    assert run.summary["reason"].startswith(
        "the device probe refused the device: cpu: threads failed (EACCES"
    )
    assert "training_seconds" not in run.summary or run.summary["training_seconds"] is None


@pytest.mark.e2e
def test_a_degraded_confinement_is_said_by_the_training(tmp_path: Path) -> None:
    run = run_harness(SCRIPTS / "tiny_research.py", tmp_path, env={THREAD_NAMES_ENV: "1"})
    assert run.exit_code == 0, run.output
    expected = "no-landlock" if AS_ROOT else "proc-wide"
    confinement = run.summary["confinement"]
    assert confinement["layer"] == expected
    assert "threads failed (EACCES" in confinement["reason"]
    assert run.summary["device_check"]["layer"] == expected
    start = next(m for m in run.metrics if m.get("event") == "start")
    assert start["confinement"]["layer"] == expected
    assert f"confinement degraded to {expected}" in run.output


def test_a_gpu_the_driver_shows_but_torch_cannot_use_stops_auto() -> None:
    if torch.cuda.is_available():
        pytest.skip("torch can use this machine's GPU")
    with pytest.raises(HarnessStop) as stopped:
        resolve_device("auto", gpus=["0000:01:00.0"])
    assert stopped.value.outcome is Outcome.SETUP
    assert "the driver shows 1 NVIDIA GPU(s) (0000:01:00.0) but torch" in str(stopped.value)
    assert 'device = "cpu"' in str(stopped.value)
    assert resolve_device("auto", gpus=[]).type == "cpu"


# --- the training's environment ------------------------------------------------------------


def test_the_environment_is_an_allow_list() -> None:
    seen = allowed_environment(
        {
            "PATH": "/usr/bin",
            "LC_ALL": "C.UTF-8",
            "CUDA_VISIBLE_DEVICES": "0",
            "OMP_NUM_THREADS": "2",
            "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
            "AWS_SECRET_ACCESS_KEY": "x",
            "GITHUB_TOKEN": "x",
            "OPENAI_API_KEY": "x",
            "COCKPIT_NOTIFY__URLS": "ntfys://token@host",
            "SSH_AUTH_SOCK": "/tmp/agent",
            "TORCH_HUB_TOKEN": "x",
        }
    )
    assert seen == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "2",
        "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
    }


ENVIRONMENT_SCRIPT = (
    (SCRIPTS / "tiny_research.py").read_text()
    + """

import os

_train = train


def train(ctx):
    for name in ("RESEARCH_PASSWORD", "SSH_AUTH_SOCK", "COCKPIT_NOTIFY__URLS", "PATH",
                 "OMP_NUM_THREADS"):
        print(f"ENV {name}={os.environ.get(name, '<unset>')}")
    return _train(ctx)
"""
)


@pytest.mark.e2e
def test_a_training_sees_no_variable_outside_the_list(tmp_path: Path) -> None:
    run = run_harness(
        ENVIRONMENT_SCRIPT,
        tmp_path,
        env={
            "RESEARCH_PASSWORD": "hunter2",
            "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
            "COCKPIT_NOTIFY__URLS": "ntfys://secret@ntfy.example",
            "OMP_NUM_THREADS": "1",
        },
    )
    assert run.exit_code == 0, run.output
    seen = tagged(run.output, "ENV")
    assert seen["RESEARCH_PASSWORD"] == "<unset>"
    assert seen["SSH_AUTH_SOCK"] == "<unset>"
    assert seen["COCKPIT_NOTIFY__URLS"] == "<unset>"
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["OMP_NUM_THREADS"] == "1"


def test_layers_are_named_once_and_full_comes_first() -> None:
    assert LAYERS[0] is FULL
    names = [layer.name for layer in (*LAYERS, OFF)]
    assert len(names) == len(set(names))


# --- through the engine ----------------------------------------------------------------------


def _engine_workspace(root: Path, *trainer_lines: str) -> Path:
    from tests.helpers import git_env, make_workspace

    make_workspace(root)
    if trainer_lines:
        config = root / "config.toml"
        lines = "".join(f"{line}\n" for line in trainer_lines)
        config.write_text(config.read_text().replace("[trainer]\n", "[trainer]\n" + lines))
        subprocess.run(
            ["git", "-C", str(root), "commit", "-qam", "probe"], check=True, env=git_env()
        )
    return root


def _events(root: Path, kind: str) -> list[str]:
    from cockpit.store.journal import Journal
    from cockpit.views.readmodel import journal_file

    with Journal.open(journal_file(root), readonly=True) as journal:
        return [event.message for event in journal.events(kinds=[kind])]


@pytest.mark.e2e
@pytest.mark.usefixtures("no_git_identity")
def test_the_engine_stops_with_the_reason_when_the_device_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import cockpit

    monkeypatch.setenv(THREAD_NAMES_ENV, "1")
    root = _engine_workspace(tmp_path / "ws", "require_confinement = true")
    done = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: the device check refused cpu: threads failed (EACCES" in done.stderr
    assert "require_confinement refuses to train" in done.stderr
    (refusal,) = _events(root, "integrity")
    assert refusal.startswith("the device check refused cpu: threads failed")
    # Nothing was decided on a refused device: the baseline waits to train again.
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["best_val_bpb"] is None and status["experiments"] == 1


@pytest.mark.e2e
@pytest.mark.usefixtures("no_git_identity")
def test_a_degraded_confinement_is_in_the_status_and_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import cockpit

    monkeypatch.setenv(THREAD_NAMES_ENV, "1")
    root = _engine_workspace(tmp_path / "ws")
    done = cockpit("run", "--headless", "--workspace", str(root), "--experiments", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "no-landlock" if AS_ROOT else "proc-wide"
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["confinement"]["layer"] == expected
    assert status["confinement"]["message"].startswith(f"confinement degraded to {expected}: ")
    text = cockpit("status", "--workspace", str(root)).stdout
    assert f"confinement degraded to {expected}" in text
    (said,) = _events(root, "confinement")
    assert said.startswith(f"confinement degraded to {expected}: cpu: threads failed (EACCES")


TAMPERING_SCRIPT = (
    (SCRIPTS / "tiny_research.py").read_text()
    + """

import json
from pathlib import Path

CACHE = Path(__CACHE__)
_train = train


def _try(name, action):
    try:
        action()
        print(f"TAMPER {name}=ok")
    except OSError as exc:
        print(f"TAMPER {name}={type(exc).__name__}")


def train(ctx):
    forged = json.dumps({"any": {"usable": True, "layer": "full", "checked_at": 9e99}})
    _try("verdicts", lambda: (CACHE / "device-probe.json").write_text(forged))
    _try("through the compile cache",
         lambda: (CACHE / "compile" / ".." / "device-probe.json").write_text(forged))
    _try("a new verdict file", lambda: (CACHE / "device-probe.json.tmp").write_text(forged))
    return _train(ctx)
"""
)


@pytest.mark.e2e
def test_a_training_cannot_forge_the_probes_verdicts(tmp_path: Path) -> None:
    """The verdicts decide how the next trainings are confined: they lie in the cache folder,
    which a training cannot write (only its compile cache beneath it)."""
    cache = tmp_path / "cache"
    script = TAMPERING_SCRIPT.replace("__CACHE__", repr(str(cache)))
    run = run_harness(script, tmp_path, "--cache-dir", str(cache))
    assert run.exit_code == 0, run.output
    tried = tagged(run.output, "TAMPER")
    assert tried == dict.fromkeys(
        ["verdicts", "through the compile cache", "a new verdict file"], "PermissionError"
    )
    verdicts = json.loads((cache / "device-probe.json").read_text())
    assert "any" not in verdicts and len(verdicts) == 1
    (verdict,) = verdicts.values()
    assert verdict["layer"] == "full" and verdict["checked_at"] < 9e99


@pytest.mark.e2e
def test_a_device_torch_cannot_use_is_a_refusal_the_engine_stops_on(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("torch can use this machine's GPU")
    run = run_harness(SCRIPTS / "tiny_research.py", tmp_path, "--device", "cuda")
    assert run.exit_code == int(Outcome.SETUP)
    check = run.summary["device_check"]
    assert check["usable"] is False and check["layer"] is None
    assert check["message"].startswith("device cuda was asked for but no CUDA GPU is usable")


@pytest.mark.e2e
def test_a_verdict_vouches_only_for_the_confinement_code_it_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from trainer import probe

    before = probe.cache_key(torch.device("cpu"), "auto")
    probe._confinement_digest.cache_clear()
    # The same key from the same code; another key once a module of the confinement differs.
    assert probe.cache_key(torch.device("cpu"), "auto") == before
    monkeypatch.setattr(probe, "CONFINEMENT_MODULES", probe.CONFINEMENT_MODULES[:-1])
    probe._confinement_digest.cache_clear()
    try:
        assert probe.cache_key(torch.device("cpu"), "auto") != before
    finally:
        monkeypatch.undo()
        probe._confinement_digest.cache_clear()
