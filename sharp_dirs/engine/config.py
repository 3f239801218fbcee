"""The experiment schema: every field ``train.train_and_evaluate`` reads, its default, and its checks.

Config files in ``configs/`` start from ``default_config()`` (the paper's SimpleCNN noise-grid
settings) and change a few fields; ``validate`` rejects a bad config before anything is
compiled, naming the field, the value and what is allowed. Units: ``epoch`` is the paper's
(``epoch_size`` examples, the training set by default); "evaluations" count tracker or eval
events.
"""

import math
from typing import Any

from ml_collections import config_dict

from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import krylov
from sharp_dirs import nudge
from sharp_dirs.data.names import DATASET_KINDS

ConfigDict = config_dict.ConfigDict

OPTIMIZERS = ("sgd", "nsgd", "adam", "adamw", "rmsprop", "adagrad", "lamb", "lion")
NSGD_SOURCES = ("tracker", "train_batch")
WHICH = krylov.WHICH
WARM_METHODS = hessian.METHODS
MESH_AXIS_TYPES = ("auto", "explicit")


OPTAX_FLOAT_KWARGS = ("b1", "b2", "eps", "eps_root", "weight_decay", "decay",
                      "initial_accumulator_value")


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field and what is allowed."""


def given_kwargs(kwargs) -> dict:
  """The entries of a kwargs field (model_kwargs, optimizer.kwargs) that are not None, lists
  as tuples (a config.json stores tuples as lists; a flax module's fields must hash)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(kwargs).items()
          if v is not None}


def _check_finite(node: Any, prefix: str = "") -> None:
  """Every float of the config (in tuples too) finite: nan/inf fail here, naming the field."""
  for key, value in node.items():
    field = f"{prefix}{key}"
    if isinstance(value, (ConfigDict, dict)):
      _check_finite(value, field + ".")
      continue
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        _fail(field, value, "must be a finite number")


def _check_kwargs(config: ConfigDict) -> None:
  """model_kwargs and optimizer.kwargs: only arguments the model / optax.<name> takes."""
  from sharp_dirs.models import registry  # pylint: disable=g-import-not-at-top
  allowed = registry.model_arguments(config.model)
  for key, value in given_kwargs(config.model_kwargs).items():
    if key not in allowed:
      _fail(f"model_kwargs.{key}", value,
            f"model {config.model!r} takes no argument {key!r}; it takes {', '.join(allowed)} "
            f"(a config variant, e.g. :cpu, sets model_kwargs for its own model: with another "
            f"model pass --config.model_kwargs.{key}=None)")
  o = config.optimizer
  given = given_kwargs(o.kwargs)
  if not given or o.name not in OPTIMIZERS:
    return
  if o.name in ("sgd", "nsgd"):
    key = next(iter(given))
    _fail(f"optimizer.kwargs.{key}", given[key],
          f"optimizer {o.name!r} takes no optax kwargs (its options are optimizer.momentum, "
          "optimizer.nesterov" + (" and the nsgd.* fields" if o.name == "nsgd" else "") + ")")
  import inspect  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  params = inspect.signature(getattr(optax, o.name)).parameters
  for key, value in given.items():
    if key not in params or key == "learning_rate":
      _fail(f"optimizer.kwargs.{key}", value,
            f"optax.{o.name} takes no argument {key!r}"
            + (" (set optimizer.learning_rate)" if key == "learning_rate" else
               f"; it takes {', '.join(p for p in params if p != 'learning_rate')}"))


