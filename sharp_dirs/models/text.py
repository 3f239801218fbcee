"""Sequence models: the IMDB classifiers and the 2×200 LSTM language model (Zaremba small).

Token ids are int32; id 0 is an ordinary token to the models (Keras pads IMDB with 0 in front).
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharp_dirs.models import layers


class ImdbCNN(nn.Module):
  """Keras' imdb_cnn (released src/models/imdb.py). tokens [B, T] int -> logits [B, 2].

  Embedding(V, 50) → dropout → Conv1D(250, 3, valid) → ReLU → global max-pool over time
  → dense 250 → dropout → ReLU → dense 2. 351,002 params for V=5000.
  """
  vocab_size: int = 5000
  embed_dim: int = 50
  filters: int = 250
  kernel_size: int = 3
  hidden: int = 250
  dropout: float = 0.2
  num_classes: int = 2
  conv_impl: str = "auto"

  input_key: ClassVar[str] = "tokens"
  target_key: ClassVar[str] = "label"
  l2_exclude: ClassVar[tuple] = ()

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=layers.keras_uniform(),
                 name="embedding")(tokens)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    conv_cls = layers.conv_module(self.conv_impl)
    x = conv_cls(self.filters, (self.kernel_size,), padding="VALID",
                 kernel_init=layers.glorot_uniform, bias_init=layers.zeros, name="conv")(x)
    x = jnp.max(nn.relu(x), axis=1)
    x = layers.dense(self.hidden, name="dense")(x)
    x = nn.relu(nn.Dropout(self.dropout, deterministic=not train)(x))
    return layers.dense(self.num_classes, name="logits")(x)


class ImdbLSTM(nn.Module):
  """After Keras' imdb_lstm (not in the paper). tokens [B, T] int -> logits [B, 2].

  Embedding(V, 128) → dropout → LSTM(128) → last hidden state → dense 2 (softmax CE instead of
  Keras' sigmoid unit, so every classifier shares one loss). 5000·128 + 4·(128·128·2 + 128) + 258
  = 771,842 params for V=5000.
  """
  vocab_size: int = 5000
  embed_dim: int = 128
  hidden: int = 128
  dropout: float = 0.2
  num_classes: int = 2
  recurrent_activation: str = "hard_sigmoid"

  input_key: ClassVar[str] = "tokens"
  target_key: ClassVar[str] = "label"
  l2_exclude: ClassVar[tuple] = ()

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=layers.keras_uniform(),
                 name="embedding")(tokens)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    _, (_, h) = layers.KerasLSTM(self.hidden, self.recurrent_activation, name="lstm")(x)
    return layers.dense(self.num_classes, name="logits")(h)


class LSTMLanguageModel(nn.Module):
  """2×200 LSTM language model (released src/models/ptb.py). inputs [B, T] -> logits [B, T, V].

  Embedding(V, H) → [dropout] → (LSTM(H) → [dropout]) × num_layers → dense V, with dropout rate
  1 − keep_prob (0 by default; the noise-grid runs used 0.1). ``carry`` (one (c, h) pair of
  [B, H] per layer) continues a stateful run; with return_carry=True the call returns
  (logits, final carries). The loss API starts every batch from zeros.
  4,651,600 params for V = 10,000.
  """
  vocab_size: int = 10000
  hidden: int = 200
  num_layers: int = 2
  dropout: float = 0.0
  recurrent_activation: str = "hard_sigmoid"

  input_key: ClassVar[str] = "inputs"
  target_key: ClassVar[str] = "targets"
  l2_exclude: ClassVar[tuple] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, *, train: bool = False, carry=None,
               return_carry: bool = False):
    x = nn.Embed(self.vocab_size, self.hidden, embedding_init=layers.keras_uniform(),
                 name="embedding")(inputs)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    carries = []
    for i in range(self.num_layers):
      x, c = layers.KerasLSTM(self.hidden, self.recurrent_activation, name=f"lstm{i + 1}")(
          x, None if carry is None else carry[i])
      carries.append(c)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = layers.dense(self.vocab_size, name="logits")(x)
    return (logits, tuple(carries)) if return_carry else logits
