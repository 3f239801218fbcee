"""One entry point, ``load_dataset``, and the batch iterators and Hessian samples built on it.

Batches are dicts of arrays with a leading batch dimension:
- images: {"image": float32 [B, H, W, C], "label": int32 [B]};
- text classification: {"tokens": int32 [B, T], "label": int32 [B]};
- language model: {"inputs": int32 [B, T], "targets": int32 [B, T]}.
To shard over a 'data' mesh axis, B must be divisible by the number of devices on that axis;
``shard_batch`` places a batch with ``NamedSharding(mesh, P('data'))``.

Determinism: the train/valid split depends only on ``data_seed`` (``RandomState(data_seed)``
permutation, as the paper's code); the order of epoch e is a permutation drawn from
``np.random.default_rng([seed, e])``; augmentation of step s of epoch e uses
``fold_in(fold_in(PRNGKey(seed), e), s)``. So any (epoch, step) can be resumed exactly.
"""

import dataclasses
import os
from typing import Any, Iterator, Mapping, Optional

import jax
import numpy as np

from sharp_dirs.data import augment as augment_lib
from sharp_dirs.data import catalog
from sharp_dirs.data import fashion_mnist
from sharp_dirs.data import names
from sharp_dirs.data import paths
from sharp_dirs.data import text

Split = dict[str, np.ndarray]

DATASETS = names.DATASETS
# Paper defaults: validation size (from the 50k / 60k / 25k training sets) and whether the
# paper's training stream augments (CIFAR always; Fashion-MNIST only for the `medium` config).
NUM_VALID = {"fashion_mnist": 10_000, "cifar10": 5_000, "cifar100": 5_000}
IMDB_VALID_FRACTION = 0.1
IMDB_NUM_WORDS, IMDB_MAXLEN = 5000, 400
LM_VOCAB_SIZE = 10_000
AUGMENTED_BY_DEFAULT = {"cifar10": True, "cifar100": True, "fashion_mnist": False,
                        "arrays": False}
