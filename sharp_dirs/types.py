"""Type aliases shared by the library (one definition, imported everywhere)."""

from typing import Any, Callable

import jax

PyTree = Any  # a pytree of arrays: params, gradients, Krylov vectors, batches
MatVec = Callable[[PyTree], PyTree]  # v ↦ Hv for a symmetric operator H, pytree in and out
LossFn = Callable[[PyTree, PyTree], jax.Array]  # (params, batch) -> scalar loss
