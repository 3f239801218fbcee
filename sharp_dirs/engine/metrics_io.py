"""Run directories: what a run writes, and the reader that figures use.

A run directory holds
- ``config.json``: the config of the run;
- ``metrics.jsonl``: one flat JSON object per logged event, ``{"step": s, "epoch": e, ...}``
  (keys such as ``train/loss``, ``valid/accuracy``, ``hessian/lambda_1``); a key is absent from
  rows that do not log it;
- ``arrays/<name>/<step>.npz``: what is not scalar (cross-section curves, loss-change tables,
  spectral densities), one file per step;
- ``tensorboard/``: event files of every finite numeric scalar, for ``tensorboard --logdir``;
- ``status.json``: while the run runs, ``running`` with the step of its latest checkpoint;
  then how it ended (``finished``, ``diverged``, ``early_stopped``) and why;
- ``checkpoints/``, ``best/``, ``.lock``, ``config_changes.jsonl``: see ``sharp_dirs.engine.checkpoint``
  and ``sharp_dirs.engine.rundir``.

Rows are never dropped in silence: a run that starts over in a directory with rows moves them
to ``metrics.jsonl.<time>.bak`` (``arrays/`` and ``tensorboard/`` likewise); a resumed run drops
the rows its killed predecessor logged after the checkpoint (it logs them again; TensorBoard
hides their steps in the old event files, see ``sharp_dirs.engine.tensorboard``) and says how
many; a damaged line is reported with its number (``DamagedMetricsWarning``) and skipped, and a
writer that finds one keeps a copy of the file as it was.

``read_run(workdir)`` turns it into numpy arrays: ``run.series("hessian/lambda_1")`` gives the
steps and values where that key was logged.
"""

import dataclasses
import datetime
import glob
import json
import logging
import math
import os
import shutil
import warnings
from typing import Any, Mapping, Optional

import numpy as np

METRICS = "metrics.jsonl"
logger = logging.getLogger(__name__)


class DamagedMetricsWarning(UserWarning):
  """A line of metrics.jsonl is not a row (a damaged file); it is skipped."""


def _jsonable(value: Any) -> Any:
  """Python scalars from numpy/jax scalars; NaN and inf are kept (JSON's NaN/Infinity)."""
  if isinstance(value, (str, bool, int, float)) or value is None:
    return value
  array = np.asarray(value)
  if array.ndim == 0:
    return array.item()
  return array.tolist()


def _scan(path: str) -> tuple[list[dict], list[tuple[int, str]]]:
  """(rows, [(line number, why)] of the damaged lines) of a metrics.jsonl.

  A last line without its newline (a kill in the middle of a write) is neither a row nor damage.
  """
  rows, damaged = [], []
  if not os.path.exists(path):
    return rows, damaged
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.readlines()
  for number, line in enumerate(lines, 1):
    torn = number == len(lines) and not line.endswith("\n")
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if not torn and line.strip():
        damaged.append((number, f"not JSON ({e.msg})"))
      elif not line.strip() and not torn:
        damaged.append((number, "empty"))
      continue
    if not isinstance(row, dict) or not isinstance(row.get("step"), int):
      damaged.append((number, "not a row with an integer 'step'"))
      continue
    rows.append(row)
  return rows, damaged


def _report(path: str, damaged: list[tuple[int, str]]) -> None:
  for number, why in damaged[:10]:
    warnings.warn(f"{path}, line {number}: damaged ({why}); skipped, reading on.",
                  DamagedMetricsWarning, stacklevel=3)
  if len(damaged) > 10:
    warnings.warn(f"{path}: {len(damaged) - 10} more damaged lines skipped.",
                  DamagedMetricsWarning, stacklevel=3)


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl; a damaged line is reported (``DamagedMetricsWarning``, with
  its number) and skipped; a torn last line, from a kill, is ignored."""
  rows, damaged = _scan(path)
  _report(path, damaged)
  return rows


def _stamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


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
    rows, damaged = _scan(path)
    _report(path, damaged)
    stamp = _stamp()
    if resume_step is None and (rows or damaged):
      backup = f"{path}.{stamp}.bak"
      os.replace(path, backup)
      for folder in ("arrays", "tensorboard"):  # the old run's, beside its rows
        folder = os.path.join(workdir, folder)
        if os.path.isdir(folder):
          os.replace(folder, f"{folder}.{stamp}.bak")
      logger.warning("%s: starting the run over (no checkpoint to resume from); its %d earlier "
                     "rows are kept in %s.", workdir, len(rows), backup)
      rows, damaged = [], []
    elif damaged:
      backup = f"{path}.{stamp}.bak"
      shutil.copyfile(path, backup)
      logger.warning("%s has %d damaged line(s) (first: line %d), left out of the resumed "
                     "run's file; the file as it was is kept in %s.", path, len(damaged),
                     damaged[0][0], backup)
    kept = [r for r in rows if r["step"] <= last]
    if len(kept) < len(rows):
      logger.warning("%s: dropping %d rows logged after step %d by the run that was stopped "
                     "(the resumed run logs them again).", path, len(rows) - len(kept), last)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:  # a kill while rewriting loses no row
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
    for name in glob.glob(os.path.join(workdir, "arrays", "*", "*.npz")):
      if int(os.path.basename(name)[:-4]) > last:
        os.remove(name)
    self._file = open(path, "a", encoding="utf-8")
    from sharp_dirs.engine import tensorboard  # pylint: disable=g-import-not-at-top  (a writer
    # needs tensorboardX; reading runs, and so ``import sharp_dirs``, does not)
    self._tb = tensorboard.EventFileWriter(  # TensorBoard hides the dropped rows' steps too
        os.path.join(workdir, "tensorboard"), first_step=last + 1)

  def write_json(self, name: str, value: Mapping[str, Any]) -> None:
    """Writes ``<workdir>/<name>`` whole or not at all (a kill mid-write leaves the old file)."""
    if self.active:
      path = os.path.join(self.workdir, name)
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=_jsonable)
      os.replace(path + ".tmp", path)

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
