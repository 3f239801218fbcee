"""TensorBoard event files of a run's scalars, written by tensorboardX.

``tensorboard --logdir runs`` shows the scalar curves of every directory under ``runs`` that
holds ``events.out.tfevents.*`` files. Each ``EventFileWriter`` writes one new file (the
encoding, framing and writing are tensorboardX's)::

  with EventFileWriter("runs/sgd_lr0.1/tensorboard") as writer:
    for step in range(num_steps):
      writer.scalars(step, {"train/loss": loss, "hessian/lambda_1": lam})

Resuming: a run killed after its checkpoint at step s may have logged steps after s, which the
resumed run logs again. The resumed run's writer opens its file with ``first_step=s + 1``: a
``SessionLog.START`` event at that step (tensorboardX's ``purge_step``), on which TensorBoard
drops every step >= s + 1 read from the earlier files, so each step is shown once, with the
resumed run's value. TensorBoard's Python loader (``--load_fast=false``) takes the first START
of a run for its beginning and honours only the later ones, so every writer opens with one (a
fresh run's at step 0) and a resumed one with two (files without a START, such as those this
module wrote before it used tensorboardX, would otherwise have the resumed run's START taken
for the beginning); its fast loader (the Rust data server) drops the replaced steps as soon as a
step is logged again. The earlier files are left as they are: the dropped steps stay in their
bytes, hidden from TensorBoard's readers.
"""

import operator
import os
import time
import weakref
from typing import Mapping, Optional

import tensorboardX
from tensorboardX.proto import event_pb2

FLUSH_SECS = 30  # tensorboardX writes in a background thread and flushes the file this often


def _as_int64(step: int) -> int:
  try:
    step = operator.index(step)  # ints, NumPy/JAX integer scalars; not floats.
  except TypeError:
    raise TypeError(f"step must be an integer, got {step!r}") from None
  if not -(1 << 63) <= step < (1 << 63):
    raise ValueError(f"step {step} does not fit in int64")
  return step


def _unique_suffix() -> str:
  """A file-name suffix that orders the files of one host by creation time, as TensorBoard reads
  them (tensorboardX names files by the second only)."""
  return f".{time.time_ns()}.{os.getpid()}"


class EventFileWriter:
  """Writes scalars to a new TensorBoard event file in ``logdir`` (created with its parents).

  Attributes:
    logdir: the directory of the file (one TensorBoard run).
    path: the event file's path.
  """

  def __init__(self, logdir: str, *, first_step: int = 0):
    """Opens the file with a ``SessionLog.START`` at ``first_step``.

    Args:
      logdir: directory of the run.
      first_step: the first step this writer logs; TensorBoard hides the steps >= it that
        earlier files in ``logdir`` hold (those a killed run logged after its checkpoint).
    """
    self.logdir = os.fspath(logdir)
    suffix = _unique_suffix()
    self._writer = tensorboardX.SummaryWriter(self.logdir, purge_step=_as_int64(first_step),
                                              flush_secs=FLUSH_SECS, filename_suffix=suffix)
    self.path = next(os.path.join(self.logdir, name) for name in os.listdir(self.logdir)
                     if name.endswith(suffix))
    if first_step > 0:  # the second START (module docstring)
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self._writer.file_writer.add_event(event_pb2.Event(step=first_step, session_log=start))
    self._close = weakref.finalize(self, self._writer.close)  # also at exit, if not closed

  def scalar(self, tag: str, value: float, step: int,
             wall_time: Optional[float] = None) -> None:
    """Records ``value`` (stored as float32) for ``tag`` at ``step``."""
    self.scalars(step, {tag: value}, wall_time)

  def scalars(self, step: int, mapping: Mapping[str, float],
              wall_time: Optional[float] = None) -> None:
    """Records several scalars at one ``step``, with one wall time (now by default).

    Args:
      step: the x coordinate, an int64.
      mapping: tag (e.g. ``"train/loss"``; TensorBoard groups by the prefix) -> a real number,
        a Python/NumPy scalar or a 0-d array.
      wall_time: seconds since the epoch.
    """
    if not self._close.alive:
      raise ValueError(f"EventFileWriter for {self.path} is closed: open a new one")
    step = _as_int64(step)
    bad = [tag for tag in mapping if not isinstance(tag, str)]
    if bad:
      raise TypeError(f"tag must be a str, got {bad[0]!r}")
    values = {tag: float(value) for tag, value in mapping.items()}
    wall_time = time.time() if wall_time is None else float(wall_time)
    for tag, value in values.items():
      self._writer.add_scalar(tag, value, step, walltime=wall_time)

  def flush(self) -> None:
    """Flushes what the writer thread has written so far (it also does every FLUSH_SECS)."""
    if self._close.alive:
      self._writer.flush()

  def close(self) -> None:
    """Writes out every scalar and closes the file; later calls do nothing."""
    self._close()

  def __enter__(self) -> "EventFileWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __repr__(self) -> str:
    return f"EventFileWriter({self.path!r})"
