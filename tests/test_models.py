"""Models: exact parameter counts, shapes, train/inference modes, L2, and the conv impls."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs import models
from sharp_dirs.models import layers




def key(i):
  """A PRNG key whose bits compile fast on CPU (threefry init graphs take seconds to build)."""
  return jax.random.key(i, impl="unsafe_rbg")


def image_batch(b, h, w, c, key=0, dtype=jnp.float32):
  kx, ky = jax.random.split(jax.random.key(key))
  return {"image": jax.random.normal(kx, (b, h, w, c), dtype),
          "label": jax.random.randint(ky, (b,), 0, 10, jnp.int32)}


def conv_params(k, cin, cout):
  return k * k * cin * cout + cout


def dense_params(din, dout):
  return din * dout + dout


def n_params(name, batch, **kw):
  params, state = models.param_shapes(models.get_model(name, **kw), batch)
  return models.count_params(params), models.count_params(state)


# ---------------------------------------------------------------- parameter counts

def simple_cnn_by_hand(features, k, shape):
  """SimpleCNN's count from its layer list: same, valid, pool, same, valid, pool, dense 128."""
  size, c = shape[0], shape[2]
  for _ in range(2):
    size = (size - k + 1) // 2  # 'same' keeps the size, 'valid' loses k − 1, then pool 2
  return (conv_params(k, c, features) + conv_params(k, features, features)
          + conv_params(k, features, 2 * features) + conv_params(k, 2 * features, 2 * features)
          + dense_params(size * size * 2 * features, 128) + dense_params(128, 10))


def resnet_by_hand(widths=(16, 32, 64), blocks=5, channels=3, classes=10):
  """Pre-activation ResNet: first conv, two 3×3 convs per block, a 1×1 shortcut where the
  width changes, the dense head on the pooled last width."""
  total, cin = conv_params(3, channels, widths[0]), widths[0]
  for width in widths:
    for i in range(blocks):
      total += conv_params(3, cin, width) + conv_params(3, width, width)
      if i == 0 and cin != width:
        total += conv_params(1, cin, width)
      cin = width
  return total + dense_params(widths[-1], classes)


@pytest.mark.parametrize("name,shape,expected,paper", [
    ("simple_cnn_root", (32, 32, 3), simple_cnn_by_hand(32, 3, (32, 32, 3)), 361_898),
    ("simple_cnn_medium", (32, 32, 3), simple_cnn_by_hand(100, 5, (32, 32, 3)), 2_399_518),
    ("simple_cnn_medium", (28, 28, 1), simple_cnn_by_hand(100, 5, (28, 28, 1)), 2_164_118),
    ("resnet32", (32, 32, 3), resnet_by_hand(), 465_674),
])
def test_paper_param_counts(name, shape, expected, paper):
  assert expected == paper  # the counts the paper and the released code report
  assert n_params(name, image_batch(1, *shape)) == (expected, 0)


def test_simple_cnn_root_count_on_fmnist_by_hand():
  # 28 -same-> 28 -valid-> 26 -pool-> 13 -same-> 13 -valid-> 11 -pool-> 5; flatten 5·5·64.
  expected = (conv_params(3, 1, 32) + conv_params(3, 32, 32) + conv_params(3, 32, 64)
              + conv_params(3, 64, 64) + dense_params(5 * 5 * 64, 128) + dense_params(128, 10))
  assert expected == 271_210
  assert n_params("simple_cnn_root", image_batch(1, 28, 28, 1)) == (expected, 0)


def test_resnet32_bn_count_by_hand():
  # Every BN has scale and bias (params) and mean and var (batch_stats).
  bn_channels = (5 * 2 * 16                      # stage 0: bn1, bn2 on 16 channels
                 + (16 + 32) + 4 * 2 * 32        # stage 1: first bn1 sees 16 channels
                 + (32 + 64) + 4 * 2 * 64        # stage 2
                 + 64)                           # post_bn
  assert n_params("resnet32_bn", image_batch(1, 32, 32, 3)) == (
      resnet_by_hand() + 2 * bn_channels, 2 * bn_channels)


def test_vgg11_count_by_hand():
  widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
  convs = sum(conv_params(3, a, b) for a, b in zip(widths[:-1], widths[1:]))
  bns = 2 * (3 + sum(widths[1:]) + 512 + 512)
  dense = dense_params(512, 512) * 2 + dense_params(512, 10)
  assert convs + bns + dense == 9_758_480
  assert n_params("vgg11", image_batch(1, 32, 32, 3)) == (convs + bns + dense, bns)


