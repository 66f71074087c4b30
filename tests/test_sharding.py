"""Assignment of a batch sharded over 8 devices equals the single-device result.

Runs in a subprocess: the fake CPU devices must be configured before JAX starts.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import ota_jax
    from tests.scenes import make_scene, padded

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    scenes = [make_scene(rng, num_gt=n, image_size=(64, 64)) for n in range(1, 9)]
    gts = [padded(s, 8)[:3] for s in scenes]
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    args = [stack("pred_boxes"), stack("cls_logits"), scenes[0].points, scenes[0].strides,
            *(np.stack(x) for x in zip(*gts))]
    for axis_type in (jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        def shard(i, x):
            spec = P() if i in (2, 3) else P("data")
            return jax.device_put(x, NamedSharding(mesh, spec))
        for assign in (ota_jax.ota_assign_batch, ota_jax.simota_assign_batch):
            local = assign(*args, obj_logits=stack("obj_logits"))
            with jax.set_mesh(mesh):
                sharded = assign(*[shard(i, x) for i, x in enumerate(args)],
                                 obj_logits=shard(0, stack("obj_logits")))
            assert len(sharded.gt_index.sharding.device_set) == 8
            np.testing.assert_array_equal(np.asarray(sharded.gt_index),
                                          np.asarray(local.gt_index))
            np.testing.assert_allclose(np.asarray(sharded.ious), np.asarray(local.ious),
                                       atol=1e-6)
    print("OK")
    """
)


def test_sharded_batch_matches_single_device():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
