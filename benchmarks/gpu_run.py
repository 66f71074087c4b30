"""The GPU runbook: ``python -m benchmarks.suite --preset gpu`` (see `benchmarks.suite`)."""

import sys

from .suite import main

if __name__ == "__main__":
    sys.exit(0 if main(["--preset", "gpu", *sys.argv[1:]])["complete"] else 1)
