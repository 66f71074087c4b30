import os

# POT loads every array backend it finds; tests only need its NumPy one.
for backend in ("TENSORFLOW", "PYTORCH", "JAX", "CUPY"):
    os.environ.setdefault(f"POT_BACKEND_DISABLE_{backend}", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
