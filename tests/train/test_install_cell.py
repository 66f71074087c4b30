"""The notebooks' install cell keeps a runtime's JAX, as Colab's TPU and GPU runtimes need.

Each case runs the cell's code in a fresh virtual environment seeded, as a Colab runtime is,
with a JAX older than the newest: one at ota-jax's floor (kept: pip gets it as a constraint)
and one below it on a TPU runtime (replaced by a newer ``jax[tpu]``, with the restart message).
pip runs in ``--dry-run`` mode with a ``--report`` (through ``PIP_DRY_RUN`` and
``PIP_REPORT``) and takes ota-jax from a wheel of this checkout, so nothing big is downloaded
but the seeded JAX, and pip's plan is what the test checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["01_ota_walkthrough.ipynb", "02_train_on_colab_tpu.ipynb"]
OLD_JAX = "0.5.3"  # below the floor: ott-jax and ota-jax's sharding calls need newer
OLD_LIBTPU = "0.0.11"  # what jax[tpu]==0.5.3 installs


def _install_code(name: str) -> str:
    """The cell's code that installs, without the lines that quieten TensorFlow after it."""
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    source = "".join(cells[1]["source"])
    start = source.index("import importlib.metadata")
    return source[start : source.index("\n# TensorFlow only reads")]


def _jax_floor() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.fullmatch(r"jax>=(.+)", d)[1] for d in dependencies if d.startswith("jax>="))


def _seeded_python(path: Path, jax: str, libtpu: str | None = None) -> Path:
    """A virtual environment with JAX (no dependencies: pip only needs its metadata)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, f"jax=={jax}", f"jaxlib=={jax}"], check=True)
    if libtpu:  # the TPU library, as metadata only (the wheel is large)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info = Path(site) / f"libtpu-{libtpu}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: libtpu\nVersion: {libtpu}\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout (built from a copy: nothing is written into the repository).

    The cell's pip runs in dry-run mode, which its build of a source tree would inherit.
    """
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("ota_jax", "train"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    subprocess.run([*pip_wheel, str(source)], check=True)
    (path,) = out.glob("ota_jax-*.whl")
    return path


def _run_cell(
    python: Path, tmp_path: Path, wheel: Path
) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "OTA_JAX_SOURCE": wheel.as_uri(),
        "PIP_DRY_RUN": "1",
        "PIP_REPORT": str(report),
    }
    code = _install_code(NOTEBOOKS[1])
    run = subprocess.run(
        [str(python), "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert report.exists(), run.stderr
    installs = json.loads(report.read_text())["install"]
    return run, {item["metadata"]["name"].lower(): item["metadata"] for item in installs}


def test_the_notebooks_install_the_same_way():
    assert _install_code(NOTEBOOKS[0]) == _install_code(NOTEBOOKS[1])


def test_keeps_a_jax_at_the_floor(tmp_path, wheel):
    floor = _jax_floor()
    python = _seeded_python(tmp_path / "venv", floor)
    run, installs = _run_cell(python, tmp_path, wheel)
    assert run.returncode == 0, run.stderr
    assert "ota-jax" in installs and "flax" in installs
    assert "jax" not in installs and "jaxlib" not in installs  # the runtime's, kept
    assert "Restart" not in run.stdout + run.stderr


def test_replaces_an_older_jax_with_one_for_the_same_tpu(tmp_path, wheel):
    python = _seeded_python(tmp_path / "venv", OLD_JAX, libtpu=OLD_LIBTPU)
    run, installs = _run_cell(python, tmp_path, wheel)
    assert run.returncode != 0  # SystemExit: the notebook stops there
    assert f"JAX {OLD_JAX} is older than ota-jax's" in run.stderr
    assert "Restart the session" in run.stderr
    jax = installs["jax"]
    assert Version(jax["version"]) >= Version(_jax_floor())
    assert installs["jaxlib"]["version"] == jax["version"]
    # libtpu as the new JAX's tpu extra pins it.
    (libtpu,) = [
        requirement
        for requirement in map(Requirement, jax["requires_dist"])
        if requirement.name == "libtpu" and requirement.marker.evaluate({"extra": "tpu"})
    ]
    assert installs["libtpu"]["version"] in libtpu.specifier