def default_config() -> ConfigDict:
  """Every field with the paper's default (SimpleCNN root, plain SGD, per-epoch top-5)."""
  c = ConfigDict()
  c.scale = "paper"  # "cpu" for the reduced-scale variants (figure titles say which)
  c.seed = 0  # init, data order, augmentation, Hessian samples, dropout: all derived from it

  # Data.
  c.dataset = "fashion_mnist"
  # tfds data dir ('' = $SHARP_DIRS_DATA_DIR or ~/.cache/sharp_dirs/...); for dataset 'arrays'
  # (a user's own images) the .npz file
  c.data_dir = ""
  c.data_seed = 0  # train/valid split (the paper's code used 777)
  c.num_train_examples = 0  # 0 = the whole training split; n = its first n examples
  c.augment = config_dict.placeholder(bool)  # None = the paper's default for the dataset
  c.lm_num_steps = 20  # language models: tokens per training window

  # Model and loss.
  c.model = "simple_cnn_root"
  c.model_kwargs = ConfigDict()  # extra constructor arguments, e.g. dropout; None = the default
  c.l2 = 0.0  # Keras' l2: loss += l2·Σ‖W‖² over kernels

  # Training.
  c.batch_size = 128  # S
  c.num_epochs = 200
  c.epoch_size = 0  # examples per "epoch" (the paper's --epoch_size); 0 = the training set
  c.full_batch = False  # gradient descent: every step uses the whole training set
  c.optimizer = ConfigDict()
  c.optimizer.name = "sgd"  # one of OPTIMIZERS
  c.optimizer.learning_rate = 0.01  # η
  c.optimizer.momentum = 0.0
  c.optimizer.nesterov = False
  c.optimizer.grad_clip_norm = 0.0  # > 0: clip the global gradient norm (Keras clipnorm)
  # Extra arguments of optax.<name>: the usual ones are here as placeholders (None: optax's
  # default), so --config.optimizer.kwargs.b1=0.95 works; others are given as a dict literal,
  # --config.optimizer.kwargs="{'nesterov': True}" (which replaces the whole dict).
  c.optimizer.kwargs = ConfigDict({
      name: config_dict.placeholder(float) for name in OPTAX_FLOAT_KWARGS})

  # Nudged SGD (optimizer.name == "nsgd"): γ along the top num_directions eigenvectors.
  c.nsgd = ConfigDict()
  c.nsgd.num_directions = 5  # K
  c.nsgd.gamma = 0.1  # γ
  c.nsgd.rule = "constant"  # constant | remove | only_top | random | stability
  c.nsgd.variant = "nudge_velocity"  # with momentum: nudge_gradient | nudge_velocity | nudge_both
  c.nsgd.eigenpairs_from = "tracker"  # tracker (the paper) | train_batch (Lanczos in the step)
  c.nsgd.refresh_every = 100  # steps between in-step refreshes (eigenpairs_from=train_batch)
  c.nsgd.num_lanczos_steps = 20  # in-step refreshes only
  c.nsgd.burnin_steps = 0
  c.nsgd.freeze_directions = False  # keep the first eigenvectors (the "constant top" control)
  c.nsgd.stability_cap = 1.0

  # The top of the spectrum along the run (docs/protocol.md, Hessian top-k).
  c.tracking = ConfigDict()
  c.tracking.enabled = True
  c.tracking.k = 5
  c.tracking.num_lanczos_steps = 40  # the most HVPs per solve
  c.tracking.tol = 1e-3  # stop once ‖Hu − λu‖ <= tol·|λ| for all k (+ 2 guard pairs); 0 = never
  # The sample noise of λ_i (std over fresh samples of N), estimated at every evaluation by a
  # grouped jackknife over G groups of whole batches, G the largest divisor <= noise_groups of
  # the sample's batches (k more HVPs; logged as hessian/noise_i; sharp_dirs.engine.tracking);
  # 0 = no estimate (nor is there one when the sample is a single batch).
  c.tracking.noise_groups = 8
  # tol="auto": > 0 sets each solve's tol to this fraction of the last evaluation's relative
  # noise min_i σ_i/|λ_i| (clamped to [1e-4, 1e-1]; tracking.tol for the first evaluation);
  # 0 = the fixed tracking.tol. A separate field because config fields keep their type.
  c.tracking.tol_noise_fraction = 0.0
  c.tracking.which = "largest"  # or "magnitude" (the paper's ARPACK 'LM')
  c.tracking.num_examples = 2560  # N, a fresh sample per evaluation
  c.tracking.fixed_sample = False  # True: the same N examples every evaluation (not the paper)
  c.tracking.batch_size = 128
  c.tracking.augment = config_dict.placeholder(bool)  # None = as the training stream
  c.tracking.every_epochs = 1
  c.tracking.zoom_epochs = 0.0  # for the first zoom_epochs epochs evaluate ...
  c.tracking.zoom_every_examples = 512  # ... every this many examples (the paper's zoom)
  c.tracking.warm_start = True
  c.tracking.linearize = False  # reuse one linearization per solve (faster, more memory)
  # Warm refreshes: "lanczos" (Lanczos from the previous eigenvectors) or "block" (block
  # Krylov-Rayleigh-Ritz from them, vmapped HVPs, Lanczos fallback; bench/RESULTS.md measures
  # it 2.5-2.9x slower than a cold solve on CPU for the MLP, so "lanczos" is the default).
  c.tracking.warm_method = "lanczos"

  # The paper's analyses, run at tracking evaluations (every `every` of them).
  c.analyses = ConfigDict()
  c.analyses.step_loss_change = ConfigDict(dict(
      enabled=False, every=1, multipliers=(0.25, 0.5, 1.0, 2.0, 4.0), num_trials=10,
      num_examples=2560))
  c.analyses.cross_section = ConfigDict(dict(
      enabled=False, every=1, directions=(0, 2, 4), num_trials=10, num_examples=1280,
      offsets=(-16.0, -8.0, -4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0,
               16.0)))
  c.analyses.alignment = ConfigDict(dict(enabled=False, every=1, num_batches=20))
  c.analyses.frobenius = ConfigDict(dict(enabled=False, every=1, num_samples=10))
  c.analyses.spectral_density = ConfigDict(dict(enabled=False, every=1, num_draws=2,
                                                num_steps=40))

  # Evaluation on the validation and test sets (and the first train examples, as the paper).
  c.eval = ConfigDict()
  c.eval.every_epochs = 1
  c.eval.batch_size = 500
  c.eval.num_train_examples = 10_000  # train loss/accuracy on the first n (no augmentation)
  c.eval.max_examples = 0  # 0 = whole valid/test splits; n = their first n

  # The NSGD table's protocol (docs/protocol.md, Training hyper-parameters), in evaluations.
  c.plateau = ConfigDict(dict(enabled=False, patience=100, factor=0.1))  # on valid loss
  c.early_stopping = ConfigDict(dict(enabled=False, patience=200))  # on valid accuracy

  # Devices (sharp_dirs.engine.distributed): a ('data', 'model') mesh over all devices of all
  # processes. Batches and Hessian samples are split over 'data'; parameters and Krylov vectors
  # are replicated, or split over 'model' when model > 1. data * model = 1: no mesh.
  c.mesh = ConfigDict()
  c.mesh.data = -1  # devices on the data axis; -1 = all devices / mesh.model
  c.mesh.model = 1  # devices on the model axis
  c.mesh.axis_types = "auto"  # of the data axis: auto | explicit (the model axis is auto)

  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.log_every_steps = 50
  c.init_from = ""  # a run dir: start from its checkpoint's params (fresh optimizer) ...
  c.init_from_step = -1  # ... at this step (-1: its latest checkpoint) ...
  c.init_from_epoch = -1.0  # ... or at the last checkpoint at or before this epoch (>= 0)
  return c