ARRAYS_KEYS = ("x_train", "y_train", "x_test", "y_test")
ARRAYS_VALID_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset in memory, split and preprocessed.

  kind: 'image', 'text' (classification) or 'lm'.
  train, valid, test: dicts of numpy arrays with a leading example axis: images
    {'image': float32 [N, H, W, C], 'label': int32 [N]}; text {'tokens': int32 [N, T],
    'label': int32 [N]}; lm {'ids': int32 [num_tokens]} (a token stream; see
    ``text.lm_epoch_batches``).
  num_classes: classes, or the vocabulary size for 'lm'.
  input_shape: one example's shape without batch: (H, W, C), (T,), or () for 'lm'.
  stats: preprocessing facts: images {'preprocessing', 'mean' [H, W, C], 'std'}; text
    {'num_words', 'maxlen'}; lm {'vocab_size'}; plus 'data_seed'.
  vocab: id → word for text and lm, else None.
  augment: whether the paper augments this dataset's training batches by default.
  """
  name: str
  kind: str
  train: Split
  valid: Split
  test: Split
  num_classes: int
  input_shape: tuple
  stats: Mapping[str, Any]
  vocab: Optional[tuple] = None
  augment: bool = False


def _check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def train_valid_split(num_examples: int, num_valid: int, data_seed: int):
  """(train indices, valid indices): ``RandomState(data_seed).permutation``; valid = the last
  ``num_valid`` (the paper's ``rng.choice(n, n, replace=False)`` is this permutation)."""
  if not 0 <= num_valid < num_examples:
    raise ValueError(f"num_valid={num_valid} must be in [0, {num_examples})")
  perm = np.random.RandomState(data_seed).permutation(num_examples)
  return perm[:num_examples - num_valid], perm[num_examples - num_valid:]


def _take(split: Split, idx: np.ndarray) -> Split:
  return {k: v[idx] for k, v in split.items()}


def _image_dataset(name, raw_train, raw_test, num_classes, *, data_seed, num_valid,
                   preprocessing) -> Dataset:
  """Splits uint8 images {'image','label'} and applies the paper's preprocessing."""
  train_idx, valid_idx = train_valid_split(len(raw_train["label"]), num_valid, data_seed)
  splits = {"train": _take(raw_train, train_idx), "valid": _take(raw_train, valid_idx),
            "test": raw_test}
  stats = {"preprocessing": preprocessing, "data_seed": data_seed}
  if preprocessing == "center":
    mean, std = augment_lib.center_stats(splits["train"]["image"])
    stats.update(mean=mean, std=std)
    convert = lambda x: augment_lib.center(x, mean, std)
  elif preprocessing == "01":
    convert = lambda x: np.asarray(x, np.float32) / 255.0
  elif preprocessing == "none":
    convert = lambda x: np.asarray(x, np.float32)
  else:
    raise ValueError(f"preprocessing must be 'center', '01' or 'none', got {preprocessing!r}")
  splits = {k: {"image": convert(s["image"]), "label": np.asarray(s["label"], np.int32)}
            for k, s in splits.items()}
  return Dataset(name=name, kind="image", num_classes=num_classes,
                 input_shape=tuple(raw_test["image"].shape[1:]), stats=stats,
                 augment=AUGMENTED_BY_DEFAULT[name], **splits)


def load_arrays(path: Optional[str]) -> tuple[Split, Split]:
  """Raw {'image', 'label'} train and test splits of a user's images from a .npz file with
  ``x_train`` [N, H, W(, C)], ``y_train`` [N] (integer classes 0..K−1), ``x_test``,
  ``y_test`` (``np.savez(path, x_train=..., ...)``); a missing channel axis is added."""
  fix = (f"dataset 'arrays' reads a .npz file holding {', '.join(ARRAYS_KEYS)}; name it with "
         "data_dir (config.data_dir=/path/to/images.npz)")
  if not path or not os.path.isfile(path):
    raise paths.DatasetNotFoundError(f"{fix}: {path!r} is not a file." if path else f"{fix}.")
  with np.load(path) as f:
    missing = [k for k in ARRAYS_KEYS if k not in f]
    if missing:
      raise ValueError(f"{path} has no {', '.join(missing)}: {fix}.")
    arrays = {k: np.asarray(f[k]) for k in ARRAYS_KEYS}
  splits = []
  for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
    images, labels = arrays[x], arrays[y]
    images = images[..., None] if images.ndim == 3 else images
    if images.ndim != 4 or labels.shape != images.shape[:1]:
      raise ValueError(f"{path}: {x} {arrays[x].shape} and {y} {labels.shape} must be "
                       "[N, H, W(, C)] and [N].")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
      raise ValueError(f"{path}: {y} must hold integer classes 0..K−1, got {labels.dtype} "
                       f"from {labels.min()}.")
    splits.append({"image": images, "label": labels.astype(np.int32)})
  return splits[0], splits[1]


def _load_fashion_mnist(data_dir, source_dir) -> tuple[Split, Split]:
  """Raw uint8 splits from our builder (preparing it from the IDX files once), falling back to
  a prepared catalog ``fashion_mnist``."""
  idx_dir = source_dir or paths.DEBIAN_FASHION_MNIST_DIR
  try:
    builder = fashion_mnist.prepare(data_dir, idx_dir)
  except paths.DatasetNotFoundError as e:
    try:
      catalog.check_prepared("fashion_mnist", data_dir)
    except paths.DatasetNotFoundError:
      raise e from None
    return _load_catalog_images("fashion_mnist", data_dir)
  return tuple(fashion_mnist.read_split(builder, s) for s in ("train", "test"))


def _load_catalog_images(name, data_dir) -> tuple[Split, Split]:
  return tuple(catalog.read_all(catalog.data_source(name, s, data_dir), ("image", "label"))
               for s in ("train", "test"))


def _load_imdb(data_dir, *, data_seed, num_valid, num_words, maxlen) -> Dataset:
  raw = {s: catalog.read_all(catalog.data_source("imdb_reviews", s, data_dir), ("text", "label"))
         for s in ("train", "test")}
  ranks = text.keras_word_ranks(raw["train"]["text"])
  encoded = {s: {"tokens": text.pad_sequences(
                     [text.keras_encode(t, ranks, num_words) for t in r["text"]], maxlen),
                 "label": np.asarray(r["label"], np.int32)} for s, r in raw.items()}
  n = len(encoded["train"]["label"])
  if num_valid is None:
    num_valid = n - int(round((1 - IMDB_VALID_FRACTION) * n))
  train_idx, valid_idx = train_valid_split(n, num_valid, data_seed)
  return Dataset(name="imdb", kind="text", train=_take(encoded["train"], train_idx),
                 valid=_take(encoded["train"], valid_idx), test=encoded["test"], num_classes=2,
                 input_shape=(maxlen,), vocab=text.keras_vocab(ranks, num_words),
                 stats={"num_words": num_words, "maxlen": maxlen, "data_seed": data_seed})


def _lm_dataset(name, streams, vocab_size) -> Dataset:
  vocab = text.build_vocab(streams["train"], vocab_size)
  splits = {s: {"ids": text.encode(toks, vocab)} for s, toks in streams.items()}
  return Dataset(name=name, kind="lm", num_classes=len(vocab), input_shape=(), vocab=vocab,
                 stats={"vocab_size": len(vocab)}, **splits)


def load_dataset(name: str, *, data_dir: Optional[str] = None, data_seed: int = 0,
                 num_valid: Optional[int] = None, preprocessing: str = "center",
                 source_dir: Optional[str] = None, vocab_size: Optional[int] = None,
                 maxlen: int = IMDB_MAXLEN) -> Dataset:
  """Loads one of ``DATASETS`` into memory, split and preprocessed as in the paper.

  Args:
    name: 'fashion_mnist' (offline, Debian IDX files), 'cifar10', 'cifar100', 'imdb' (tfds
      catalog, prepared in the data dir), 'austen' (offline, Debian r-cran-janeaustenr),
      'ptb' (the standard text files in ``source_dir``), 'arrays' (a user's own images: the
      .npz file ``data_dir`` names, ``load_arrays``; 10% of its train split validates).
    data_dir: tfds data dir; default ``$SHARP_DIRS_DATA_DIR`` or
      ``~/.cache/sharp_dirs/tensorflow_datasets``; for 'arrays' the .npz file.
    data_seed: seed of the train/validation split (the paper's code used 777).
    num_valid: validation examples taken from the training set; default 10k Fashion-MNIST, 5k
      CIFAR, 10% IMDB. Ignored for language models (fixed splits).
    preprocessing: images: 'center' (per-pixel mean, global std of the train split), '01'
      (x / 255) or 'none'.
    source_dir: the raw files: Fashion-MNIST IDX dir (default /usr/share/datasets/fashion-mnist),
      the janeaustenr R data dir (default: looked up, see ``text.find_austen_dir``), or the
      PTB dir.
    vocab_size: IMDB ``num_words`` (default 5000) or LM vocabulary (default 10,000).
    maxlen: IMDB sequence length (default 400).

  Returns:
    A ``Dataset``.

  Raises:
    ValueError: unknown ``name``.
    DatasetNotFoundError: the data is not available offline (the message says how to get it).
  """
  _check_name(name)
  if name == "fashion_mnist":
    train, test = _load_fashion_mnist(data_dir, source_dir)
    return _image_dataset(name, train, test, 10, data_seed=data_seed,
                          num_valid=NUM_VALID[name] if num_valid is None else num_valid,
                          preprocessing=preprocessing)
  if name in ("cifar10", "cifar100"):
    train, test = _load_catalog_images(name, data_dir)
    return _image_dataset(name, train, test, 10 if name == "cifar10" else 100,
                          data_seed=data_seed,
                          num_valid=NUM_VALID[name] if num_valid is None else num_valid,
                          preprocessing=preprocessing)
  if name == "arrays":
    train, test = load_arrays(data_dir)
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    return _image_dataset(name, train, test, num_classes, data_seed=data_seed,
                          num_valid=(int(ARRAYS_VALID_FRACTION * len(train["label"]))
                                     if num_valid is None else num_valid),
                          preprocessing=preprocessing)
  if name == "imdb":
    return _load_imdb(data_dir, data_seed=data_seed, num_valid=num_valid,
                      num_words=vocab_size or IMDB_NUM_WORDS, maxlen=maxlen)
  vocab_size = vocab_size or LM_VOCAB_SIZE
  if name == "austen":
    return _lm_dataset(name, text.austen_splits(text.read_austen(source_dir)), vocab_size)
  return _lm_dataset(name, text.read_ptb(source_dir), vocab_size)


# ----------------------------------------------------------------------------------------------
# Epochs

def _check_positive(value, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def num_steps_per_epoch(split: Split, batch_size: int) -> int:
  """⌊N / batch_size⌋: the last partial batch is dropped.

  Raises:
    ValueError: batch_size is not a positive int, or larger than the N examples (an epoch
      would have no batch, and ``batch_stream`` would loop forever).
  """
  _check_positive(batch_size, "batch_size")
  n = len(next(iter(split.values())))
  if batch_size > n:
    raise ValueError(f"batch_size={batch_size} exceeds the {n} examples of the split: an epoch "
                     f"would have no full batch. Use batch_size <= {n}.")
  return n // batch_size


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of ``epoch``: a permutation from ``np.random.default_rng([seed, epoch])``."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_key(seed: int, epoch: int, step: int) -> jax.Array:
  """Augmentation key of (epoch, step): fold_in(fold_in(PRNGKey(seed), epoch), step)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), step)


def epoch_batches(split: Split, batch_size: int, *, seed: int = 0, epoch: int = 0,
                  start_step: int = 0, augment: bool = False,
                  shift_range: float = augment_lib.SHIFT_RANGE, flip: bool = True,
                  subpixel: bool = False) -> Iterator[dict]:
  """The batches of one epoch in shuffled order, from ``start_step`` on.

  Args:
    split: dict of arrays with a leading example axis (e.g. ``dataset.train``).
    batch_size: examples per batch (divisible by the data-parallel device count to shard).
    seed, epoch: the shuffle is ``epoch_permutation(N, seed, epoch)``.
    start_step: first step to yield (resume).
    augment: apply ``augment.augment_batch`` to 'image' with key ``batch_key(seed, epoch, step)``.
    shift_range, flip, subpixel: augmentation options.

  Yields:
    Dicts of [batch_size, ...] arrays (numpy; 'image' is a jax array when augmented).
  """
  perm = epoch_permutation(len(next(iter(split.values()))), seed, epoch)
  for step in range(start_step, num_steps_per_epoch(split, batch_size)):
    batch = _take(split, perm[step * batch_size:(step + 1) * batch_size])
    if augment:
      batch["image"] = augment_lib.augment_batch(
          batch_key(seed, epoch, step), batch["image"], shift_range=shift_range, flip=flip,
          subpixel=subpixel)
    yield batch


def batch_stream(split: Split, batch_size: int, *, seed: int = 0, start_epoch: int = 0,
                 start_step: int = 0, num_epochs: Optional[int] = None,
                 **augment_kwargs) -> Iterator[tuple[int, int, dict]]:
  """(epoch, step, batch) over epochs ``start_epoch, …`` (forever if ``num_epochs`` is None).

  Resuming at (epoch, step) gives exactly the batches an uninterrupted run would have seen.
  ``augment_kwargs`` go to ``epoch_batches``.
  """
  epoch = start_epoch
  while num_epochs is None or epoch < start_epoch + num_epochs:
    first = start_step if epoch == start_epoch else 0
    for step, batch in enumerate(epoch_batches(split, batch_size, seed=seed, epoch=epoch,
                                               start_step=first, **augment_kwargs), start=first):
      yield epoch, step, batch
    epoch += 1


# ----------------------------------------------------------------------------------------------
# Hessian samples

def num_hessian_batches(num_examples: int, batch_size: int) -> int:
  """⌈num_examples / batch_size⌉: the paper draws whole batches until it has ≥ N (2250 → 18)."""
  _check_positive(num_examples, "num_examples")
  _check_positive(batch_size, "batch_size")
  return -(-num_examples // batch_size)


def hessian_sample(split: Split, key: Optional[jax.Array] = None, *, num_examples: int = 2560,
                   batch_size: int = 128, fresh: bool = True, augment: Optional[bool] = None,
                   seed: int = 0, shift_range: float = augment_lib.SHIFT_RANGE,
                   flip: bool = True, subpixel: bool = False) -> dict:
  """Examples for one Hessian evaluation, stacked as batches: leaves [num_batches, batch_size, ...].

  num_batches = ⌈num_examples / batch_size⌉ (whole batches, as the paper: N=2250 gives 18
  batches, 2304 examples; N=2560 gives 20). Examples are distinct (drawn without replacement).

  Args:
    split: dict of arrays with a leading example axis (e.g. ``dataset.train``; for a language
      model use ``text.lm_windows(dataset.train['ids'], num_steps)``).
    key: PRNG key (fresh mode): picks the examples and their augmentation.
    num_examples: N.
    batch_size: examples per stacked batch.
    fresh: True: a new random (augmented) sample per key, as the paper's ``lanczos_aug=True``.
      False: the same subset every call (the first of ``RandomState(seed).permutation``), for
      a fixed-data Hessian; ``key`` is ignored.
    augment: augment 'image'; default: True in fresh mode when the split has images, else False.
      In fixed mode augmentation uses ``PRNGKey(seed)``, so the sample is still fixed.
    seed: the fixed subset's seed.
    shift_range, flip, subpixel: augmentation options (see ``augment.augment_batch``).
  """
  n = len(next(iter(split.values())))
  num_batches = num_hessian_batches(num_examples, batch_size)
  m = num_batches * batch_size
  if m > n:
    raise ValueError(f"{num_batches} batches of {batch_size} = {m} examples > {n} available")
  if fresh:
    if key is None:
      raise ValueError("fresh=True needs a PRNG key")
    key_idx, key_aug = jax.random.split(key)
    idx = np.asarray(jax.random.permutation(key_idx, n)[:m])
  else:
    idx = np.random.RandomState(seed).permutation(n)[:m]
    key_aug = jax.random.PRNGKey(seed)
  sample = _take(split, idx)
  if augment is None:
    augment = fresh and "image" in split
  if augment:
    sample["image"] = augment_lib.augment_batch(key_aug, sample["image"],
                                                shift_range=shift_range, flip=flip,
                                                subpixel=subpixel)
  return jax.tree.map(lambda x: x.reshape(num_batches, batch_size, *x.shape[1:]), sample)


# ----------------------------------------------------------------------------------------------
# Sharding

def shard_batch(batch: Any, mesh: jax.sharding.Mesh, *, axis: str = "data",
                batch_dim: int = 0) -> Any:
  """Places every leaf with its ``batch_dim`` split over mesh axis ``axis``.

  ``batch_dim=0`` for a batch [B, ...] (P('data')); ``batch_dim=1`` for stacked Hessian batches
  [num_batches, B, ...] (P(None, 'data')). B must be divisible by ``mesh.shape[axis]``.
  """
  num = mesh.shape[axis]
  spec = jax.sharding.PartitionSpec(*([None] * batch_dim), axis)
  sharding = jax.sharding.NamedSharding(mesh, spec)

  def place(x):
    if x.shape[batch_dim] % num:
      raise ValueError(f"batch dimension {x.shape[batch_dim]} is not divisible by the {num} "
                       f"devices of mesh axis '{axis}'")
    return jax.device_put(x, sharding)

  return jax.tree.map(place, batch)
