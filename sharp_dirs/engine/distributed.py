"""Meshes, placement and multi-host start-up: the same engine on 1 or N devices, on 1 or N hosts.

Data parallelism with jax's sharding (no ``pmap``, no collectives of our own): a mesh with axes
``('data', 'model')`` from ``jax.make_mesh``; every batch and Hessian sample is split over
``data`` (``NamedSharding(mesh, P('data'))``, or ``P(None, 'data')`` for stacked batches
``[num_batches, batch_size, ...]``); parameters, optimizer state and Krylov vectors are
replicated, or, with ``mesh.model > 1``, each leaf is split over ``model`` along its largest
dimension that the model axis divides (Krylov vectors ``[k, *leaf.shape]`` like their leaf).
XLA's SPMD partitioner then runs every jitted step on per-device shards and inserts the
all-reduces of the gradients and Hessian-vector products.

Axis types: ``mesh.axis_types`` sets the ``data`` axis (``'auto'`` or ``'explicit'``; with
Explicit the batch's sharding is part of the arrays' types). The ``model`` axis is always Auto:
where a parameter is split is a layout choice left to XLA (an Explicit model axis would need
every model's matmuls to name their output shardings).

Multi-host: ``initialize`` (``jax.distributed.initialize``) before anything else touches jax;
every process then runs the same program. Each process computes the global batch from the
shared seed (the data pipeline is deterministic) and hands to its own devices only their rows
(``jax.make_array_from_callback``), so no process holds another's shards on device; jitted
steps see one global array.

One device (or ``mesh.data = mesh.model = 1``): ``placement_from_config`` returns None and the
engine runs its plain single-device jits, without any sharding annotation.
"""

import functools
from typing import Callable, Mapping, Optional

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from sharp_dirs.engine import config as config_lib
from sharp_dirs.types import PyTree