def test_text_model_counts_by_hand():
  lstm = lambda d, h: 4 * (d * h + h * h + h)  # noqa: E731
  tokens = {"tokens": jnp.zeros((1, 400), jnp.int32), "label": jnp.zeros((1,), jnp.int32)}
  cnn = 5000 * 50 + (3 * 50 * 250 + 250) + dense_params(250, 250) + dense_params(250, 2)
  assert n_params("imdb_cnn", tokens) == (cnn, 0)
  assert n_params("imdb_lstm", tokens) == (5000 * 128 + lstm(128, 128) + dense_params(128, 2), 0)
  lm_batch = {"inputs": jnp.zeros((1, 20), jnp.int32), "targets": jnp.zeros((1, 20), jnp.int32)}
  lm = 10000 * 200 + 2 * lstm(200, 200) + dense_params(200, 10000)
  assert lm == 4_651_600
  assert n_params("lstm_lm", lm_batch, vocab_size=10000) == (lm, 0)
  assert n_params("lstm_lm", lm_batch, vocab_size=50)[0] == (
      50 * 200 + 2 * lstm(200, 200) + dense_params(200, 50))


def test_too_small_images_get_the_size_they_need():
  small = image_batch(1, 28, 28, 1)
  with pytest.raises(ValueError, match="ResNet needs images of at least 29×29 pixels, got 28×28"):
    models.param_shapes(models.get_model("resnet32"), small)
  with pytest.raises(ValueError, match="VGG needs images of at least 32×32 pixels, got 28×28"):
    models.param_shapes(models.get_model("vgg11"), small)
  # The fix the message names: pool_size=7 fits 28×28 (the head sees 7×7 → 1×1).
  assert n_params("resnet32", small, pool_size=7)[0] == resnet_by_hand(channels=1)


# ---------------------------------------------------------------- registry and shapes

def test_registry_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as err:
    models.get_model("resnet1000")
  for name in ("simple_cnn_root", "simple_cnn_medium", "resnet32", "resnet32_bn", "vgg11",
               "imdb_cnn", "imdb_lstm", "lstm_lm"):
    assert name in str(err.value)
    assert name in models.MODEL_NAMES


def test_registry_defaults_and_overrides():
  assert models.get_model("resnet32").init_scale == pytest.approx(1 / 15)
  assert not models.get_model("resnet32").use_bn and models.get_model("resnet32_bn").use_bn
  assert models.get_model("simple_cnn_medium").features == 100
  assert models.get_model("simple_cnn_root", dropout=0.3).dropout == 0.3
  assert models.get_model("vgg11").dropout == 0.5
  with pytest.raises(ValueError, match="conv_impl"):
    models.init_model(models.get_model("simple_cnn_root", conv_impl="fft"), key(0),
                      image_batch(1, 12, 12, 1))


@pytest.mark.parametrize("name,batch,out_shape", [
    ("simple_cnn_root", image_batch(3, 28, 28, 1), (3, 10)),
    ("resnet32", image_batch(2, 32, 32, 3), (2, 10)),   # full depth: 32 layers
    ("vgg11", image_batch(2, 32, 32, 3), (2, 10)),
    ("imdb_cnn", {"tokens": jnp.arange(2 * 30).reshape(2, 30) % 5000,
                  "label": jnp.array([0, 1])}, (2, 2)),
    ("imdb_lstm", {"tokens": jnp.arange(2 * 7).reshape(2, 7), "label": jnp.array([0, 1])},
     (2, 2)),
])
def test_output_shapes_and_finite_loss(name, batch, out_shape):
  model = models.get_model(name)
  params, state = models.init_model(model, key(0), batch)
  loss_fn = models.make_loss_fn(model, state, train=False)
  logits, loss = jax.jit(lambda p, b: (models.predict(model, p, state, b[model.input_key]),
                                       loss_fn(p, b)))(params, batch)
  assert logits.shape == out_shape and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert loss.shape == () and np.isfinite(loss)


