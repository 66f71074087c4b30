"""The Colab notebooks in ``notebooks/`` run top to bottom in quick mode and draw pictures.

Each notebook is executed by a Jupyter kernel (nbclient) with ``OTA_JAX_QUICK=1``
(tiny data, a few training steps), in a scratch working directory and with the
TFDS data under ``tmp_path``, so nothing is written into the repository or the
user's ``~/tensorflow_datasets``. The committed copies are checked too: they
carry their outputs (pictures included, for GitHub) and no local paths.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("tensorflow_datasets")
# Without ota_train the notebooks would try to pip-install ota-jax from GitHub.
pytest.importorskip("ota_train")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAMES = ["01_ota_walkthrough.ipynb", "02_train_on_colab_tpu.ipynb"]
CELL_TIMEOUT_S = 600  # A cell; the whole quick run takes one to two minutes on 2 CPU cores.
# Absolute paths of a local machine that must not be saved in a committed output.
LOCAL_PATH = re.compile(r"/tmp/|/home/|/root/|/Users/|/private/var/|/content/")


def _outputs(notebook) -> list[dict]:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return json.dumps({k: v for k, v in output.get("data", {}).items() if k != "image/png"})


def _images(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for output in _outputs(notebook))


def test_both_notebooks_are_committed():
    assert [path.name for path in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_pictures_and_no_local_paths(name):
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "committed without running every cell"
    assert _images(notebook) >= 1
    for output in _outputs(notebook):
        assert output.output_type != "error"
        assert not LOCAL_PATH.search(_text(output)), _text(output)[:500]
    # The badge README links to opens this very file on Colab.
    assert f"/notebooks/{name})" in notebook.cells[0].source


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_quick_mode(name, tmp_path):
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = dict(os.environ)
    env.update(
        OTA_JAX_QUICK="1",
        TFDS_DATA_DIR=str(tmp_path / "tfds"),
        # ota_jax from this checkout even when the kernel starts elsewhere.
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    env.pop("VOC_DATA_DIR", None)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        coalesce_streams=True,
    )
    client.execute(env=env)  # Raises CellExecutionError on the first failing cell.

    outputs = _outputs(notebook)
    assert _images(notebook) >= 1
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(_text(o) for o in outputs)
    assert str(tmp_path) not in text  # No local path in what would be saved.
    assert "Traceback" not in text
    assert not (REPO / "notebooks" / "runs").exists()
