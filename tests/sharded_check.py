"""Run by test_sharding.py in a fresh process with 4 host devices (XLA_FLAGS set before jax).

Prints one JSON line: for each option set, the eigenvalues and HVP counts of the same
hessian_top_k call on batches sharded over the 4 devices and on one device.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sharp_dirs.curvature import hessian
from testing import mlp_problem


def main(axis_type: str):
  assert jax.device_count() == 4, jax.devices()
  params, batches, loss_fn = mlp_problem(num_batches=3, batch_size=8, dtype=jnp.float32)
  mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
  sharded = jax.device_put(batches, NamedSharding(mesh, P(None, "data")))
  local_batches = jax.device_get(batches)
  key = jax.random.PRNGKey(0)
  base = dict(k=3, num_lanczos_steps=20)
  previous = hessian.hessian_top_k(loss_fn, params, local_batches, key, **base)
  moved = jax.tree.map(lambda p: 1.05 * p, params)  # warm starts solve at a moved point
  cases = {
      "default": (params, base),
      "tol": (params, dict(base, tol=1e-2, num_guard=0)),
      "init": (moved, dict(base, tol=1e-2, num_guard=0, init=previous)),
      "linearize": (params, dict(base, linearize=True)),
  }
  out = {"batch_devices": len(sharded["x"].sharding.device_set)}
  for name, (point, kwargs) in cases.items():
    with jax.set_mesh(mesh):
      on_mesh = hessian.hessian_top_k(loss_fn, point, sharded, key, **kwargs)
    local = hessian.hessian_top_k(loss_fn, point, local_batches, key, **kwargs)
    out[name] = {"sharded": np.asarray(on_mesh.eigvals).tolist(),
                 "local": np.asarray(local.eigvals).tolist(),
                 "sharded_hvps": int(on_mesh.num_matvecs), "local_hvps": int(local.num_matvecs)}
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