def test_lstm_lm_shapes_loss_and_carry():
  vocab = 37
  model = models.get_model("lstm_lm", vocab_size=vocab)
  k1, k2 = jax.random.split(key(1))
  batch = {"inputs": jax.random.randint(k1, (3, 6), 0, vocab),
           "targets": jax.random.randint(k2, (3, 6), 0, vocab)}
  params, state = models.init_model(model, key(0), batch)
  apply = jax.jit(model.apply, static_argnames="return_carry")
  logits, carries = apply({"params": params}, batch["inputs"], return_carry=True)
  assert logits.shape == (3, 6, vocab) and len(carries) == 2 and carries[1][1].shape == (3, 200)
  # Mean token CE, by hand.
  logp = jax.nn.log_softmax(logits)
  by_hand = -jnp.mean(jnp.take_along_axis(logp, batch["targets"][..., None], -1))
  loss = loss_of(model, state, train=False)(params, batch)
  np.testing.assert_allclose(loss, by_hand, rtol=1e-6)
  # Continuing from the carry of the first half equals running the whole sequence.
  first, c = apply({"params": params}, batch["inputs"][:, :3], return_carry=True)
  second = apply({"params": params}, batch["inputs"][:, 3:], carry=c)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), logits, atol=1e-5)


# ---------------------------------------------------------------- modes

def loss_of(model, state, **kw):
  """Jitted make_loss_fn (eager op-by-op dispatch would dominate the test time)."""
  return jax.jit(models.make_loss_fn(model, state, **kw))


def train_step_of(model):
  return jax.jit(models.train_loss_and_state, static_argnums=0)


def small_setup(**kw):
  model = models.get_model("simple_cnn_root", **kw)
  batch = image_batch(8, 12, 12, 1)
  params, state = models.init_model(model, key(0), batch)
  return model, batch, params, state


def test_no_bn_no_dropout_modes_identical():
  model, batch, params, state = small_setup()
  assert state == {}
  inference = loss_of(model, state, train=False)(params, batch)
  training = loss_of(model, state, train=True, rng=key(3))(params, batch)
  assert inference == training
  loss, (new_state, logits) = train_step_of(model)(model, params, state, batch)
  assert loss == inference and new_state == {} and logits.shape == (8, 10)


def test_dropout_only_in_training_mode():
  model, batch, params, state = small_setup(dropout=0.5)
  train_j = jax.jit(lambda rng: models.make_loss_fn(model, state, train=True, rng=rng)(params, batch))
  infer_j = jax.jit(lambda rng: models.make_loss_fn(model, state, train=False, rng=rng)(params, batch))
  train = lambda rng: float(train_j(rng))  # noqa: E731
  infer = lambda rng: float(infer_j(rng)) if rng is not None else float(  # noqa: E731
      loss_of(model, state, train=False)(params, batch))
  k1, k2 = key(1), key(2)
  assert train(k1) != train(k2)
  assert train(k1) == train(k1)
  assert infer(k1) == infer(k2)
  # jitted vs eager: the same function, XLA may fuse it differently (rounding only)
  np.testing.assert_allclose(infer(k1), infer(None), rtol=1e-6)
  np.testing.assert_allclose(infer(None), loss_of(models.get_model("simple_cnn_root"), state,
                                                  train=False)(params, batch), rtol=1e-6)
  assert train(k1) != infer(None)


