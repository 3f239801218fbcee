"""The session's fixtures: compile-speed XLA flags, one shared compilation cache, x64.

The helpers that tests import (small problems whose Hessians are known exactly, config and
HLO helpers) are in tests/testing.py.
"""

import os

import jax
import pytest

from testing import with_test_xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))

import sharp_dirs  # noqa: E402,F401  before any test starts jax, so its XLA CPU flag is set


# The settings below reach the launchers, benchmarks and checks that tests run in subprocesses
# through these environment variables (jax reads JAX_<OPTION> at start-up).
SUBPROCESS_ENV = ("JAX_DISABLE_MOST_OPTIMIZATIONS", "JAX_COMPILATION_CACHE_DIR",
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


@pytest.fixture(autouse=True, scope="session")
def fast_compiles():
  """Skips most XLA optimization passes: compiling dominates these small tests on 2 CPU cores,
  and XLA's optimizations are not under test."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def _shared_cache_dir(tmp_path_factory) -> str:
  """One directory for the session, shared by pytest-xdist's workers (each has its own basetemp
  under a common parent), so a program compiled by one worker is read by the others."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / "jax_cache"
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture(autouse=True, scope="session")
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for the session: the engine's tests build the same programs
  (same shapes) in fresh closures run after run, and compiling them is most of their time. The
  subprocesses that tests launch (experiments/*.py, bench/*.py) use it too, with the same fast
  compiles."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  values = (_shared_cache_dir(tmp_path_factory), 0.0, 0)
  before = [getattr(jax.config, n) for n in names]
  env_before = {k: os.environ.get(k) for k in SUBPROCESS_ENV}
  for name, value in zip(names, values):
    jax.config.update(name, value)
  os.environ.update(zip(SUBPROCESS_ENV, ("1", *map(str, values))))
  yield
  for name, value in zip(names, before):
    jax.config.update(name, value)
  for k, v in env_before.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture
def x64():
  """Runs the test with float64 enabled (JAX's default float becomes float64)."""
  with jax.enable_x64(True):
    yield
