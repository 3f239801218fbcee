"""Checkpoints of a run with orbax: the latest few (to resume) and the best by validation accuracy.

A checkpoint is a pytree of arrays (train state, initial params, tracked eigenpairs, ...) plus a
small JSON of loop counters; ``restore`` needs a target pytree of the same structure (a freshly
initialized one) and returns arrays placed like it.

Faults. A checkpoint appears atomically (orbax writes ``<step>.orbax-checkpoint-tmp*`` and
renames it), so a kill leaves at worst such a temporary directory, which ``restore`` removes.
The engine saves ``checkpoints/<s>`` before ``best/<s>`` and, on resuming from step s, drops the
best checkpoints after s (a killed run's, recomputed by the resumed one) and re-saves
``best/<s>`` if the kill came between the two saves: a kill at any moment leaves a directory
that resumes. Integrity: each save stores the CRC-32 of every array's bytes in its JSON
(``_integrity``); ``restore`` compares them (and, for checkpoints without them, checks that
every float array is finite) and raises ``DamagedCheckpoint``, which names an earlier intact
checkpoint; the engine's resume falls back to it by itself (``restore(fallback=True)``),
moving the damaged one to ``<workdir>/damaged/``.
"""

import datetime
import glob
import logging
import os
import shutil
import zlib
from typing import Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from sharp_dirs.engine import rundir
from sharp_dirs.types import PyTree

logger = logging.getLogger(__name__)

INTEGRITY = "_integrity"  # the meta JSON's key of the arrays' checksums
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(rundir.RunDirError):
  """A checkpoint cannot be used; the message says which, why, and what to do."""


class DamagedCheckpoint(CheckpointError):
  """A checkpoint whose arrays do not read back as saved."""


def _manager(directory: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  if read_only:
    options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("tree", "meta"))


