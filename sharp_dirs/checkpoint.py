"""Checkpoints of a run with orbax: the latest few (to resume) and the best by validation accuracy.

A checkpoint is a pytree of arrays (train state, initial params, tracked eigenpairs, ...) plus a
small JSON of loop counters; ``restore`` needs a target pytree of the same structure (a freshly
initialized one) and returns arrays placed like it.
"""

import os
from typing import Any, Optional

import orbax.checkpoint as ocp

PyTree = Any


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("tree", "meta"))


class Checkpoints:
  """``<workdir>/checkpoints/<step>`` (the latest ``keep``) and ``<workdir>/best/<step>`` (one)."""

  def __init__(self, workdir: str, keep: int = 2):
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep)
    self.best = _manager(os.path.join(workdir, "best"), 1)

  @staticmethod
  def _save(manager, step: int, tree: PyTree, meta: dict) -> None:
    manager.save(step, args=ocp.args.Composite(tree=ocp.args.StandardSave(tree),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()

  @staticmethod
  def _restore(manager, target: PyTree, step: Optional[int] = None):
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    out = manager.restore(step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(target),
                                                        meta=ocp.args.JsonRestore()))
    return step, out["tree"], dict(out["meta"])

  def save(self, step: int, tree: PyTree, meta: dict) -> None:
    self._save(self.latest, step, tree, meta)

  def save_best(self, step: int, tree: PyTree, meta: dict) -> None:
    self._save(self.best, step, tree, meta)

  def restore(self, target: PyTree):
    """(step, tree, meta) of the latest checkpoint, or None when there is none."""
    return self._restore(self.latest, target)

  def restore_best(self, target: PyTree):
    return self._restore(self.best, target)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore_part(workdir: str, target: PyTree):
  """(step, the part of the latest checkpoint of ``workdir`` that ``target`` names), or None.

  ``target`` is a subtree of the saved one with nested dicts for its nodes, e.g.
  ``{"state": {"params": params, "model_state": model_state}}``: what ``init_from`` reads from
  a run of another config (other optimizer, other k), whatever else that run saved.
  """
  options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                  options=options, item_names=("tree", "meta"))
  step = manager.latest_step()
  if step is None:
    manager.close()
    return None
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  out = manager.restore(step, args=ocp.args.Composite(tree=ocp.args.PyTreeRestore(
      target, restore_args=restore_args, partial_restore=True)))
  manager.close()
  return step, out["tree"]

