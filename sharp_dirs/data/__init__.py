"""Data of the paper, offline first, through tensorflow-datasets data sources.

Public API:
- ``load_dataset(name, *, data_dir=None, data_seed=0, ...) -> Dataset``, ``DATASETS``;
- ``epoch_batches``, ``batch_stream``, ``num_steps_per_epoch`` (deterministic, resumable);
- ``augment_batch`` (jit: shifts with edge fill + flips), ``center_stats``;
- ``hessian_sample`` (fresh augmented or fixed sample, leaves [num_batches, batch_size, ...]);
- ``lm_epoch_batches``, ``lm_windows`` for language models;
- ``shard_batch(batch, mesh)``;
- ``prepare_fashion_mnist``, ``fetch_janeaustenr``, ``default_data_dir``,
  ``DatasetNotFoundError``.

Data dir: ``data_dir=`` argument, else ``$SHARP_DIRS_DATA_DIR``, else
``~/.cache/sharp_dirs/tensorflow_datasets``. ``python -m sharp_dirs.data prepare`` prepares
Fashion-MNIST there and fetches the Jane Austen corpus.
"""

from sharp_dirs.data.augment import augment_batch
from sharp_dirs.data.augment import center_stats
from sharp_dirs.data.augment import max_shifts
from sharp_dirs.data.augment import shift_images
from sharp_dirs.data.fashion_mnist import FashionMnistIdx
from sharp_dirs.data.fashion_mnist import prepare as prepare_fashion_mnist
from sharp_dirs.data.paths import DatasetNotFoundError
from sharp_dirs.data.paths import default_data_dir
from sharp_dirs.data.pipeline import batch_key
from sharp_dirs.data.pipeline import batch_stream
from sharp_dirs.data.pipeline import Dataset
from sharp_dirs.data.pipeline import DATASETS
from sharp_dirs.data.pipeline import epoch_batches
from sharp_dirs.data.pipeline import epoch_permutation
from sharp_dirs.data.pipeline import hessian_sample
from sharp_dirs.data.pipeline import load_dataset
from sharp_dirs.data.pipeline import num_hessian_batches
from sharp_dirs.data.pipeline import num_steps_per_epoch
from sharp_dirs.data.pipeline import shard_batch
from sharp_dirs.data.pipeline import train_valid_split
from sharp_dirs.data.text import fetch_janeaustenr
from sharp_dirs.data.text import lm_epoch_batches
from sharp_dirs.data.text import lm_num_steps_per_epoch
from sharp_dirs.data.text import lm_windows
