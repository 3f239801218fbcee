"""TensorBoard scalar event files without TensorFlow: a writer and a minimal reader.

``tensorboard --logdir runs`` shows the scalar curves of every directory under ``runs`` that
holds an ``events.out.tfevents.*`` file. Such a file is a sequence of TFRecords, each a
serialized ``Event`` protobuf (tensorflow/core/util/event.proto); the first one carries
``file_version = "brain.Event:2"``, every later one a ``Summary`` of ``(tag, simple_value)``
pairs at one ``step``. The few protobuf messages needed are hand-encoded here, and CRC32C is pure
Python (event files are small), so neither TensorFlow, ``tensorboard`` nor ``protobuf`` is needed.

Usage::

  with EventFileWriter("runs/sgd_lr0.1") as writer:
    for step in range(num_steps):
      ...
      writer.scalars(step, {"train/loss": loss, "hessian/lambda_1": lam})

  curves = read_scalars("runs/sgd_lr0.1")  # {"train/loss": [(0, 2.31), ...], ...}

Record framing (all integers little-endian)::

  uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)``, ``c = crc32c(x)``.
"""

import itertools
import math
import operator
import os
import socket
import struct
import time
from typing import Iterator, Mapping, Optional, Union

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_file_counter = itertools.count()  # Distinguishes files created in the same second by a process.


class CorruptedRecordError(ValueError):
  """An event file's record fails its CRC check, is truncated, or does not parse."""


# ------------------------------------------------------------------------------------ CRC32C


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected.
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
  """CRC-32C (Castagnoli) of ``data``, continuing from ``crc`` (the CRC of the bytes before).

  Args:
    data: the bytes to checksum.
    crc: CRC-32C of a prefix; 0 to start.

  Returns:
    The CRC as an unsigned 32-bit int; ``crc32c(b"123456789") == 0xE3069283``.
  """
  table = _CRC32C_TABLE
  crc ^= _U32
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum: CRC-32C rotated right by 15 bits plus 0xa282ead8 (mod 2**32)."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


# --------------------------------------------------------------------- protobuf wire format


def _varint(value: int) -> bytes:
  """Base-128 varint; a negative int64 is encoded as its two's complement (10 bytes)."""
  value &= _U64
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _int64_field(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(value)


def _double_field(field: int, value: float) -> bytes:
  return _key(field, 1) + struct.pack("<d", value)


def _bytes_field(field: int, value: bytes) -> bytes:
  return _key(field, 2) + _varint(len(value)) + value


def _float_field(field: int, value: float) -> bytes:
  """A ``float`` (fixed32) field; finite values beyond float32's range become ±inf."""
  try:
    packed = struct.pack("<f", value)
  except OverflowError:
    packed = struct.pack("<f", math.copysign(math.inf, value))
  return _key(field, 5) + packed


def _event(wall_time: float, step: int = 0, file_version: Optional[str] = None,
           values: Mapping[str, float] = ()) -> bytes:
  """Serialized ``Event{wall_time=1, step=2, file_version=3, summary=5}`` with
  ``Summary{repeated Value value=1}`` and ``Value{tag=1, simple_value=2}``."""
  out = [_double_field(1, wall_time)]
  if step:
    out.append(_int64_field(2, step))
  if file_version is not None:
    out.append(_bytes_field(3, file_version.encode()))
  if values:
    summary = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _float_field(2, value))
        for tag, value in values.items())
    out.append(_bytes_field(5, summary))
  return b"".join(out)


