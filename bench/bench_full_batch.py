"""The engine's full-batch gradient-descent step on a conv net, with and without conv_layout.

Run:  .venv/bin/python bench/bench_full_batch.py [--examples 1024] [--batch 256] [--rounds 2]
        [--quick]

``config.full_batch = True`` (configs/edge_of_stability.py) accumulates the gradient over the
training set with ``lax.map`` over batches of ``config.batch_size``: a loop, inside which XLA's
CPU compiler leaves autodiff's convolutions in their slow layout (sharp_dirs/curvature/conv_layout.py).
The step ``train.make_train_step`` builds (SimpleCNN root, ``conv_impl="auto"``: ``nn.Conv``
under sharp_dirs' XLA flag, real Fashion-MNIST) is timed as the engine runs it ("rewrite":
the per-batch gradient through ``conv_layout.canonicalize_convs``) and as it ran before that
("xla": ``conv_layout.use_canonical_convs`` patched to False while the step is traced), in
alternating rounds after a compile call each; minimum kept. ``--quick``: tiny sizes (CI).
"""

import argparse
import importlib.util
import os
import pathlib
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import sharp_dirs  # noqa: E402,F401  (sets the XLA CPU flag before jax starts)
from sharp_dirs.curvature import conv_layout  # noqa: E402
from sharp_dirs.engine import config as config_lib  # noqa: E402
from sharp_dirs.engine import programs  # noqa: E402
from sharp_dirs.engine import train  # noqa: E402

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "edge_of_stability.py"


def compiled_step(config, model, state, batches, rewrite: bool):
  """The engine's step compiled for (state, batches); without ``rewrite`` it is traced with
  ``conv_layout.use_canonical_convs`` patched to False (the step consults it at trace time)."""
  programs.clear_shared()  # traced anew: the two variants must not share one program
  step = train.make_train_step(config, model)
  if rewrite:
    compiled = step.lower(state, batches, None).compile()
  else:
    with mock.patch.object(conv_layout, "use_canonical_convs", lambda enable=None: False):
      compiled = step.lower(state, batches, None).compile()
  values = programs.hyperparams(config)  # the compiled program takes them last
  return lambda state, batches, eigenpairs: compiled(state, batches, eigenpairs, values)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--examples", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  spec = importlib.util.spec_from_file_location("edge_of_stability", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("simple_cnn")
  config.num_train_examples, config.batch_size = args.examples, args.batch
  config.tracking.enabled = False
  if args.quick:
    config.num_train_examples, config.batch_size, args.rounds = 32, 16, 1
    config.model_kwargs = config_lib.ConfigDict({"features": 4, "dense_features": 8})
  run_data = train.load_run_data(config)
  model, params, model_state = train.build_model(config, jax.tree.map(lambda x: x[:2],
                                                                      run_data.train))
  tx = train.make_optimizer(config)
  batches = train.stack_batches(run_data.train, config.batch_size)[0]
  state = train.TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), model_state)
  steps = {name: compiled_step(config, model, state, batches, name == "rewrite")
           for name in ("xla", "rewrite")}
  states = {name: jax.block_until_ready(step(jax.tree.map(jnp.copy, state), batches, None)[0])
            for name, step in steps.items()}   # compile + warm-up
  best = {name: float("inf") for name in steps}
  for _ in range(args.rounds):
    for name, step in steps.items():
      start = time.perf_counter()
      states[name] = jax.block_until_ready(step(states[name], batches, None)[0])
      best[name] = min(best[name], time.perf_counter() - start)
  print(f"jax {jax.__version__}, load average {os.getloadavg()[0]:.1f}; full-batch GD step, "
        f"SimpleCNN root ({config.model_kwargs.to_dict() or 'paper sizes'}), "
        f"{config.num_train_examples} examples in batches of {config.batch_size}, min of "
        f"{args.rounds}: XLA's layouts {best['xla']:.2f} s, conv_layout {best['rewrite']:.2f} s, "
        f"ratio {best['xla'] / best['rewrite']:.1f}")
  return best


if __name__ == "__main__":
  main()
