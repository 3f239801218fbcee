"""Run directories: what a run writes, and the reader that figures use.

A run directory holds
- ``config.json``: the config of the run;
- ``metrics.jsonl``: one flat JSON object per logged event, ``{"step": s, "epoch": e, ...}``
  (keys such as ``train/loss``, ``valid/accuracy``, ``hessian/lambda_1``); a key is absent from
  rows that do not log it;
- ``arrays/<name>/<step>.npz``: what is not scalar (cross-section curves, loss-change tables,
  spectral densities), one file per step;
- ``tensorboard/``: event files of every finite numeric scalar, for ``tensorboard --logdir``;
- ``status.json``: how the run ended (``finished``, ``diverged``, ``early_stopped``) and why.

``read_run(workdir)`` turns it into numpy arrays: ``run.series("hessian/lambda_1")`` gives the
steps and values where that key was logged.
"""

import dataclasses
import glob
import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from sharp_dirs import tensorboard

METRICS = "metrics.jsonl"


def _jsonable(value: Any) -> Any:
  """Python scalars from numpy/jax scalars; NaN and inf are kept (JSON's NaN/Infinity)."""
  if isinstance(value, (str, bool, int, float)) or value is None:
    return value
  array = np.asarray(value)
  if array.ndim == 0:
    return array.item()
  return array.tolist()


def read_rows(path: str) -> list[dict]:
  """The complete rows of a metrics.jsonl (a torn last line, from a kill, is ignored)."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


class MetricWriter:
  """Writes metrics.jsonl, arrays and TensorBoard events of one run (no-ops when not ``active``).

  ``resume_step``: the step of the checkpoint a run resumes from; rows logged after it (by the
  run that was killed) are dropped, so the resumed run's metrics equal an uninterrupted run's.
  """

  def __init__(self, workdir: str, *, active: bool = True, resume_step: Optional[int] = None):
    self.workdir = workdir
    self.active = active
    self._tb = None
    if not active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS)
    last = -1 if resume_step is None else resume_step  # a fresh start keeps nothing
    kept = [r for r in read_rows(path) if r["step"] <= last]
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    for name in glob.glob(os.path.join(workdir, "arrays", "*", "*.npz")):
      if int(os.path.basename(name)[:-4]) > last:
        os.remove(name)
    self._file = open(path, "a", encoding="utf-8")
    self._tb = tensorboard.EventFileWriter(os.path.join(workdir, "tensorboard"))

  def write_json(self, name: str, value: Mapping[str, Any]) -> None:
    if self.active:
      with open(os.path.join(self.workdir, name), "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=_jsonable)

  def write_row(self, step: int, values: Mapping[str, Any]) -> None:
    """Appends {"step": step, **values} to metrics.jsonl; numeric scalars go to TensorBoard."""
    if not self.active:
      return
    row = {"step": int(step), **{k: _jsonable(v) for k, v in values.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    scalars = {k: float(v) for k, v in row.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)}
    self._tb.scalars(int(step), scalars)

  def write_arrays(self, step: int, name: str, arrays: Mapping[str, Any]) -> None:
    """Saves arrays/<name>/<step>.npz."""
    if not self.active:
      return
    folder = os.path.join(self.workdir, "arrays", name)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"{int(step):09d}.npz"),
             **{k: np.asarray(v) for k, v in arrays.items()})

  def flush(self) -> None:
    if self.active:
      self._file.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.active:
      self._file.close()
      self._tb.close()


@dataclasses.dataclass
class Run:
  """A run directory read into memory."""
  workdir: str
  config: dict
  rows: list
  status: dict

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))

  def keys(self) -> list[str]:
    return sorted({k for r in self.rows for k in r})

  def series(self, key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x values, values) of the rows that logged ``key``, float arrays in logging order."""
    rows = [r for r in self.rows if key in r and r[key] is not None]
    return (np.array([r[x] for r in rows], np.float64),
            np.array([r[key] for r in rows], np.float64))

  def has(self, key: str) -> bool:
    return any(key in r for r in self.rows)

  def arrays(self, name: str) -> list[tuple[int, dict]]:
    """[(step, {array name: array})] of arrays/<name>/, by step."""
    out = []
    for path in sorted(glob.glob(os.path.join(self.workdir, "arrays", name, "*.npz"))):
      with np.load(path) as f:
        out.append((int(os.path.basename(path)[:-4]), dict(f)))
    return out

  def get(self, dotted: str, default: Any = None) -> Any:
    """A config value by dotted name, e.g. ``run.get("optimizer.learning_rate")``."""
    value = self.config
    for part in dotted.split("."):
      if not isinstance(value, dict) or part not in value:
        return default
      value = value[part]
    return value


def read_run(workdir: str) -> Run:
  """Reads a run directory (config.json, metrics.jsonl, status.json)."""
  if not os.path.isfile(os.path.join(workdir, METRICS)):
    raise FileNotFoundError(f"{workdir} is not a run directory: it has no {METRICS}. Train "
                            "one with experiments/train.py --workdir=...")
  def load(name):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      return {}
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  return Run(workdir, load("config.json"), read_rows(os.path.join(workdir, METRICS)),
             load("status.json"))
