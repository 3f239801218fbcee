"""Tests of sharp_dirs.data: builders, splits, preprocessing, augmentation, iterators, text."""

import gzip
import json
import os
import struct
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rdata
import scipy.ndimage as scipy_ndimage
import tensorflow_datasets as tfds

from sharp_dirs import data
from sharp_dirs.data import augment
from sharp_dirs.data import catalog
from sharp_dirs.data import fashion_mnist
from sharp_dirs.data import paths
from sharp_dirs.data import pipeline
from sharp_dirs.data import text


# ----------------------------------------------------------------------------------------------
# Fixtures


def _tiny_idx_dir(tmp_path, num_train=30, num_test=10, seed=0):
  """Gzip'd IDX files of random 28x28 images; labels i % 10."""
  rng = np.random.RandomState(seed)
  d = tmp_path / "idx"
  d.mkdir()
  arrays = {}
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    fashion_mnist.write_idx(str(d / f"{prefix}-images-idx3-ubyte.gz"), images)
    fashion_mnist.write_idx(str(d / f"{prefix}-labels-idx1-ubyte.gz"), labels)
    arrays[prefix] = (images, labels)
  return str(d), arrays


def _fake_prepared(data_dir, tfds_name, file_format="array_record", with_files=True):
  """Marks a catalog dataset as prepared: its dataset_info.json with two splits of one shard
  each, and (with_files) empty shard files; the records come from tfds.testing.mock_data."""
  path = catalog.builder_dir(tfds_name, str(data_dir))
  os.makedirs(path, exist_ok=True)
  template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
  splits = [{"name": s, "filepathTemplate": template, "shardLengths": ["10"]}
            for s in ("train", "test")]
  with open(os.path.join(path, "dataset_info.json"), "w") as f:
    json.dump({"fileFormat": file_format, "name": tfds_name, "splits": splits}, f)
  if with_files:
    for s in ("train", "test"):
      open(os.path.join(path, f"{tfds_name}-{s}.array_record-00000-of-00001"), "w").close()
  return path


@pytest.fixture
def no_download(monkeypatch):
  """Any tfds download attempt fails the test at once (instead of hanging without internet)."""
  def fail(*args, **kwargs):
    raise AssertionError("tfds tried to download")
  for method in ("download", "download_and_extract", "download_checksums", "extract"):
    monkeypatch.setattr(tfds.download.DownloadManager, method, fail)


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST builder


def test_idx_roundtrip(tmp_path):
  x = np.random.RandomState(1).randint(0, 256, size=(3, 28, 28)).astype(np.uint8)
  for name in ("a-idx3-ubyte.gz", "b-idx3-ubyte"):
    fashion_mnist.write_idx(str(tmp_path / name), x)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / name)), x)
  with gzip.open(tmp_path / "bad.gz", "wb") as f:
    f.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float IDX: not ours
  with pytest.raises(ValueError, match="not an IDX"):
    fashion_mnist.read_idx(str(tmp_path / "bad.gz"))


def test_fashion_mnist_builder_on_tiny_idx(tmp_path, no_download):
  idx_dir, arrays = _tiny_idx_dir(tmp_path)
  data_dir = str(tmp_path / "tfds")
  assert not fashion_mnist.is_prepared(data_dir)
  builder = fashion_mnist.prepare(data_dir, idx_dir)
  assert fashion_mnist.is_prepared(data_dir)
  for split, prefix in (("train", "train"), ("test", "t10k")):
    got = fashion_mnist.read_split(builder, split)
    images, labels = arrays[prefix]
    np.testing.assert_array_equal(got["image"][..., 0], images)
    np.testing.assert_array_equal(got["label"], labels)
    # tfds' generic decoding of the same data source agrees with the fast path.
    generic = catalog.read_all(builder.as_data_source(split=split), ("image", "label"))
    np.testing.assert_array_equal(generic["image"], got["image"])
    # Read once per process: the same read-only arrays again, until the files change.
    assert fashion_mnist.read_split(builder, split) is got
    assert not got["image"].flags.writeable and not got["label"].flags.writeable
  os.utime(builder.data_dir, (0, 1.0))  # as if prepared again
  assert fashion_mnist.read_split(builder, "test") is not got
  ds = data.load_dataset("fashion_mnist", data_dir=data_dir, source_dir="/nonexistent",
                         num_valid=10, data_seed=3)  # prepared already: IDX dir not needed
  assert (len(ds.train["label"]), len(ds.valid["label"]), len(ds.test["label"])) == (20, 10, 10)
  assert ds.train["image"].shape == (20, 28, 28, 1) and ds.train["image"].dtype == np.float32
  assert ds.train["label"].dtype == np.int32 and ds.num_classes == 10
  assert ds.input_shape == (28, 28, 1) and ds.kind == "image"
  train_idx, valid_idx = pipeline.train_valid_split(30, 10, 3)
  raw = arrays["train"][0][..., None].astype(np.float32)
  np.testing.assert_allclose(ds.train["image"] * ds.stats["std"] + ds.stats["mean"],
                             raw[train_idx], atol=1e-3)
  np.testing.assert_array_equal(ds.valid["label"], arrays["train"][1][valid_idx])


