r"""The main job on the offline default data: the sharpest directions of a SimpleCNN on Fashion-MNIST.

Trains SimpleCNN `root` with plain SGD on real Fashion-MNIST and computes the top-k eigenvalues
of the Hessian of the training loss (on a fresh augmented sample, as the paper does) at
initialization and every ``--eval_every`` steps, warm-starting each Lanczos solve from the
previous eigenvectors. Prints λ_1..λ_k with residuals, the HVPs spent, and η·λ_1 against the
stability threshold 2.

  python experiments/demo.py                       # a few minutes on 2 CPU cores
  python experiments/demo.py --num_steps=300 --k=10 --tol=1e-3 --hessian_examples=2560
"""

import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sharp_dirs
from sharp_dirs import data
from sharp_dirs import models
from sharp_dirs.models import loss as model_loss

_NUM_STEPS = flags.DEFINE_integer("num_steps", 50, "SGD steps to train.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 25, "Steps between Hessian evaluations.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.05, "SGD learning rate η.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "SGD batch size S.")
_K = flags.DEFINE_integer("k", 3, "Number of top eigenvalues.")
_LANCZOS_STEPS = flags.DEFINE_integer("lanczos_steps", 30, "Most Lanczos steps (HVPs) per solve.")
_TOL = flags.DEFINE_float("tol", 1e-2, "Stop Lanczos once every ‖Hu−λu‖ <= tol·|λ|.")
_HESSIAN_EXAMPLES = flags.DEFINE_integer(
    "hessian_examples", 256, "Examples in each fresh Hessian sample (the paper used 2560).")
_LINEARIZE = flags.DEFINE_bool(
    "linearize", True, "Reuse one linearization of the gradient for all HVPs of a solve "
    "(about 0.6× the time, memory grows with --hessian_examples).")
_MODEL = flags.DEFINE_string("model", "simple_cnn_root", "A name from sharp_dirs.models.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for initialization, data order and samples.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _NUM_STEPS.value < 0 or _EVAL_EVERY.value < 1:
    raise app.UsageError("--num_steps must be >= 0 and --eval_every >= 1.")
  dataset = data.load_dataset("fashion_mnist", data_seed=_SEED.value)
  print(f"Fashion-MNIST: {len(dataset.train['label'])} train / {len(dataset.valid['label'])} "
        f"valid / {len(dataset.test['label'])} test images {dataset.input_shape}")

  model = models.get_model(_MODEL.value)
  key = jax.random.PRNGKey(_SEED.value)
  example = jax.tree.map(lambda x: x[:2], dataset.train)
  params, model_state = model_loss.init_model(model, key, example)
  print(f"{_MODEL.value}: {model_loss.count_params(params):,} parameters")
  loss_fn = model_loss.make_loss_fn(model, model_state, train=False)
  tx = optax.sgd(_LEARNING_RATE.value)
  opt_state = tx.init(params)

  @jax.jit
  def sgd_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def spectrum(params, step, previous):
    sample = data.hessian_sample(dataset.train, jax.random.fold_in(key, step),
                                 num_examples=_HESSIAN_EXAMPLES.value, augment=True)
    start = time.perf_counter()
    pairs = sharp_dirs.hessian_top_k(
        loss_fn, params, sample, jax.random.fold_in(key, 10**6 + step), k=_K.value,
        num_lanczos_steps=_LANCZOS_STEPS.value, tol=_TOL.value, init=previous,
        linearize=_LINEARIZE.value)
    seconds = time.perf_counter() - start
    lam = np.asarray(pairs.eigvals)
    eta_lambda = _LEARNING_RATE.value * lam[0]
    print(f"step {step:5d}  λ_1..λ_{_K.value} = {np.array2string(lam, precision=2)}  "
          f"max rel. residual {np.max(pairs.residuals / np.abs(lam)):.1e}  "
          f"{int(pairs.num_matvecs)} HVPs ({'warm' if previous is not None else 'cold'}, "
          f"{seconds:.1f} s)  η·λ_1 = {eta_lambda:.2f} "
          f"({'below' if eta_lambda < 2 else 'above'} 2, the stability threshold of a quadratic)")
    return pairs

  pairs = spectrum(params, 0, None)
  batches = data.batch_stream(dataset.train, _BATCH_SIZE.value, seed=_SEED.value, augment=True)
  train_seconds = 0.0
  for step in range(1, _NUM_STEPS.value + 1):
    _, _, batch = next(batches)
    start = time.perf_counter()
    params, opt_state, loss = jax.block_until_ready(sgd_step(params, opt_state, batch))
    train_seconds += time.perf_counter() - start
    if step % _EVAL_EVERY.value == 0 or step == _NUM_STEPS.value:
      if not np.isfinite(float(loss)):
        raise SystemExit(f"Training diverged at step {step} (loss {float(loss)}): lower "
                         f"--learning_rate (now {_LEARNING_RATE.value}).")
      print(f"step {step:5d}  train loss {float(loss):.4f}  "
            f"({train_seconds / step:.2f} s per SGD step)")
      pairs = spectrum(params, step, pairs)


if __name__ == "__main__":
  app.run(main)