def _record(data: bytes) -> bytes:
  """``data`` framed as one TFRecord."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    if pos >= len(data) or shift > 63:
      raise ValueError("truncated or overlong varint")
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value & _U64, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, Union[int, bytes]]]:
  """Yields ``(field number, wire type, value)`` of a serialized message: varints as unsigned
  ints, fixed64/fixed32 as their raw 8/4 bytes, length-delimited fields as bytes."""
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, pos = _read_varint(data, pos)
    elif wire_type in (1, 2, 5):
      if wire_type == 2:
        size, pos = _read_varint(data, pos)
      else:
        size = 8 if wire_type == 1 else 4
      if pos + size > len(data):
        raise ValueError(f"field {field} runs past the end of the message")
      value, pos = data[pos:pos + size], pos + size
    else:
      raise ValueError(f"unsupported wire type {wire_type} (field {field})")
    yield field, wire_type, value


# -------------------------------------------------------------------------------- writer


class EventFileWriter:
  """Writes scalars to a new TensorBoard event file in ``logdir``.

  The file is ``events.out.tfevents.<time>.<hostname>.<pid>.<counter><filename_suffix>`` and
  starts with the file-version event. Records are buffered; ``flush()`` (or ``close()``, or
  leaving the ``with`` block) writes them out, so call it wherever the curves should be
  visible to a running TensorBoard.

  Attributes:
    logdir: the directory of the file (one TensorBoard run).
    path: the event file's path.
  """

  def __init__(self, logdir: str, filename_suffix: str = ""):
    """Creates ``logdir`` (with its parents) and the event file.

    Args:
      logdir: directory of the run; created if missing.
      filename_suffix: appended to the file name.
    """
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    name = "events.out.tfevents.{:010d}.{}.{}.{}{}".format(
        int(time.time()), socket.gethostname(), os.getpid(), next(_file_counter),
        filename_suffix)
    self.path = os.path.join(self.logdir, name)
    self._file = open(self.path, "xb")  # pylint: disable=consider-using-with
    self._file.write(_record(_event(time.time(), file_version=FILE_VERSION)))
    self._file.flush()

  def scalar(self, tag: str, value: float, step: int,
             wall_time: Optional[float] = None) -> None:
    """Records ``value`` (stored as float32; NaN and ±inf included) for ``tag`` at ``step``.

    Args:
      tag: the curve's name, e.g. ``"train/loss"`` (TensorBoard groups by the prefix).
      value: a real number: a Python/NumPy scalar or a 0-d array.
      step: the x coordinate, an int64.
      wall_time: seconds since the epoch; now by default.
    """
    self.scalars(step, {tag: value}, wall_time)

  def scalars(self, step: int, mapping: Mapping[str, float],
              wall_time: Optional[float] = None) -> None:
    """Records several scalars at one ``step`` (one event, one wall time).

    Args:
      step: the x coordinate, an int64.
      mapping: tag -> value, as in ``scalar``.
      wall_time: seconds since the epoch; now by default.
    """
    if self._file.closed:
      raise ValueError(f"EventFileWriter for {self.path} is closed")
    values = {}
    for tag, value in mapping.items():
      if not isinstance(tag, str):
        raise TypeError(f"tag must be a str, got {tag!r}")
      values[tag] = float(value)
    if not values:
      return
    step = _as_int64(step)
    wall_time = time.time() if wall_time is None else float(wall_time)
    self._file.write(_record(_event(wall_time, step, values=values)))

  def flush(self) -> None:
    """Writes the buffered records to the file."""
    if not self._file.closed:
      self._file.flush()

  def close(self) -> None:
    """Flushes and closes the file; later ``close`` calls do nothing."""
    self._file.close()

  def __enter__(self) -> "EventFileWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __repr__(self) -> str:
    return f"EventFileWriter({self.path!r})"


def _as_int64(step: int) -> int:
  try:
    step = operator.index(step)  # ints, NumPy/JAX integer scalars; not floats.
  except TypeError:
    raise TypeError(f"step must be an integer, got {step!r}") from None
  if not -(1 << 63) <= step < (1 << 63):
    raise ValueError(f"step {step} does not fit in int64")
  return step


# -------------------------------------------------------------------------------- reader


def _records(path: str) -> Iterator[tuple[int, bytes]]:
  """Yields ``(offset, data)`` of each TFRecord of the file, checking both CRCs."""
  with open(path, "rb") as f:
    blob = f.read()
  pos = 0
  while pos < len(blob):
    if pos + 12 > len(blob):
      raise CorruptedRecordError(
          f"{path}: record at byte {pos} is truncated (header has {len(blob) - pos} of 12 "
          "bytes; the file is being written or was cut short)")
    header = blob[pos:pos + 8]
    if struct.unpack("<I", blob[pos + 8:pos + 12])[0] != masked_crc32c(header):
      raise CorruptedRecordError(f"{path}: record at byte {pos} fails its length CRC check")
    (length,) = struct.unpack("<Q", header)
    end = pos + 12 + length + 4
    if end > len(blob):
      raise CorruptedRecordError(
          f"{path}: record at byte {pos} is truncated (needs {end - pos} bytes, "
          f"{len(blob) - pos} left; the file is being written or was cut short)")
    data = blob[pos + 12:end - 4]
    if struct.unpack("<I", blob[end - 4:end])[0] != masked_crc32c(data):
      raise CorruptedRecordError(f"{path}: record at byte {pos} fails its data CRC check")
    yield pos, data
    pos = end


def _event_scalars(data: bytes) -> tuple[int, list[tuple[str, float]]]:
  """``(step, [(tag, simple_value), ...])`` of a serialized Event; values of other kinds
  (images, histograms, tensors) are skipped."""
  step, found = 0, []
  for field, wire_type, value in _fields(data):
    if field == 2 and wire_type == 0:
      step = value - (1 << 64) if value >> 63 else value
    elif field == 5 and wire_type == 2:
      for v_field, v_type, summary_value in _fields(value):
        if v_field != 1 or v_type != 2:
          continue
        tag, simple_value = None, None
        for s_field, s_type, s_value in _fields(summary_value):
          if s_field == 1 and s_type == 2:
            tag = s_value.decode()
          elif s_field == 2 and s_type == 5:
            (simple_value,) = struct.unpack("<f", s_value)
        if tag is not None and simple_value is not None:
          found.append((tag, simple_value))
  return step, found


def read_scalars(path_or_logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Reads the ``simple_value`` scalars of an event file, or of all event files in a directory.

  A directory's files (``*tfevents*`` directly in it, not in subdirectories) are read in name
  order, i.e. in order of creation time. Only ``simple_value`` scalars are read (what
  ``EventFileWriter``, PyTorch's and TF1's writers produce), not TF2's tensor summaries.

  Args:
    path_or_logdir: an event file, or a run directory.

  Returns:
    tag -> ``[(step, value), ...]`` in the order written; values are the stored float32s as
    Python floats.

  Raises:
    CorruptedRecordError: a record fails a CRC check, is truncated, or does not parse.
    FileNotFoundError: the path does not exist, or the directory has no event file.
  """
  path_or_logdir = os.fspath(path_or_logdir)
  if os.path.isdir(path_or_logdir):
    paths = [os.path.join(path_or_logdir, name) for name in sorted(os.listdir(path_or_logdir))
             if "tfevents" in name and os.path.isfile(os.path.join(path_or_logdir, name))]
    if not paths:
      raise FileNotFoundError(f"no event file (*tfevents*) in {path_or_logdir}")
  else:
    paths = [path_or_logdir]
  curves: dict[str, list[tuple[int, float]]] = {}
  for path in paths:
    for offset, data in _records(path):
      try:
        step, values = _event_scalars(data)
      except (ValueError, UnicodeDecodeError) as e:
        raise CorruptedRecordError(
            f"{path}: record at byte {offset} is not a valid Event: {e}") from e
      for tag, value in values:
        curves.setdefault(tag, []).append((step, value))
  return curves
