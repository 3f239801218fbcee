"""TensorBoard event files: CRC32C vectors, writer -> reader round trips, corruption, and the
files read back by tensorboard's own EventAccumulator and its generated Event proto."""

# The record framing and the field parser are checked directly.
# pylint: disable=protected-access
import math
import os
import re
import struct
import time

import numpy as np
import pytest

from sharp_dirs.engine import tensorboard as tb


def _f32(x):
  return float(np.float32(x))


def _write_curves(logdir, num_steps=300, **writer_kwargs):
  """Writes three curves (two per step via ``scalars``, one via ``scalar``); returns them."""
  rng = np.random.default_rng(0)
  expected = {"train/loss": [], "train/acc": [], "hessian/lambda_1": []}
  with tb.EventFileWriter(logdir, **writer_kwargs) as writer:
    for step in range(num_steps):
      loss, acc = rng.normal() * 10.0 ** rng.integers(-30, 30), rng.uniform()
      writer.scalars(step, {"train/loss": loss, "train/acc": np.float64(acc)})
      expected["train/loss"].append((step, _f32(loss)))
      expected["train/acc"].append((step, _f32(acc)))
      if step % 7 == 0:
        writer.scalar("hessian/lambda_1", np.float32(step / 3), step=np.int64(step))
        expected["hessian/lambda_1"].append((step, _f32(step / 3)))
  return writer.path, expected


# ------------------------------------------------------------------------------------ CRC32C


@pytest.mark.parametrize("data, crc", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),  # The CRC catalogue's check value for CRC-32/ISCSI.
    (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) B.4: 32 bytes of zeros,
    (b"\xff" * 32, 0x62A8AB43),  # 32 bytes of ones,
    (bytes(range(32)), 0x46DD794E),  # incrementing,
    (bytes(range(31, -1, -1)), 0x113FDB5C),  # decrementing.
])
def test_crc32c_published_vectors(data, crc):
  assert tb.crc32c(data) == crc
  assert tb.crc32c(data[5:], tb.crc32c(data[:5])) == crc  # continuing from a prefix


def test_masked_crc32c():
  crc = tb.crc32c(b"123456789")
  rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
  assert tb.masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) & 0xFFFFFFFF
  assert tb.masked_crc32c(b"") == 0xA282EAD8


# ------------------------------------------------------------------------- writer / reader


def test_round_trip_many_records(tmp_path):
  path, expected = _write_curves(tmp_path / "run")
  name = os.path.basename(path)
  assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+\.%d\.\d+" % os.getpid(), name), name
  assert tb.read_scalars(path) == expected
  assert tb.read_scalars(tmp_path / "run") == expected  # the directory form


def test_file_starts_with_file_version_event(tmp_path):
  with tb.EventFileWriter(tmp_path, filename_suffix=".v2") as writer:
    pass
  assert writer.path.endswith(".v2")
  records = list(tb._records(writer.path))
  assert len(records) == 1
  fields = {field: value for field, _, value in tb._fields(records[0][1])}
  assert fields[3] == b"brain.Event:2"
  assert abs(struct.unpack("<d", fields[1])[0] - time.time()) < 60
  assert tb.read_scalars(writer.path) == {}


def test_steps_int64_range_and_wall_time(tmp_path):
  steps = [0, 1, -1, 127, 128, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]
  with tb.EventFileWriter(tmp_path) as writer:
    for step in steps:
      writer.scalar("s", 1.5, step, wall_time=1234.5)
    with pytest.raises(ValueError, match="int64"):
      writer.scalar("s", 1.0, 2**63)
    with pytest.raises(TypeError, match="integer"):
      writer.scalar("s", 1.0, 3.0)
    with pytest.raises(TypeError, match="tag"):
      writer.scalars(0, {1: 2.0})
  assert tb.read_scalars(tmp_path) == {"s": [(s, 1.5) for s in steps]}


def test_non_finite_values_are_written(tmp_path):
  values = [math.nan, math.inf, -math.inf, 1e39, -1e39, -0.0, 1e-46, 3.4028235e38]
  with tb.EventFileWriter(tmp_path) as writer:
    for step, value in enumerate(values):
      writer.scalar("x", value, step)
  got = [v for _, v in tb.read_scalars(tmp_path)["x"]]
  assert math.isnan(got[0])
  assert got[1:5] == [math.inf, -math.inf, math.inf, -math.inf]  # beyond float32: ±inf
  assert math.copysign(1.0, got[5]) == -1.0 and got[6] == 0.0
  assert got[7] == _f32(3.4028235e38)


def test_writes_are_buffered_until_flush(tmp_path):
  writer = tb.EventFileWriter(tmp_path / "a" / "b")  # creates parents
  writer.scalar("loss", 2.0, 1)
  assert tb.read_scalars(writer.path) == {}
  writer.flush()
  assert tb.read_scalars(writer.path) == {"loss": [(1, 2.0)]}
  writer.close()
  writer.close()
  writer.flush()
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("loss", 1.0, 2)


