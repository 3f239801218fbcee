r"""Post-hoc evaluation of checkpoints for the NSGD table (docs/protocol.md, Post-hoc evaluation).

For the best-validation and the last checkpoint of each run: the top-k Hessian eigenvalues on
N fresh augmented training examples, the Frobenius norm ‖H‖_F (the unbiased sqrt(mean ‖Hz‖²))
and the paper's table quantity sqrt(mean ‖Hz‖) over M Gaussian probes, ‖θ − θ_init‖, and loss
and accuracy on the first 10k training examples and the validation and test sets. Writes
``<run>/evaluation_<checkpoint>.json``. k and N default to the run's own tracker (k = 5, N = 256
for the cpu NSGD runs: under a minute each on 2 cores); the paper's are ``--k=50
--num_examples=5120``. When the best and the last checkpoint are the same step, it is evaluated
once. A progress line comes at least every 20 s.

  python experiments/evaluate.py --workdir='runs/cpu/nsgd/*'
  python experiments/evaluate.py --workdir=runs/nsgd/nsgd.gamma=0.01,seed=777 --k=50 \
      --num_examples=5120                                                # the paper's table
"""

import contextlib
import glob
import json
import os
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from sharp_dirs.engine import cli
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import rundir

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "Run directories (globs allowed).")
_CHECKPOINTS = flags.DEFINE_list("checkpoint", ["best", "last"], "Which checkpoints: best, last.")
_K = flags.DEFINE_integer("k", 0, "Top eigenvalues (0: the run's tracking.k; the paper: 50).")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", 0, "Hessian examples, fresh and augmented (0: the run's "
    "tracking.num_examples; the paper: 5120).")
_NUM_PROBES = flags.DEFINE_integer("num_probes", 50, "Gaussian probes of the Frobenius norms.")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", 0, "Examples per split for the losses and accuracies, the first ones (0: "
    "the first 10k training examples and the whole validation and test sets).")
_SEED = flags.DEFINE_integer("seed", 777, "Seed of the sample and the probes (the paper's 777).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Recompute evaluations that exist already.")
flags.mark_flags_as_required(["workdir"])


class EvaluationError(ValueError):
  """A flag that does not fit the run (e.g. more Hessian examples than the data has)."""


def say(message: str) -> None:
  print(message, flush=True)


