"""``ota_train.compilation_cache``: where the training commands keep compiled programs."""

import os
import subprocess
import sys

from ota_train import compilation_cache


def test_default_directory_prefers_jax_variable_then_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache.default_directory() == str(tmp_path / "ota_train" / "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    home_cache = os.path.join(os.path.expanduser("~"), ".cache", "ota_train", "jax")
    assert compilation_cache.default_directory() == home_cache
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation_cache.default_directory() == str(tmp_path / "mine")


def _compile_with_cache(directory: str | None, extra_env: dict) -> str:
    """Enable the cache as the commands do and compile one function, in a fresh process
    with ``extra_env``; what `enable` returned, as printed."""
    code = (
        "import jax, jax.numpy as jnp; from ota_train import compilation_cache as c;"
        f"print(c.enable({directory!r}));"
        "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_enable_writes_compiled_programs_to_the_directory(tmp_path):
    directory = tmp_path / "cache"
    assert _compile_with_cache(str(directory), {}) == str(directory)
    assert any(directory.iterdir())


def test_empty_directory_turns_the_cache_off(tmp_path):
    # JAX itself would cache to $JAX_COMPILATION_CACHE_DIR; "" must override that too.
    env = {"XDG_CACHE_HOME": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax")}
    assert _compile_with_cache("", env) == "None"
    assert not (tmp_path / "ota_train").exists() and not (tmp_path / "jax").exists()
