"""The paper's models (flax linen) and the boundary to ``loss_fn(params, batch) -> scalar``.

Models (``get_model(name, **overrides)``; names in ``MODEL_NAMES``):
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
  param_shapes(model, example_batch), count_params(params)
The loss is mean softmax cross-entropy plus Keras' l2·Σ‖W‖² over conv/dense kernels.

Convolutions: ``conv_impl`` ∈ {"auto", "xla", "im2col"} on the conv models; "auto" (default)
is the im2col-by-slicing ``Im2colConv`` on CPU (faster gradients and HVPs there, see
bench/RESULTS_conv.md) and ``flax.linen.Conv`` elsewhere. Both have the same params.
"""

from sharp_dirs.models.layers import CONV_IMPLS
from sharp_dirs.models.layers import Im2colConv
from sharp_dirs.models.layers import KerasLSTM
from sharp_dirs.models.layers import conv_module
from sharp_dirs.models.layers import im2col
from sharp_dirs.models.loss import accuracy
from sharp_dirs.models.loss import count_params
from sharp_dirs.models.loss import cross_entropy
from sharp_dirs.models.loss import init_model
from sharp_dirs.models.loss import l2_penalty
from sharp_dirs.models.loss import make_loss_fn
from sharp_dirs.models.loss import param_shapes
from sharp_dirs.models.loss import predict
from sharp_dirs.models.loss import train_loss_and_state
from sharp_dirs.models.registry import MODEL_NAMES
from sharp_dirs.models.registry import get_model
from sharp_dirs.models.resnet import ResNet
from sharp_dirs.models.simple_cnn import SimpleCNN
from sharp_dirs.models.text import ImdbCNN
from sharp_dirs.models.text import ImdbLSTM
from sharp_dirs.models.text import LSTMLanguageModel
from sharp_dirs.models.vgg import VGG
