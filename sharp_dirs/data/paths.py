"""Where data lives, and the error raised when it is not there.

Directories, first match wins:
- data dir (prepared tfds datasets, array_record): the ``data_dir`` argument, else
  ``$SHARP_DIRS_DATA_DIR``, else ``<cache dir>/tensorflow_datasets``;
- cache dir (extracted Debian packages such as r-cran-janeaustenr): ``$SHARP_DIRS_CACHE_DIR``,
  else ``~/.cache/sharp_dirs``.

Nothing here touches the network.
"""

import os
from typing import Optional

DATA_DIR_ENV = "SHARP_DIRS_DATA_DIR"
CACHE_DIR_ENV = "SHARP_DIRS_CACHE_DIR"

# Debian's `dataset-fashion-mnist` package installs the four IDX files here.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not available offline; the message says how to get it."""


def cache_dir() -> str:
  """``$SHARP_DIRS_CACHE_DIR`` or ``~/.cache/sharp_dirs``."""
  return os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or "~/.cache/sharp_dirs")


def default_data_dir() -> str:
  """``$SHARP_DIRS_DATA_DIR`` or ``<cache dir>/tensorflow_datasets``."""
  env = os.environ.get(DATA_DIR_ENV)
  return os.path.expanduser(env) if env else os.path.join(cache_dir(), "tensorflow_datasets")


def resolve_data_dir(data_dir: Optional[str] = None) -> str:
  """The data dir to use: ``data_dir`` when given, else ``default_data_dir()``."""
  return os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()
