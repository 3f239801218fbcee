"""Model registry: ``get_model(name, **overrides)``, and what each model needs of the data.

Adding a model is one line here: its class, its paper defaults, the kind of data it takes
("image", "text" or "lm", matched against ``sharp_dirs.data.names.DATASET_KINDS`` by the config
check) and whether it has batch norm (full-batch runs refuse those).
"""

from typing import Any, Callable, Dict, NamedTuple

import flax.linen as nn

from sharp_dirs.models.mlp import MLP
from sharp_dirs.models.resnet import ResNet
from sharp_dirs.models.simple_cnn import SimpleCNN
from sharp_dirs.models.text import ImdbCNN, ImdbLSTM, LSTMLanguageModel
from sharp_dirs.models.vgg import VGG


class ModelSpec(NamedTuple):
  cls: Callable[..., nn.Module]
  defaults: Dict[str, Any]  # the paper's settings
  data_kind: str  # "image", "text" or "lm"
  batch_norm: bool = False


_REGISTRY: Dict[str, ModelSpec] = {
    "mlp": ModelSpec(MLP, dict(hidden=(256, 256)), "image"),
    "simple_cnn_root": ModelSpec(SimpleCNN, dict(features=32, kernel_size=3), "image"),
    "simple_cnn_medium": ModelSpec(SimpleCNN, dict(features=100, kernel_size=5), "image"),
    "resnet32": ModelSpec(ResNet, dict(blocks_per_stage=5, init_scale=1.0 / 15, use_bn=False),
                          "image"),
    "resnet32_bn": ModelSpec(ResNet, dict(blocks_per_stage=5, init_scale=1.0, use_bn=True),
                             "image", batch_norm=True),
    "vgg11": ModelSpec(VGG, dict(), "image", batch_norm=True),
    "imdb_cnn": ModelSpec(ImdbCNN, dict(), "text"),
    "imdb_lstm": ModelSpec(ImdbLSTM, dict(), "text"),
    "lstm_lm": ModelSpec(LSTMLanguageModel, dict(), "lm"),
}

MODEL_NAMES = tuple(_REGISTRY)
MODEL_KINDS = {name: spec.data_kind for name, spec in _REGISTRY.items()}
BATCH_NORM_MODELS = tuple(name for name, spec in _REGISTRY.items() if spec.batch_norm)


def get_model(name: str, **overrides) -> nn.Module:
  """The model ``name`` (one of MODEL_NAMES) with its paper defaults, updated by ``overrides``."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
  cls, defaults = _REGISTRY[name][:2]
  return cls(**{**defaults, **overrides})


def model_arguments(name: str) -> tuple[str, ...]:
  """The constructor arguments of the model ``name`` (what ``model_kwargs`` may set)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cls = _REGISTRY[name].cls
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in ("parent", "name"))