def test_batch_norm_running_vs_batch_statistics():
  model, batch, params, state = small_setup(use_bn=True)
  stats = state["batch_stats"]
  assert set(stats) == {"bn1", "bn2", "bn3", "bn4", "bn5"}
  np.testing.assert_array_equal(stats["bn1"]["mean"], 0.0)
  np.testing.assert_array_equal(stats["bn1"]["var"], 1.0)

  # Inference mode reads the running statistics; training mode ignores them.
  shifted = jax.tree.map(lambda s: s, state)
  shifted["batch_stats"] = {**stats, "bn1": {"mean": stats["bn1"]["mean"] + 0.5,
                                             "var": stats["bn1"]["var"]}}
  infer = jax.jit(lambda st: models.make_loss_fn(model, st, train=False)(params, batch))
  train = jax.jit(lambda st: models.make_loss_fn(model, st, train=True)(params, batch))
  assert infer(state) != infer(shifted)
  assert train(state) == train(shifted)
  assert train(state) != infer(state)

  # Training updates the running mean: 0.99·old + 0.01·(batch mean of conv1's output).
  loss, (new_state, _) = train_step_of(model)(model, params, state, batch)
  np.testing.assert_allclose(loss, train(state), rtol=1e-6)
  conv1 = nn.Conv(32, (3, 3), padding="SAME").apply({"params": params["conv1"]}, batch["image"])
  np.testing.assert_allclose(new_state["batch_stats"]["bn1"]["mean"],
                             0.01 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(new_state["batch_stats"]["bn1"]["var"],
                             0.99 + 0.01 * conv1.var(axis=(0, 1, 2)), rtol=1e-5)


def test_value_and_grad_of_train_loss_and_state():
  model, batch, params, state = small_setup(use_bn=True, dropout=0.3)
  step = jax.jit(jax.value_and_grad(models.train_loss_and_state, argnums=1, has_aux=True),
                 static_argnums=0)
  (loss, (new_state, logits)), grads = step(model, params, state, batch, key(0), 0.0)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert logits.shape == (8, 10) and np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_labels_are_checked_and_out_of_range_gives_nan_under_jit():
  logits = jnp.zeros((4, 3))
  np.testing.assert_allclose(models.cross_entropy(logits, jnp.array([0, 1, 2, 2])), np.log(3),
                             rtol=1e-6)
  for labels in (jnp.array([0, 1, 2, 3]), jnp.array([-1, 0, 1, 2])):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
      models.cross_entropy(logits, labels)
    # Under jit the range is not checked: the loss is NaN (optax alone wraps −1 to class 2).
    assert np.isnan(jax.jit(models.cross_entropy)(logits, labels))
  with pytest.raises(ValueError, match="labels must be integer class ids, got dtype float32"):
    jax.jit(models.cross_entropy)(logits, jnp.zeros(4))
  with pytest.raises(ValueError, match=r"expected labels of shape \(4,\)"):
    models.cross_entropy(logits, jnp.zeros((4, 1), jnp.int32))
  model, batch, params, state = small_setup()
  loss_fn = models.make_loss_fn(model, state, train=False)
  with pytest.raises(ValueError, match="labels must lie in"):
    loss_fn(params, {**batch, "label": batch["label"] + 10})


def test_import_sharp_dirs_does_not_load_flax_tfds_or_tensorboard():
  code = ("import sys, sharp_dirs; "
          "print(sorted(m for m in ('flax', 'tensorflow_datasets', 'tensorboardX', 'matplotlib',"
          " 'orbax') if m in sys.modules)); "
          "sharp_dirs.models.get_model; print('flax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       check=True).stdout.split("\n")
  assert out[:2] == ["[]", "True"]


# ---------------------------------------------------------------- L2 and differentiability

def test_l2_matches_closed_form_and_keras_exclusions():
  model, batch, params, state = small_setup()
  lam = 1e-2
  with_l2 = jax.jit(models.make_loss_fn(model, state, train=False, l2=lam))(params, batch)
  without = jax.jit(models.make_loss_fn(model, state, train=False))(params, batch)
  # SimpleCNN: Keras regularized conv1..conv4 and dense, not the pre-softmax layer or biases.
  by_hand = sum(np.sum(np.asarray(params[k]["kernel"], np.float64) ** 2)
                for k in ("conv1", "conv2", "conv3", "conv4", "dense"))
  np.testing.assert_allclose(with_l2 - without, lam * by_hand, rtol=1e-4)
  # The training-mode loss carries the same term.
  train_l2 = jax.jit(lambda p: models.train_loss_and_state(model, p, state, batch, None, lam)[0])(
      params)
  np.testing.assert_allclose(train_l2, with_l2, rtol=1e-6)
  # Its gradient: 2λW on the regularized kernels, nothing on biases or the logits layer.
  with_fn = models.make_loss_fn(model, state, train=False, l2=lam)
  without_fn = models.make_loss_fn(model, state, train=False)
  diff = jax.jit(jax.grad(lambda p: with_fn(p, batch) - without_fn(p, batch)))(params)
  np.testing.assert_allclose(diff["conv2"]["kernel"], 2 * lam * params["conv2"]["kernel"],
                             atol=1e-6)
  np.testing.assert_allclose(diff["conv2"]["bias"], 0.0, atol=1e-7)
  np.testing.assert_allclose(diff["logits"]["kernel"], 0.0, atol=1e-7)
  # ResNet (Keras l2 on every conv and the dense): the logits kernel counts too.
  assert models.l2_penalty({"logits": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.ones(3)},
                            "embedding": {"embedding": jnp.ones(4)}}) == 24.0
  assert models.l2_penalty({"logits": {"kernel": jnp.ones(3)}}, exclude=("logits",)) == 0.0


def test_loss_fn_scalar_and_differentiable_against_finite_differences():
  with jax.enable_x64(True):
    model = models.get_model("imdb_cnn", vocab_size=20, embed_dim=4, filters=5, hidden=6)
    batch = {"tokens": jax.random.randint(key(0), (4, 9), 0, 20),
             "label": jnp.array([0, 1, 1, 0])}
    params, state = models.init_model(model, key(1), batch)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.1, params)
    loss_fn = models.make_loss_fn(model, state, train=False, l2=1e-3)
    loss_fn = jax.jit(loss_fn)
    assert loss_fn(params, batch).shape == ()
    g = jax.jit(jax.grad(loss_fn))(params, batch)
    v = jax.tree.map(lambda p: jax.random.normal(key(2), p.shape, p.dtype), params)
    eps = 1e-6
    shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, v)  # noqa: E731
    fd = (loss_fn(shift(eps), batch) - loss_fn(shift(-eps), batch)) / (2 * eps)
    directional = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    np.testing.assert_allclose(directional, fd, rtol=1e-6)
    assert abs(directional) > 1e-3


