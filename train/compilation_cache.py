"""JAX's persistent compilation cache for the training commands.

Compiling the train step (the assigner's size buckets included) takes tens of
seconds on a CPU and longer for big models; with the cache on disk a rerun, a
resumed run or another run of the same shapes loads the compiled programs
instead. The cache is JAX's own (``jax_compilation_cache_dir``); this module only
picks its directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_directory", "enable"]


def default_directory() -> str:
    """``$JAX_COMPILATION_CACHE_DIR`` when set, else ``ota_train/jax`` under
    ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(cache_home) / "ota_train" / "jax")


def enable(directory: str | None) -> str | None:
    """Point JAX's persistent compilation cache at ``directory``; call it before the
    first compilation.

    Args:
      directory: a local path or any path JAX's cache accepts (``gs://...``); None:
        `default_directory`; ``""``: no persistent cache.

    Returns:
      The directory in use, None when off.
    """
    import jax

    if directory == "":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = default_directory() if directory is None else directory
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory
