r"""The main job (``make demo``): the paper's first claim at CPU scale on real Fashion-MNIST.

Trains the CPU-scale model (the paper's SimpleCNN narrowed to F = 8 filters; see
``sharp_dirs.engine.config.cpu_scale``) with plain SGD (S = 128) at three learning rates on 10k real
Fashion-MNIST examples, tracking its top-2 Hessian eigenvalues on fresh samples of 512 examples
(every 256 examples during the first epoch of 2,560, then every epoch, warm-started); each run
lasts long enough for its peak to lie inside it (24 / 10 / 10 epochs for η = 0.01 / 0.03 / 0.1,
the seed-0 runs of the cpu noise grid: the rise takes about 1/η steps). Then it
- writes the λ_1/λ_2-vs-epoch figure (the paper's noise-grid panel) and the edge-of-stability
  view (η·λ_1 against 2) to ``runs/demo/figures/demo_*.png|pdf`` (``--figures_dir``; the
  committed gallery in figures/ is left alone);
- judges the claim with the claims report's own code (``sharp_dirs.report.claims``): C1, λ_1 rises at
  least 2× and then settles (within its noise of the maximum before 75% of the run) in each
  run; C2, that maximum is lower for larger η, beyond the
  spread of the evaluations each smoothed peak averages (one seed per η here); it prints each
  verdict and the condition that decided it;
- writes ``runs/demo/summary.json`` (per run: learning_rate, batch_size, peak_lambda_max,
  final_test_accuracy, ...; and the verdicts).
A run that already finished with the same settings is reused (delete runs/demo to start over);
a killed one resumes; one made with other settings is not reused: the demo says so and stops.

  python experiments/demo.py      # time on 2 idle cores: README
  python experiments/demo.py --learning_rates=0.03,0.1 --num_epochs=10,10
"""

import json
import logging as pylogging
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