def from_stored(stored: dict) -> ConfigDict:
  """A run's stored config.json as a full config: ``default_config()`` with the stored values
  written over it, so a field added to the schema after the run started reads its one default
  (stored fields the schema no longer has are kept as they are)."""
  config = default_config()
  with config.unlocked():
    _merge(config, stored)
  return config


def _merge(node: ConfigDict, values: dict) -> None:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(node.get(key), ConfigDict) and value:
      _merge(node[key], value)
    else:
      node[key] = value


def parse_variant(arg: Any, allowed: tuple) -> set:
  """The comma-separated tokens of ``--config=path.py:a,b`` as a set, each checked."""
  tokens = {t.strip() for t in (arg or "").split(",") if t.strip()}
  unknown = tokens - set(allowed)
  if unknown:
    raise ConfigError(f"unknown config variant(s) {sorted(unknown)}; allowed: {list(allowed)}")
  return tokens


def _fail(field: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{field} = {value!r} is not valid: {allowed}.")


def _check_type(config: ConfigDict, field: str, types: tuple) -> Any:
  value = config
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) and bool not in types or not isinstance(value, types):
    names = " or ".join(t.__name__ for t in types)
    _fail(field, value, f"expected {names}, got {type(value).__name__}")
  return value


def _check_positive(config: ConfigDict, field: str, types=(int,), zero_ok=False) -> Any:
  value = _check_type(config, field, types)
  if value < 0 or (value == 0 and not zero_ok):
    _fail(field, value, "must be " + (">= 0" if zero_ok else "> 0"))
  return value


