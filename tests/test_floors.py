"""The core's floors are written once per place that needs them, and all agree.

pyproject.toml's [project] dependencies say ``name>=floor``; .ci/floors.txt pins exactly those
versions for .ci/run's floors environment, where the core tests of the files it lists run;
the notebooks' install cell keeps a runtime's JAX only from ``JAX_FLOOR`` on.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).

REPO = Path(__file__).resolve().parents[1]


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"a core dependency without a plain floor: {requirement!r}"
        floors[_name(match[1])] = match[2]
    return floors


def _ci_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version
    return pins


def test_ci_pins_the_pyproject_floors():
    floors, pins = _pyproject_floors(), _ci_pins()
    assert set(floors) == {"jax", "numpy", "ott-jax", "optax"}  # Flax is the detector's.
    assert pins == {**floors, "jaxlib": floors["jax"]}


@pytest.mark.parametrize("name", ["01_ota_walkthrough.ipynb", "02_train_on_colab_tpu.ipynb"])
def test_notebook_install_cell_knows_the_jax_floor(name):
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    source = "".join(cells[1]["source"])
    assert re.search(r'^JAX_FLOOR = "([0-9.]+)"', source, re.M)[1] == _pyproject_floors()["jax"]