@contextlib.contextmanager
def heartbeat(progress, what: str, every: float = 20.0):
  """Tells ``progress`` "... still <what>, N s" every ``every`` seconds until the block ends."""
  done, start = threading.Event(), time.perf_counter()

  def beat():
    while not done.wait(every):
      progress(f"  ... still {what}, {time.perf_counter() - start:.0f} s")

  thread = threading.Thread(target=beat, daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    thread.join()


def evaluate_run(workdir: str, checkpoints=("best", "last"), *, k: int = 0,
                 num_examples: int = 0, num_probes: int, seed: int, max_examples: int = 0,
                 progress=say) -> dict:
  """{checkpoint: the table's quantities} for ``checkpoints`` ("best", "last") of a run.

  ``k``, ``num_examples``: 0 takes the run's tracking.k / tracking.num_examples.
  ``max_examples``: the losses and accuracies on the first that many examples of each split
  (0: the first 10k training examples, the whole validation and test sets). A step that is both
  the best and the last checkpoint is evaluated once. ``progress(message)`` is told each phase
  as it starts and, during the long ones, every 20 s.
  """
  from sharp_dirs.engine import train  # pylint: disable=g-import-not-at-top
  config, run_data, model, _, last = train.restore_run(workdir, "latest")
  points = {}  # checkpoint -> (step, params, model_state)
  for which in checkpoints:
    if which == "best":
      _, _, _, step, best = train.restore_run(workdir, "best")
      points[which] = (int(step), best["params"], best["model_state"])
    else:
      points[which] = (int(last["state"].step), last["state"].params, last["state"].model_state)
  results = {}
  for which, (step, params, model_state) in points.items():
    same = next((r for r in results.values() if r["step"] == step), None)
    if same is not None:
      progress(f"  step {step}: the {which} checkpoint is the {same['checkpoint']} one; "
               "evaluated once.")
      results[which] = {**same, "checkpoint": which}
      continue
    results[which] = {"checkpoint": which, **evaluate_params(
        config, run_data, model, step, params, model_state, last["init_params"],
        k=k or config.tracking.k, num_examples=num_examples or config.tracking.num_examples,
        num_probes=num_probes, seed=seed, max_examples=max_examples, progress=progress,
        workdir=workdir)}
  return results


def evaluate_checkpoint(workdir: str, which: str, **kwargs) -> dict:
  """The table's quantities at one checkpoint ("best" or "last") of a run (``evaluate_run``)."""
  return evaluate_run(workdir, (which,), **kwargs)[which]


def evaluate_params(config, run_data, model, step: int, params, model_state, init_params, *,
                    k: int, num_examples: int, num_probes: int, seed: int, max_examples: int,
                    progress, workdir: str) -> dict:
  """The table's quantities at ``params`` (step ``step`` of the run in ``workdir``)."""
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top
  from sharp_dirs.curvature import hessian, spectral  # pylint: disable=g-import-not-at-top
  from sharp_dirs.curvature import tree_math as tm  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import tracking, train  # pylint: disable=g-import-not-at-top
  n, batch = train.num_examples(run_data.train), config.tracking.batch_size
  if -(-num_examples // batch) * batch > n:
    raise EvaluationError(
        f"--num_examples={num_examples} needs {-(-num_examples // batch) * batch} examples "
        f"(whole batches of tracking.batch_size = {batch}) but {workdir} trains on {n}: pass "
        f"--num_examples <= {n // batch * batch}.")
  if k > tm.size(params):
    raise EvaluationError(f"--k={k} exceeds the model's {tm.size(params)} parameters.")
  key = jax.random.PRNGKey(seed)
  sample = data.hessian_sample(run_data.train, key, num_examples=num_examples,
                               batch_size=config.tracking.batch_size, augment=run_data.augment)
  loss_fn = tracking.curvature_loss_fn(model, model_state, config.l2)
  start = time.perf_counter()
  progress(f"  step {step}: top-{k} Hessian eigenpairs on {num_examples} examples ...")
  with heartbeat(progress, f"solving for the top {k}"):
    pairs = hessian.hessian_top_k(loss_fn, params, sample, jax.random.fold_in(key, 1), k=k,
                                  num_lanczos_steps=min(3 * k, tm.size(params)),
                                  tol=config.tracking.tol or None)
  progress(f"  ... {time.perf_counter() - start:.0f} s; Frobenius norms over {num_probes} "
           "probes ...")
  matvec = hessian.dataset_hvp(loss_fn, params, sample)
  probe_key = jax.random.fold_in(key, 2)
  with heartbeat(progress, f"probing ({num_probes} probes)"):
    result = {
        "step": int(step), "k": k, "num_examples": num_examples,
        "lambda": np.asarray(pairs.eigvals).tolist(),
        "frobenius": float(spectral.frobenius_norm(matvec, params, probe_key, num_probes)),
        "frobenius_as_in_paper": float(spectral.frobenius_norm_as_in_paper(
            matvec, params, probe_key, num_probes)),
        "distance_from_init": float(tm.norm(tm.sub(params, init_params))),
    }
  progress(f"  ... {time.perf_counter() - start:.0f} s; losses and accuracies ...")
  eval_step = train.make_eval_step(config, model)
  for name, split, limit in (("train", run_data.train, max_examples or 10_000),
                             ("valid", run_data.valid, max_examples),
                             ("test", run_data.test, max_examples)):
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
    sys.exit(f"--workdir: no run directory matches {_WORKDIR.value}.")
  for which in _CHECKPOINTS.value:
    if which not in ("best", "last"):
      sys.exit(f"--checkpoint={which}: use best or last.")
  for name, value, least in (("k", _K.value, 0), ("num_examples", _NUM_EXAMPLES.value, 0),
                             ("num_probes", _NUM_PROBES.value, 1)):
    if value < least:
      sys.exit(f"--{name}={value}: must be >= {least}" + (" (0: the run's own)." if not least
                                                           else "."))
  if _MAX_EXAMPLES.value < 0:
    sys.exit(f"--max_examples={_MAX_EXAMPLES.value}: must be >= 0 (0: whole splits).")
  failed = []
  total, done, started = len(workdirs) * len(_CHECKPOINTS.value), 0, time.perf_counter()
  for workdir in workdirs:
    if not os.path.isdir(workdir) or rundir.read_config(workdir) is None:
      print(f"Cannot evaluate {workdir}: it is not a run directory (no config.json); pass the "
            "--workdir of a run made by experiments/train.py.", file=sys.stderr, flush=True)
      failed.append(workdir)
      continue
    wanted = [w for w in _CHECKPOINTS.value if _OVERWRITE.value or not os.path.exists(
        os.path.join(workdir, f"evaluation_{w}.json"))]
    for which in sorted(set(_CHECKPOINTS.value) - set(wanted)):
      print(f"{os.path.join(workdir, f'evaluation_{which}.json')} exists: skipped "
            "(--overwrite recomputes it).")
    if not wanted:
      continue
    elapsed = time.perf_counter() - started
    left = f", about {elapsed / done * (total - done) / 60:.1f} min left" if done else ""
    say(f"[{done + 1}–{done + len(wanted)} of {total}, {elapsed / 60:.1f} min in{left}] "
        f"{' and '.join(wanted)} checkpoint{'s' * (len(wanted) > 1)} of {workdir}")
    done += len(wanted)
    try:
      results = evaluate_run(workdir, wanted, k=_K.value, num_examples=_NUM_EXAMPLES.value,
                             num_probes=_NUM_PROBES.value, seed=_SEED.value,
                             max_examples=_MAX_EXAMPLES.value)
    except (EvaluationError, config_lib.ConfigError, rundir.RunDirError) as e:
      print(f"Cannot evaluate {workdir}: {e}", file=sys.stderr, flush=True)
      failed.append(workdir)
      continue
    for which, result in results.items():
      with open(os.path.join(workdir, f"evaluation_{which}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
      print(json.dumps({"workdir": workdir, **{k: v for k, v in result.items()
                                               if k != "lambda"}}))
  if failed:
    sys.exit(1)  # each failure was reported in one line above


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=cli.parse_flags)
