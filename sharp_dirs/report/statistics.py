"""The statistics of run directories that the figures and the claims report share.

Smoothing as the paper (``smooth``, ``smoothed_curve``: a moving average, the zoom and the
per-epoch parts apart), means and spreads over seeds (``mean_std``), the peak of λ_1, and the
NSGD table's per-run quantities (``run_summary``). numpy only, no plotting.
"""

import json
import math
import os
from typing import Optional, Sequence

import numpy as np

from sharp_dirs.engine.metrics_io import Run

LR, BS = "optimizer.learning_rate", "batch_size"
LAMBDA_1 = "hessian/lambda_1"


def smooth(values, window: int) -> np.ndarray:
  """The paper's moving average ``np.convolve(v, ones(w), 'same') / w``, with sensible edges.

  Interior points equal the paper's; at the edges (and around NaNs) the mean is over the
  points inside the window instead of counting the missing ones as zeros.
  """
  v = np.asarray(values, np.float64)
  if window <= 1 or v.size == 0:
    return v.copy()
  padded = np.concatenate([np.full(window, np.nan), v, np.full(window, np.nan)])
  finite = np.isfinite(padded)
  kernel = np.ones(window)
  total = np.convolve(np.where(finite, padded, 0.0), kernel, "same")[window:-window]
  count = np.convolve(finite.astype(np.float64), kernel, "same")[window:-window]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / count, np.nan)


def mean_std(stack, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, std with ddof=1 (0 where one value), count) over ``axis``, ignoring NaNs."""
  x = np.asarray(stack, np.float64)
  finite = np.isfinite(x)
  n = finite.sum(axis)
  total = np.where(finite, x, 0.0).sum(axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(n > 0, total / n, np.nan)
    dev = np.where(finite, (x - np.expand_dims(mean, axis)) ** 2, 0.0).sum(axis)
    std = np.where(n > 1, np.sqrt(dev / (n - 1)), 0.0)
  return mean, std, n


def zoom_end_of(runs: Sequence[Run]) -> float:
  return max(float(r.get("tracking.zoom_epochs", 0) or 0) for r in runs)


def smoothed_curve(run: Run, key: str, window: int = 5,
                   zoom_end: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, smoothed values) of ``key``; the zoom (epoch < zoom_end) and the per-epoch part
  are smoothed separately, as the paper's two runs were."""
  zoom_end = zoom_end_of([run]) if zoom_end is None else zoom_end
  x, y = run.series(key, "epoch")
  if zoom_end <= 0:
    return x, smooth(y, window)
  early = x < zoom_end
  return x, np.concatenate([smooth(y[early], window), smooth(y[~early], window)])


def peak_lambda_max(run: Run, window: int = 5) -> float:
  """The peak of λ_1 smoothed as the paper (``smoothed_curve``); NaN when none is finite."""
  _, y = smoothed_curve(run, LAMBDA_1, window)
  return float(np.nanmax(y)) if np.isfinite(y).any() else math.nan


def _read_json(run: Run, name: str) -> Optional[dict]:
  path = os.path.join(run.workdir, name)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _at_or_before(run: Run, key: str, step: float) -> float:
  """The value of ``key`` logged last at or before ``step`` (the first one if none)."""
  x, y = run.series(key)
  if not x.size:
    return math.nan
  before = y[x <= step]
  return float(before[-1] if before.size else y[0])


def last_epoch(run: Run) -> float:
  x, _ = run.series("valid/accuracy", "epoch")
  return float(x[-1]) if x.size else math.nan


def run_summary(run: Run, val_epoch: float) -> dict:
  """The NSGD table's quantities of one run.

  From ``evaluation_best.json`` / ``evaluation_last.json`` (experiments/evaluate.py) when
  present, else from the logs: the best-validation evaluation is the first with the highest
  valid/accuracy (the best checkpoint's), ‖H‖_F is the logged ``hessian/frobenius_as_in_paper``
  at or before it (best) and the last one (final). ``*_logged`` say which.
  """
  steps, valid = run.series("valid/accuracy")
  if not steps.size:
    raise ValueError(f"run {run.workdir} has no evaluation rows (valid/accuracy).")
  best_step = steps[int(np.nanargmax(valid))]
  best, last = _read_json(run, "evaluation_best.json"), _read_json(run, "evaluation_last.json")
  fro, est = "hessian/frobenius_as_in_paper", "hessian/frobenius"
  epochs, valid_by_epoch = run.series("valid/accuracy", "epoch")
  before = valid_by_epoch[epochs <= val_epoch + 1e-9]
  _, losses = run.series("train/loss")
  out = {
      "est_best": best["frobenius"] if best else _at_or_before(run, est, best_step),
      "est_final": last["frobenius"] if last else (
          float(run.series(est)[1][-1]) if run.has(est) else math.nan),
      "fro_best": best["frobenius_as_in_paper"] if best else _at_or_before(run, fro, best_step),
      "fro_final": last["frobenius_as_in_paper"] if last else (
          float(run.series(fro)[1][-1]) if run.has(fro) else math.nan),
      "fro_logged": not (best and last),
      "test_accuracy": 100 * (best["test/accuracy"] if best else _at_or_before(
          run, "test/accuracy", best_step)),
      "distance": best["distance_from_init"] if best else _at_or_before(
          run, "distance_from_init", best_step),
      "lambda_best": best["lambda"][0] if best else _at_or_before(run, LAMBDA_1, best_step),
      "best_logged": not best,
      "val_accuracy": 100 * float(before[-1]) if before.size else math.nan,
      "train_loss": last["train/loss"] if last else (
          float(losses[-1]) if losses.size else math.nan),
  }
  return {k: float(v) if not isinstance(v, bool) else v for k, v in out.items()}
