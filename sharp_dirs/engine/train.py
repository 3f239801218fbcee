"""The experiment engine: ``train_and_evaluate(config, workdir)``.

One run trains a model of ``sharp_dirs.models`` on a dataset of ``sharp_dirs.data`` with the
optimizer of the config (SGD, Nudged SGD, any optax optimizer, or full-batch gradient descent),
and along the way
- tracks the top-k Hessian eigenpairs on a fresh (augmented) sample of the training set, dense
  early (the paper's zoom) and per epoch later, warm-started (``sharp_dirs.engine.tracking``);
- runs the paper's analyses at tracking evaluations when the config enables them;
- evaluates on the train/validation/test splits, reduces the learning rate on plateaus, stops
  early, keeps the best-validation checkpoint (the NSGD table's protocol);
- checkpoints everything needed to resume (a killed run resumed gives the same metrics);
- stops cleanly on a non-finite loss, recording the reason and step.
Everything is logged to a run directory (``metrics_io``). The loop is ``Loop.run``: at each step
whatever is due (track, evaluate, checkpoint), then one train step; each part is timed and the
progress lines give its share of the run. Only the engine reads a config.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharp_dirs import nudge
from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.engine import checkpoint as checkpoint_lib
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import distributed
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import programs
from sharp_dirs.engine import rundir
from sharp_dirs.engine import tracking
from sharp_dirs.models import loss as model_loss
from sharp_dirs.models import registry
from sharp_dirs.types import PyTree

logger = logging.getLogger(__name__)  # progress at INFO; the launchers show it, quiet elsewhere


@flax.struct.dataclass
class TrainState:
  """What the jitted train step carries: step () int32, params, optax state, BN statistics."""
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  model_state: PyTree


@dataclasses.dataclass
class LoopState:
  """Host-side counters of the NSGD table's protocol (checkpointed as JSON)."""
  lr_multiplier: float = 1.0
  best_valid_loss: Optional[float] = None
  plateau_wait: int = 0
  best_valid_accuracy: Optional[float] = None
  early_stop_wait: int = 0
  best_step: int = -1
  num_trackings: int = 0
  directions_given: int = 0  # tracker solves handed to NSGD (freeze_directions: only one)


# ------------------------------------------------------------------------------------------
# Data

@dataclasses.dataclass
class RunData:
  """The splits of a run: dicts of arrays with a leading example axis."""
  train: dict
  valid: dict
  test: dict
  augment: bool
  kind: str
  input_shape: tuple
  num_classes: int


@functools.lru_cache(maxsize=2)
def _load_dataset(name: str, data_dir: str, data_seed: int):
  """``data.load_dataset``, cached: the runs of a sweep (or a test session) load it once."""
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top
  return data.load_dataset(name, data_dir=data_dir or None, data_seed=data_seed)


def load_run_data(config) -> RunData:
  """Loads the dataset (language models: windows of ``lm_num_steps`` tokens) and its subset."""
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top
  ds = _load_dataset(config.dataset, config.data_dir, config.data_seed)
  splits = {"train": ds.train, "valid": ds.valid, "test": ds.test}
  if ds.kind == "lm":
    splits = {k: data.lm_windows(s["ids"], config.lm_num_steps) for k, s in splits.items()}
  train = splits["train"]
  config_lib.validate_against(config, len(next(iter(train.values()))))
  if config.num_train_examples:
    train = {k: v[:config.num_train_examples] for k, v in train.items()}
  augment = ds.augment if config.augment is None else config.augment
  if config.full_batch and augment:
    raise config_lib.ConfigError(
        "config.augment = True is not valid with full_batch=True: gradient descent runs on a "
        "fixed training set; set augment=False.")
  if augment and ds.kind != "image":
    raise config_lib.ConfigError(f"config.augment = True is not valid: {config.dataset} is not "
                                 "an image dataset.")
  return RunData(train, splits["valid"], splits["test"], bool(augment), ds.kind,
                 tuple(ds.input_shape), ds.num_classes)


def num_examples(split: dict) -> int:
  return len(next(iter(split.values())))