def test_real_fashion_mnist_from_debian():
  """The real data (installed by `make install`): 60k/10k, 6000/1000 per class, split 50k/10k."""
  idx_dir = paths.DEBIAN_FASHION_MNIST_DIR
  fashion_mnist.check_idx_dir(idx_dir)  # raises if dataset-fashion-mnist is not installed
  fashion_mnist.prepare(None, idx_dir)  # default data dir; prepared once (~20 s), then a no-op
  ds = data.load_dataset("fashion_mnist", data_seed=777)
  assert [len(s["label"]) for s in (ds.train, ds.valid, ds.test)] == [50000, 10000, 10000]
  labels = np.concatenate([ds.train["label"], ds.valid["label"]])
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test["label"]), [1000] * 10)
  # Exactly the IDX content, in IDX order, split by RandomState(777) like the paper's code.
  idx = {p: (fashion_mnist.read_idx(f"{idx_dir}/{p}-images-idx3-ubyte.gz"),
             fashion_mnist.read_idx(f"{idx_dir}/{p}-labels-idx1-ubyte.gz"))
         for p in ("train", "t10k")}
  train_idx, valid_idx = pipeline.train_valid_split(60000, 10000, 777)
  uncenter = lambda x: np.rint(x[..., 0] * ds.stats["std"] + ds.stats["mean"][..., 0])
  np.testing.assert_array_equal(uncenter(ds.test["image"]), idx["t10k"][0])
  np.testing.assert_array_equal(ds.test["label"], idx["t10k"][1])
  np.testing.assert_array_equal(uncenter(ds.valid["image"]), idx["train"][0][valid_idx])
  np.testing.assert_array_equal(ds.train["label"], idx["train"][1][train_idx])
  # "center": per-pixel mean over the 50k train images, one global std of those images.
  x = idx["train"][0][train_idx].astype(np.float64)
  np.testing.assert_allclose(ds.stats["mean"][..., 0], x.mean(axis=0), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(ds.stats["std"], x.std(), rtol=1e-6)
  np.testing.assert_allclose(ds.train["image"].mean(axis=0), 0.0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Splits and preprocessing


def test_train_valid_split_sizes_and_determinism():
  for n, num_valid in ((50000, 5000), (60000, 10000)):
    train, valid = pipeline.train_valid_split(n, num_valid, data_seed=5)
    assert len(train) == n - num_valid and len(valid) == num_valid
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(n))
    # The paper's code: rng = RandomState(seed); ids = rng.choice(n, n, replace=False).
    ids = np.random.RandomState(5).choice(n, n, replace=False)
    np.testing.assert_array_equal(valid, ids[-num_valid:])
    again, _ = pipeline.train_valid_split(n, num_valid, data_seed=5)
    other, _ = pipeline.train_valid_split(n, num_valid, data_seed=6)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
  with pytest.raises(ValueError):
    pipeline.train_valid_split(10, 10, 0)


def test_center_stats_match_numpy_reference():
  x = np.random.RandomState(0).randint(0, 256, size=(1000, 8, 6, 3)).astype(np.uint8)
  mean, std = augment.center_stats(x, chunk=97)
  np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(std, x.astype(np.float64).std(), rtol=1e-9)
  centered = augment.center(x, mean, std, chunk=333)
  assert centered.dtype == np.float32 and centered.shape == x.shape
  np.testing.assert_allclose(centered.mean(axis=0), 0.0, atol=1e-5)
  # σ is the paper's global std of the raw images, so the centered data has
  # std² = 1 − var(mean image) / σ² (≤ 1), and (x − grand mean) / σ has std exactly 1.
  np.testing.assert_allclose(centered.std() ** 2, 1 - mean.astype(np.float64).var() / std**2,
                             rtol=1e-4)
  np.testing.assert_allclose(((x - x.mean()) / std).std(), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Augmentation


def _shift_reference(images, dy, dx):
  """numpy: out[i, j] = images[clip(i − dy), clip(j − dx)] (Keras fill_mode='nearest')."""
  h, w = images.shape[1:3]
  rows = np.clip(np.arange(h) - dy, 0, h - 1)
  cols = np.clip(np.arange(w) - dx, 0, w - 1)
  return images[:, rows][:, :, cols]


@pytest.mark.parametrize("size", [28, 32])
def test_shift_matches_numpy_edge_fill(size):
  rng = np.random.RandomState(0)
  sy, sx = augment.max_shifts((size, size, 3))
  assert (sy, sx) == ({28: 3, 32: 4}[size],) * 2
  images = rng.randn(6, size, size, 3).astype(np.float32)
  shifts = np.array([[0, 0], [sy, -sx], [-sy, sx], [1, 2], [-2, -1], [sy, sx]])
  got = np.asarray(augment.shift_images(jnp.asarray(images), jnp.asarray(shifts), (sy, sx)))
  for b, (dy, dx) in enumerate(shifts):
    np.testing.assert_array_equal(got[b], _shift_reference(images[b:b + 1], dy, dx)[0])


def test_subpixel_shift_is_bilinear_with_edge_fill():
  rng = np.random.RandomState(1)
  images = rng.randn(4, 12, 10, 2).astype(np.float32)
  shifts = np.array([[0.5, -1.25], [2.0, 1.0], [-1.5, 0.75], [1.49, -1.99]], np.float32)
  got = np.asarray(augment.subpixel_shift_images(jnp.asarray(images), jnp.asarray(shifts), (2, 2)))
  for b, (dy, dx) in enumerate(shifts):
    want = scipy_ndimage.shift(images[b].astype(np.float64), (dy, dx, 0), order=1,
                               mode="nearest")
    np.testing.assert_allclose(got[b], want, atol=1e-5)


def _matches_some_transform(out, image, sy, sx):
  for dy in range(-sy, sy + 1):
    for dx in range(-sx, sx + 1):
      shifted = _shift_reference(image[None], dy, dx)[0]
      for candidate in (shifted, shifted[:, ::-1]):
        if np.array_equal(out, candidate):
          return True
  return False


def test_augment_batch_shapes_determinism_and_content():
  rng = np.random.RandomState(2)
  images = rng.randn(16, 28, 28, 1).astype(np.float32)
  key = jax.random.PRNGKey(0)
  out = augment.augment_batch(key, images)
  assert out.shape == images.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, augment.augment_batch(key, images))
  assert not np.array_equal(out, augment.augment_batch(jax.random.PRNGKey(1), images))
  for b in range(len(images)):
    assert _matches_some_transform(np.asarray(out[b]), images[b], 3, 3)
  # Flips only: each image is itself or its mirror, and both happen.
  flipped = np.asarray(augment.augment_batch(key, images, shift_range=0.0))
  is_same = [np.array_equal(flipped[b], images[b]) for b in range(16)]
  is_mirror = [np.array_equal(flipped[b], images[b, :, ::-1]) for b in range(16)]
  assert all(s or m for s, m in zip(is_same, is_mirror)) and any(is_same) and any(is_mirror)
  # No flips: shifts are uniform over {-4..4} on 32 px, all values reached on a big batch.
  big = np.tile(np.arange(32, dtype=np.float32)[None, None, :, None], (256, 32, 1, 1))
  moved = np.asarray(augment.augment_batch(key, big, flip=False))
  dx = moved[:, 16, 16, 0] - 16  # column index under the center pixel = 16 − dx
  assert set(np.unique(dx).astype(int)) == set(range(-4, 5))
  sub = np.asarray(augment.augment_batch(key, big, flip=False, subpixel=True))
  assert np.abs(sub[:, 16, 16, 0] - 16).max() <= 4.0 + 1e-5
  assert np.any(np.abs(sub[:, 16, 16, 0] - np.round(sub[:, 16, 16, 0])) > 0.1)


# ----------------------------------------------------------------------------------------------
# Iterators and Hessian samples


def _toy_split(n=100, size=8):
  images = np.random.RandomState(0).randn(n, size, size, 1).astype(np.float32)
  return {"image": images, "label": np.arange(n, dtype=np.int32)}


def test_epoch_batches_deterministic_resumable():
  split = _toy_split(100)
  batches = list(pipeline.epoch_batches(split, 16, seed=1, epoch=0))
  assert len(batches) == pipeline.num_steps_per_epoch(split, 16) == 6  # last partial dropped
  labels = np.concatenate([b["label"] for b in batches])
  assert len(np.unique(labels)) == 96
  assert all(b["image"].shape == (16, 8, 8, 1) and b["label"].dtype == np.int32 for b in batches)
  next_epoch = list(pipeline.epoch_batches(split, 16, seed=1, epoch=1))
  assert not np.array_equal(labels, np.concatenate([b["label"] for b in next_epoch]))
  full = list(pipeline.batch_stream(split, 16, seed=1, num_epochs=3, augment=True))
  assert [(e, s) for e, s, _ in full[:7]] == [(0, i) for i in range(6)] + [(1, 0)]
  resumed = list(pipeline.batch_stream(split, 16, seed=1, start_epoch=1, start_step=4,
                                       num_epochs=2, augment=True))
  assert len(resumed) == len(full) - 10
  for (e1, s1, b1), (e2, s2, b2) in zip(full[10:], resumed):
    assert (e1, s1) == (e2, s2)
    np.testing.assert_array_equal(b1["label"], b2["label"])
    np.testing.assert_array_equal(b1["image"], b2["image"])


def test_batch_sizes_that_cannot_fill_an_epoch_are_named():
  split = _toy_split(10)
  # Before: an epoch of 10 examples has 0 batches of 16, so a stream without num_epochs spun.
  with pytest.raises(ValueError, match="batch_size=16 exceeds the 10 examples"):
    list(pipeline.batch_stream(split, 16, num_epochs=2))
  for bad in (0, -1, 2.0):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
      next(pipeline.epoch_batches(split, bad))
  with pytest.raises(ValueError, match="batch_size must be a positive int"):
    pipeline.num_hessian_batches(256, 0)
  with pytest.raises(ValueError, match="num_examples must be a positive int"):
    pipeline.hessian_sample(split, jax.random.PRNGKey(0), num_examples=0, batch_size=2)
  with pytest.raises(ValueError, match="batch_size must be a positive int"):
    text.lm_num_steps_per_epoch(100, 0, 5)
  with pytest.raises(ValueError, match="num_steps must be a positive int"):
    list(text.lm_epoch_batches(np.arange(100), 4, 0))
  assert pipeline.num_steps_per_epoch(split, 10) == 1


def test_hessian_sample_shapes_freshness_and_fixed():
  split = _toy_split(2400, size=4)
  assert pipeline.num_hessian_batches(2250, 128) == 18  # the paper's N=2250: 2304 examples
  assert pipeline.num_hessian_batches(2560, 128) == 20
  s = pipeline.hessian_sample(split, jax.random.PRNGKey(0), num_examples=2250)
  assert s["image"].shape == (18, 128, 4, 4, 1) and s["label"].shape == (18, 128)
  assert s["image"].dtype == jnp.float32 and s["label"].dtype == np.int32
  assert len(np.unique(s["label"])) == 18 * 128  # without replacement
  again = pipeline.hessian_sample(split, jax.random.PRNGKey(0), num_examples=2250)
  other = pipeline.hessian_sample(split, jax.random.PRNGKey(1), num_examples=2250)
  np.testing.assert_array_equal(s["image"], again["image"])
  assert not np.array_equal(s["label"], other["label"])
  # Fresh samples are augmented: same examples, different pixels than the raw split.
  raw = split["image"][np.asarray(s["label"]).ravel()].reshape(s["image"].shape)
  assert not np.allclose(s["image"], raw)
  fixed_a = pipeline.hessian_sample(split, jax.random.PRNGKey(0), num_examples=256,
                                    fresh=False)
  fixed_b = pipeline.hessian_sample(split, jax.random.PRNGKey(9), num_examples=256,
                                    fresh=False)
  np.testing.assert_array_equal(fixed_a["label"], fixed_b["label"])
  np.testing.assert_array_equal(fixed_a["image"], fixed_b["image"])
  np.testing.assert_array_equal(fixed_a["image"],
                                split["image"][fixed_a["label"].ravel()].reshape(2, 128, 4, 4, 1))
  with pytest.raises(ValueError):
    pipeline.hessian_sample(split, jax.random.PRNGKey(0), num_examples=2500)


def test_shard_batch_places_on_data_axis():
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  batch = {"image": np.zeros((8, 4, 4, 1), np.float32), "label": np.zeros((8,), np.int32)}
  placed = pipeline.shard_batch(batch, mesh)
  assert placed["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  stacked = pipeline.shard_batch({"x": np.zeros((3, 8, 2))}, mesh, batch_dim=1)
  assert stacked["x"].sharding.spec == jax.sharding.PartitionSpec(None, "data")


# ----------------------------------------------------------------------------------------------
# Catalog datasets through tfds.testing.mock_data (data sources), and missing datasets


def test_catalog_images_with_mock_data(tmp_path, no_download):
  for name, num_classes in (("cifar10", 10), ("cifar100", 100)):
    _fake_prepared(tmp_path, name)
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
      ds = data.load_dataset(name, data_dir=str(tmp_path), num_valid=8, data_seed=1)
    assert ds.num_classes == num_classes and ds.input_shape == (32, 32, 3)
    assert ds.train["image"].shape == (32, 32, 32, 3) and ds.valid["image"].shape[0] == 8
    assert ds.test["image"].shape == (40, 32, 32, 3) and ds.train["image"].dtype == np.float32
    assert ds.train["label"].dtype == np.int32
    assert 0 <= ds.test["label"].min() and ds.test["label"].max() < num_classes
    assert ds.augment
    np.testing.assert_allclose(ds.train["image"].mean(axis=0), 0.0, atol=1e-4)
  # Fashion-MNIST falls back to a prepared catalog copy when the IDX files are absent.
  _fake_prepared(tmp_path, "fashion_mnist")
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load_dataset("fashion_mnist", data_dir=str(tmp_path), num_valid=5,
                           source_dir=str(tmp_path / "no_idx"))
  assert ds.train["image"].shape == (15, 28, 28, 1)


def test_imdb_with_mock_data(tmp_path, no_download):
  _fake_prepared(tmp_path, "imdb_reviews")
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load_dataset("imdb", data_dir=str(tmp_path), vocab_size=50)
  assert ds.kind == "text" and ds.num_classes == 2 and ds.input_shape == (400,)
  assert [len(s["label"]) for s in (ds.train, ds.valid, ds.test)] == [27, 3, 30]
  tokens = ds.train["tokens"]
  assert tokens.shape == (27, 400) and tokens.dtype == np.int32
  assert tokens.max() < 50 and len(ds.vocab) == 50
  first = np.argmax(tokens != 0, axis=1)  # 'pre' padding: the review starts with START (1)
  assert np.all(tokens[np.arange(27), first] == text.START_ID)


def test_missing_catalog_dataset_raises_quickly(tmp_path, no_download):
  for name, tfds_name in (("cifar10", "cifar10"), ("cifar100", "cifar100"),
                          ("imdb", "imdb_reviews")):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError, match=f"tfds build {tfds_name}"):
      data.load_dataset(name, data_dir=str(tmp_path))
    assert time.monotonic() - start < 3.0
  assert issubclass(data.DatasetNotFoundError, FileNotFoundError)
  _fake_prepared(tmp_path, "cifar10", file_format="tfrecord")
  with pytest.raises(data.DatasetNotFoundError, match="convert_format"):
    data.load_dataset("cifar10", data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data.load_dataset("fashion_mnist", data_dir=str(tmp_path), source_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="ptb.train.txt"):
    data.load_dataset("ptb", source_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match="apt-get download r-cran-janeaustenr"):
    data.load_dataset("austen", source_dir=str(tmp_path))


def test_dataset_info_without_data_files_is_named(tmp_path, no_download):
  path = _fake_prepared(tmp_path, "cifar10", with_files=False)
  with pytest.raises(data.DatasetNotFoundError,
                     match="lacks data files: cifar10-train.array_record-00000-of-00001"):
    data.load_dataset("cifar10", data_dir=str(tmp_path))
  open(os.path.join(path, "cifar10-train.array_record-00000-of-00001"), "w").close()
  with pytest.raises(data.DatasetNotFoundError, match=r"cifar10-test.array_record.*\(1 missing\)"):
    catalog.check_prepared("cifar10", str(tmp_path))
  with open(os.path.join(path, "dataset_info.json"), "w") as f:
    json.dump({"fileFormat": "array_record", "name": "cifar10"}, f)
  with pytest.raises(data.DatasetNotFoundError, match="records no splits"):
    catalog.check_prepared("cifar10", str(tmp_path))


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="cifar10, cifar100"):
    data.load_dataset("mnist_typo")
  assert set(data.DATASETS) == {"fashion_mnist", "cifar10", "cifar100", "imdb", "austen", "ptb",
                               "arrays"}


# ----------------------------------------------------------------------------------------------
# Text


def test_keras_imdb_encoding():
  assert text.keras_words("Hello, World!<br /><br />It's  FINE.") == ["hello", "world", "it's",
                                                                        "fine"]
  ranks = text.keras_word_ranks(["b a a", "c b a"])
  assert ranks == {"a": 1, "b": 2, "c": 3}
  assert text.keras_encode("a b c zz", ranks, num_words=6) == [1, 4, 5, 2, 2]
  padded = text.pad_sequences([[1, 2, 3], [1, 2, 3, 4, 5, 6]], maxlen=4)
  np.testing.assert_array_equal(padded, [[0, 1, 2, 3], [3, 4, 5, 6]])
  assert text.keras_vocab(ranks, 7) == ("<pad>", "<start>", "<oov>", "<unused>", "a", "b", "c")


_NOVELS = {
    "novel_a": np.array(["Chapter 1", "", "The cat sat on the mat.", "The dog sat.", "",
                         "It was 1811, and the cat ran.", "", "The end.", ""] * 5, dtype=object),
    "novel_b": np.array(["The bird's song.", "", "A dog, a cat; the mat!", ""] * 5,
                        dtype=object),
}


def _write_lazyload_db(prefix, objects):
  """An R lazy-load database like installed packages' data/Rdata.{rdb,rdx}."""
  blob, variables = b"", {}
  for name, value in objects.items():
    path = prefix + f".{name}.tmp"
    rdata.write_rds(path, value, compression=None)
    with open(path, "rb") as f:
      raw = f.read()
    os.remove(path)
    record = struct.pack(">I", len(raw)) + zlib.compress(raw)
    variables[name] = np.array([len(blob), len(record)], np.int32)
    blob += record
  with open(prefix + ".rdb", "wb") as f:
    f.write(blob)
  rdata.write_rds(prefix + ".rdx", {"variables": variables, "references": {},
                                    "compressed": np.array([True])})


def test_austen_fixture_rda_and_lazyload(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "cache"))
  rda_dir, db_dir = tmp_path / "rda", tmp_path / "db"
  rda_dir.mkdir()
  db_dir.mkdir()
  rdata.write_rda(str(rda_dir / "novels.rda"), dict(_NOVELS))
  _write_lazyload_db(str(db_dir / "Rdata"), dict(_NOVELS))
  novels = text.read_austen(str(rda_dir))
  assert novels == text.read_austen(str(db_dir)) == text.read_austen(str(db_dir), cache=False)
  assert len(os.listdir(tmp_path / "cache" / "text")) == 2  # one JSON cache per source
  assert list(novels) == ["novel_a", "novel_b"]
  assert novels["novel_a"][2] == "The cat sat on the mat."
  ds = data.load_dataset("austen", source_dir=str(db_dir), vocab_size=8)
  assert ds.kind == "lm" and len(ds.vocab) == ds.num_classes == 8
  assert ds.vocab[:2] == ("<unk>", "<eos>") and ds.vocab[2] == "the"
  streams = text.austen_splits(novels)
  assert "N" in streams["train"] and "1811" not in streams["train"]
  assert "bird's" in streams["train"] + streams["valid"] + streams["test"]
  for split in ("train", "valid", "test"):
    ids = ds.__getattribute__(split)["ids"]
    assert ids.dtype == np.int32 and ids.max() < 8 and len(ids) == len(streams[split])
    words = [ds.vocab[i] for i in ids]
    assert all(w == t or (w == "<unk>" and t not in ds.vocab)
               for w, t in zip(words, streams[split]))
  total = sum(len(text.paragraphs(v)) for v in novels.values())
  assert len(text.paragraphs(novels["novel_a"])) == 20 and total == 30
  assert streams["train"].count("<eos>") == 18 + 9  # 90% of 20 and of 10 paragraphs
  batches = list(text.lm_epoch_batches(ds.train["ids"], 2, 5))
  assert len(batches) == text.lm_num_steps_per_epoch(len(ds.train["ids"]), 2, 5) > 0
  rows = ds.train["ids"][:2 * (len(ds.train["ids"]) // 2)].reshape(2, -1)
  np.testing.assert_array_equal(batches[1]["inputs"], rows[:, 5:10])
  np.testing.assert_array_equal(batches[1]["targets"], rows[:, 6:11])
  windows = text.lm_windows(ds.train["ids"], 5)
  np.testing.assert_array_equal(windows["targets"][:, :-1], windows["inputs"][:, 1:])


def test_real_austen():
  """The real corpus, which `make install` fetches when it can (a visible skip otherwise)."""
  try:
    austen_dir = text.find_austen_dir()
  except data.DatasetNotFoundError as e:
    assert "apt-get download r-cran-janeaustenr" in str(e)
    pytest.skip(f"the Jane Austen corpus is not installed here ({e}); "
                "run `python -m sharp_dirs.data fetch-austen` as root")
  novels = text.read_austen(austen_dir)
  assert sorted(novels) == sorted(text.AUSTEN_NOVELS)
  assert novels["prideprejudice"][0] == "PRIDE AND PREJUDICE"
  ds = pipeline._lm_dataset("austen", text.austen_splits(novels), 10_000)
  assert len(ds.vocab) == 10_000 and 500_000 < len(ds.train["ids"]) < 800_000
  assert 0 < (ds.train["ids"] == 0).mean() < 0.02  # <unk> is rare with 10k words


def test_corrupt_or_inconsistent_sources_raise_named_errors(tmp_path):
  """The ValueError sites of the readers: truncated IDX, mismatched IDX pairs, a lazy-load
  record whose size disagrees with its header, and a vocabulary too small for its specials."""
  path = str(tmp_path / "short.gz")
  fashion_mnist.write_idx(path, np.zeros((4, 28, 28), np.uint8))
  with gzip.open(path, "rb") as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(raw[:-5])  # 5 bytes short of what the header announces
  with pytest.raises(ValueError, match=r"header says \(4, 28, 28\), found 3131 bytes"):
    fashion_mnist.read_idx(path)
  idx_dir, _ = _tiny_idx_dir(tmp_path, num_train=6, num_test=2)
  fashion_mnist.write_idx(f"{idx_dir}/train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
  with pytest.raises(ValueError, match=r"images \(6, 28, 28\) and labels \(5,\) do not match"):
    next(fashion_mnist.FashionMnistIdx._generate_examples(None, idx_dir, "train"))
  prefix = str(tmp_path / "Rdata")
  _write_lazyload_db(prefix, {"novel": np.array(["a line"], dtype=object)})
  with open(prefix + ".rdb", "r+b") as f:
    f.write(struct.pack(">I", 7))  # the record's announced uncompressed size
  with pytest.raises(ValueError, match="record novel has .* bytes, expected 7"):
    text.read_lazyload_db(prefix)
  with pytest.raises(ValueError, match="vocab_size=1 < 2 special tokens"):
    text.build_vocab(["a", "b"], 1)


def test_pipeline_argument_errors():
  split = _toy_split(16)
  with pytest.raises(ValueError, match="fresh=True needs a PRNG key"):
    pipeline.hessian_sample(split, None, num_examples=8, batch_size=4)
  with pytest.raises(ValueError, match="preprocessing must be 'center', '01' or 'none'"):
    pipeline._image_dataset("fashion_mnist", {"image": np.zeros((4, 2, 2, 1), np.uint8),
                                              "label": np.zeros(4, np.int32)},
                            {"image": np.zeros((2, 2, 2, 1), np.uint8),
                             "label": np.zeros(2, np.int32)},
                            10, data_seed=0, num_valid=1, preprocessing="zscore")
  with pytest.raises(ValueError, match=r"num_valid=10 must be in \[0, 10\)"):
    pipeline.train_valid_split(10, 10, 0)
  two_devices = jax.sharding.AbstractMesh((2,), ("data",))  # the check needs only the shape
  with pytest.raises(ValueError, match="batch dimension 3 is not divisible by the 2 devices"):
    pipeline.shard_batch({"x": np.zeros((3, 2))}, two_devices)


def test_ptb_reader(tmp_path):
  for split, lines in (("train", "the cat <unk> sat\nthe dog sat\n"), ("valid", "the bird\n"),
                       ("test", "a cat\n")):
    (tmp_path / f"ptb.{split}.txt").write_text(" " + lines.replace("\n", " \n "))
  ds = data.load_dataset("ptb", source_dir=str(tmp_path))
  assert ds.vocab == ("<unk>", "<eos>", "sat", "the", "cat", "dog")
  assert [ds.vocab[i] for i in ds.valid["ids"]] == ["the", "<unk>", "<eos>"]
  assert len(ds.train["ids"]) == 9


def test_fetch_janeaustenr_explains_without_root(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "cache"))
  monkeypatch.delenv(text.AUSTEN_DIR_ENV, raising=False)
  monkeypatch.setattr(text, "_AUSTEN_DATA", "nonexistent/janeaustenr/data")
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  with pytest.raises(data.DatasetNotFoundError, match="dpkg -x"):
    text.fetch_janeaustenr()
  monkeypatch.setenv(text.AUSTEN_DIR_ENV, str(tmp_path))
  (tmp_path / "x.rda").write_bytes(b"")
  assert text.fetch_janeaustenr() == str(tmp_path)  # present: nothing fetched


def test_default_data_dir_env(monkeypatch, tmp_path):
  monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.delenv(paths.DATA_DIR_ENV)
  monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "c"))
  assert data.default_data_dir() == str(tmp_path / "c" / "tensorflow_datasets")