_LEARNING_RATES = flags.DEFINE_list("learning_rates", ["0.01", "0.03", "0.1"], "SGD η's.")
_NUM_EPOCHS = flags.DEFINE_list(
    "num_epochs", ["24", "10", "10"],
    "Epochs (of --epoch_size examples) of each run, one per learning rate (or one for all).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "SGD batch size S.")
_NUM_TRAIN = flags.DEFINE_integer("num_train_examples", 10_000, "Training examples used.")
_EPOCH_SIZE = flags.DEFINE_integer("epoch_size", 2560, "Examples per epoch.")
_HESSIAN_EXAMPLES = flags.DEFINE_integer("hessian_examples", 512, "N per Hessian sample.")
_EVAL_EXAMPLES = flags.DEFINE_integer(
    "eval_examples", 2000, "Examples of each evaluation set (train, validation, test).")
_K = flags.DEFINE_integer("k", 2, "Top eigenvalues tracked.")
_FEATURES = flags.DEFINE_integer("features", 8, "SimpleCNN filters F (the paper: 32).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the runs and summary go.")
_FIGURES = flags.DEFINE_string("figures_dir", None, "Where the figures go (default: "
                                "<workdir>/figures).")


def demo_config(learning_rate: float, num_epochs: int):
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.default_config()
  config_lib.cpu_scale(c, num_epochs=num_epochs)
  c.model_kwargs.features = _FEATURES.value
  c.optimizer.learning_rate = learning_rate
  c.batch_size = _BATCH_SIZE.value
  c.num_train_examples = _NUM_TRAIN.value
  c.epoch_size = _EPOCH_SIZE.value
  c.tracking.k = _K.value
  c.tracking.num_examples = _HESSIAN_EXAMPLES.value
  # At least two batches (the noise estimate's split-half), so a small N is not rounded up to
  # one whole batch of 256.
  c.tracking.batch_size = min(c.tracking.batch_size, -(-_HESSIAN_EXAMPLES.value // 2))
  c.eval.num_train_examples = c.eval.max_examples = _EVAL_EXAMPLES.value
  c.tracking.zoom_epochs = 1.0
  c.tracking.zoom_every_examples = 256
  c.log_every_steps = 10
  return c


def summarize(run) -> dict:
  from sharp_dirs.report import claims  # pylint: disable=g-import-not-at-top
  peak = claims.find_peak(run)
  _, lam = run.series("hessian/lambda_1")
  _, test_acc = run.series("test/accuracy")
  _, eta_lam = run.series("eos/eta_lambda_max")
  return {
      "learning_rate": run.get("optimizer.learning_rate"),
      "batch_size": run.get("batch_size"),
      "peak_lambda_max": peak.lambda_peak if peak else float("nan"),
      "peak_epoch": peak.epoch if peak else float("nan"),
      "peak_position": peak.position if peak else float("nan"),
      "initial_lambda_max": float(lam[0]),
      "final_lambda_max": float(lam[-1]),
      "max_eta_lambda_max": float(np.max(eta_lam)),
      "final_test_accuracy": float(test_acc[-1]),
      "status": run.status.get("status"),
      "workdir": run.workdir,
  }


def parse_flags() -> list[tuple[float, int]]:
  """[(η, epochs)] sorted by η, or a UsageError naming the flag."""
  try:
    lrs = [float(v) for v in _LEARNING_RATES.value]
  except ValueError as e:
    raise app.UsageError(f"--learning_rates must be numbers: {e}") from e
  try:
    epochs = [int(v) for v in _NUM_EPOCHS.value]
  except ValueError as e:
    raise app.UsageError(f"--num_epochs must be whole numbers: {e}") from e
  if len(epochs) == 1:
    epochs *= len(lrs)
  if len(epochs) != len(lrs):
    raise app.UsageError(f"--num_epochs gives {len(epochs)} values for {len(lrs)} learning "
                         "rates: give one per learning rate, or one for all.")
  return sorted(zip(lrs, epochs))


def train_or_reuse(config, workdir: str, label: str) -> None:
  """Trains (or resumes) the run in ``workdir``; reuses it when it finished with ``config``."""
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import metrics_io, rundir, train  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(workdir, rundir.CONFIG)):
    differences = rundir.config_differences(config, workdir)
    if differences:
      named = "; ".join(f"{field}: {was!r} in the run, {now!r} now"
                        for field, was, now in differences)
      sys.exit(f"{workdir} holds a run made with other settings ({named}): delete it, or pass "
               "another --workdir, to run the demo with these flags.")
    if metrics_io.read_run(workdir).status.get("status") == "finished":
      print(f"{label}: finished already in {workdir}, reused.", flush=True)
      return
  print(f"{label}: training (S = {config.batch_size}, {config.num_epochs} epochs of "
        f"{config.epoch_size} examples), tracking λ_1..λ_{config.tracking.k} ...", flush=True)
  start = time.perf_counter()
  try:
    status = train.train_and_evaluate(config, workdir)
  except config_lib.ConfigError as e:
    raise app.UsageError(f"Bad flags for the demo: {e}") from e
  print(f"  {status['status']} in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from sharp_dirs.engine import metrics_io  # pylint: disable=g-import-not-at-top
  from sharp_dirs.report import claims, figures  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  pylogging.getLogger("sharp_dirs").setLevel(pylogging.INFO)  # the runs' progress
  points = parse_flags()
  started = time.perf_counter()
  runs = []
  for i, (lr, num_epochs) in enumerate(points):
    workdir = os.path.join(_WORKDIR.value, f"lr={lr:g}")
    elapsed = time.perf_counter() - started
    label = f"[run {i + 1} of {len(points)}, {elapsed / 60:.1f} min in] η = {lr:g}"
    train_or_reuse(demo_config(lr, num_epochs), workdir, label)
    runs.append(metrics_io.read_run(workdir))

  figures_dir = _FIGURES.value or os.path.join(_WORKDIR.value, "figures")
  os.makedirs(figures_dir, exist_ok=True)
  written = figures.save(figures.noise_grid(runs), figures_dir, "demo_noise_grid")
  written += figures.save(figures.edge_of_stability(runs), figures_dir,
                          "demo_edge_of_stability")
  verdicts = [claims.claim_rise(runs), claims.claim_peak_order(runs, axes=(claims.LR,))]
  rows = [summarize(run) for run in runs]
  summary = {
      "claim": "the larger the learning rate, the lower the peak of λ_1",
      "claim_holds": all(v.verdict == claims.HOLDS for v in verdicts),
      "verdicts": [v.to_dict() for v in verdicts],
      "runs": rows,
      "figures": written,
      "seconds": time.perf_counter() - started,
  }
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, default=float)

  print("\n  η       λ_1 at init  peak λ_1 (smoothed)  at epoch  final λ_1  max η·λ_1  "
        "test acc.")
  for r in rows:
    print(f"  {r['learning_rate']:<7g} {r['initial_lambda_max']:11.2f}  "
          f"{r['peak_lambda_max']:19.2f}  {r['peak_epoch']:8.2f}  {r['final_lambda_max']:9.2f}"
          f"  {r['max_eta_lambda_max']:9.2f}  {100 * r['final_test_accuracy']:8.2f}%")
  print()
  for v in verdicts:
    print(f"{v.claim} ({v.statement}): {v.verdict.upper()}")
    for c in v.conditions:
      mark = "ok " if c.passed else "NO " if c.passed is False else "?  "
      print(f"   {mark} {c.name}: {c.detail}" + ("" if c.decides else " (reported only)"))
  print(f"\nFigures: {', '.join(p for p in written if p.endswith('.png'))}; summary: "
        f"{os.path.join(_WORKDIR.value, 'summary.json')} ({summary['seconds']:.0f} s).")


if __name__ == "__main__":
  app.run(main)
