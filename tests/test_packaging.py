"""The built wheel works on its own: installed into a clean directory (no repository beside it),
`upo --version`, `upo demo --help` and an eval of a shipped checkpoint by name run from an empty
directory. The wheel brings its checkpoints, configs and puzzle data (setup.py, upo.assets)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import upo

REPO = Path(__file__).resolve().parents[1]
# The checkpoints are about 19 MB and hardly compress; the README states the size. A wheel far
# above this has picked up something it should not ship (runs/, a venv, a second copy).
MAX_WHEEL_MB = 25


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """`python -m build`: the sdist, then the wheel built from that sdist (so a file the sdist
    forgets is missing from the wheel too)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> Path:
    """The wheel, installed with `pip install --no-deps --target` into an empty directory."""
    target = tmp_path_factory.mktemp("site")
    (wheel,) = built.glob("upo-*.whl")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def run_installed(target: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """A command with only the installed wheel for upo: its own directory first on the path
    (ahead of the editable install; torch and the rest come from this environment)."""
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_build_makes_a_wheel_and_an_sdist_with_the_shipped_files(built):
    (wheel,) = built.glob("upo-*.whl")
    (sdist,) = built.glob("upo-*.tar.gz")
    assert wheel.stat().st_size < MAX_WHEEL_MB * 2**20 and sdist.stat().st_size > 0
    names = zipfile.ZipFile(wheel).namelist()
    for name in (
        "upo/_shipped/checkpoints/sudoku4-mdm/model.safetensors",
        "upo/_shipped/checkpoints/sudoku9-policy/config.json",
        "upo/_shipped/configs/upo-sudoku9.yaml",
        "upo/_shipped/data/sudoku9-test.jsonl",
        "upo/cli/__init__.py",
    ):
        assert name in names, name
    metadata = zipfile.ZipFile(wheel).read(f"upo-{upo.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Description-Content-Type: text/markdown" in metadata  # the README renders
    # No runtime dependency is pinned exactly (constraints.txt pins them for CI).
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if "==" in r and "extra ==" not in r]


def test_the_installed_wheel_runs_from_an_empty_directory(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run_installed(
        installed, empty, sys.executable, "-c",
        "import upo, upo.assets; print(upo.__file__, upo.assets.shipped_root())",
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, root = where.stdout.split()
    assert module.startswith(str(installed)) and root == str(installed / "upo" / "_shipped")

    upo_cmd = str(installed / "bin" / "upo")  # the console script pip wrote for the wheel
    version = run_installed(installed, empty, upo_cmd, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"upo {upo.__version__}"
    demo_help = run_installed(installed, empty, upo_cmd, "demo", "--help")
    assert demo_help.returncode == 0 and "--out" in demo_help.stdout
    evaluated = run_installed(
        installed, empty, upo_cmd, "eval", "--task", "sudoku4", "--mdm", "sudoku4-mdm",
        "--data", "sudoku4-test.jsonl", "--n", "5", "--policies", "confidence",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "sudoku4, 5 items, MDM sudoku4-mdm" in evaluated.stdout
    assert "| confidence |" in evaluated.stdout
    assert list(empty.iterdir()) == []
