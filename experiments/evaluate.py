r"""Post-hoc evaluation of a run's checkpoints, as the paper's NSGD table (PAPER.md §3.3).

For the best-validation and the last checkpoint of each run: the top-k Hessian eigenvalues
(k = 50) on N = 5120 fresh augmented training examples, the Frobenius norm ‖H‖_F (the unbiased
sqrt(mean ‖Hz‖²)) and the paper's table quantity sqrt(mean ‖Hz‖) over M = 50 Gaussian probes,
‖θ − θ_init‖, and loss and accuracy on the first 10k training examples and the validation and
test sets. Writes ``<run>/evaluation_<checkpoint>.json``.

  python experiments/evaluate.py --workdir=runs/nsgd/nsgd.gamma=0.01,seed=777
  python experiments/evaluate.py --workdir='runs/nsgd_cpu/*' --k=10 --num_examples=1024
"""

import glob
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "Run directories (globs allowed).")
_CHECKPOINTS = flags.DEFINE_list("checkpoint", ["best", "last"], "Which checkpoints: best, last.")
_K = flags.DEFINE_integer("k", 50, "Top eigenvalues.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 5120, "Hessian examples (fresh, augmented).")
_NUM_PROBES = flags.DEFINE_integer("num_probes", 50, "Gaussian probes of the Frobenius norms.")
_SEED = flags.DEFINE_integer("seed", 777, "Seed of the sample and the probes (the paper's 777).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Recompute evaluations that exist already.")
flags.mark_flags_as_required(["workdir"])


def evaluate_checkpoint(workdir: str, which: str, *, k: int, num_examples: int,
                        num_probes: int, seed: int) -> dict:
  """The table's quantities at one checkpoint ("best" or "last") of a run directory."""
  from sharp_dirs import hessian, spectral, tracking, train  # pylint: disable=g-import-not-at-top
  from sharp_dirs import tree_math as tm  # pylint: disable=g-import-not-at-top
  config, run_data, model, _, last = train.restore_run(workdir, "latest")
  if which == "best":
    _, _, _, step, best = train.restore_run(workdir, "best")
    params, model_state = best["params"], best["model_state"]
  else:
    step, params, model_state = int(last["state"].step), last["state"].params, (
        last["state"].model_state)
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(seed)
  sample = data.hessian_sample(run_data.train, key, num_examples=num_examples,
                               batch_size=config.tracking.batch_size, augment=run_data.augment)
  loss_fn = tracking.curvature_loss_fn(model, model_state, config.l2)
  start = time.perf_counter()
  pairs = hessian.hessian_top_k(loss_fn, params, sample, jax.random.fold_in(key, 1), k=k,
                                num_lanczos_steps=min(3 * k, tm.size(params)),
                                tol=config.tracking.tol or None)
  matvec = hessian.dataset_hvp(loss_fn, params, sample)
  probe_key = jax.random.fold_in(key, 2)
  result = {
      "checkpoint": which, "step": int(step), "k": k, "num_examples": num_examples,
      "lambda": np.asarray(pairs.eigvals).tolist(),
      "frobenius": float(spectral.frobenius_norm(matvec, params, probe_key, num_probes)),
      "frobenius_as_in_paper": float(spectral.frobenius_norm_as_in_paper(
          matvec, params, probe_key, num_probes)),
      "distance_from_init": float(tm.norm(tm.sub(params, last["init_params"]))),
  }
  eval_step = train.make_eval_step(model)
  for name, split, limit in (("train", run_data.train, 10_000), ("valid", run_data.valid, 0),
                             ("test", run_data.test, 0)):
    result[f"{name}/loss"], result[f"{name}/accuracy"] = train.evaluate(
        eval_step, params, model_state, train.stack_batches(split, 500, limit))
  result["epoch"] = step / train.make_schedule(config, train.num_examples(run_data.train)
                                               ).steps_per_epoch
  result["seconds"] = time.perf_counter() - start
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdirs = sorted({d for pattern in _WORKDIR.value for d in glob.glob(pattern)})
  if not workdirs:
    raise app.UsageError(f"No run directory matches {_WORKDIR.value}.")
  for workdir in workdirs:
    for which in _CHECKPOINTS.value:
      if which not in ("best", "last"):
        raise app.UsageError(f"--checkpoint={which}: use best or last.")
      path = os.path.join(workdir, f"evaluation_{which}.json")
      if os.path.exists(path) and not _OVERWRITE.value:
        print(f"{path} exists: skipped (--overwrite recomputes it).")
        continue
      result = evaluate_checkpoint(workdir, which, k=_K.value, num_examples=_NUM_EXAMPLES.value,
                                   num_probes=_NUM_PROBES.value, seed=_SEED.value)
      with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
      print(json.dumps({"workdir": workdir, **{k: v for k, v in result.items()
                                               if k != "lambda"}}))


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
