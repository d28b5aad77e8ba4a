"""Layering and packaging: who may import whom, defaults that cannot drift, and a wheel that
carries everything the command needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def modules_after_import(*names: str) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in names)
        + "print('\\n'.join(sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    return set(result.stdout.split())


def logic_modules() -> list[str]:
    """Every module of the product outside the UI (scripts that run on import left out)."""
    import pkgutil

    names = []
    for package in ("cockpit", "agent", "trainer", "themes"):
        path = REPO / package
        names.append(package)
        for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
            names.append(info.name)
    skipped = ("cockpit.ui", "themes", "cockpit.__main__", "trainer.__main__", "trainer.train")
    return sorted(
        name
        for name in names
        if not any(name == s or name.startswith(s + ".") for s in skipped)
        and name != "cockpit.bench.reference_gpt"  # a training script, sized on import
    )


def test_the_floors_keep_their_contract(capsys: pytest.CaptureFixture[str]) -> None:
    """Who may import whom, statically (every import, inside functions too): the contracts
    of pyproject.toml's ``[tool.importlinter]``, as README's "Layout" draws them."""
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert "0 broken" in out, out
    assert code == 0
    for floor in ("the bus", "the read side", "the engine writes", "the screen reads"):
        assert floor in out


@pytest.mark.e2e
def test_only_the_ui_imports_textual() -> None:
    names = logic_modules()
    assert {"cockpit.cli", "cockpit.engine.loop", "cockpit.report", "agent.builtin"} <= set(names)
    loaded = modules_after_import(*names)
    assert "cockpit.engine.runner" in loaded
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


@pytest.mark.e2e
def test_the_agent_imports_nothing_of_cockpit() -> None:
    agent = [name for name in logic_modules() if name.split(".")[0] == "agent"]
    loaded = modules_after_import(*agent)
    assert "agent.proposal" in loaded
    assert not {m for m in loaded if m == "cockpit" or m.startswith("cockpit.")}


@pytest.mark.e2e
def test_the_trainer_imports_nothing_of_cockpit_or_agent() -> None:
    loaded = modules_after_import("trainer", "trainer.harness", "trainer.data", "trainer.evaluate")
    assert "trainer.harness" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("cockpit", "agent")}


@pytest.mark.e2e
def test_the_wheel_carries_the_defaults_the_template_and_the_command(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("research_cockpit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("cockpit/defaults/config.toml") == (REPO / "config.toml").read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "cockpit = cockpit.cli:main" in archive.read(entry_points).decode()
    for required in (
        "trainer/train.py",
        "trainer/harness.py",
        "cockpit/bench/reference_gpt.py",
        "agent/__init__.py",
        "themes/__init__.py",
        "cockpit/template/program.md",
        "cockpit/template/gitignore",
        "cockpit/template/config.toml",
    ):
        assert required in names, required
    assert not any(name.startswith("tests/") for name in names)
