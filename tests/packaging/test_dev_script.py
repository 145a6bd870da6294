"""The `dev` script's own logic, on a copy of it with stand-in tools.

.venv/bin/{pip,python,svcengine,ruff,mypy} are stand-ins (shell scripts that record their
arguments): the real ones would install packages and start services, which is not what is
tested here. What is: when `dev` installs, what it runs, and what `clean` removes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >>"$(dirname "$0")/../calls.log"\n'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "checkout"
    (t / "svcengine").mkdir(parents=True)
    (t / "tests" / "systemd").mkdir(parents=True)
    shutil.copy2(REPO / "dev", t / "dev")
    shutil.copy2(REPO / "tests" / "systemd" / "box.sh", t / "tests" / "systemd" / "box.sh")
    (t / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (t / "svcengine" / "__init__.py").write_text('__version__ = "1"\n')
    bin_ = t / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for tool in ("pip", "python", "svcengine", "ruff", "mypy"):
        (bin_ / tool).write_text(RECORDER)
        (bin_ / tool).chmod(0o755)
    return t


def dev(tree: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    log = tree / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    r = subprocess.run(
        [str(tree / "dev"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_run_installs_once_then_only_when_pyproject_changes(tree: Path) -> None:
    first = dev(tree, "run", "--workers", "3")
    assert first[0] == "pip install -q -e ."
    assert first[-1] == "svcengine --foreground --workers 2 --workers 3"
    assert dev(tree, "run") == ["svcengine --foreground --workers 2"]  # no pip: ~6 s saved
    (tree / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    assert dev(tree, "run")[0] == "pip install -q -e ."


def test_test_installs_its_extra_and_quick_selects_no_box_tests(tree: Path) -> None:
    calls = dev(tree, "test", "--quick", "-x")
    assert calls[0] == "pip install -q -e .[test]"
    assert "mypy " in calls  # strict, as [tool.mypy] in pyproject.toml says, after ruff
    assert calls.index("mypy ") > calls.index("ruff format --check .")
    assert calls[-1] == "python -m pytest tests/unit tests/packaging tests/integration -x"
    assert dev(tree, "test")[-1] == "python -m pytest"  # the whole suite, as CI runs it
    assert not [c for c in dev(tree, "test") if c.startswith("pip")]


@pytest.mark.skipif(os.geteuid() != 0, reason="clean removes the box caches as root only")
def test_clean_removes_the_venv_and_the_box_caches(tree: Path, tmp_path: Path) -> None:
    box_dir = tmp_path / "boxes"  # not /var/lib/svcengine-testbox: others may be using it
    (box_dir / "svcengine-test-123" / "rootfs").mkdir(parents=True)
    (box_dir / "rootfs-bookworm-0123456789.tar.zst").write_bytes(b"x")
    dev(tree, "clean", env={"BOX_DIR": str(box_dir)})
    assert not (tree / ".venv").exists()
    assert not box_dir.exists()
