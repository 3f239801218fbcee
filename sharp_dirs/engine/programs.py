"""Compiled programs shared by the runs of a family, and a count of what jax compiles.

A family of runs (the paper's grids: η × S × seeds, γ × seeds of Nudged SGD) differs mostly in a
few scalars. Those scalars — ``HYPERPARAM_FIELDS`` — enter the engine's jitted programs as
arguments (``hyperparams``), never as compile-time constants, and every other config field
that can shape a program is part of the ``program_key``. So two runs whose configs differ
only in ``VALUE_FIELDS`` (the hyperparameters, plus fields read only on the host: the data
split, the number of epochs, where to start from) trace, lower and compile each program once
per process (``shared``), and once per machine through jax's persistent compilation cache
(the same program text hits it).

``CompileCounter`` counts jax's traces and backend compiles (``jax.monitoring`` events) while
it is open: the tests check that a second run of a family compiles nothing, and
bench/bench_family.py counts a family's compiles before and after.
"""

import collections
import json
import threading
from typing import Callable

import jax
import numpy as np

# Config fields that enter the programs as arguments (hyperparams()).
HYPERPARAM_FIELDS = ("optimizer.learning_rate", "nsgd.gamma", "seed")
# Fields a program may differ in without being built again: the hyperparameters and the fields
# only the host reads (the train/valid split, the run's length, the checkpoint it starts from).
VALUE_FIELDS = HYPERPARAM_FIELDS + ("data_seed", "num_epochs", "init_from", "init_from_step",
                                    "init_from_epoch")
# How many distinct program keys keep their programs alive in one process (a sweep needs one
# per family; a test session a few dozen).
MAX_SHARED = 64


def hyperparams(config) -> dict:
  """{"learning_rate": η float32, "seed": int32, "gamma": γ float32 (Nudged SGD)}: the config's
  values of ``HYPERPARAM_FIELDS`` as the arrays the jitted programs take."""
  values = {"learning_rate": np.float32(config.optimizer.learning_rate),
            "seed": np.int32(config.seed)}
  if config.optimizer.name == "nsgd":
    values["gamma"] = np.float32(config.nsgd.gamma)
  return values


def program_key(config) -> str:
  """The config without ``VALUE_FIELDS``, as canonical JSON: equal keys, equal programs."""
  tree = config.to_dict()
  for dotted in VALUE_FIELDS:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
      node = node.get(p, {})
    node.pop(last, None)
  return json.dumps(tree, sort_keys=True, default=repr)


_shared: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
_lock = threading.Lock()


def shared(name: str, config, build: Callable[[], object], placement=None):
  """``build()`` (a jitted function, or a tuple of them) once per (name, program key): later
  calls with a config of the same key get the same object, and so its compiled programs.

  ``build`` must read from ``config`` only fields of its program key (a value field has to
  come in as an argument). On a mesh (``placement``) nothing is shared: a placement's programs
  belong to its mesh.
  """
  if placement is not None:
    return build()
  key = (name, program_key(config))
  with _lock:
    if key in _shared:
      _shared.move_to_end(key)
      return _shared[key]
  value = build()
  with _lock:
    _shared[key] = value
    while len(_shared) > MAX_SHARED:
      _shared.popitem(last=False)
  return value


def clear_shared() -> None:
  """Forgets every shared program (the next run builds and compiles its own)."""
  with _lock:
    _shared.clear()


# --------------------------------------------------------------------------- counting compiles

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_counters: list = []


def _on_duration(event: str, duration: float, **kwargs) -> None:
  del kwargs
  for counter in list(_counters):
    counter.record(event, duration)


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  for counter in list(_counters):
    counter.record(event, 0.0)


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


class CompileCounter:
  """Counts jax's traces, backend compiles and persistent-cache hits while open.

  >>> with CompileCounter() as counts:
  ...   run()
  >>> counts.traces, counts.compiles, counts.cache_hits, counts.compile_seconds

  ``compiles`` are XLA compilations (a persistent-cache hit is not one); ``traces`` are
  Python-to-jaxpr traces (jit cache misses), each of which also lowers.
  """

  def __init__(self):
    self.traces = self.compiles = self.cache_hits = 0
    self.trace_seconds = self.compile_seconds = 0.0

  def record(self, event: str, seconds: float) -> None:
    if event == TRACE_EVENT:
      self.traces += 1
      self.trace_seconds += seconds
    elif event == COMPILE_EVENT:
      self.compiles += 1
      self.compile_seconds += seconds
    elif event == CACHE_HIT_EVENT:
      self.cache_hits += 1

  def as_dict(self) -> dict:
    return {"traces": self.traces, "compiles": self.compiles, "cache_hits": self.cache_hits,
            "trace_seconds": self.trace_seconds, "compile_seconds": self.compile_seconds}

  def __enter__(self) -> "CompileCounter":
    _counters.append(self)
    return self

  def __exit__(self, *exc) -> None:
    _counters.remove(self)
