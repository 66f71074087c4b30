import os

# POT loads every array backend it finds; tests only need its NumPy one.
for backend in ("TENSORFLOW", "PYTORCH", "JAX", "CUPY"):
    os.environ.setdefault(f"POT_BACKEND_DISABLE_{backend}", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

# The suite's shapes are tiny: XLA's optimisation passes cost more than they save.
# Set once for the whole session so every test sees the same numerics whatever
# the order or the xdist worker it lands on.
jax.config.update("jax_disable_most_optimizations", True)