def test_a_users_own_images_from_a_npz_file_train_a_run(tmp_path):
  """dataset 'arrays': the .npz named by data_dir, split 90/10 into train/valid, centred as the
  paper's images, the classes counted from the labels; a run of the engine trains on it; a
  missing file or key is named with the fix."""
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import metrics_io, train  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  path = tmp_path / "images.npz"
  np.savez(path, x_train=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8),
           y_train=rng.integers(0, 3, 200), x_test=rng.integers(0, 256, (40, 8, 8), np.uint8),
           y_test=rng.integers(0, 3, 40))
  ds = data.load_dataset("arrays", data_dir=str(path))
  assert (ds.kind, ds.num_classes, ds.input_shape) == ("image", 3, (8, 8, 1))
  assert [len(s["label"]) for s in (ds.train, ds.valid, ds.test)] == [180, 20, 40]
  np.testing.assert_allclose(ds.train["image"].mean(axis=0), 0.0, atol=1e-4)  # centred
  c = config_lib.default_config()
  c.dataset, c.data_dir, c.model = "arrays", str(path), "mlp"
  c.model_kwargs = config_lib.ConfigDict({"hidden": (8,)})
  c.batch_size, c.epoch_size, c.num_epochs = 32, 64, 2
  t = c.tracking
  t.k, t.num_lanczos_steps, t.num_examples, t.batch_size, t.zoom_epochs = 2, 6, 64, 32, 0.0
  c.eval.num_train_examples = c.eval.max_examples = 40
  workdir = str(tmp_path / "run")
  assert train.train_and_evaluate(c, workdir)["status"] == "finished"
  assert np.isfinite(metrics_io.read_run(workdir).series("hessian/lambda_1")[1]).all()
  with pytest.raises(paths.DatasetNotFoundError, match="config.data_dir=/path/to/images.npz"):
    data.load_dataset("arrays", data_dir=str(tmp_path / "none.npz"))
  np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 8, 8)), y_train=np.zeros(4, int))
  with pytest.raises(ValueError, match="has no x_test, y_test"):
    data.load_dataset("arrays", data_dir=str(tmp_path / "bad.npz"))
