"""The sdist and the wheel a PyPI user gets: metadata, license, and what the sdist carries.

Builds both with the setuptools of the interpreter running the tests (PEP 517 hooks, no
network, a few seconds) from a copy of the tree. The markdown rendering check of
`twine check --strict` is not repeated here (twine pulls ~30 packages into the test venv):
`./dev dist` builds both with the newest setuptools and runs it.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# what a user needs to test from the sdist, and the units the docs refer to
SDIST_MUST_HAVE = (
    "LICENSE",
    "README.md",
    "dev",
    "pyproject.toml",
    "tests/unit/test_pool.py",
    "tests/integration/harness.py",
    "tests/integration/conftest.py",
    "tests/systemd/box.sh",
    "docs/configuration.md",
    "docs/hooks.md",
    "examples/http_worker.py",
    "packaging/systemd/svcengine@.service",
    "packaging/systemd/svcengine@.socket",
    "packaging/build-deb.sh",
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("setuptools", reason="building needs setuptools in this interpreter")
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "out"
    )
    shutil.copytree(REPO, src, ignore=skip)
    out = tmp / "out"
    out.mkdir()
    names = []
    for hook in ("build_sdist", "build_wheel"):  # one process each, as a PEP 517 frontend does
        code = (
            "import sys\nfrom setuptools import build_meta as b\n"
            f"print('DIST', b.{hook}(sys.argv[1]))"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(out)],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        names.append(next(x for x in r.stdout.splitlines() if x.startswith("DIST ")).split()[1])
    sdist_name, wheel_name = names
    return out / sdist_name, out / wheel_name


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_pyproject_license_form_builds_on_old_and_new_setuptools() -> None:
    # `license = { text = ... }` is deprecated by setuptools 77+ (deadline 2027-02-18), and
    # `license = "MIT"` fails on Debian 12's setuptools 66: the classifier + LICENSE is neither.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "license" not in project
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_wheel_metadata(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    meta = _metadata(wheel)
    assert meta["Name"] == "svcengine"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "License :: OSI Approved :: MIT License" in meta.get_all("Classifier", [])
    assert any("maintainers" in a for a in [meta["Author"] or "", meta["Author-email"] or ""])
    assert meta.get_payload().startswith("# svcengine")  # the README is the long description
    assert "pip install svcengine" in meta.get_payload()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert "svcengine/cli/__init__.py" in names  # the console script: svcengine.cli:run
    assert "svcengine/py.typed" in names  # PEP 561: users' type checkers see the Worker API
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "svcengine").rglob("*.py")}
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"subpackages the wheel (and so the .deb) would not ship: {missing}"
    assert not [n for n in names if n.startswith("tests/")], "tests belong in the sdist only"


def test_sdist_can_be_tested_from(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n[len(top) + 1 :] for n in t.getnames()}
    missing = [n for n in SDIST_MUST_HAVE if n not in names]
    assert not missing, f"not in the sdist: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.startswith(".venv")]
