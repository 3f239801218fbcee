"""Real Fashion-MNIST offline: Debian's IDX files turned into a tfds array_record dataset.

``apt-get install dataset-fashion-mnist`` puts ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
under ``/usr/share/datasets/fashion-mnist``. ``FashionMnistIdx`` (a tfds ``GeneratorBasedBuilder``
named ``fashion_mnist_idx``) reads them from its manual dir and writes array_record files into the
data dir once (about 20 s); afterwards ``builder.as_data_source(split)`` reads them without
TensorFlow. Nothing is ever downloaded: a missing IDX file raises ``DatasetNotFoundError``.

Images are stored as raw ``uint8 [28, 28, 1]`` byte tensors (not PNG), so reading needs no image
codec, and in the IDX files' order (tfds' shuffling is disabled): the train/valid split by
``data_seed`` then picks the same images as the paper's Keras ``fashion_mnist.load_data()``.
"""

import gzip
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from sharp_dirs.data import paths

NAME = "fashion_mnist_idx"
SPLITS = {"train": "train", "test": "t10k"}  # tfds split -> IDX file prefix
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_INSTALL_HINT = (
    "Install Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`, which puts the IDX "
    "files in /usr/share/datasets/fashion-mnist), or pass the directory holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz as `idx_dir`.")


def idx_files(idx_dir: str, prefix: str) -> tuple[str, str]:
  """(images, labels) IDX paths for ``prefix`` in {'train', 't10k'}."""
  return (os.path.join(idx_dir, f"{prefix}-images-idx3-ubyte.gz"),
          os.path.join(idx_dir, f"{prefix}-labels-idx1-ubyte.gz"))


def read_idx(path: str) -> np.ndarray:
  """An IDX file (optionally gzip'd) of unsigned bytes as a uint8 array of its stored shape.

  IDX: magic ``0x00 0x00 0x08 ndim``, then ``ndim`` big-endian uint32 sizes, then the bytes.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path}: not an IDX file of unsigned bytes")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape}, found {array.size} bytes")
  return array.reshape(shape)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file (gzip'd when ``path`` ends in .gz); tests use it."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


def check_idx_dir(idx_dir: str) -> None:
  """Raises ``DatasetNotFoundError`` unless all four IDX files are in ``idx_dir``."""
  missing = [p for prefix in SPLITS.values() for p in idx_files(idx_dir, prefix)
             if not os.path.isfile(p)]
  if missing:
    raise paths.DatasetNotFoundError(
        f"Fashion-MNIST IDX files not found: {', '.join(missing)}. {_INSTALL_HINT}")


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Fashion-MNIST from local IDX files (manual dir); 60k train, 10k test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Debian dataset-fashion-mnist IDX files, raw uint8 tensors."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTALL_HINT

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al. 2017) read from local IDX files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        disable_shuffling=True,  # keep the IDX order, so a data_seed split matches Keras'
    )

  def _split_generators(self, dl_manager):
    idx_dir = os.fspath(dl_manager.manual_dir)
    check_idx_dir(idx_dir)
    return {split: self._generate_examples(idx_dir, prefix) for split, prefix in SPLITS.items()}

  def _generate_examples(self, idx_dir: str, prefix: str):
    images_path, labels_path = idx_files(idx_dir, prefix)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
      raise ValueError(f"{prefix}: images {images.shape} and labels {labels.shape} do not match "
                       "[N, 28, 28] and [N]")
    for i in range(len(labels)):
      yield i, {"image": images[i, :, :, None], "label": int(labels[i])}


# read_split's last result per (builder dir, split), with the dir's mtime when it was read:
# runs launched one after another in one process (a notebook, a test session) parse the 70k
# records once, and a dataset prepared again replaces its entry.
_READ_CACHE: dict[tuple[str, str], tuple[float, dict[str, np.ndarray]]] = {}


def read_split(builder: FashionMnistIdx, split: str) -> dict[str, np.ndarray]:
  """{'image': uint8 [N, 28, 28, 1], 'label': int64 [N]} of a prepared split (read-only arrays,
  kept for the next call in this process until the prepared files change)."""
  key, mtime = (builder.data_dir, split), os.path.getmtime(builder.data_dir)
  cached = _READ_CACHE.get(key)
  if cached is None or cached[0] != mtime:
    arrays = _parse_split(builder, split)
    for array in arrays.values():
      array.flags.writeable = False
    cached = _READ_CACHE[key] = (mtime, arrays)
  return cached[1]


def _parse_split(builder: FashionMnistIdx, split: str,
                 chunk: int = 10_000) -> dict[str, np.ndarray]:
  """Reads the raw records of the array_record data source and parses the tf.train.Example
  protos directly (image bytes, label int): about 4x faster than tfds' generic decoding."""
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  source = builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  n = len(source)
  images = np.empty((n, 28 * 28), np.uint8)
  labels = np.empty((n,), np.int64)
  for start in range(0, n, chunk):
    records = source.__getitems__(list(range(start, min(n, start + chunk))))
    for i, record in enumerate(records, start=start):
      feature = tf_example_pb2.Example.FromString(record).features.feature
      images[i] = np.frombuffer(feature["image"].bytes_list.value[0], np.uint8)
      labels[i] = feature["label"].int64_list.value[0]
  return {"image": images.reshape(n, 28, 28, 1), "label": labels}


def builder_dir(data_dir: Optional[str] = None) -> str:
  """``<data dir>/fashion_mnist_idx/<version>``: where the prepared files live."""
  return os.path.join(paths.resolve_data_dir(data_dir), NAME, str(FashionMnistIdx.VERSION))


def is_prepared(data_dir: Optional[str] = None) -> bool:
  """Whether ``prepare`` already wrote the dataset into the data dir."""
  return os.path.isfile(os.path.join(builder_dir(data_dir), "dataset_info.json"))


def prepare(data_dir: Optional[str] = None,
            idx_dir: str = paths.DEBIAN_FASHION_MNIST_DIR) -> FashionMnistIdx:
  """Prepares Fashion-MNIST from ``idx_dir`` into the data dir once; returns the builder.

  A no-op (apart from building the object) when the data dir already holds it. Never downloads.

  Raises:
    DatasetNotFoundError: not prepared and ``idx_dir`` lacks the IDX files.
  """
  data_dir = paths.resolve_data_dir(data_dir)
  if not is_prepared(data_dir):
    check_idx_dir(idx_dir)
    os.makedirs(data_dir, exist_ok=True)
    builder = FashionMnistIdx(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_dir=os.path.join(data_dir, "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(idx_dir)))
  return FashionMnistIdx(data_dir=data_dir)
