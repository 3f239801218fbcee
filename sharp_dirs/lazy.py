"""Lazy package attributes (PEP 562): a name is imported from its module on first use."""

import importlib
from typing import Callable, Mapping


def attach(namespace: dict, exports: Mapping[str, tuple[str, str]]) -> tuple[Callable, Callable]:
  """(__getattr__, __dir__) for a package whose ``exports`` map name -> (module, attribute).

  Usage in a package's ``__init__``: ``__getattr__, __dir__ = lazy.attach(globals(), EXPORTS)``.
  """
  def __getattr__(name):
    if name in exports:
      module, attr = exports[name]
      value = getattr(importlib.import_module(module), attr)
      namespace[name] = value
      return value
    raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

  def __dir__():
    return sorted(set(namespace) | set(exports))

  return __getattr__, __dir__