@pytest.mark.parametrize("name,kw,shape", [
    ("simple_cnn_root", dict(features=3, dense_features=8, use_bn=True, dropout=0.3),
     (12, 12, 1)),
    ("resnet32_bn", dict(blocks_per_stage=1, widths=(3, 4, 4), pool_size=2, dropout=0.3),
     (8, 8, 2)),
])
def test_training_mode_gradient_matches_finite_differences(name, kw, shape):
  """Training mode (batch statistics, dropout masks from rng): ∇L·v vs (L(θ+εv) − L(θ−εv))/2ε."""
  with jax.enable_x64(True):
    model = models.get_model(name, **kw)
    batch = image_batch(6, *shape, dtype=jnp.float64)
    params, state = models.init_model(model, key(1), batch)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.05, params)
    state = jax.tree.map(lambda s: s.astype(jnp.float64), state)
    # Dropout masks from a threefry key: unsafe_rbg's bits may differ between two compiled
    # programs (here the loss and its gradient), threefry's may not.
    loss_fn = jax.jit(models.make_loss_fn(model, state, train=True,
                                          rng=jax.random.key(2), l2=1e-3))
    assert loss_fn(params, batch) != jax.jit(models.make_loss_fn(model, state, train=False))(
        params, batch)  # the mode matters here
    g = jax.jit(jax.grad(loss_fn))(params, batch)
    v = jax.tree.map(lambda p: jax.random.normal(key(3), p.shape, p.dtype), params)
    eps = 1e-6
    shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, v)  # noqa: E731
    fd = (loss_fn(shift(eps), batch) - loss_fn(shift(-eps), batch)) / (2 * eps)
    directional = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    np.testing.assert_allclose(directional, fd, rtol=1e-6)
    assert abs(directional) > 1e-3
    bn_scale = [x for path, x in jax.tree_util.tree_flatten_with_path(g)[0]
                if "scale" in jax.tree_util.keystr(path)]
    assert bn_scale and all(np.any(x != 0) for x in bn_scale)  # BN parameters are trained


# ---------------------------------------------------------------- conv implementations

