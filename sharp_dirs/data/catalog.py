"""Datasets of the tfds catalog (CIFAR-10/100, IMDB reviews) read through array_record data sources.

These must already be prepared in the data dir (``tfds build`` on a machine with internet, then
copy the data dir). Before tfds is asked for anything we check the files ourselves, so a missing
dataset raises ``DatasetNotFoundError`` at once with the commands to fix it, instead of tfds'
download attempt (which hangs for minutes without internet) or a deep traceback.
"""

import json
import os
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from sharp_dirs.data import paths

_READ_CHUNK = 10_000


def builder_dir(tfds_name: str, data_dir: Optional[str] = None) -> str:
  """``<data dir>/<name>[/<config>]/<version>`` for the catalog code's default version/config."""
  cls = tfds.builder_cls(tfds_name)
  configs = getattr(cls, "BUILDER_CONFIGS", None) or []
  config = configs[0] if configs else None
  version = (config.version if config is not None and config.version else None) or cls.VERSION
  parts = [paths.resolve_data_dir(data_dir), tfds_name]
  if config is not None:
    parts.append(config.name)
  return os.path.join(*parts, str(version))


def _how_to_get(tfds_name: str, data_dir: str) -> str:
  return (
      f"On a machine with internet run\n"
      f"  pip install tensorflow-datasets tensorflow && "
      f"tfds build {tfds_name} --file_format=array_record --data_dir=/tmp/tfds\n"
      f"then copy /tmp/tfds/{tfds_name} to {data_dir}/{tfds_name} here (or set "
      f"${paths.DATA_DIR_ENV} / pass data_dir= to a directory that holds it).")


def check_prepared(tfds_name: str, data_dir: Optional[str] = None) -> str:
  """Returns the prepared dataset's directory, or raises ``DatasetNotFoundError`` quickly.

  Prepared means ``dataset_info.json`` of the code's version is present, records the
  array_record file format (data sources cannot read tfrecord files) and its splits, and every
  data file (shard) of those splits is there.
  """
  data_dir = paths.resolve_data_dir(data_dir)
  path = builder_dir(tfds_name, data_dir)
  info_path = os.path.join(path, "dataset_info.json")
  if not os.path.isfile(info_path):
    found = ""
    base = os.path.join(data_dir, tfds_name)
    if os.path.isdir(base):
      found = f" (found only {sorted(os.listdir(base))} under {base})"
    raise paths.DatasetNotFoundError(
        f"tfds dataset '{tfds_name}' is not prepared in {path}{found}.\n"
        + _how_to_get(tfds_name, data_dir))
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  file_format = info.get("fileFormat", "tfrecord")
  if file_format != "array_record":
    raise paths.DatasetNotFoundError(
        f"tfds dataset '{tfds_name}' in {path} is stored as {file_format}; data sources need "
        f"array_record. Convert it (needs TensorFlow):\n  tfds convert_format "
        f"--dataset_version_dir={path} --out_file_format=array_record --out_dir={path}_ar\n"
        f"and replace {path} by {path}_ar, or rebuild it with --file_format=array_record.")
  missing = missing_data_files(path, tfds_name, info)
  if missing:
    raise paths.DatasetNotFoundError(
        f"tfds dataset '{tfds_name}' in {path} has its dataset_info.json but lacks data files: "
        f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} ({len(missing)} missing). "
        f"The copy or the preparation was incomplete; copy the whole directory again.\n"
        + _how_to_get(tfds_name, data_dir))
  return path


def missing_data_files(path: str, tfds_name: str, info: dict) -> list[str]:
  """The array_record shards that ``info`` (dataset_info.json) lists but ``path`` lacks.

  A dataset_info.json without splits lists nothing, so it counts as one missing file.
  """
  splits = info.get("splits") or []
  if not splits:
    return ["(dataset_info.json records no splits)"]
  missing = []
  for split in splits:
    template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    num_shards = len(split.get("shardLengths") or [0])
    for i in range(num_shards):
      name = (template.replace("{DATASET}", tfds_name).replace("{SPLIT}", split["name"])
              .replace("{FILEFORMAT}", "array_record")
              .replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{num_shards:05d}"))
      if not os.path.isfile(os.path.join(path, name)):
        missing.append(name)
  return missing


def data_source(tfds_name: str, split: str, data_dir: Optional[str] = None):
  """The tfds data source of a prepared catalog dataset (never downloads)."""
  data_dir = paths.resolve_data_dir(data_dir)
  check_prepared(tfds_name, data_dir)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  return builder.as_data_source(split=split)


def _read_records(source, keys: Sequence[int]) -> list[Any]:
  try:
    return list(source.__getitems__(list(keys)))  # batched read: ~5x faster than one by one
  except TypeError:  # sources without batched reads (e.g. tfds.testing.mock_data's)
    return [source[i] for i in keys]


def read_all(source, features: Sequence[str]) -> dict[str, np.ndarray]:
  """All examples of a data source as numpy arrays, one per feature (stacked on axis 0).

  String/bytes features come back as an object array of ``str``.
  """
  columns = {k: [] for k in features}
  n = len(source)
  for start in range(0, n, _READ_CHUNK):
    for record in _read_records(source, range(start, min(n, start + _READ_CHUNK))):
      for k in features:
        columns[k].append(record[k])
  out = {}
  for k, values in columns.items():
    if values and isinstance(values[0], (bytes, str, np.bytes_, np.str_)):
      out[k] = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values],
                        dtype=object)
    else:
      out[k] = np.stack(values) if values else np.zeros((0,))
  return out