def _digest(x) -> Optional[list]:
  """[shape, dtype, crc32 of the bytes] of an array, or None for one split over hosts."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return None
  a = np.ascontiguousarray(np.asarray(x))
  return [list(a.shape), str(a.dtype), zlib.crc32(a.tobytes())]


def integrity(tree: PyTree) -> list:
  """The checksums stored with a checkpoint: one ``_digest`` per leaf, in leaf order."""
  return [_digest(x) for x in jax.tree.leaves(tree)]


def verify(tree: PyTree, meta: dict, target: PyTree) -> list[str]:
  """The problems of a restored tree (empty: intact): checksums, shapes and dtypes, finiteness.

  ``meta[INTEGRITY]`` (saved checksums) decides when present; without it every float array
  must be finite.
  """
  leaves = jax.tree.leaves(tree)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
  problems = []
  for path, x, want in zip(paths, leaves, jax.tree.leaves(target)):
    if tuple(np.shape(x)) != tuple(np.shape(want)) or np.dtype(x.dtype) != np.dtype(want.dtype):
      problems.append(f"{path} has shape {np.shape(x)} {x.dtype}, expected {np.shape(want)} "
                      f"{want.dtype}")
  saved = meta.get(INTEGRITY)
  if saved is not None:
    if len(saved) != len(leaves):
      return problems + [f"{len(leaves)} arrays read, {len(saved)} saved"]
    for path, x, digest in zip(paths, leaves, saved):
      if digest is None:
        continue
      now = _digest(x)
      if now is not None and now != digest:
        problems.append(f"{path} does not match its checksum")
    return problems
  for path, x in zip(paths, leaves):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      continue
    if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(np.asarray(x))):
      problems.append(f"{path} holds non-finite values")
  return problems


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  line = text[0] if text else ""
  return f"{type(e).__name__}: {line[:300]}"


class Checkpoints:
  """``<workdir>/checkpoints/<step>`` (the latest ``keep``) and ``<workdir>/best/<step>`` (one).

  ``read_only``: for readers (evaluation): nothing is created, cleaned or moved.
  """

  def __init__(self, workdir: str, keep: int = 2, *, read_only: bool = False):
    self.workdir = workdir
    self.read_only = read_only
    if not read_only:
      self.remove_leftovers()
    self._keep = keep
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep, read_only)
    self.best = _manager(os.path.join(workdir, "best"), 1, read_only)

  def remove_leftovers(self) -> list[str]:
    """Removes orbax's temporary directories of interrupted saves; returns their paths."""
    removed = []
    if jax.process_index() != 0:
      return removed
    for sub in ("checkpoints", "best"):
      for path in sorted(glob.glob(os.path.join(self.workdir, sub, f"*{TMP_SUFFIX}*"))):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
      logger.warning("Removed %d unfinished checkpoint(s) of an interrupted save: %s",
                     len(removed), ", ".join(removed))
    return removed

  @staticmethod
  def _save(manager, step: int, tree: PyTree, meta: dict) -> None:
    if step in manager.all_steps():  # a resumed run recomputing a step it had saved
      manager.delete(step)
    meta = {**meta, INTEGRITY: integrity(tree)}
    manager.save(step, args=ocp.args.Composite(tree=ocp.args.StandardSave(tree),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()

  def _read(self, manager, kind: str, step: int, target: PyTree):
    """(tree, meta) of one step, or DamagedCheckpoint."""
    where = os.path.join(self.workdir, kind, str(step))
    try:
      out = manager.restore(step, args=ocp.args.Composite(
          tree=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
      tree, meta = out["tree"], dict(out["meta"])
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many)
      raise DamagedCheckpoint(f"checkpoint {where} cannot be read ({_first_line(e)})") from e
    problems = verify(tree, meta, target)
    if problems:
      raise DamagedCheckpoint(f"checkpoint {where} is damaged: " + "; ".join(problems[:5]) +
                              (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    meta.pop(INTEGRITY, None)
    return tree, meta

  def _restore(self, manager, kind: str, target: PyTree, fallback: bool):
    steps = sorted(manager.all_steps(), reverse=True)
    damaged = []
    for i, step in enumerate(steps):
      try:
        tree, meta = self._read(manager, kind, step, target)
      except DamagedCheckpoint as e:
        if not fallback:
          raise DamagedCheckpoint(f"{e}. {self._earlier(manager, kind, steps[i + 1:], target)}"
                                  ) from e
        damaged.append((step, str(e)))
        continue
      for bad, reason in damaged:
        moved = self._set_aside(manager, kind, bad)
        logger.warning("%s; resuming from the earlier checkpoint at step %d instead (the "
                       "damaged one is moved to %s).", reason, step, moved)
      if damaged:
        manager.reload()
      return step, tree, meta
    if damaged:
      raise DamagedCheckpoint(
          f"every checkpoint under {os.path.join(self.workdir, kind)} is damaged ("
          + "; ".join(r for _, r in damaged) + f"): the run cannot resume; delete {self.workdir} "
          "(or move it away) to start it over.")
    return None

  def _earlier(self, manager, kind: str, steps: list, target: PyTree) -> str:
    """Which earlier checkpoint can be used instead of a damaged one (a sentence)."""
    for step in steps:
      try:
        self._read(manager, kind, step, target)
      except DamagedCheckpoint:
        continue
      where = os.path.join(self.workdir, kind, str(step))
      return (f"The earlier checkpoint at step {step} ({where}) is intact: relaunching "
              "training resumes from it by itself (moving the damaged one to "
              f"{os.path.join(self.workdir, 'damaged')}); or move the damaged one away by hand")
    return (f"No earlier checkpoint under {os.path.join(self.workdir, kind)} is intact: delete "
            f"{self.workdir} (or move it away) and train the run again")

  def _set_aside(self, manager, kind: str, step: int) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(self.workdir, "damaged", f"{kind}-{step}-{stamp}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(os.path.join(self.workdir, kind, str(step)), dest)
    return dest

  def save(self, step: int, tree: PyTree, meta: dict) -> None:
    self._save(self.latest, step, tree, meta)

  def save_best(self, step: int, tree: PyTree, meta: dict) -> None:
    self._save(self.best, step, tree, meta)

  def restore(self, target: PyTree, *, fallback: bool = False):
    """(step, tree, meta) of the latest intact checkpoint, or None when there is none.

    A damaged latest checkpoint raises ``DamagedCheckpoint`` naming an earlier intact one;
    ``fallback=True`` (training's resume, not ``read_only``) moves it to ``<workdir>/damaged/``,
    says so, and restores the earlier one.
    """
    return self._restore(self.latest, "checkpoints", target, fallback and not self.read_only)

  def restore_best(self, target: PyTree):
    return self._restore(self.best, "best", target, False)

  def best_steps(self) -> list[int]:
    return sorted(self.best.all_steps())

  def align_best(self, step: int, best_step: Optional[int] = None,
                 best_tree: Optional[PyTree] = None, best_meta: Optional[dict] = None
                 ) -> None:
    """Makes ``best/`` agree with a run resumed from ``step`` (-1: started over).

    Best checkpoints after ``step`` were saved by the killed run after its last checkpoint
    (the resumed run recomputes them) and are deleted; when ``best_step == step`` and ``best/``
    lacks it (a kill between the latest and the best save), ``best_tree`` is saved as it.
    """
    for s in self.best.all_steps():
      if s > step:
        logger.warning("Deleting %s: saved after the checkpoint at step %d that the run resumes "
                       "from (the resumed run saves it again).",
                       os.path.join(self.workdir, "best", str(s)), step)
        self.best.delete(s)
    if best_step is not None and best_step == step >= 0 and step not in self.best.all_steps():
      logger.warning("Saving %s: the run was killed after its checkpoint at step %d and before "
                     "its best checkpoint.", os.path.join(self.workdir, "best", str(step)), step)
      self.save_best(step, best_tree, best_meta or {})

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore_part(workdir: str, target: PyTree,
                 choose: Optional[Callable[[list[int]], int]] = None):
  """(step, the part of a checkpoint of ``workdir`` that ``target`` names), or None.

  ``target`` is a subtree of the saved one with nested dicts for its nodes, e.g.
  ``{"state": {"params": params, "model_state": model_state}}``: what ``init_from`` reads from
  a run of another config (other optimizer, other k), whatever else that run saved.
  ``choose``: picks the step among the saved ones (sorted); default the latest.
  """
  options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                  options=options, item_names=("tree", "meta"))
  steps = sorted(manager.all_steps())
  if not steps:
    manager.close()
    return None
  step = steps[-1] if choose is None else choose(steps)
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  out = manager.restore(step, args=ocp.args.Composite(tree=ocp.args.PyTreeRestore(
      target, restore_args=restore_args, partial_restore=True)))
  manager.close()
  return step, out["tree"]


def has_checkpoints(workdir: str, sub: str = "checkpoints") -> bool:
  """Whether ``<workdir>/<sub>`` holds a finished checkpoint (a directory named by its step)."""
  folder = os.path.join(workdir, sub)
  return os.path.isdir(folder) and any(
      name.isdigit() and os.path.isdir(os.path.join(folder, name)) for name in os.listdir(folder))
