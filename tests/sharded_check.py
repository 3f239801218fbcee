"""Run by test_sharding.py in a fresh process with 4 host devices (XLA_FLAGS set before jax)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sharp_dirs import hessian
from conftest import mlp_problem


def main(axis_type: str):
  assert jax.device_count() == 4, jax.devices()
  params, batches, loss_fn = mlp_problem(num_batches=3, batch_size=8, dtype=jnp.float32)
  mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
  sharded = jax.device_put(batches, NamedSharding(mesh, P(None, "data")))
  key = jax.random.PRNGKey(0)
  kwargs = dict(k=3, num_lanczos_steps=20)
  with jax.set_mesh(mesh):
    on_mesh = hessian.hessian_top_k(loss_fn, params, sharded, key, **kwargs)
  local = hessian.hessian_top_k(loss_fn, params, jax.device_get(batches), key, **kwargs)
  print(json.dumps({"sharded": np.asarray(on_mesh.eigvals).tolist(),
                    "local": np.asarray(local.eigvals).tolist(),
                    "batch_devices": len(sharded["x"].sharding.device_set)}))


if __name__ == "__main__":
  main(sys.argv[1])
