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

Imports are lazy (PEP 562): ``from sharp_dirs import data`` costs nothing until a name is used,
so ``import sharp_dirs`` does not pay for tensorflow-datasets.
"""

from sharp_dirs import lazy

_EXPORTS = {
    "augment_batch": ("sharp_dirs.data.augment", "augment_batch"),
    "center_stats": ("sharp_dirs.data.augment", "center_stats"),
    "max_shifts": ("sharp_dirs.data.augment", "max_shifts"),
    "shift_images": ("sharp_dirs.data.augment", "shift_images"),
    "FashionMnistIdx": ("sharp_dirs.data.fashion_mnist", "FashionMnistIdx"),
    "prepare_fashion_mnist": ("sharp_dirs.data.fashion_mnist", "prepare"),
    "DatasetNotFoundError": ("sharp_dirs.data.paths", "DatasetNotFoundError"),
    "default_data_dir": ("sharp_dirs.data.paths", "default_data_dir"),
    "batch_key": ("sharp_dirs.data.pipeline", "batch_key"),
    "batch_stream": ("sharp_dirs.data.pipeline", "batch_stream"),
    "Dataset": ("sharp_dirs.data.pipeline", "Dataset"),
    "DATASETS": ("sharp_dirs.data.pipeline", "DATASETS"),
    "epoch_batches": ("sharp_dirs.data.pipeline", "epoch_batches"),
    "epoch_permutation": ("sharp_dirs.data.pipeline", "epoch_permutation"),
    "hessian_sample": ("sharp_dirs.data.pipeline", "hessian_sample"),
    "load_dataset": ("sharp_dirs.data.pipeline", "load_dataset"),
    "num_hessian_batches": ("sharp_dirs.data.pipeline", "num_hessian_batches"),
    "num_steps_per_epoch": ("sharp_dirs.data.pipeline", "num_steps_per_epoch"),
    "shard_batch": ("sharp_dirs.data.pipeline", "shard_batch"),
    "train_valid_split": ("sharp_dirs.data.pipeline", "train_valid_split"),
    "fetch_janeaustenr": ("sharp_dirs.data.text", "fetch_janeaustenr"),
    "lm_epoch_batches": ("sharp_dirs.data.text", "lm_epoch_batches"),
    "lm_num_steps_per_epoch": ("sharp_dirs.data.text", "lm_num_steps_per_epoch"),
    "lm_windows": ("sharp_dirs.data.text", "lm_windows"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy.attach(globals(), _EXPORTS)