AXES = ("data", "model")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, auto: bool = False) -> bool:
  """Starts ``jax.distributed`` when asked; returns whether it did.

  Call it before any other use of jax. Pass the coordinator's ``host:port``, the number of
  processes and this process's id (0 .. num_processes − 1), or ``auto=True`` to let jax detect
  them on a cluster it knows (SLURM, Open MPI, Cloud TPU, GKE). Nothing given: one process, no
  call.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    missing = [n for n, v in zip(("coordinator_address", "num_processes", "process_id"),
                                 explicit) if v is None]
    if missing and not auto:
      raise ValueError(f"jax.distributed needs coordinator_address, num_processes and "
                       f"process_id together (or auto-detection); missing: {missing}.")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
  if auto:
    jax.distributed.initialize()
    return True
  return False


def make_mesh(data: int, model: int = 1, axis_types: str = "auto") -> jax.sharding.Mesh:
  """A ('data', 'model') mesh of data × model devices (all of jax.devices(), every process)."""
  if axis_types not in config_lib.MESH_AXIS_TYPES:
    raise ValueError(f"axis_types must be one of {config_lib.MESH_AXIS_TYPES}, got "
                     f"{axis_types!r}.")
  kind = jax.sharding.AxisType.Explicit if axis_types == "explicit" else (
      jax.sharding.AxisType.Auto)
  return jax.make_mesh((data, model), AXES, axis_types=(kind, jax.sharding.AxisType.Auto))


def placement_from_config(config) -> Optional["Placement"]:
  """The run's Placement from ``config.mesh``, or None for a single-device run.

  Raises ConfigError (naming the field) for a mesh that does not fit the devices or the batch
  sizes, before anything is compiled.
  """
  if "mesh" not in config:  # a run directory's config.json from before config.mesh existed
    return None
  data, model = config_lib.validate_mesh(config, jax.device_count(), jax.process_count())
  if data * model == 1:
    return None
  return Placement(make_mesh(data, model, config.mesh.axis_types))


def _largest_divisible_dim(shape: tuple, n: int) -> Optional[int]:
  """The index of the largest dimension divisible by n (ties: the last), or None."""
  best = None
  for i, d in enumerate(shape):
    if d % n == 0 and d >= n and (best is None or d >= shape[best]):
      best = i
  return best


class Placement:
  """Where arrays live on a mesh, and jit wrappers that put their arguments there.

  ``put_batch`` splits batches over 'data'; ``put_tree`` places a pytree of parameters,
  optimizer state and eigenvectors (replicated, or split over 'model'); ``jit`` compiles a
  function whose batch arguments are split and whose other array arguments that are not yet
  on the mesh (PRNG keys, scalars, freshly built arrays) are replicated.
  """

  def __init__(self, mesh: jax.sharding.Mesh):
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self._devices = frozenset(mesh.devices.flat)

  @property
  def data_size(self) -> int:
    return self.mesh.shape["data"]

  @property
  def model_size(self) -> int:
    return self.mesh.shape["model"]

  def __repr__(self) -> str:
    types = tuple(str(t).rsplit(".", 1)[-1] for t in self.mesh.axis_types)
    return f"Placement(data={self.data_size}, model={self.model_size}, axis_types={types})"

  # -- shardings ----------------------------------------------------------------------------

  def batch_sharding(self, batch_dim: int = 0) -> NamedSharding:
    return NamedSharding(self.mesh, P(*([None] * batch_dim), "data"))

  def param_spec(self, shape: tuple) -> P:
    """P() (replicated), or 'model' on the leaf's largest dimension the model axis divides."""
    if self.model_size == 1:
      return P()
    dim = _largest_divisible_dim(tuple(shape), self.model_size)
    if dim is None:
      return P()
    return P(*[("model" if i == dim else None) for i in range(len(shape))])

  def param_shardings(self, params: PyTree) -> PyTree:
    return jax.tree.map(lambda p: NamedSharding(self.mesh, self.param_spec(np.shape(p))), params)

  def stacked_shardings(self, params: PyTree) -> PyTree:
    """Shardings of vectors stacked like eigenvectors: leaves [k, *leaf.shape]."""
    return jax.tree.map(
        lambda p: NamedSharding(self.mesh, P(None, *self.param_spec(np.shape(p)))), params)

  def tree_shardings(self, tree: PyTree, params: PyTree) -> PyTree:
    """Shardings of any pytree around ``params`` (train state, checkpoints): a leaf shaped like
    a parameter is placed like it, one shaped [k, *parameter shape] like a stacked vector, any
    other leaf is replicated."""
    specs = {}
    for p in jax.tree.leaves(params):
      specs.setdefault(tuple(np.shape(p)), self.param_spec(np.shape(p)))

    def leaf(x):
      shape = tuple(np.shape(x))
      if shape in specs:
        return NamedSharding(self.mesh, specs[shape])
      if len(shape) > 1 and shape[1:] in specs:
        return NamedSharding(self.mesh, P(None, *specs[shape[1:]]))
      return self.replicated
    return jax.tree.map(leaf, tree)

  # -- placing arrays -------------------------------------------------------------------------

  def on_mesh(self, x) -> bool:
    return isinstance(x, jax.Array) and x.sharding.device_set == self._devices

  def put(self, x, sharding: NamedSharding) -> jax.Array:
    """x (numpy, or a jax array of one process) placed with ``sharding``; on several hosts each
    process transfers only the shards of its own devices (``x`` is the same on all of them)."""
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  def put_batch(self, batch: PyTree, batch_dim: int = 0) -> PyTree:
    """Every leaf split over 'data' along ``batch_dim`` (0: [B, ...]; 1: [nb, B, ...])."""
    sharding = self.batch_sharding(batch_dim)

    def place(x):
      if self.on_mesh(x):
        return x
      shape = np.shape(x)
      if len(shape) <= batch_dim or shape[batch_dim] % self.data_size:
        raise ValueError(f"a batch leaf of shape {shape} cannot be split over the "
                         f"{self.data_size} devices of mesh axis 'data' along dimension "
                         f"{batch_dim}: its size must be divisible by {self.data_size}.")
      return self.put(x, sharding)
    return jax.tree.map(place, batch)

  def put_tree(self, tree: PyTree, params: PyTree) -> PyTree:
    """``tree`` (train state, checkpoint tree) placed by ``tree_shardings``."""
    return jax.tree.map(self.put, tree, self.tree_shardings(tree, params))

  def put_replicated(self, tree: PyTree) -> PyTree:
    """Array leaves not yet on the mesh replicated onto it (others left as they are)."""
    def place(x):
      if self.on_mesh(x) or not isinstance(x, (jax.Array, np.ndarray)):
        return x
      return self.put(x, self.replicated)
    return jax.tree.map(place, tree)

  # -- compiling --------------------------------------------------------------------------------

  def jit(self, fn: Callable, *, batch_argnums: Mapping[int, int] = None,
          out_shardings_fn: Optional[Callable[[tuple], PyTree]] = None,
          donate_argnums=()) -> Callable:
    """``jax.jit(fn)`` run in this mesh's context, its arguments placed first.

    batch_argnums: {argument index: batch dimension} of the arguments to split over 'data'
      (numpy batches from the data pipeline; arrays already on the mesh are kept).
    out_shardings_fn: (placed arguments) -> out_shardings, evaluated at the first call (e.g.
      the train state's own shardings): outputs stay where they belong, and small results are
      replicated, so every process can read them.
    The returned function has ``.lower(*args)`` (for inspecting the compiled program).
    """
    batch_argnums = dict(batch_argnums or {})
    compiled = {}

    def place(args):
      return tuple(self.put_batch(a, batch_argnums[i]) if i in batch_argnums else
                   self.put_replicated(a) for i, a in enumerate(args))

    def get(args):
      if "fn" not in compiled:
        kwargs = {"donate_argnums": donate_argnums}
        if out_shardings_fn is not None:
          kwargs["out_shardings"] = out_shardings_fn(args)
        compiled["fn"] = jax.jit(fn, **kwargs)
      return compiled["fn"]

    @functools.wraps(fn)
    def call(*args):
      args = place(args)
      with jax.set_mesh(self.mesh):
        return get(args)(*args)

    def lower(*args):
      args = place(args)
      with jax.set_mesh(self.mesh):
        return get(args).lower(*args)

    call.lower = lower
    return call
