"""The paper's models (flax linen) and the boundary to ``loss_fn(params, batch) -> scalar``.

Models (``get_model(name, **overrides)``; names in ``MODEL_NAMES``):
  mlp                                  ReLU MLP on flattened inputs (784-256-256-10)
  simple_cnn_root, simple_cnn_medium   SimpleCNN (F=32,k=3 / F=100,k=5)
  resnet32, resnet32_bn                pre-activation ResNet-32 (no BN, init 1/15 / with BN)
  vgg11                                VGG-11 with BN, classifier dropout 0.5
  imdb_cnn, imdb_lstm                  IMDB classifiers (Keras imdb_cnn; an LSTM after imdb_lstm)
  lstm_lm                              2×200 LSTM language model, ``vocab_size`` argument
Every model is called ``model.apply(variables, x, train=bool)`` and declares the batch keys it
reads as class attributes ``input_key`` / ``target_key``.

Batch formats (dicts of arrays):
  images          {"image": float32 [B, H, W, C], "label": int32 [B]}
  text classes    {"tokens": int32 [B, T],        "label": int32 [B]}
  language model  {"inputs": int32 [B, T],        "targets": int32 [B, T]}   (mean token CE)

Loss API (sharp_dirs.models.loss):
  init_model(model, key, example_batch) -> (params, model_state)
      model_state = {"batch_stats": ...} for BN models, {} otherwise
  make_loss_fn(model, model_state, *, train, rng=None, l2=0.0) -> loss_fn(params, batch) -> scalar
      train=False: running BN stats, no dropout; train=True: batch stats, dropout from rng
  train_loss_and_state(model, params, model_state, batch, rng=None, l2=0.0)
      -> (loss, (new_model_state, logits));  jax.value_and_grad(..., argnums=1, has_aux=True)
  predict(model, params, model_state, inputs) -> logits (inference mode)
  cross_entropy(logits, labels), accuracy(logits, labels), l2_penalty(params, exclude=())
  param_shapes(model, example_batch), count_params(params) (= tree_math.size)
The loss is mean softmax cross-entropy plus Keras' l2·Σ‖W‖² over conv/dense kernels.

Convolutions: ``conv_impl`` ∈ {"auto", "xla", "im2col"} on the conv models; "auto" (default)
is ``flax.linen.Conv``, except the im2col-by-slicing ``Im2colConv`` on a CPU whose XLA still
runs YNNPACK fusions (``sharp_dirs.xla_cpu`` turns them off at import; see bench/RESULTS.md,
"The XLA CPU flag"). Both have the same params.

Imports are lazy (PEP 562), as in ``sharp_dirs.data``: ``import sharp_dirs`` does not load flax
until a name of this package is used.
"""

from sharp_dirs import lazy

_EXPORTS = {
    "CONV_IMPLS": ("sharp_dirs.models.layers", "CONV_IMPLS"),
    "Im2colConv": ("sharp_dirs.models.layers", "Im2colConv"),
    "KerasLSTM": ("sharp_dirs.models.layers", "KerasLSTM"),
    "conv_module": ("sharp_dirs.models.layers", "conv_module"),
    "im2col": ("sharp_dirs.models.layers", "im2col"),
    "accuracy": ("sharp_dirs.models.loss", "accuracy"),
    "count_params": ("sharp_dirs.models.loss", "count_params"),
    "cross_entropy": ("sharp_dirs.models.loss", "cross_entropy"),
    "init_model": ("sharp_dirs.models.loss", "init_model"),
    "l2_penalty": ("sharp_dirs.models.loss", "l2_penalty"),
    "make_loss_fn": ("sharp_dirs.models.loss", "make_loss_fn"),
    "param_shapes": ("sharp_dirs.models.loss", "param_shapes"),
    "predict": ("sharp_dirs.models.loss", "predict"),
    "train_loss_and_state": ("sharp_dirs.models.loss", "train_loss_and_state"),
    "MODEL_NAMES": ("sharp_dirs.models.registry", "MODEL_NAMES"),
    "get_model": ("sharp_dirs.models.registry", "get_model"),
    "MLP": ("sharp_dirs.models.mlp", "MLP"),
    "ResNet": ("sharp_dirs.models.resnet", "ResNet"),
    "SimpleCNN": ("sharp_dirs.models.simple_cnn", "SimpleCNN"),
    "ImdbCNN": ("sharp_dirs.models.text", "ImdbCNN"),
    "ImdbLSTM": ("sharp_dirs.models.text", "ImdbLSTM"),
    "LSTMLanguageModel": ("sharp_dirs.models.text", "LSTMLanguageModel"),
    "VGG": ("sharp_dirs.models.vgg", "VGG"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy.attach(globals(), _EXPORTS)
