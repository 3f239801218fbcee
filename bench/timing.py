"""The one timing helper of the benchmarks: wall time of jitted work, compile excluded.

Every benchmark script imports it (``import timing``: the scripts run as ``python bench/x.py``,
so bench/ is on the path). It imports jax on first use, so a script may set XLA_FLAGS after
importing it. Quote ratios measured side by side in one run: the machines are shared.
"""

import statistics
import time
from typing import Any, Callable


def timed(fn: Callable[..., Any], *args) -> tuple[float, Any]:
  """(seconds, result) of one call of fn(*args), waiting for its arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - start, out


def median_seconds(fn: Callable[..., Any], *args, repeats: int, warmup: bool = True) -> float:
  """Median wall time (s) of fn(*args) over ``repeats`` calls, after one warm-up (compile) call."""
  if warmup:
    timed(fn, *args)
  return statistics.median(timed(fn, *args)[0] for _ in range(repeats))
