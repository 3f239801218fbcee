r"""The pilot that chose the CPU-scale model: does λ_1 rise from a flat start, and at what cost?

For each candidate model and each learning rate, one plain-SGD run of the engine on the first
10k real Fashion-MNIST examples (S = 128), its top-k Hessian eigenvalues tracked on fresh
samples (dense early "zoom", then every epoch). Printed and written to ``--out`` (JSON):
λ_1 at initialization, the peak of the smoothed λ_1 (5 points, as the paper) and where it is,
the rise λ_peak/λ_init, η·λ_init (the start must lie below the edge, ≤ 1), seconds per epoch of
training and per tracking evaluation. The selection rule (issue 16): keep a model that rises at
least 5× at the smallest η, whose largest η starts at η·λ_init ≤ 1, and that fits the budget.

  .venv/bin/python bench/pilot_scale.py                       # the recorded pilot (~30 min)
  .venv/bin/python bench/pilot_scale.py --candidates=scnn8 --learning_rates=0.01,0.1
  .venv/bin/python bench/pilot_scale.py --quick               # smoke run (CI)
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import train
from sharp_dirs.report import statistics

# name -> (model, model_kwargs): the paper's SimpleCNN narrowed, and the MLP of the old CPU scale.
CANDIDATES = {
    "scnn8": ("simple_cnn_root", {"features": 8}),
    "scnn16": ("simple_cnn_root", {"features": 16}),
    "mlp256": ("mlp", {"hidden": (256, 256)}),
}

_CANDIDATES = flags.DEFINE_list("candidates", ["scnn8", "scnn16", "mlp256"],
                                f"Models to try: {', '.join(CANDIDATES)}.")
_LRS = flags.DEFINE_list("learning_rates", ["0.01", "0.03", "0.1"], "SGD η's.")
_EPOCHS = flags.DEFINE_integer("num_epochs", 10, "Epochs of 10k examples per run.")
_N = flags.DEFINE_integer("num_examples", 512, "Hessian examples per tracking evaluation.")
_K = flags.DEFINE_integer("k", 3, "Eigenvalues tracked.")
_TOL = flags.DEFINE_float("tol", 1e-2, "Relative residual at which a solve stops.")
_ZOOM = flags.DEFINE_float("zoom_epochs", 2.0, "Epochs with dense tracking at the start.")
_ZOOM_EVERY = flags.DEFINE_integer("zoom_every_examples", 1280, "Examples between zoom evals.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/pilot", "Where the pilot runs go.")
_OUT = flags.DEFINE_string("out", "bench/pilot_scale.json", "The JSON summary.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes: checks the script runs.")


def pilot_config(candidate: str, learning_rate: float) -> config_lib.ConfigDict:
  model, kwargs = CANDIDATES[candidate]
  c = config_lib.default_config()
  config_lib.cpu_scale(c, num_epochs=_EPOCHS.value)
  c.model = model
  c.model_kwargs = config_lib.ConfigDict(kwargs)
  c.optimizer.learning_rate = learning_rate
  c.tracking.k = _K.value
  c.tracking.num_examples = _N.value
  c.tracking.tol = _TOL.value
  c.tracking.zoom_epochs = _ZOOM.value
  c.tracking.zoom_every_examples = _ZOOM_EVERY.value
  c.checkpoint_every_epochs = _EPOCHS.value
  if _QUICK.value:
    c.num_train_examples = 512
    c.tracking.num_examples = c.tracking.batch_size = 64
    c.tracking.num_lanczos_steps = 8
    c.eval.num_train_examples = c.eval.max_examples = c.eval.batch_size = 128
    c.model_kwargs = config_lib.ConfigDict(
        {"hidden": (16,)} if model == "mlp" else {"features": 2, "dense_features": 8})
  return c


def summarize(run: metrics_io.Run, learning_rate: float, wall_seconds: float) -> dict:
  epochs, smoothed = statistics.smoothed_curve(run, "hessian/lambda_1")
  _, lam = run.series("hessian/lambda_1")
  _, seconds = run.series("hessian/seconds")
  _, hvps = run.series("hessian/num_hvps")
  peak = int(np.nanargmax(smoothed))
  num_epochs = run.get("num_epochs")
  return {
      "learning_rate": learning_rate,
      "lambda_init": float(lam[0]),
      "eta_lambda_init": float(learning_rate * lam[0]),
      "peak_lambda": float(smoothed[peak]),
      "peak_epoch": float(epochs[peak]),
      "rise": float(smoothed[peak] / lam[0]),
      "final_lambda": float(lam[-1]),
      "seconds_per_eval": float(np.median(seconds[1:] if len(seconds) > 1 else seconds)),
      "hvps_per_eval": float(np.median(hvps)),
      "seconds_per_epoch": float((wall_seconds - np.sum(seconds)) / num_epochs),
      "lambda_1": [float(v) for v in lam],
      "epochs": [float(e) for e in run.series("hessian/lambda_1", x="epoch")[0]],
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  lrs = [float(v) for v in _LRS.value]
  results, todo = [], [(c, lr) for c in _CANDIDATES.value for lr in lrs]
  started = time.perf_counter()
  for i, (candidate, lr) in enumerate(todo):
    workdir = os.path.join(_WORKDIR.value, candidate, f"lr={lr:g}")
    elapsed = time.perf_counter() - started
    left = f", about {elapsed / i * (len(todo) - i) / 60:.0f} min left" if i else ""
    print(f"[{i + 1}/{len(todo)}] {candidate} at η = {lr:g} ({elapsed / 60:.1f} min in{left})",
          flush=True)
    run_start = time.perf_counter()
    train.train_and_evaluate(pilot_config(candidate, lr), workdir)
    row = {"candidate": candidate, **summarize(metrics_io.read_run(workdir), lr,
                                               time.perf_counter() - run_start)}
    results.append(row)
    print(f"    λ_init {row['lambda_init']:.2f} (η·λ_init {row['eta_lambda_init']:.2f}), peak "
          f"{row['peak_lambda']:.1f} at epoch {row['peak_epoch']:.2f} (rise {row['rise']:.1f}×), "
          f"{row['seconds_per_epoch']:.1f} s/epoch, {row['seconds_per_eval']:.1f} s/eval "
          f"({row['hvps_per_eval']:.0f} HVPs)", flush=True)
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump({"settings": {"num_epochs": _EPOCHS.value, "num_examples": _N.value,
                            "k": _K.value, "tol": _TOL.value, "zoom_epochs": _ZOOM.value,
                            "zoom_every_examples": _ZOOM_EVERY.value},
               "runs": results}, f, indent=1)
  print(f"\n{'model':8} {'η':>6} {'λ_init':>7} {'η·λ_init':>8} {'peak':>6} {'at ep.':>6} "
        f"{'rise':>5} {'s/epoch':>7} {'s/eval':>6}")
  for r in results:
    print(f"{r['candidate']:8} {r['learning_rate']:6g} {r['lambda_init']:7.2f} "
          f"{r['eta_lambda_init']:8.2f} {r['peak_lambda']:6.1f} {r['peak_epoch']:6.2f} "
          f"{r['rise']:5.1f} {r['seconds_per_epoch']:7.1f} {r['seconds_per_eval']:6.1f}")
  print(f"Written {_OUT.value} ({(time.perf_counter() - started) / 60:.1f} min).")


if __name__ == "__main__":
  app.run(main)
