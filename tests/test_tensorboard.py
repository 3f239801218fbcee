"""TensorBoard event files (sharp_dirs.engine.tensorboard, written by tensorboardX), read back by
TensorBoard's own readers: the classic EventAccumulator and the plugin EventAccumulator that
``tensorboard --load_fast=false`` serves from. A resumed run shows each step once."""

import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator  # the test extras'
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util
import tensorboardX

from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import tensorboard as tb


def read_classic(logdir):
  """tag -> [(step, value)] by tensorboard's classic EventAccumulator."""
  acc = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0}).Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_served(logdir):
  """tag -> [(step, value)] by the accumulator behind TensorBoard's scalars plugin."""
  acc = plugin_event_accumulator.EventAccumulator(
      str(logdir), size_guidance={plugin_event_accumulator.TENSORS: 0}).Reload()
  return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in
                acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


READERS = pytest.mark.parametrize("read", [read_classic, read_served], ids=["classic", "served"])


def f32(x):
  return float(np.float32(x))


def write_curves(writer, steps, offset=0.0):
  """Logs train/loss at every step and hessian/lambda_1 at every 5th; returns the curves."""
  expected = {"train/loss": [], "hessian/lambda_1": []}
  for step in steps:
    loss = offset + np.sin(step) * 10.0 ** (step % 7 - 3)
    writer.scalars(np.int64(step), {"train/loss": np.float64(loss)})
    expected["train/loss"].append((step, f32(loss)))
    if step % 5 == 0:
      writer.scalar("hessian/lambda_1", np.float32(offset + step / 3), step)
      expected["hessian/lambda_1"].append((step, f32(offset + step / 3)))
  return expected


def merged(*parts):
  """The curves of a run and its resumptions: each part replaces the steps >= its first."""
  out = {}
  for first_step, curves in parts:
    for tag, points in curves.items():
      out[tag] = [p for p in out.get(tag, []) if p[0] < first_step] + points
  return out


@READERS
def test_scalars_round_trip(tmp_path, read):
  with tb.EventFileWriter(tmp_path / "a" / "b") as writer:  # creates the parents
    expected = write_curves(writer, range(300))
    writer.scalars(2**40, {"big": 1.5, "ü/unicode": -0.0})
  expected.update({"big": [(2**40, 1.5)], "ü/unicode": [(2**40, -0.0)]})
  assert os.path.basename(writer.path).startswith("events.out.tfevents.")
  assert read(tmp_path / "a" / "b") == expected


def test_non_finite_and_out_of_range_values(tmp_path):
  values = [math.nan, math.inf, -math.inf, 1e39, -1e39, 1e-46, 3.4028235e38]
  with tb.EventFileWriter(tmp_path) as writer:
    for step, value in enumerate(values):
      writer.scalar("x", value, step)
  got = [v for _, v in read_classic(tmp_path)["x"]]
  assert math.isnan(got[0])
  assert got[1:5] == [math.inf, -math.inf, math.inf, -math.inf]  # beyond float32: ±inf
  assert got[5:] == [0.0, f32(3.4028235e38)]


def test_writers_get_distinct_files_in_the_order_tensorboard_reads_them(tmp_path):
  # tensorboardX names a file by the second it was opened: two writers in one second would
  # share a name (the second truncating the first) without the writer's suffix.
  writers = [tb.EventFileWriter(tmp_path, first_step=i) for i in range(3)]
  for i, writer in enumerate(writers):
    writer.scalar("a", float(i), i)
    writer.close()
  assert sorted(os.listdir(tmp_path)) == [os.path.basename(w.path) for w in writers]
  assert read_classic(tmp_path) == {"a": [(0, 0.0), (1, 1.0), (2, 2.0)]}


@READERS
def test_a_resumed_writer_hides_the_steps_it_logs_again(tmp_path, read):
  with tb.EventFileWriter(tmp_path) as killed:  # checkpoint at 10, logged on to 20
    first = write_curves(killed, range(21))
  with tb.EventFileWriter(tmp_path, first_step=11) as resumed:  # killed again after 18
    second = write_curves(resumed, range(11, 19), offset=100.0)
  with tb.EventFileWriter(tmp_path, first_step=16) as last:  # from the checkpoint at 15
    third = write_curves(last, range(16, 23), offset=200.0)
  got = read(tmp_path)
  assert got == merged((0, first), (11, second), (16, third))
  assert [s for s, _ in got["train/loss"]] == list(range(23))  # each step once


@READERS
def test_a_resume_over_files_without_a_start_marker(tmp_path, read):
  # As the files this module wrote before tensorboardX, or any writer's without purge_step.
  with tensorboardX.SummaryWriter(str(tmp_path), filename_suffix=".0") as killed:
    for step in range(21):
      killed.add_scalar("loss", float(step), step)
  with tb.EventFileWriter(tmp_path, first_step=11) as resumed:
    for step in range(11, 16):
      resumed.scalar("loss", 100.0 + step, step)
  assert read(tmp_path) == {"loss": [(s, float(s) if s < 11 else 100.0 + s) for s in range(16)]}


@READERS
def test_metric_writer_resume_shows_what_metrics_jsonl_holds(tmp_path, read):
  def log(writer, steps, offset):
    for step in steps:
      writer.write_row(step, {"train/loss": offset + step / 7, "diverged": True, "note": "x",
                              "valid/accuracy": math.nan if step == 3 else 0.5 + step / 100})
    writer.close()

  log(metrics_io.MetricWriter(str(tmp_path)), range(21), 0.0)
  log(metrics_io.MetricWriter(str(tmp_path), resume_step=10), range(11, 15), 100.0)
  rows = metrics_io.read_rows(str(tmp_path / metrics_io.METRICS))
  assert [r["step"] for r in rows] == list(range(15))
  expected = {
      tag: [(r["step"], f32(r[tag])) for r in rows if math.isfinite(r[tag])]
      for tag in ("train/loss", "valid/accuracy")}  # numbers only, finite only
  assert read(tmp_path / "tensorboard") == expected
  # Starting over without a checkpoint: the old event files go with the old rows.
  log(metrics_io.MetricWriter(str(tmp_path)), range(2), 50.0)
  assert read(tmp_path / "tensorboard")["train/loss"] == [(0, 50.0), (1, f32(50 + 1 / 7))]


def test_bad_steps_tags_and_a_closed_writer_are_refused(tmp_path):
  writer = tb.EventFileWriter(tmp_path)
  with pytest.raises(ValueError, match="int64"):
    writer.scalar("s", 1.0, 2**63)
  with pytest.raises(TypeError, match="integer"):
    writer.scalar("s", 1.0, 3.0)
  with pytest.raises(TypeError, match="tag must be a str"):
    writer.scalars(0, {"ok": 1.0, 1: 2.0})
  with pytest.raises(TypeError, match="integer"):
    tb.EventFileWriter(tmp_path, first_step=1.5)
  writer.scalar("s", 1.0, 0)
  writer.close()
  writer.close()
  writer.flush()
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("s", 1.0, 2)
  assert read_classic(tmp_path) == {"s": [(0, 1.0)]}  # nothing of the refused calls
