"""Benchmarks of ota_jax: timing, memory and agreement against the PyTorch loops.

A package of the repository, not of the wheel (``pyproject.toml`` lists the
packages it ships). Every script runs from the repository root as a module::

    python -m benchmarks.assign_bench --quick
    python -m benchmarks.suite --quick

Reports go to ``benchmarks/results/<device>/<name>.{json,md}``.
"""
