r"""The main job (``make demo``): the paper's first claim at CPU scale on real Fashion-MNIST.

Trains the 784-256-256-10 MLP with plain SGD (S = 128) at three learning rates on 10k real
Fashion-MNIST examples, tracking the top-5 Hessian eigenvalues on fresh samples of 1,024
examples (every 512 examples during the first epoch, then every epoch, warm-started), then
- writes the λ_1/λ_2-vs-epoch figure (the paper's noise-grid panel) and the edge-of-stability
  view (η·λ_1 against 2) to ``figures/demo_*.png|pdf``;
- prints and writes ``runs/demo/summary.json``: per learning rate the peak of the smoothed λ_1
  (5-point moving average, as the paper), where it was reached, the final test accuracy, ...;
- says whether the paper's claim holds: the larger η, the lower the peak of λ_1.
Runs that already finished are reused (delete runs/demo to start over); killed ones resume.

  python experiments/demo.py                          # about 10 minutes on 2 CPU cores
  python experiments/demo.py --learning_rates=0.01,0.1 --num_epochs=20
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

_LEARNING_RATES = flags.DEFINE_list("learning_rates", ["0.03", "0.1", "0.3"], "SGD η's.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "SGD batch size S.")
_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 12, "Epochs (passes over the examples).")
_NUM_TRAIN = flags.DEFINE_integer("num_train_examples", 10_000, "Training examples used.")
_HESSIAN_EXAMPLES = flags.DEFINE_integer("hessian_examples", 1024, "N per Hessian sample.")
_K = flags.DEFINE_integer("k", 5, "Top eigenvalues tracked.")
_HIDDEN = flags.DEFINE_list("hidden", ["256", "256"], "Hidden widths of the MLP.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the runs and summary go.")
_FIGURES = flags.DEFINE_string("figures_dir", "figures", "Where the figures go.")


def demo_config(learning_rate: float):
  from sharp_dirs import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.default_config()
  config_lib.cpu_scale(c, num_epochs=_NUM_EPOCHS.value)
  c.model_kwargs.hidden = tuple(int(h) for h in _HIDDEN.value)
  c.optimizer.learning_rate = learning_rate
  c.batch_size = _BATCH_SIZE.value
  c.num_train_examples = _NUM_TRAIN.value
  c.tracking.k = _K.value
  c.tracking.num_examples = _HESSIAN_EXAMPLES.value
  c.tracking.zoom_epochs = 1.0
  c.tracking.zoom_every_examples = 512
  return c


def summarize(run) -> dict:
  from sharp_dirs import figures  # pylint: disable=g-import-not-at-top
  epochs, smoothed = figures.smoothed_curve(run, "hessian/lambda_1")
  peak_at = int(np.nanargmax(smoothed))
  _, lam = run.series("hessian/lambda_1")
  _, test_acc = run.series("test/accuracy")
  _, eta_lam = run.series("eos/eta_lambda_max")
  return {
      "learning_rate": run.get("optimizer.learning_rate"),
      "batch_size": run.get("batch_size"),
      "peak_lambda_max": float(smoothed[peak_at]),
      "peak_epoch": float(epochs[peak_at]),
      "peak_before_last_quarter": bool(epochs[peak_at] < 0.75 * epochs[-1]),
      "initial_lambda_max": float(lam[0]),
      "final_lambda_max": float(lam[-1]),
      "max_eta_lambda_max": float(np.max(eta_lam)),
      "final_test_accuracy": float(test_acc[-1]),
      "status": run.status.get("status"),
      "workdir": run.workdir,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from sharp_dirs import config as config_lib  # pylint: disable=g-import-not-at-top
  from sharp_dirs import figures, metrics_io, train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  try:
    learning_rates = sorted(float(v) for v in _LEARNING_RATES.value)
  except ValueError as e:
    raise app.UsageError(f"--learning_rates must be numbers: {e}") from e
  started = time.perf_counter()
  runs = []
  for lr in learning_rates:
    workdir = os.path.join(_WORKDIR.value, f"lr={lr:g}")
    status = {}
    if os.path.exists(os.path.join(workdir, "status.json")):
      status = metrics_io.read_run(workdir).status
    if status.get("status") != "finished":
      print(f"Training the MLP with SGD at η = {lr:g} (S = {_BATCH_SIZE.value}, "
            f"{_NUM_EPOCHS.value} epochs), tracking λ_1..λ_{_K.value} ...", flush=True)
      run_start = time.perf_counter()
      try:
        status = train.train_and_evaluate(demo_config(lr), workdir)
      except config_lib.ConfigError as e:
        raise app.UsageError(f"Bad flags for the demo: {e}") from e
      print(f"  {status['status']} in {time.perf_counter() - run_start:.0f} s", flush=True)
    runs.append(metrics_io.read_run(workdir))

  os.makedirs(_FIGURES.value, exist_ok=True)
  written = figures.save(figures.noise_grid(runs), _FIGURES.value, "demo_noise_grid")
  written += figures.save(figures.edge_of_stability(runs), _FIGURES.value,
                          "demo_edge_of_stability")
  rows = [summarize(run) for run in runs]
  peaks = [r["peak_lambda_max"] for r in rows]
  holds = all(a > b for a, b in zip(peaks, peaks[1:]))
  summary = {
      "claim": "the larger the learning rate, the lower the peak of λ_1",
      "claim_holds": holds,
      "runs": rows,
      "figures": written,
      "seconds": time.perf_counter() - started,
  }
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)

  print("\n  η       peak λ_1 (smoothed)  at epoch  final λ_1  max η·λ_1  test acc.")
  for r in rows:
    print(f"  {r['learning_rate']:<7g} {r['peak_lambda_max']:19.2f}  {r['peak_epoch']:8.2f}  "
          f"{r['final_lambda_max']:9.2f}  {r['max_eta_lambda_max']:9.2f}  "
          f"{100 * r['final_test_accuracy']:8.2f}%")
  late = [r["learning_rate"] for r in rows if not r["peak_before_last_quarter"]]
  print(f"\nThe paper's claim ({summary['claim']}): "
        f"{'holds' if holds else 'does NOT hold'} in this run.")
  if late:
    print(f"Note: at η = {', '.join(f'{v:g}' for v in late)} the smoothed λ_1 peaked in the last "
          "quarter of the run: it may still be rising (train longer with --num_epochs).")
  print(f"Figures: {', '.join(p for p in written if p.endswith('.png'))}; summary: "
        f"{os.path.join(_WORKDIR.value, 'summary.json')} ({summary['seconds']:.0f} s).")


if __name__ == "__main__":
  app.run(main)