def test_writers_in_one_directory_get_distinct_files(tmp_path):
  with tb.EventFileWriter(tmp_path) as w1, tb.EventFileWriter(tmp_path) as w2:
    w1.scalar("a", 1.0, 0)
    w2.scalar("a", 2.0, 1)
  assert w1.path != w2.path
  (tmp_path / "notes.txt").write_text("not an event file")
  assert tb.read_scalars(tmp_path) == {"a": [(0, 1.0), (1, 2.0)]}
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no event file"):
    tb.read_scalars(tmp_path / "empty")


# ------------------------------------------------------------------------------- corruption


def _corrupted_copy(path, tmp_path, edit):
  blob = bytearray(open(path, "rb").read())
  blob = edit(blob)
  out = tmp_path / "corrupted.tfevents"
  out.write_bytes(bytes(blob))
  return out


def _flip(offset):
  def edit(blob):
    blob[offset if offset >= 0 else len(blob) + offset] ^= 0x04
    return blob
  return edit


def test_corrupted_bytes_raise_a_clear_error(tmp_path):
  path, _ = _write_curves(tmp_path / "run", num_steps=20)
  first_len = 12 + len(list(tb._records(path))[0][1]) + 4
  cases = [
      (_flip(-6), r"record at byte \d+ fails its data CRC check"),  # in the last value
      (_flip(-1), r"fails its data CRC check"),  # in the last data CRC
      (_flip(first_len + 2), r"record at byte %d fails its length CRC check" % first_len),
      (_flip(first_len + 9), r"record at byte %d fails its length CRC check" % first_len),
      (_flip(20), r"record at byte 0 fails its data CRC check"),  # in the file version
      (lambda blob: blob[:-3], r"truncated"),
      (lambda blob: blob + bytes(5), r"truncated"),
  ]
  for edit, message in cases:
    with pytest.raises(tb.CorruptedRecordError, match=message) as info:
      tb.read_scalars(_corrupted_copy(path, tmp_path, edit))
    assert "corrupted.tfevents" in str(info.value)


def test_record_that_is_not_an_event(tmp_path):
  path = tmp_path / "events.out.tfevents.bad"
  path.write_bytes(tb._record(b"\x2a\x80"))
  with pytest.raises(tb.CorruptedRecordError, match="not a valid Event"):
    tb.read_scalars(path)


# ------------------------------------------------------------- tensorboard as the reference


def test_tensorboard_event_accumulator_reads_the_run(tmp_path):
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  _, expected = _write_curves(tmp_path / "run")
  acc = event_accumulator.EventAccumulator(
      str(tmp_path / "run"), size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == sorted(expected)
  assert acc.file_version == 2.0
  for tag, curve in expected.items():
    events = acc.Scalars(tag)
    assert [(e.step, e.value) for e in events] == curve  # all records: none dropped on a CRC
  assert acc.Scalars("train/acc")[0].wall_time == pytest.approx(time.time(), abs=60)


def test_tensorboard_event_proto_parses_every_record(tmp_path):
  event_pb2 = pytest.importorskip("tensorboard.compat.proto.event_pb2")
  event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
  with tb.EventFileWriter(tmp_path) as writer:
    writer.scalar("loss", 0.25, 3, wall_time=100.5)
    writer.scalars(-(2**40), {"a/b": math.inf, "ü": 0.0}, wall_time=0.0)
  records = list(event_file_loader.RawEventFileLoader(writer.path).Load())  # checks CRCs
  assert records == [data for _, data in tb._records(writer.path)]
  events = [event_pb2.Event.FromString(record) for record in records]
  assert events[0].file_version == "brain.Event:2" and events[0].wall_time > 0
  expected = [
      event_pb2.Event(wall_time=100.5, step=3),
      event_pb2.Event(wall_time=0.0, step=-(2**40)),
  ]
  expected[0].summary.value.add(tag="loss", simple_value=0.25)
  expected[1].summary.value.add(tag="a/b", simple_value=math.inf)
  expected[1].summary.value.add(tag="ü", simple_value=0.0)
  assert events[1:] == expected


def test_reader_reads_tensorboards_own_writer(tmp_path):
  event_pb2 = pytest.importorskip("tensorboard.compat.proto.event_pb2")
  summary_pb2 = pytest.importorskip("tensorboard.compat.proto.summary_pb2")
  record_writer = pytest.importorskip("tensorboard.summary.writer.record_writer")
  path = tmp_path / "events.out.tfevents.0.host"
  with open(path, "wb") as f:
    writer = record_writer.RecordWriter(f)
    writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
    for step in range(5):
      summary = summary_pb2.Summary(value=[
          summary_pb2.Summary.Value(tag="x", simple_value=step / 3),
          summary_pb2.Summary.Value(tag="img", image=summary_pb2.Summary.Image(height=1)),
      ])
      writer.write(event_pb2.Event(wall_time=2.0, step=step, summary=summary).SerializeToString())
  assert tb.read_scalars(path) == {"x": [(s, _f32(s / 3)) for s in range(5)]}
