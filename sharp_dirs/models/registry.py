"""Model registry: ``get_model(name, **overrides)``."""

from typing import Any, Callable, Dict, Tuple

import flax.linen as nn

from sharp_dirs.models.mlp import MLP
from sharp_dirs.models.resnet import ResNet
from sharp_dirs.models.simple_cnn import SimpleCNN
from sharp_dirs.models.text import ImdbCNN, ImdbLSTM, LSTMLanguageModel
from sharp_dirs.models.vgg import VGG

_REGISTRY: Dict[str, Tuple[Callable[..., nn.Module], Dict[str, Any]]] = {
    "mlp": (MLP, dict(hidden=(256, 256))),
    "simple_cnn_root": (SimpleCNN, dict(features=32, kernel_size=3)),
    "simple_cnn_medium": (SimpleCNN, dict(features=100, kernel_size=5)),
    "resnet32": (ResNet, dict(blocks_per_stage=5, init_scale=1.0 / 15, use_bn=False)),
    "resnet32_bn": (ResNet, dict(blocks_per_stage=5, init_scale=1.0, use_bn=True)),
    "vgg11": (VGG, dict()),
    "imdb_cnn": (ImdbCNN, dict()),
    "imdb_lstm": (ImdbLSTM, dict()),
    "lstm_lm": (LSTMLanguageModel, dict()),
}

MODEL_NAMES = tuple(_REGISTRY)


def get_model(name: str, **overrides) -> nn.Module:
  """The model ``name`` (one of MODEL_NAMES) with its paper defaults, updated by ``overrides``."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  cls, defaults = _REGISTRY[name]
  return cls(**{**defaults, **overrides})


def model_arguments(name: str) -> tuple[str, ...]:
  """The constructor arguments of the model ``name`` (what ``model_kwargs`` may set)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cls, _ = _REGISTRY[name]
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in ("parent", "name"))
