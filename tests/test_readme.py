"""The README's usage example runs as written."""

import re
from pathlib import Path

import numpy as np


def test_readme_assignment_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"```python\n(import jax\nimport ota_jax\n.*?)```", readme, re.S)
    assert example, "the README lost its assignment example"
    namespace: dict = {}
    exec(example.group(1), namespace)
    result = namespace["result"]
    assert np.all(np.asarray(result.num_fg) > 0)
    np.testing.assert_array_equal(np.asarray(result.dynamic_k)[:, 2], 0)  # padding
