"""Assignment of a batch sharded over 8 devices equals the single-device result.

Each check runs in a subprocess: the fake CPU devices must be configured before JAX
starts. Both compile without most XLA optimizations, to keep them fast.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every registered assigner at 640x640 (8400 anchors), 32 gt slots and 80 classes, one
# image per device, on Auto and on Explicit mesh axes. One size bucket (OTA's compacted
# problem at max_columns and its dense fallback; SimOTA dense, taken in chunks of images
# on a CPU) keeps compiling to seconds; SimOTA also runs in small tiles (several gt and
# anchor tiles, gathered per image from the shared points, in a loop).
EVERY_ASSIGNER = """
import jax, numpy as np
jax.config.update("jax_disable_most_optimizations", True)
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import ota_jax
from ota_jax.assigners import ASSIGNERS
from tests.scenes import make_scene, padded

assert jax.device_count() == 8, jax.devices()
rng = np.random.default_rng(0)
scenes = [make_scene(rng, num_gt=n, image_size=(640, 640), num_classes=80)
          for n in (0, 1, 3, 7, 12, 20, 27, 32)]
gts = [padded(s, 32, rng)[:3] for s in scenes]
stack = lambda key: np.stack([getattr(s, key) for s in scenes])
args = [stack("pred_boxes"), stack("cls_logits"), scenes[0].points, scenes[0].strides,
        *(np.stack(x) for x in zip(*gts))]
obj = stack("obj_logits")
assert args[2].shape == (8400, 2) and args[1].shape[2] == 80 and args[4].shape[1] == 32

meshes = [jax.make_mesh((8,), ("data",), axis_types=(t,))
          for t in (AxisType.Auto, AxisType.Explicit)]
def shard(mesh, i, x):  # points and strides (arguments 2 and 3) are shared by every image
    return jax.device_put(x, NamedSharding(mesh, P() if i in (2, 3) else P("data")))

for name, spec in ASSIGNERS.items():
    config = spec.config_class(sizes="off")
    local = spec.assign_batch(*args, obj_logits=obj, config=config)
    assert (np.asarray(local.gt_index) >= 0).sum() > 0, name
    for mesh in meshes:
        with jax.set_mesh(mesh):
            sharded = spec.assign_batch(*[shard(mesh, i, x) for i, x in enumerate(args)],
                                        obj_logits=shard(mesh, 0, obj), config=config)
        where = f"{name} on {mesh.axis_types}"
        assert len(sharded.gt_index.sharding.device_set) == 8, where
        np.testing.assert_array_equal(np.asarray(sharded.gt_index), np.asarray(local.gt_index),
                                      err_msg=where)
        np.testing.assert_allclose(np.asarray(sharded.ious), np.asarray(local.ious), atol=1e-6,
                                   err_msg=where)

# SimOTA in tiles: 8 gts and 256 prefiltered anchors at a time.
tiles = ota_jax.SimOTAConfig(sizes=ota_jax.Sizes(max_pairs=0, tile=(8, 256)))
local = ota_jax.simota_assign_batch(*args, obj_logits=obj, config=tiles)
for mesh in meshes:
    with jax.set_mesh(mesh):
        sharded = ota_jax.simota_assign_batch(*[shard(mesh, i, x) for i, x in enumerate(args)],
                                              obj_logits=shard(mesh, 0, obj), config=tiles)
    np.testing.assert_array_equal(np.asarray(sharded.gt_index), np.asarray(local.gt_index),
                                  err_msg=f"simota tiles on {mesh.axis_types}")
print("OK")
"""


# Runs the "Many devices" snippet of docs/assigners.md as printed, then the same call on one
# device.
DOCS_SNIPPET = """
import jax, numpy as np
jax.config.update("jax_disable_most_optimizations", True)
import ota_jax

assert jax.device_count() == 8, jax.devices()
namespace = {}
exec(compile(SNIPPET, "docs/assigners.md", "exec"), namespace)
mesh, result = namespace["mesh"], namespace["result"]
assert mesh.axis_types == (jax.sharding.AxisType.Explicit,), mesh.axis_types
assert len(result.gt_index.sharding.device_set) == 8
names = ("pred_boxes", "cls_logits", "points", "strides", "gt_boxes", "gt_labels", "gt_mask")
local = ota_jax.ota_assign_batch(*(np.asarray(namespace[n]) for n in names))
assert (np.asarray(local.gt_index) >= 0).sum() > 0
np.testing.assert_array_equal(np.asarray(result.gt_index), np.asarray(local.gt_index))
np.testing.assert_allclose(np.asarray(result.ious), np.asarray(local.ious), atol=1e-6)
print("OK")
"""


def many_devices_snippet() -> str:
    """The fenced python block under the "## Many devices" heading of docs/assigners.md."""
    with open(os.path.join(ROOT, "docs", "assigners.md"), encoding="utf-8") as f:
        page = f.read()
    section = page.split("\n## Many devices\n", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block and not re.search(r"\n#+ ", section[: block.start()]), "no snippet there"
    return block.group(1)


def run_on_8_devices(script: str, **env) -> None:
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        **env,
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


@pytest.mark.slow
def test_every_assigner_sharded_matches_single_device():
    run_on_8_devices(EVERY_ASSIGNER)


def test_docs_many_devices_snippet_matches_single_device():
    run_on_8_devices(f"SNIPPET = {many_devices_snippet()!r}\n" + DOCS_SNIPPET)
