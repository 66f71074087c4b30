import importlib.util
import os

import pytest

# POT loads every array backend it finds; tests only need its NumPy one.
for backend in ("TENSORFLOW", "PYTORCH", "JAX", "CUPY"):
    os.environ.setdefault(f"POT_BACKEND_DISABLE_{backend}", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

# The suite's shapes are tiny: XLA's optimisation passes cost more than they save.
# Set once for the whole session so every test sees the same numerics whatever
# the order or the xdist worker it lands on.
jax.config.update("jax_disable_most_optimizations", True)


# PyTorch is not in the dev extra: the tests that need it carry the `torch` marker, skip
# without it, and `pytest -m torch` runs them once it is installed (.ci/run does both).
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    if TORCH_INSTALLED:
        return
    skip = pytest.mark.skip(reason="needs PyTorch: pip install torch, then pytest -m torch")
    for item in items:
        if item.get_closest_marker("torch"):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail an unmarked test that skips itself for want of torch.

    `pytest -m torch` would never select it, so it would be skipped on every run.
    """
    report = yield
    skipped_for_torch = (
        call.excinfo is not None
        and call.excinfo.errisinstance(pytest.skip.Exception)
        and str(call.excinfo.value).startswith("could not import 'torch'")
    )
    if skipped_for_torch and not item.get_closest_marker("torch"):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} needs torch: mark it @pytest.mark.torch"
    return report