def validate(config: ConfigDict) -> None:
  """Raises ConfigError for a config that cannot run; checks that need no data or compilation.

  The checks that need the dataset's size or the model's shapes are in ``validate_against``.
  """
  from sharp_dirs.models import registry  # pylint: disable=g-import-not-at-top
  _check_finite(config)
  if config.model not in registry.MODEL_NAMES:
    _fail("model", config.model, f"allowed: {', '.join(registry.MODEL_NAMES)}")
  if config.dataset not in DATASET_KINDS:
    _fail("dataset", config.dataset, f"allowed: {', '.join(DATASET_KINDS)}")
  model_kinds = registry.MODEL_KINDS
  if model_kinds[config.model] != DATASET_KINDS[config.dataset]:
    compatible = [m for m, k in model_kinds.items() if k == DATASET_KINDS[config.dataset]]
    _fail("model", config.model,
          f"it takes {model_kinds[config.model]} data but dataset {config.dataset!r} is "
          f"{DATASET_KINDS[config.dataset]} data; models for it: {', '.join(compatible)}")
  for field in ("seed", "data_seed", "num_train_examples", "lm_num_steps", "batch_size",
                "num_epochs", "epoch_size", "log_every_steps", "checkpoint_every_epochs",
                "keep_checkpoints", "eval.every_epochs", "eval.batch_size",
                "eval.num_train_examples", "eval.max_examples"):
    zero_ok = field in ("seed", "data_seed", "num_train_examples", "epoch_size",
                        "eval.num_train_examples", "eval.max_examples")
    _check_positive(config, field, zero_ok=zero_ok)
  for field in ("l2", "optimizer.momentum", "optimizer.grad_clip_norm"):
    _check_positive(config, field, (int, float), zero_ok=True)
  _check_positive(config, "optimizer.learning_rate", (int, float))
  if config.optimizer.momentum >= 1:
    _fail("optimizer.momentum", config.optimizer.momentum, "must be in [0, 1)")
  if config.optimizer.name not in OPTIMIZERS:
    _fail("optimizer.name", config.optimizer.name, f"allowed: {', '.join(OPTIMIZERS)}")
  _check_kwargs(config)
  if config.full_batch and config.model in registry.BATCH_NORM_MODELS:
    _fail("model", config.model, "full_batch=True needs a model without batch norm (ghost "
          "batch norm is not implemented); allowed: " +
          ", ".join(m for m in model_kinds if m not in registry.BATCH_NORM_MODELS))
  if config.full_batch and DATASET_KINDS[config.dataset] == "lm":
    _fail("full_batch", True, "not supported for language models")
  if config.optimizer.name == "nsgd":
    _validate_nsgd(config)

  t = config.tracking
  for field in ("k", "num_lanczos_steps", "num_examples", "batch_size", "every_epochs",
                "zoom_every_examples"):
    _check_positive(config, f"tracking.{field}")
  _check_positive(config, "tracking.tol", (int, float), zero_ok=True)
  _check_positive(config, "tracking.zoom_epochs", (int, float), zero_ok=True)
  _check_type(config, "tracking.fixed_sample", (bool,))
  _check_type(config, "init_from_step", (int,))
  _check_type(config, "init_from_epoch", (int, float))
  if config.init_from_step >= 0 and config.init_from_epoch >= 0:
    _fail("init_from_epoch", config.init_from_epoch, "give init_from_step or init_from_epoch, "
          "not both (set the other to -1)")
  if t.k > t.num_lanczos_steps:
    _fail("tracking.k", t.k, f"must be <= tracking.num_lanczos_steps = {t.num_lanczos_steps} "
          "(Lanczos finds at most that many eigenpairs; 3·k or more is a good choice)")
  if t.which not in WHICH:
    _fail("tracking.which", t.which, f"allowed: {', '.join(WHICH)}")
  if t.warm_method not in WARM_METHODS:
    _fail("tracking.warm_method", t.warm_method, f"allowed: {', '.join(WARM_METHODS)}")
  if t.warm_method == "block" and not t.tol:
    _fail("tracking.tol", t.tol, "must be > 0 with tracking.warm_method='block' (its stop "
          "rule and its fallback to Lanczos depend on it)")
  _validate_noise_fields(config)
  needs_tracking = [name for name, a in config.analyses.items()
                    if a.enabled and name not in ("frobenius", "spectral_density")]
  if needs_tracking and not t.enabled:
    _fail("tracking.enabled", False, f"analyses {needs_tracking} use the tracked eigenvectors: "
          "enable tracking or disable them")
  for name, a in config.analyses.items():
    _check_positive(config, f"analyses.{name}.every")
  cs = config.analyses.cross_section
  if cs.enabled and any(not 0 <= d < t.k for d in cs.directions):
    _fail("analyses.cross_section.directions", cs.directions,
          f"each must be an eigenvector index in [0, tracking.k = {t.k})")
  if config.num_epochs < config.eval.every_epochs:
    _fail("eval.every_epochs", config.eval.every_epochs,
          f"must be <= num_epochs = {config.num_epochs}, or the run never evaluates")
  if t.enabled and config.num_epochs < t.every_epochs and t.zoom_epochs == 0:
    _fail("tracking.every_epochs", t.every_epochs,
          f"must be <= num_epochs = {config.num_epochs}, or the spectrum is tracked only at "
          "initialization (set tracking.enabled=False if that is what you want)")
  for name in ("plateau", "early_stopping"):
    _check_positive(config, f"{name}.patience")
  if not 0 < config.plateau.factor < 1:
    _fail("plateau.factor", config.plateau.factor, "must be in (0, 1)")
  _validate_mesh_fields(config)