def test_conv_impls_share_params():
  x = jnp.ones((1, 9, 9, 3))
  kw = dict(kernel_init=layers.glorot_uniform, name="c")
  for cls in (models.conv_module("im2col"), models.conv_module("im2col_full")):
    a = nn.Conv(4, (3, 3), **kw).init(key(5), x)
    b = cls(4, (3, 3), **kw).init(key(5), x)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(u, w)
  assert models.conv_module("xla") is nn.Conv


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 9, 8, 3), (3, 3), (1, 1), "SAME"),
    ((2, 9, 8, 3), (5, 5), (1, 1), "VALID"),
    ((2, 8, 8, 3), (3, 3), (2, 2), "SAME"),     # ResNet's downsampling conv (even input)
    ((2, 9, 9, 3), (1, 1), (2, 2), "SAME"),     # ResNet's 1×1 shortcut (odd input)
    ((2, 11, 3), (3,), (1,), "VALID"),          # IMDB's Conv1D
])
def test_im2col_conv_value_grad_hvp_match_xla(shape, kernel, strides, padding):
  with jax.enable_x64(True):
    x = jax.random.normal(key(0), shape, jnp.float64)
    ref = nn.Conv(4, kernel, strides=strides, padding=padding, param_dtype=jnp.float64)
    params = ref.init(key(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)   # nonzero bias
    v = jax.tree.map(lambda p: jax.random.normal(key(2), p.shape, p.dtype), params)

    def derivatives(module):
      f = lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)  # noqa: E731
      g = jax.grad(f, argnums=(0, 1))
      hvp = lambda p, x, v: jax.jvp(g, (p, x), (v, jnp.ones_like(x)))[1]  # noqa: E731
      return jax.jit(lambda p, x, v: (module.apply(p, x), g(p, x), hvp(p, x, v)))(params, x, v)

    want = derivatives(ref)
    for impl in ("im2col", "im2col_full"):
      mod = models.conv_module(impl)(4, kernel, strides=strides, padding=padding,
                                     param_dtype=jnp.float64)
      got = derivatives(mod)
      assert got[0].shape == want[0].shape
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,shape", [("simple_cnn_root", (12, 12, 1)),
                                        ("resnet32", (8, 8, 3))])
def test_model_loss_grad_hvp_equal_across_conv_impls(name, shape):
  with jax.enable_x64(True):
    batch = image_batch(2, *shape, dtype=jnp.float64)
    # Small widths: the test is about the conv impls, not the sizes.
    kw = (dict(blocks_per_stage=1, widths=(4, 8, 8), pool_size=2) if name == "resnet32"
          else dict(features=6, dense_features=16))
    ref = models.get_model(name, conv_impl="xla", **kw)
    params, state = models.init_model(ref, key(0), batch)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.01, params)
    v = jax.tree.map(lambda p: jax.random.normal(key(3), p.shape, p.dtype), params)

    def derivatives(model):
      loss_fn = models.make_loss_fn(model, state, train=False, l2=1e-3)
      g = jax.grad(loss_fn)
      hvp = lambda p, b, v: jax.jvp(lambda q: g(q, b), (p,), (v,))[1]  # noqa: E731
      return jax.jit(lambda p, b, v: (loss_fn(p, b), g(p, b), hvp(p, b, v)))(params, batch, v)

    want = derivatives(ref)
    got = derivatives(models.get_model(name, conv_impl="im2col", **kw))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    first = "conv1" if name == "simple_cnn_root" else "first_conv"
    assert float(jnp.max(jnp.abs(want[2][first]["kernel"]))) > 1e-6


def test_im2col_float32_close_to_xla_on_root():
  batch = image_batch(4, 28, 28, 1)
  ref = models.get_model("simple_cnn_root", conv_impl="xla")
  params, state = models.init_model(ref, key(0), batch)
  g_ref = jax.jit(jax.grad(models.make_loss_fn(ref, state, train=False)))(params, batch)
  imp = models.get_model("simple_cnn_root", conv_impl="im2col")
  g = jax.jit(jax.grad(models.make_loss_fn(imp, state, train=False)))(params, batch)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_max_pool_layer_equals_flax_max_pool_with_ties(x64):
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.maximum(np.round(rng.normal(size=(2, 9, 8, 3)) * 2) / 2, 0))  # ReLU-like
  v = jnp.asarray(rng.normal(size=x.shape))
  ours = lambda x: jnp.sum(jnp.tanh(layers.max_pool(x, 2)) ** 2)
  flax_pool = lambda x: jnp.sum(jnp.tanh(nn.max_pool(x, (2, 2), (2, 2))) ** 2)
  assert layers.max_pool(x, 2).shape == (2, 4, 4, 3)
  np.testing.assert_array_equal(layers.max_pool(x, 2), nn.max_pool(x, (2, 2), (2, 2)))
  np.testing.assert_array_equal(jax.grad(ours)(x), jax.grad(flax_pool)(x))
  np.testing.assert_array_equal(jax.jvp(jax.grad(ours), (x,), (v,))[1],
                                jax.jvp(jax.grad(flax_pool), (x,), (v,))[1])