def stack_batches(split: dict, batch_size: int, limit: int = 0):
  """The first ``limit`` (0: all) examples as padded batches.

  Returns (leaves [nb, bs, ...], mask [nb, bs]).
  """
  n = min(num_examples(split), limit) if limit else num_examples(split)
  nb = -(-n // batch_size)
  idx = np.arange(nb * batch_size)
  mask = (idx < n).astype(np.float32).reshape(nb, batch_size)
  idx = np.where(idx < n, idx, 0)
  return {k: v[idx].reshape(nb, batch_size, *v.shape[1:]) for k, v in split.items()}, mask


# ------------------------------------------------------------------------------------------
# Model, loss and optimizer

def build_model(config, example_batch):
  """(model, params, model_state), the model checked against the data's shapes."""
  model = registry.get_model(config.model, **config_lib.given_kwargs(config.model_kwargs))
  key = jax.random.PRNGKey(config.seed)
  try:  # a shape mismatch fails while tracing, before anything is compiled
    params, model_state = model_loss.init_model(model, key, example_batch)
  except Exception as e:  # pylint: disable=broad-except
    shape = tuple(example_batch[model.input_key].shape[1:])
    raise config_lib.ConfigError(
        f"config.model = {config.model!r} cannot take inputs of shape {shape} from dataset "
        f"{config.dataset!r}: {type(e).__name__}: {e}") from e
  return model, params, model_state


def make_optimizer(config, hyperparams: Optional[dict] = None
                   ) -> optax.GradientTransformationExtraArgs:
  """The config's optimizer, then an injectable multiplier of the step (reduce-on-plateau).

  ``hyperparams`` (``programs.hyperparams``, traced inside the train step) gives η and γ; None
  takes them from the config. The seed only seeds the state (``init``).
  """
  h = programs.hyperparams(config) if hyperparams is None else hyperparams
  o = config.optimizer
  momentum = o.momentum or None
  if o.name == "sgd":
    base = optax.sgd(h["learning_rate"], momentum=momentum, nesterov=o.nesterov)
  elif o.name == "nsgd":
    n = config.nsgd  # its fields named as nudge.NudgeOptions' are passed on as they are
    options = {f: n[f] for f in nudge.NudgeOptions._fields
               if f in n and f not in ("learning_rate", "seed", "gamma")}
    base = nudge.nudged_sgd(h["learning_rate"], momentum=momentum, nesterov=o.nesterov,
                            variant=n.variant, seed=h["seed"], gamma=h["gamma"], **options)
  else:
    base = getattr(optax, o.name)(learning_rate=h["learning_rate"],
                                  **config_lib.given_kwargs(o.kwargs))
  parts = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm else []
  return optax.chain(*parts, base, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def set_lr_multiplier(opt_state, value: float):
  """The optimizer state with the plateau multiplier (the chain's last member) set to value."""
  last = opt_state[-1]
  hyper = dict(last.hyperparams, step_size=jnp.asarray(value, jnp.float32))
  return opt_state[:-1] + (last._replace(hyperparams=hyper),)


def nsgd_directions(config) -> Optional[str]:
  """Where Nudged SGD's directions come from: "tracker" (the tracker's solve, as the paper),
  "train_batch" (Lanczos on the train batch inside the step), or None (not NSGD, or rule
  "random", which draws its own)."""
  if config.optimizer.name != "nsgd" or config.nsgd.rule == "random":
    return None
  return config.nsgd.eigenpairs_from


def nsgd_uses_tracker(config) -> bool:
  return nsgd_directions(config) == "tracker"


def make_train_step(config, model, placement: Optional[distributed.Placement] = None, *,
                    make_tx: Optional[Callable[[dict], optax.GradientTransformation]] = None):
  """(state, batch, eigenpairs=None) -> (state, metrics), jitted, the state donated.

  The compiled program takes the run's ``programs.hyperparams`` (η, γ, the seed's dropout key)
  as arguments, so every run of a family shares it (``programs.shared``). With a ``placement``
  the batch is split over the mesh's data axis and the state keeps its shardings
  (``distributed.Placement.jit``). ``make_tx(hyperparams) -> optimizer`` replaces the config's
  optimizer (``make_optimizer``); such a step is not shared.
  """
  build = lambda: _jit_train_step(config, model, placement, make_tx)  # noqa: E731
  jitted = build() if make_tx else programs.shared("train_step", config, build, placement)
  values = programs.hyperparams(config)

  def train_step(state, batch, eigenpairs=None):
    return jitted(state, batch, eigenpairs, values)

  train_step.lower = lambda state, batch, eigenpairs=None: jitted.lower(
      state, batch, eigenpairs, values)
  return train_step


def _jit_train_step(config, model, placement, make_tx):
  """jit((state, batch, eigenpairs, hyperparams) -> (state, metrics)); reads only fields of
  the config's ``programs.program_key``, from a copy (traced at the first call)."""
  config = config.copy_and_resolve_references()
  make_tx = make_tx or functools.partial(make_optimizer, config)
  l2 = config.l2

  def minibatch_loss_and_grad(params, model_state, batch, rng):
    """(loss, new model state, accuracy), grads on one batch."""
    def loss(p):
      return model_loss.train_loss_and_state(model, p, model_state, batch, rng, l2)
    (value, (new_state, logits)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return (value, new_state, model_loss.accuracy(logits, batch[model.target_key])), grads

  def full_batch_loss_and_grad(params, model_state, batches, rng):
    """The same over all batches [B, ...] of the training set, averaged (model state kept)."""
    def one(batch):
      (value, _, accuracy), grads = minibatch_loss_and_grad(params, model_state, batch, rng)
      return value, grads, accuracy
    # lax.map is a loop: on CPU its convolutions need conv_layout's rewrite.
    values, grads, accs = jax.lax.map(conv_layout.if_enabled(one), batches)
    grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return (jnp.mean(values), model_state, jnp.mean(accs)), grads

  loss_and_grad = full_batch_loss_and_grad if config.full_batch else minibatch_loss_and_grad
  directions = nsgd_directions(config)

  def step(state, batch, eigenpairs, hyperparams):
    tx = make_tx(hyperparams)
    dropout_key = jax.random.fold_in(jax.random.PRNGKey(hyperparams["seed"]), 1)
    rng = jax.random.fold_in(dropout_key, state.step)
    (value, model_state, accuracy), grads = loss_and_grad(
        state.params, state.model_state, batch, rng)
    extra = {}
    if directions == "tracker":  # new directions after a tracker solve, else keep the state's
      extra["eigenpairs"] = nudge.KEEP if eigenpairs is None else eigenpairs
    if directions == "train_batch":
      curvature = tracking.curvature_loss_fn(model, state.model_state, l2)
      extra["obj_fn"] = lambda p: curvature(p, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": value, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

  if placement is None:
    return jax.jit(step, donate_argnums=0)
  return placement.jit(
      step, donate_argnums=0, batch_argnums={1: 1 if config.full_batch else 0},
      out_shardings_fn=lambda args: (placement.tree_shardings(args[0], args[0].params),
                                     placement.replicated))


def make_eval_step(config, model, placement: Optional[distributed.Placement] = None):
  """jit((params, model_state, batch, mask [B]) -> (Σ mask·CE, Σ mask·correct)), CE w/o L2;
  shared by the runs of a family (``programs.shared``)."""
  return programs.shared("eval_step", config, lambda: _jit_eval_step(model, placement),
                         placement)


def _jit_eval_step(model, placement):
  def eval_step(params, model_state, batch, mask):
    logits = model_loss.predict(model, params, model_state, batch[model.input_key])
    labels = batch[model.target_key]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    per_example = lambda x: x.reshape(x.shape[0], -1).mean(axis=1)
    return jnp.sum(per_example(ce) * mask), jnp.sum(per_example(correct) * mask)
  if placement is None:
    return jax.jit(eval_step)
  return placement.jit(eval_step, batch_argnums={2: 0, 3: 0},
                       out_shardings_fn=lambda args: placement.replicated)


def evaluate_splits(eval_step, state: TrainState, eval_sets: dict, init_params) -> dict:
  """{"<split>/loss", "<split>/accuracy" for each split, "distance_from_init"} at ``state``."""
  values = {"distance_from_init": float(tm.norm(tm.sub(state.params, init_params)))}
  for name, stacked in eval_sets.items():
    values[f"{name}/loss"], values[f"{name}/accuracy"] = evaluate(
        eval_step, state.params, state.model_state, stacked)
  return values


def evaluate(eval_step, params, model_state, stacked) -> tuple[float, float]:
  """(mean loss, accuracy) over padded stacked batches from ``stack_batches``."""
  batches, mask = stacked
  total_loss = total_correct = 0.0
  for i in range(mask.shape[0]):
    loss_sum, correct = eval_step(params, model_state, jax.tree.map(lambda x: x[i], batches),
                                  mask[i])
    total_loss += float(loss_sum)
    total_correct += float(correct)
  n = float(mask.sum())
  return total_loss / n, total_correct / n


# ------------------------------------------------------------------------------------------
# Schedules

@dataclasses.dataclass(frozen=True)
class Schedule:
  """Steps of a run. An epoch is ``steps_per_epoch`` steps (the paper's ``epoch_size``)."""
  steps_per_epoch: int
  total_steps: int
  zoom_steps: int  # tracking every zoom_every steps while step < zoom_steps
  zoom_every: int

  def epoch(self, step: int) -> float:
    return step / self.steps_per_epoch

  def every_epochs(self, step: int, n: int) -> bool:
    return (step % self.steps_per_epoch == 0 and (step // self.steps_per_epoch) % n == 0) or (
        step == self.total_steps)

  def tracking_due(self, step: int, every_epochs: int) -> bool:
    zoom = step < self.zoom_steps and step % self.zoom_every == 0
    return zoom or self.every_epochs(step, every_epochs)

  def count_every_epochs(self, after: int, n: int) -> int:
    """How many steps s in (after, total_steps] have ``every_epochs(s, n)``."""
    period, end = self.steps_per_epoch * n, self.total_steps
    return max(0, end // period - after // period) + int(end % period != 0 and after < end)

  def count_tracking(self, after: int, every_epochs: int) -> int:
    """How many steps s in (after, total_steps] have ``tracking_due(s, every_epochs)``."""
    last_zoom = min(self.zoom_steps - 1, self.total_steps)
    if last_zoom <= after:
      return self.count_every_epochs(after, every_epochs)
    zoom = last_zoom // self.zoom_every - after // self.zoom_every
    period = self.steps_per_epoch * every_epochs
    both = last_zoom // math.lcm(self.zoom_every, period) - after // math.lcm(
        self.zoom_every, period)  # zoom steps that are epoch steps too ...
    end = self.total_steps  # ... and the last step, when it is a zoom step off the period
    both += int(end <= last_zoom and end % self.zoom_every == 0 and end % period != 0)
    return self.count_every_epochs(after, every_epochs) + zoom - both


def make_schedule(config, num_train: int) -> Schedule:
  if config.full_batch:
    steps_per_epoch = 1
  else:
    steps_per_epoch = max(1, (config.epoch_size or num_train) // config.batch_size)
  t = config.tracking
  zoom_every = 1 if config.full_batch else max(1, t.zoom_every_examples // config.batch_size)
  return Schedule(steps_per_epoch, config.num_epochs * steps_per_epoch,
                  int(round(t.zoom_epochs * steps_per_epoch)), zoom_every)


def update_protocol(loop: LoopState, config, step: int, valid_loss: float,
                    valid_accuracy: float) -> tuple[LoopState, bool, bool]:
  """Reduce-on-plateau (valid loss) and early stopping (valid accuracy) after one evaluation.

  Returns (new loop state, whether this is the best validation accuracy so far, stop now).
  Keras semantics: a wait counter of evaluations without improvement; at ``patience`` the
  learning rate is multiplied by ``factor`` (and the counter restarts) or the run stops.
  """
  loop = dataclasses.replace(loop)
  if loop.best_valid_loss is None or valid_loss < loop.best_valid_loss:
    loop.best_valid_loss, loop.plateau_wait = valid_loss, 0
  else:
    loop.plateau_wait += 1
    if config.plateau.enabled and loop.plateau_wait >= config.plateau.patience:
      loop.lr_multiplier *= config.plateau.factor
      loop.plateau_wait = 0
  is_best = loop.best_valid_accuracy is None or valid_accuracy > loop.best_valid_accuracy
  if is_best:
    loop.best_valid_accuracy, loop.early_stop_wait, loop.best_step = valid_accuracy, 0, step
  else:
    loop.early_stop_wait += 1
  stop = config.early_stopping.enabled and loop.early_stop_wait >= config.early_stopping.patience
  return loop, is_best, stop


# ------------------------------------------------------------------------------------------
# The loop

def _zeros_pairs(params, k: int) -> krylov.Eigenpairs:
  dtype = krylov.krylov_dtype(params)
  return krylov.Eigenpairs(jnp.zeros([k], dtype), tm.zeros_stack(k, params),
                           jnp.zeros([k], dtype), jnp.zeros([], jnp.int32))


PROGRESS_SECONDS = 30  # a progress line at least this often while training (more: log rows)


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
      f"{seconds // 60}m{seconds % 60:02d}s")


def train_and_evaluate(config, workdir: str, *, stop_at_step: Optional[int] = None,
                       allow_changes: bool = False) -> dict:
  """Trains, tracks, analyses and evaluates as ``config`` says, logging into ``workdir``.

  Resumes from ``workdir``'s latest checkpoint when there is one (an earlier one, saying so,
  when the latest is damaged), holding ``workdir``'s lock (``rundir.RunLock``) throughout.

  Args:
    config: a ``sharp_dirs.engine.config.default_config()``-shaped ConfigDict (see configs/).
    workdir: the run directory.
    stop_at_step: stop (as if killed) once this many steps are done, without a final
      checkpoint: for tests and for splitting a run into jobs.
    allow_changes: a run directory started with another config is refused
      (``rundir.ConfigMismatch``) unless only ``rundir.RESUMABLE_CHANGES`` differ and this is
      True.

  Returns:
    The status dict also written to ``status.json``: {"status": "finished" | "diverged" |
    "early_stopped" | "stopped", "step", "reason", "last": the last logged values, "seconds":
    this process's wall time in all and in each part (train, track, evaluate, checkpoint)}.

  Raises:
    ConfigError: a bad config, or another config than the run directory's (ConfigMismatch).
    RunDirError: a workdir that cannot be written, is locked by another process
      (RunDirLocked), or whose checkpoints are all damaged (checkpoint.DamagedCheckpoint).
  """
  config_lib.validate(config)
  rundir.prepare_workdir(workdir)
  lock = rundir.RunLock(workdir).acquire() if jax.process_index() == 0 else None
  try:
    rundir.check_config(config, workdir, allow_changes=allow_changes)
    return _train_and_evaluate(config, workdir, stop_at_step=stop_at_step)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config, workdir: str, *, stop_at_step: Optional[int] = None) -> dict:
  """``train_and_evaluate`` once the config is validated, the workdir locked and checked."""
  return Loop(config, workdir).run(stop_at_step)


class PartTimer:
  """Wall seconds of each part of the loop (train, track, evaluate, checkpoint) and their shares.

  The train step is dispatched asynchronously; its time is counted where the host waits for it
  (the divergence check of the next step), which is inside the "train" part.
  """

  def __init__(self):
    self.started = time.perf_counter()
    self.seconds = dict.fromkeys(("train", "track", "evaluate", "checkpoint"), 0.0)
    self.calls = dict.fromkeys(self.seconds, 0)

  @contextlib.contextmanager
  def part(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - start
      self.calls[name] += 1

  def elapsed(self) -> float:
    return time.perf_counter() - self.started

  def shares(self) -> str:
    """Each part's share of the wall time so far, e.g. "train 24%, track 71%, evaluate 4%"."""
    total = max(self.elapsed(), 1e-9)
    return ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in self.seconds.items() if s)


class Loop:
  """One run: its host-side state and the periodic actions of the loop.

  ``run`` is the loop: at each step, before its train step, whatever is due (``track``,
  ``evaluate`` with the plateau / early-stopping protocol, ``checkpoint``), then ``train``.
  Each action is timed (``PartTimer``) and the progress lines report each one's share.
  """

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    placement = distributed.placement_from_config(config)  # None: one device
    run_data = load_run_data(config)
    model, _, tree = initial_tree(config, run_data)
    if placement is not None:  # before restoring: orbax restores onto the target's shardings
      tree = placement.put_tree(tree, tree["init_params"])
    self.schedule = make_schedule(config, num_examples(run_data.train))
    self.tracker = tracking.Tracker(config, model, run_data, placement=placement)
    self.checkpoints = checkpoint_lib.Checkpoints(workdir, config.keep_checkpoints)
    self.loop = LoopState()
    self.pairs = self.new_directions = None  # the tracker's last pairs; those not given to NSGD
    restored = self.checkpoints.restore(tree, fallback=True)
    self.resumed_at = None
    if restored is not None:
      self.resumed_at, tree, meta = restored
      self.loop = LoopState(**meta["loop"])
      self.pairs = tree["pairs"] if meta["has_pairs"] else None
      self.new_directions = tree["new_directions"] if meta["has_new_directions"] else None
      logger.info("Resuming %s from step %d.", workdir, self.resumed_at)
    elif config.init_from:
      tree = _init_from(config, tree)
    self.step = self.resumed_at or 0
    self.state, self.init_params = tree["state"], tree["init_params"]
    # Saved in place of pairs not computed yet (the checkpoint's JSON says which are real).
    self.placeholders = {"pairs": tree["pairs"], "new_directions": tree["new_directions"]}
    self.checkpoints.align_best(
        -1 if self.resumed_at is None else self.resumed_at, self.loop.best_step,
        {"params": self.state.params, "model_state": self.state.model_state},
        {"valid_accuracy": self.loop.best_valid_accuracy})
    self.tracker.previous = self.pairs
    is_main = jax.process_index() == 0
    self.writer = metrics_io.MetricWriter(workdir, active=is_main, resume_step=self.resumed_at)
    if is_main:
      rundir.record_config(config, workdir, self.resumed_at)
    self.train_step = make_train_step(config, model, placement)
    self.eval_step = make_eval_step(config, model, placement)
    self.eval_sets = make_eval_sets(config, run_data)
    self.full_batch = make_full_batch(config, run_data, placement)
    self.batches = _batch_iterator(config, run_data, self.schedule, self.step)
    self.status = {"status": "finished", "reason": ""}
    self.last = {}  # the last logged value of every key
    self.timer = PartTimer()
    self.steps_done = 0
    self.window, self.window_started = [], self.timer.started  # train metrics since last log
    self.last_progress = self.timer.started
    self.pending = None  # (step, loss) of the previous train step, checked one step late
    self.best_due = None  # (step, meta) of a best checkpoint, saved after the step's latest one
    # λ_1 of the progress lines: the tracker's last, restored with the checkpoint on a resume
    self.lam_text = "—" if self.pairs is None else f"{float(self.pairs.eigvals[0]):.3g}"

  # -- the loop --------------------------------------------------------------------------------

  def run(self, stop_at_step: Optional[int] = None) -> dict:
    """Runs to the end (or ``stop_at_step``, divergence, early stopping); the status dict."""
    c, schedule = self.config, self.schedule
    self.write_running_status()
    logger.info("Run %s: %s at step %d of %d; the first tracking, evaluation and train step "
                "compile their programs first (or load them from the cache).", self.workdir,
                "resuming" if self.resumed_at else "starting", self.step, schedule.total_steps)
    while True:
      if self.step != self.resumed_at:  # a resumed step's actions ran before its checkpoint
        if c.tracking.enabled and schedule.tracking_due(self.step, c.tracking.every_epochs):
          with self.timer.part("track"):
            self.track()
        if schedule.every_epochs(self.step, c.eval.every_epochs):
          with self.timer.part("evaluate"):
            self.evaluate()
        with self.timer.part("checkpoint"):
          self.checkpoint()
      if self.step >= schedule.total_steps or self.status["status"] != "finished":
        break
      if stop_at_step is not None and self.step >= stop_at_step:
        self.status = {"status": "stopped", "reason": f"stop_at_step={stop_at_step}"}
        break
      with self.timer.part("train"):
        if not self.train():
          break
    return self.finish()

  # -- the actions -----------------------------------------------------------------------------

  def log(self, values: dict) -> None:
    row = {"epoch": self.schedule.epoch(self.step), **values}
    self.writer.write_row(self.step, row)
    self.last.update(row)

  def track(self) -> None:
    """The top-k eigenpairs and the analyses at this step; NSGD gets them before its next step."""
    c, step = self.config, self.step
    lr = c.optimizer.learning_rate * self.loop.lr_multiplier
    self.pairs, values, arrays = self.tracker.evaluate(
        self.state.params, self.state.model_state, step, self.loop.num_trackings, lr)
    self.loop.num_trackings += 1
    self.lam_text = f"{values['hessian/lambda_1']:.3g}"
    logger.info("step %d (epoch %.2f): λ_1 %s (tracking: %d HVPs in %.1f s)",
                step, self.schedule.epoch(step), self.lam_text, values["hessian/num_hvps"],
                values["hessian/seconds"])  # the shares: in the progress lines
    self.log(values)
    for name, arr in arrays.items():
      self.writer.write_arrays(step, name, arr)
    if nsgd_uses_tracker(c) and not (c.nsgd.freeze_directions and self.loop.directions_given):
      self.new_directions = self.pairs

  def evaluate(self) -> None:
    """Loss and accuracy of each split, then the plateau / early-stopping protocol."""
    c, step = self.config, self.step
    values = evaluate_splits(self.eval_step, self.state, self.eval_sets, self.init_params)
    values["learning_rate"] = c.optimizer.learning_rate * self.loop.lr_multiplier
    multiplier = self.loop.lr_multiplier
    self.loop, is_best, stop = update_protocol(self.loop, c, step, values["valid/loss"],
                                               values["valid/accuracy"])
    if self.loop.lr_multiplier != multiplier:
      self.state = self.state.replace(
          opt_state=set_lr_multiplier(self.state.opt_state, self.loop.lr_multiplier))
    self.log(values)
    logger.info("step %d (epoch %.2f): train loss %.4f acc %.4f, valid loss %.4f acc %.4f,"
                " test acc %.4f, λ_1 %s", step, self.schedule.epoch(step), values["train/loss"],
                values["train/accuracy"], values["valid/loss"], values["valid/accuracy"],
                values["test/accuracy"], self.lam_text)
    if is_best:
      self.best_due = (step, {"valid_accuracy": values["valid/accuracy"]})
    if stop:
      self.status = {"status": "early_stopped", "reason": (
          f"no better validation accuracy for {c.early_stopping.patience} evaluations")}

  def checkpoint(self) -> None:
    """The latest checkpoint when due (or when the run ends early), then a due best one."""
    step = self.step
    if (step > 0 and self.schedule.every_epochs(step, self.config.checkpoint_every_epochs)) or (
        self.status["status"] != "finished"):
      tree = {"state": self.state, "init_params": self.init_params,
              "pairs": self.placeholders["pairs"] if self.pairs is None else self.pairs,
              "new_directions": (self.placeholders["new_directions"]
                                 if self.new_directions is None else self.new_directions)}
      meta = {"loop": dataclasses.asdict(self.loop), "has_pairs": self.pairs is not None,
              "has_new_directions": self.new_directions is not None}
      self.checkpoints.save(step, tree, meta)
      self.writer.flush()  # TensorBoard holds every row the checkpoint covers
      self.write_running_status()
    if self.best_due is not None:  # after the latest: see sharp_dirs.engine.checkpoint
      self.checkpoints.save_best(self.best_due[0], {"params": self.state.params,
                                                    "model_state": self.state.model_state},
                                 self.best_due[1])
      self.best_due = None

  def train(self) -> bool:
    """One train step; False once the previous step's loss is not finite (checked one step
    late, so the host never waits for the step it has just dispatched)."""
    c = self.config
    batch = self.full_batch if c.full_batch else next(self.batches)
    self.state, metrics = self.train_step(self.state, batch, self.new_directions)
    if self.new_directions is not None:
      self.new_directions = None
      self.loop.directions_given += 1
    self.step += 1
    self.steps_done += 1
    self.window.append(metrics)
    previous_loss = None if self.pending is None else float(self.pending[1])  # waits for it
    if previous_loss is not None and not math.isfinite(previous_loss):
      return False
    self.pending = (self.step, metrics["loss"])
    if self.step % c.log_every_steps == 0 or self.step == self.schedule.total_steps:
      self.log_train_window()
    elif time.perf_counter() - self.last_progress >= PROGRESS_SECONDS:
      self.progress(previous_loss, None)
    return True

  def log_train_window(self) -> None:
    """The mean train metrics since the last log, and a progress line with each part's share."""
    means = {k: float(np.mean([float(m[k]) for m in self.window])) for k in self.window[0]}
    now = time.perf_counter()
    rate = len(self.window) * self.config.batch_size / (now - self.window_started)
    self.window, self.window_started = [], now
    if not math.isfinite(means["loss"]):
      return  # reported at the next step's check, with its exact step
    self.log({f"train/batch_{k}": v for k, v in means.items()})
    self.progress(means["loss"], rate)

  def progress(self, loss: Optional[float], rate: Optional[float]) -> None:
    """A progress line: step, epoch, examples/s, loss, λ_1, time left, each part's share."""
    self.last_progress = time.perf_counter()
    left = self.seconds_left()
    logger.info("step %d/%d (epoch %.2f)%s%s  λ_1 %s  left %s  (%s)", self.step,
                self.schedule.total_steps, self.schedule.epoch(self.step),
                "" if rate is None else f"  {rate:.0f} examples/s",
                "" if loss is None else f"  loss {loss:.4f}", self.lam_text, _format_eta(left),
                self.timer.shares())

  def seconds_left(self) -> float:
    """Each part's mean seconds per call times its calls still to come (the zoom's dense
    tracking and the last step's solve included), summed; a part not timed yet counts as 0."""
    c, schedule, timer, step = self.config, self.schedule, self.timer, self.step
    due = {"train": schedule.total_steps - step,
           "track": schedule.count_tracking(step, c.tracking.every_epochs)
                    if c.tracking.enabled else 0,
           "evaluate": schedule.count_every_epochs(step, c.eval.every_epochs),
           "checkpoint": schedule.total_steps - step}  # called every step, saves when due
    return sum(timer.seconds[part] / timer.calls[part] * n
               for part, n in due.items() if timer.calls[part])

  def write_running_status(self) -> None:
    """status.json while the run runs: "running", the step of its latest checkpoint (where a
    kill resumes from) and the total; ``finish`` replaces it by how the run ended."""
    self.writer.write_json("status.json", {
        "status": "running", "step": int(self.step), "total_steps": self.schedule.total_steps,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

  def finish(self) -> dict:
    """The status (diverged when the last checked loss is not finite), written and returned."""
    if self.pending is not None and not math.isfinite(float(self.pending[1])):
      self.step, loss = self.pending[0], float(self.pending[1])
      self.status = {"status": "diverged", "reason": (
          f"non-finite training loss {loss} at step {self.step}: lower the learning rate (now "
          f"{self.config.optimizer.learning_rate * self.loop.lr_multiplier:g}) or clip "
          "gradients (optimizer.grad_clip_norm)")}
      self.log({"diverged": 1, "train/batch_loss": loss})
    self.status.update(step=int(self.step), last=self.last,
                       seconds={"total": self.timer.elapsed(), **self.timer.seconds})
    self.writer.write_json("status.json", self.status)
    self.writer.close()
    self.checkpoints.close()
    logger.info("Run %s %s at step %d; time: %s", self.workdir, self.status["status"], self.step,
                self.timer.shares() or "—")
    if self.status["status"] == "diverged":
      logger.warning("Run %s diverged: %s", self.workdir, self.status["reason"])
    return self.status


def make_eval_sets(config, run_data: RunData) -> dict:
  """{split: padded stacked batches} of the examples each evaluation reads."""
  e = config.eval
  return {"train": stack_batches(run_data.train, e.batch_size, e.num_train_examples),
          "valid": stack_batches(run_data.valid, e.batch_size, e.max_examples),
          "test": stack_batches(run_data.test, e.batch_size, e.max_examples)}


def make_full_batch(config, run_data: RunData, placement=None):
  """The whole training set as stacked batches on the device(s) (full-batch GD), else None."""
  if not config.full_batch:
    return None
  batches = jax.device_put(stack_batches(run_data.train, config.batch_size)[0])
  return batches if placement is None else placement.put_batch(batches, batch_dim=1)


def initial_tree(config, run_data: RunData):
  """(model, optimizer, the checkpointed pytree at initialization).

  The tree: {"state": TrainState, "init_params", "pairs": the tracker's last Eigenpairs,
  "new_directions": eigenpairs not yet given to NSGD} (zeros until computed; the checkpoint's JSON
  says which). NSGD's current directions live in its optimizer state.
  """
  model, params, model_state = build_model(config, jax.tree.map(lambda x: x[:2], run_data.train))
  tx = make_optimizer(config)
  state = TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), model_state)
  k = config.tracking.k
  return model, tx, {"state": state, "init_params": jax.tree.map(jnp.copy, params),
                     "pairs": _zeros_pairs(params, k), "new_directions": _zeros_pairs(params, k)}


def restore_run(workdir: str, which: str = "latest"):
  """(config, run data, model, step, tree) of a run directory's latest (or best) checkpoint.

  The best checkpoint's tree holds only {"params", "model_state"}. Raises RunDirError (one
  sentence) when ``workdir`` is not a run directory or has no such checkpoint, and
  ``checkpoint.DamagedCheckpoint`` (naming an earlier intact one) when it is damaged.
  """
  stored = rundir.read_config(workdir) if os.path.isdir(workdir) else None
  if stored is None:
    raise rundir.RunDirError(f"{workdir} is not a run directory (it has no config.json): pass "
                             "the --workdir of a run made by experiments/train.py.")
  sub = "best" if which == "best" else "checkpoints"
  if not checkpoint_lib.has_checkpoints(workdir, sub):
    others = [s for s in ("checkpoints", "best") if s != sub and
              checkpoint_lib.has_checkpoints(workdir, s)]
    raise checkpoint_lib.CheckpointError(
        f"{workdir} has no {which} checkpoint (nothing under {os.path.join(workdir, sub)}"
        + (f"; {others[0]}/ has one" if others else "") + "): the run was stopped before its "
        "first checkpoint; resume it with experiments/train.py and the same config.")
  config = config_lib.from_stored(stored)
  run_data = load_run_data(config)
  model, _, tree = initial_tree(config, run_data)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.keep_checkpoints, read_only=True)
  try:
    if which == "best":
      restored = checkpoints.restore_best({"params": tree["state"].params,
                                           "model_state": tree["state"].model_state})
    else:
      restored = checkpoints.restore(tree)
  finally:
    checkpoints.close()
  if restored is None:
    raise checkpoint_lib.CheckpointError(f"{workdir} has no {which} checkpoint.")
  step, tree, _ = restored
  return config, run_data, model, step, tree


def _batch_iterator(config, run_data: RunData, schedule: Schedule, start_step: int):
  """Training batches from global step ``start_step`` on (deterministic given the seed)."""
  if config.full_batch:
    return None
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top
  per_pass = num_examples(run_data.train) // config.batch_size
  stream = data.batch_stream(run_data.train, config.batch_size, seed=config.seed,
                             start_epoch=start_step // per_pass, start_step=start_step % per_pass,
                             augment=run_data.augment)
  return (batch for _, _, batch in stream)


def _init_from_step(config, steps: list[int]) -> int:
  """The checkpoint step of ``config.init_from`` to start from, among its saved ``steps``:
  ``init_from_step``, the last at or before ``init_from_epoch`` (in the source run's epochs),
  or the latest."""
  where = f"config.init_from = {config.init_from!r}"
  if config.init_from_step >= 0:
    if config.init_from_step not in steps:
      raise FileNotFoundError(f"{where} has no checkpoint at step {config.init_from_step} "
                              f"(config.init_from_step); it has steps {steps}.")
    return config.init_from_step
  if config.init_from_epoch >= 0:
    with open(os.path.join(config.init_from, "config.json"), encoding="utf-8") as f:
      source = config_lib.from_stored(json.load(f))
    num_train = source.num_train_examples or num_examples(load_run_data(source).train)
    per_epoch = make_schedule(source, num_train).steps_per_epoch
    before = [s for s in steps if s <= config.init_from_epoch * per_epoch + 1e-6]
    if not before:
      epochs = [round(s / per_epoch, 3) for s in steps]
      raise FileNotFoundError(f"{where} has no checkpoint at or before epoch "
                              f"{config.init_from_epoch:g} (config.init_from_epoch); its "
                              f"checkpoints are at epochs {epochs}.")
    return before[-1]
  return steps[-1]


def _init_from(config, tree):
  """The tree with params and model state from a checkpoint of ``config.init_from``."""
  state = tree["state"]
  restored = checkpoint_lib.restore_part(
      config.init_from, {"state": {"params": state.params, "model_state": state.model_state}},
      choose=lambda steps: _init_from_step(config, steps))
  if restored is None:
    raise FileNotFoundError(f"config.init_from = {config.init_from!r} has no checkpoint under "
                            f"{os.path.join(config.init_from, 'checkpoints')}.")
  step, other = restored
  state = state.replace(params=other["state"]["params"],
                        model_state=other["state"]["model_state"])
  logger.info("Initialized from %s (step %d).", config.init_from, step)
  return {**tree, "state": state,
          "init_params": jax.tree.map(jnp.copy, other["state"]["params"])}
