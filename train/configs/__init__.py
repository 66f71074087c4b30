"""Training configs: plain ``ml_collections`` files, each with a ``get_config()``.

``ota-train --config NAME`` takes a file name of this folder (``shapes``,
``smoke``, ``coco_fcos_r50_ota_1x``) or any path to such a file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "available",
    "resolve_config_argv",
    "resolve_config_path",
]

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = "shapes"


def available() -> list[str]:
    """Names of the config files shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve_config_path(spec: str) -> str:
    """The file a ``--config`` value names: an existing path, or a packaged config name.

    ``spec`` may carry a config argument after a colon (``shapes:arg``), which
    ``ml_collections`` passes to ``get_config``; it is kept.

    Raises:
      FileNotFoundError: neither a file nor a known name.
    """
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path):
        return spec
    name = Path(path).name.removesuffix(".py")
    candidate = CONFIG_DIR / f"{name}.py"
    if candidate.is_file() and not name.startswith("_"):
        return f"{candidate}{sep}{arg}"
    raise FileNotFoundError(
        f"No config file {path!r}: give a path to an ml_collections config file or one of "
        f"{available()}."
    )


def resolve_config_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with a ``--config`` name (``shapes``) replaced by its file's path.

    Raises:
      FileNotFoundError: the ``--config`` value names no file (see `resolve_config_path`).
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-config") and i + 1 < len(out):
            out[i + 1] = resolve_config_path(out[i + 1])
        elif arg.startswith(("--config=", "-config=")):
            flag, value = arg.split("=", 1)
            out[i] = f"{flag}={resolve_config_path(value)}"
    return out