def _validate_noise_fields(config: ConfigDict) -> None:
  """tracking.noise_groups (0, or G >= 2) and
  tracking.tol_noise_fraction (0, or in (0, 1] with a noise estimate, a tol for the first
  solve and Lanczos refreshes)."""
  t = config.tracking
  groups = _check_positive(config, "tracking.noise_groups", zero_ok=True)
  if groups == 1:
    _fail("tracking.noise_groups", groups, "must be 0 (no noise estimate) or >= 2 (the most "
          "groups of whole batches the jackknife splits each sample into), e.g. 8")
  batches = -(-t.num_examples // t.batch_size)
  if groups:  # the tracker uses the largest divisor of the batches in [2, G]; none: no estimate
    groups = max((d for d in range(2, groups + 1) if batches % d == 0), default=0)
  fraction = _check_positive(config, "tracking.tol_noise_fraction", (int, float), zero_ok=True)
  if fraction > 1:
    _fail("tracking.tol_noise_fraction", fraction, "must be in (0, 1] (0.1: solve until the "
          "solver's error is a tenth of the sample noise) or 0 for the fixed tracking.tol")
  if fraction and not groups:
    _fail("tracking.tol_noise_fraction", fraction, f"tol='auto' needs the noise estimate: set "
          f"tracking.noise_groups >= 2 (e.g. 8) with a divisor in [2, noise_groups] of the "
          f"{batches} batches of each sample (lower tracking.batch_size), or "
          "tol_noise_fraction=0")
  if fraction and not t.tol:
    _fail("tracking.tol", t.tol, "must be > 0 with tracking.tol_noise_fraction > 0 (it is the "
          "first evaluation's tolerance, before any noise estimate; 1e-3 is safe)")
  if fraction and t.warm_method != "lanczos":
    _fail("tracking.warm_method", t.warm_method, "tracking.tol_noise_fraction > 0 supports "
          "only 'lanczos' refreshes (set tol_noise_fraction=0 for 'block')")


def _validate_mesh_fields(config: ConfigDict, divisible: bool = True) -> None:
  """The mesh fields' types and values, and (``divisible``) the divisibility checks that a
  fixed mesh.data allows without knowing the devices."""
  if "mesh" not in config:
    return
  m = config.mesh
  data = _check_type(config, "mesh.data", (int,))
  if data == 0 or data < -1:
    _fail("mesh.data", data, "must be >= 1, or -1 for all devices")
  _check_positive(config, "mesh.model")
  if m.axis_types not in MESH_AXIS_TYPES:
    _fail("mesh.axis_types", m.axis_types, f"allowed: {', '.join(MESH_AXIS_TYPES)}")
  if data > 0 and divisible:
    _check_divisible(config, data)


def _check_divisible(config: ConfigDict, data: int) -> None:
  """Every batch the engine splits over the data axis must divide evenly over its devices."""
  if data == 1:
    return
  for field, what in (("batch_size", "training batches (and the analyses' minibatches)"),
                      ("tracking.batch_size", "the batches of every Hessian sample"),
                      ("eval.batch_size", "evaluation batches")):
    value = config
    for part in field.split("."):
      value = value[part]
    if value % data:
      _fail(field, value, f"{what} are split over the {data} devices of the mesh's data axis: "
            f"use a multiple of {data} (or change mesh.data)")


def validate_mesh(config: ConfigDict, num_devices: int, num_processes: int = 1
                  ) -> tuple[int, int]:
  """(data, model) sizes of the run's mesh on ``num_devices`` devices, or a ConfigError.

  The mesh must use every device (``mesh.data * mesh.model == num_devices``), or be a single
  device (``mesh.data = mesh.model = 1``, one process only); ``mesh.data = -1`` takes all
  devices the model axis leaves. Every batch split over the data axis must be divisible by it.
  """
  _validate_mesh_fields(config, divisible=False)
  m = config.mesh
  if num_devices % m.model:
    _fail("mesh.model", m.model, f"must divide the {num_devices} devices")
  data = num_devices // m.model if m.data == -1 else m.data
  if data * m.model == 1 and num_processes > 1:
    _fail("mesh.data", m.data, f"a one-device mesh cannot span the {num_processes} processes "
          "of a multi-host run: use mesh.data=-1")
  if data * m.model not in (1, num_devices):
    _fail("mesh.data", m.data, f"mesh.data * mesh.model = {data * m.model} devices, but there "
          f"are {num_devices}: the mesh must use all of them (mesh.data=-1), or just one "
          "(mesh.data=1, mesh.model=1)")
  _check_divisible(config, data)
  return data, m.model


def _validate_nsgd(config: ConfigDict) -> None:
  n = config.nsgd
  if n.eigenpairs_from not in NSGD_SOURCES:
    _fail("nsgd.eigenpairs_from", n.eigenpairs_from, f"allowed: {', '.join(NSGD_SOURCES)}")
  # The optimizer's own checks (sharp_dirs.nudge, the one place): nsgd.* fields named as its
  # options (rule in nudge.RULES, variant in nudge.VARIANTS, ...).
  options = {name: n[name] for name in nudge.NudgeOptions._fields if name in n}
  try:
    nudge.check_options(nudge.NudgeOptions(
        **options, learning_rate=config.optimizer.learning_rate, seed=config.seed),
        variant=n.variant, momentum=config.optimizer.momentum or None)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.nsgd is not valid (its fields are nudged_sgd's options): {e}"
                      ) from None
  if n.eigenpairs_from == "tracker" and n.rule != "random":
    if not config.tracking.enabled:
      _fail("tracking.enabled", False, "nsgd.eigenpairs_from='tracker' needs the tracker")
    if config.tracking.k < n.num_directions:
      _fail("nsgd.num_directions", n.num_directions,
            f"must be <= tracking.k = {config.tracking.k} (the tracker supplies the directions)")


def validate_against(config: ConfigDict, num_train: int) -> None:
  """The checks that need the training set's size ``num_train`` (after num_train_examples)."""
  if config.num_train_examples > num_train and config.num_train_examples:
    _fail("num_train_examples", config.num_train_examples,
          f"the training split has only {num_train} examples")
  n = config.num_train_examples or num_train
  if config.batch_size > n:
    _fail("batch_size", config.batch_size, f"must be <= the {n} training examples")
  if config.full_batch and n % config.batch_size:
    _fail("batch_size", config.batch_size, f"full_batch splits the {n} training examples into "
          f"equal batches: use a divisor of {n}")
  if config.epoch_size and config.epoch_size < config.batch_size:
    _fail("epoch_size", config.epoch_size, f"must be >= batch_size = {config.batch_size}")
  t = config.tracking
  needed = -(-t.num_examples // t.batch_size) * t.batch_size
  if t.enabled and needed > n:
    _fail("tracking.num_examples", t.num_examples,
          f"needs {needed} examples (whole batches of {t.batch_size}) but the training set has "
          f"{n}")
  for name in ("step_loss_change", "cross_section"):
    a = config.analyses[name]
    if a.enabled and a.num_examples > n:
      _fail(f"analyses.{name}.num_examples", a.num_examples,
            f"must be <= the {n} training examples")


# The CPU-scale model, chosen by the pilot of bench/pilot_scale.py (bench/RESULTS.md, "The CPU
# scale"): the paper's SimpleCNN narrowed to F = 8 starts flat (λ_1 ≈ 3.9 at initialization) and
# rises 10-75× within the first 2,000 steps at η = 0.1-0.01, as the paper's SimpleCNN does.
CPU_MODEL = "simple_cnn_root"
CPU_MODEL_KWARGS = {"features": 8}


def cpu_scale(c: ConfigDict, *, num_epochs: int = 10) -> ConfigDict:
  """The reductions shared by the ``cpu`` variants: minutes on 2 CPU cores on Fashion-MNIST.

  SimpleCNN root narrowed to F = 8 filters (56,770 parameters; ``CPU_MODEL``) on the first 10k
  training examples, "epochs" of 2,560 examples (20 steps at S = 128; the paper's
  ``--epoch_size`` option), top-k on fresh samples of N = 512 examples (the paper: 2,560) solved
  to a relative residual of 1e-2 (the sample's own noise on λ_1 is several percent at this N),
  2,000-example evaluation sets, and ``num_epochs`` epochs. docs/protocol.md lists every
  deviation from the paper.
  """
  c.scale = "cpu"
  c.dataset = "fashion_mnist"
  c.model = CPU_MODEL
  c.model_kwargs = ConfigDict(dict(CPU_MODEL_KWARGS))  # --config.model_kwargs.features=16
  c.num_train_examples = 10_000
  c.epoch_size = 2560
  c.num_epochs = num_epochs
  c.tracking.num_examples = 512
  c.tracking.batch_size = 256
  c.tracking.tol = 1e-2
  c.tracking.num_lanczos_steps = 30
  c.eval.num_train_examples = 2000
  c.eval.max_examples = 2000
  c.eval.batch_size = 1000
  for name in ("step_loss_change", "cross_section"):
    c.analyses[name].num_examples = 1024
  return c
