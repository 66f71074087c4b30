"""Draws ``docs/ota_shapes_sizes.png``: each ``ota_shapes`` variant's object sizes beside COCO's.

python docs/make_ota_shapes_sizes.py
"""

from __future__ import annotations

import json
import pathlib

from ota_jax.data import shapes

NAMES = ("tiny_objects", "coco_like", "crowd")

if __name__ == "__main__":
    configs = {c.name: c for c in shapes.OtaShapes.BUILDER_CONFIGS}
    path = pathlib.Path(__file__).with_name("ota_shapes_sizes.png")
    shares = shapes.object_size_histogram([configs[n] for n in NAMES], str(path))
    print(path, json.dumps(shares, indent=1))
