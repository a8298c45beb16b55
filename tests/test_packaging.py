"""`pip install .` adds the one name `mtl` to site-packages, and every subpackage of the four folders with it."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "cli", "exporters", "device_runtime")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_subpackage_of_the_four_folders_is_installed_under_mtl():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"mtl": "mtl", **{f"mtl.{folder}": folder for folder in FOLDERS}}
    found = {"mtl"} | {"mtl." + ".".join(init.parent.relative_to(REPO).parts)
                       for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")}
    assert set(setuptools["packages"]) == found


def test_the_wheel_holds_mtl_and_nothing_else_at_its_top(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel without network needs setuptools installed")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("mtl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
        names = zf.namelist()
    assert top == {"mtl", next(t for t in top if t.endswith(".dist-info"))}, top
    for folder in FOLDERS:
        assert f"mtl/{folder}/__init__.py" in names
    assert "mtl/__main__.py" in names and not any(n.startswith("mtl/tests/") for n in names)


def test_python_dash_m_mtl_is_the_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mtl", "--version"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("mtl "), result.stderr
