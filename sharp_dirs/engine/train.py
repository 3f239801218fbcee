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
Everything is logged to a run directory (``sharp_dirs.engine.metrics_io``). Only the engine (this module,
``tracking``, ``distributed``) and ``sharp_dirs.engine.config`` read a config.
"""

import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharp_dirs.engine import checkpoint as checkpoint_lib
from sharp_dirs.engine import config as config_lib
from sharp_dirs.curvature import conv_layout
from sharp_dirs.engine import distributed
from sharp_dirs.curvature import krylov
from sharp_dirs.engine import metrics_io
from sharp_dirs import nudge
from sharp_dirs.engine import rundir
from sharp_dirs.engine import tracking
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.models import loss as model_loss
from sharp_dirs.models import registry

PyTree = Any
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
  """The first ``limit`` (0: all) examples as padded batches: (leaves [nb, bs, ...], mask [nb, bs])."""
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
  try:
    jax.eval_shape(lambda k: model_loss.init_model(model, k, example_batch), key)
  except Exception as e:  # pylint: disable=broad-except
    shape = tuple(example_batch[model.input_key].shape[1:])
    raise config_lib.ConfigError(
        f"config.model = {config.model!r} cannot take inputs of shape {shape} from dataset "
        f"{config.dataset!r}: {type(e).__name__}: {e}") from e
  params, model_state = model_loss.init_model(model, key, example_batch)
  return model, params, model_state


def make_optimizer(config) -> optax.GradientTransformationExtraArgs:
  """The config's optimizer, then an injectable multiplier of the step (reduce-on-plateau)."""
  o = config.optimizer
  momentum = o.momentum or None
  if o.name == "sgd":
    base = optax.sgd(o.learning_rate, momentum=momentum, nesterov=o.nesterov)
  elif o.name == "nsgd":
    n = config.nsgd
    base = nudge.nudged_sgd(
        o.learning_rate, n.num_directions, gamma=n.gamma, momentum=momentum,
        nesterov=o.nesterov, variant=n.variant, rule=n.rule, refresh_every=n.refresh_every,
        burnin_steps=n.burnin_steps, num_lanczos_steps=n.num_lanczos_steps,
        stability_cap=n.stability_cap, seed=config.seed)
  else:
    base = getattr(optax, o.name)(learning_rate=o.learning_rate,
                                  **config_lib.given_kwargs(o.kwargs))
  parts = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm else []
  return optax.chain(*parts, base, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def set_lr_multiplier(opt_state, value: float):
  """The optimizer state with the plateau multiplier (the chain's last member) set to value."""
  last = opt_state[-1]
  hyper = dict(last.hyperparams, step_size=jnp.asarray(value, jnp.float32))
  return opt_state[:-1] + (last._replace(hyperparams=hyper),)


def nsgd_uses_tracker(config) -> bool:
  return (config.optimizer.name == "nsgd" and config.nsgd.rule != "random"
          and config.nsgd.eigenpairs_from == "tracker")


def make_train_step(config, model, tx, placement: Optional[distributed.Placement] = None):
  """jit((state, batch, eigenpairs) -> (state, metrics)), the state donated.

  With a ``placement`` the batch is split over the mesh's data axis and the state keeps its
  shardings (``distributed.Placement.jit``).
  """
  l2 = config.l2
  in_step = (config.optimizer.name == "nsgd" and config.nsgd.rule != "random"
             and config.nsgd.eigenpairs_from == "train_batch")
  dropout_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)

  def loss_and_grad(params, model_state, batch, rng):
    def loss(p):
      return model_loss.train_loss_and_state(model, p, model_state, batch, rng, l2)
    return jax.value_and_grad(loss, has_aux=True)(params)

  if config.full_batch:
    def loss_and_grad(params, model_state, batches, rng):  # pylint: disable=function-redefined
      def one(batch):
        (value, (_, logits)), grads = jax.value_and_grad(
            lambda p: model_loss.train_loss_and_state(model, p, model_state, batch, rng, l2),
            has_aux=True)(params)
        return value, grads, model_loss.accuracy(logits, batch[model.target_key])
      # lax.map is a loop: on CPU its convolutions need conv_layout's rewrite.
      values, grads, accs = jax.lax.map(conv_layout.if_enabled(one), batches)
      grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
      return (jnp.mean(values), (model_state, None, jnp.mean(accs))), grads

  def step(state, batch, eigenpairs):
    rng = jax.random.fold_in(dropout_key, state.step)
    (value, aux), grads = loss_and_grad(state.params, state.model_state, batch, rng)
    model_state = aux[0]
    accuracy = aux[2] if config.full_batch else model_loss.accuracy(
        aux[1], batch[model.target_key])
    extra = {}
    if nsgd_uses_tracker(config):  # new directions after a tracker solve, else keep the state's
      extra["eigenpairs"] = nudge.KEEP if eigenpairs is None else eigenpairs
    if in_step:
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


def make_eval_step(model, placement: Optional[distributed.Placement] = None):
  """jit((params, model_state, batch, mask [B]) -> (Σ mask·CE, Σ mask·correct)); CE without L2."""
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
    "early_stopped" | "stopped", "step", "reason", "last": the last logged values}.

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
  """``train_and_evaluate`` once the workdir is locked and its config checked."""
  config_lib.validate(config)
  placement = distributed.placement_from_config(config)  # None: one device
  run_data = load_run_data(config)
  model, tx, tree = initial_tree(config, run_data)
  if placement is not None:  # before restoring: orbax restores onto the target's shardings
    tree = placement.put_tree(tree, tree["init_params"])
  schedule = make_schedule(config, num_examples(run_data.train))
  is_main = jax.process_index() == 0
  tracker = tracking.Tracker(config, model, run_data, placement=placement)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.keep_checkpoints)
  loop = LoopState()
  pairs = new_directions = None  # the tracker's last eigenpairs; those not yet given to NSGD
  restored = checkpoints.restore(tree, fallback=True)
  start_step = 0
  if restored is not None:
    start_step, tree, meta = restored
    loop = LoopState(**meta["loop"])
    pairs = tree["pairs"] if meta["has_pairs"] else None
    new_directions = tree["new_directions"] if meta["has_new_directions"] else None
    logger.info("Resuming %s from step %d.", workdir, start_step)
  elif config.init_from:
    tree = _init_from(config, tree)
  state, init_params = tree["state"], tree["init_params"]
  checkpoints.align_best(start_step if restored is not None else -1, loop.best_step,
                         {"params": state.params, "model_state": state.model_state},
                         {"valid_accuracy": loop.best_valid_accuracy})
  tracker.previous = pairs

  writer = metrics_io.MetricWriter(workdir, active=is_main,
                                   resume_step=start_step if restored is not None else None)
  if is_main:
    rundir.record_config(config, workdir, start_step if restored is not None else None)
  train_step = make_train_step(config, model, tx, placement)
  eval_step = make_eval_step(model, placement)
  eval_sets = {
      "train": stack_batches(run_data.train, config.eval.batch_size,
                             config.eval.num_train_examples),
      "valid": stack_batches(run_data.valid, config.eval.batch_size, config.eval.max_examples),
      "test": stack_batches(run_data.test, config.eval.batch_size, config.eval.max_examples)}
  full_batch = (jax.device_put(stack_batches(run_data.train, config.batch_size)[0])
                if config.full_batch else None)
  if placement is not None and full_batch is not None:
    full_batch = placement.put_batch(full_batch, batch_dim=1)
  batches = _batch_iterator(config, run_data, schedule, start_step)

  status = {"status": "finished", "reason": ""}
  last = {}
  step = start_step
  started, steps_done, tracking_seconds = time.perf_counter(), 0, 0.0
  window, window_started = [], started
  pending = None  # (step, loss) of the previous train step, checked one step late
  best_due = None  # (step, meta) of a best checkpoint, saved after the step's latest one
  lam_text = "—"

  def log(step, values):
    row = {"epoch": schedule.epoch(step), **values}
    writer.write_row(step, row)
    last.update(row)

  def save(step, tree_now):
    meta = {"loop": dataclasses.asdict(loop), "has_pairs": pairs is not None,
            "has_new_directions": new_directions is not None}
    checkpoints.save(step, tree_now, meta)

  while True:
    if not (restored is not None and step == start_step):
      # Everything scheduled at this step, before its train step.
      if config.tracking.enabled and schedule.tracking_due(step, config.tracking.every_epochs):
        lr = config.optimizer.learning_rate * loop.lr_multiplier
        pairs, values, arrays = tracker.evaluate(state.params, state.model_state, step,
                                                 loop.num_trackings, lr)
        loop.num_trackings += 1
        lam_text = f"{values['hessian/lambda_1']:.3g}"
        tracking_seconds += values["hessian/seconds"]
        logger.info("step %d (epoch %.2f): λ_1 %s (tracking: %d HVPs in %.1f s; %.0f%% of the "
                    "run so far)", step, schedule.epoch(step), lam_text, values["hessian/num_hvps"],
                    values["hessian/seconds"],
                    100 * tracking_seconds / max(time.perf_counter() - started, 1e-9))
        log(step, values)
        for name, arr in arrays.items():
          writer.write_arrays(step, name, arr)
        if nsgd_uses_tracker(config) and not (config.nsgd.freeze_directions and
                                              loop.directions_given):
          new_directions = pairs
      if schedule.every_epochs(step, config.eval.every_epochs):
        values = evaluate_splits(eval_step, state, eval_sets, init_params)
        values["learning_rate"] = config.optimizer.learning_rate * loop.lr_multiplier
        multiplier = loop.lr_multiplier
        loop, is_best, stop = update_protocol(loop, config, step, values["valid/loss"],
                                              values["valid/accuracy"])
        if loop.lr_multiplier != multiplier:
          state = state.replace(opt_state=set_lr_multiplier(state.opt_state,
                                                            loop.lr_multiplier))
        log(step, values)
        logger.info("step %d (epoch %.2f): train loss %.4f acc %.4f, valid loss %.4f acc %.4f,"
                     " test acc %.4f, λ_1 %s", step, schedule.epoch(step), values["train/loss"],
                     values["train/accuracy"], values["valid/loss"], values["valid/accuracy"],
                     values["test/accuracy"], lam_text)
        if is_best:
          best_due = (step, {"valid_accuracy": values["valid/accuracy"]})
        if stop:
          status = {"status": "early_stopped", "reason": (
              f"no better validation accuracy for {config.early_stopping.patience} evaluations")}
      if (step > 0 and schedule.every_epochs(step, config.checkpoint_every_epochs)) or (
          status["status"] != "finished"):
        save(step, {"state": state, "init_params": init_params,
                    "pairs": pairs if pairs is not None else tree["pairs"],
                    "new_directions": (new_directions if new_directions is not None
                                       else tree["new_directions"])})
      if best_due is not None:  # after the latest: see sharp_dirs.engine.checkpoint
        checkpoints.save_best(best_due[0], {"params": state.params,
                                            "model_state": state.model_state}, best_due[1])
        best_due = None
    if step >= schedule.total_steps or status["status"] != "finished":
      break
    if stop_at_step is not None and step >= stop_at_step:
      status = {"status": "stopped", "reason": f"stop_at_step={stop_at_step}"}
      break

    batch = full_batch if config.full_batch else next(batches)
    state, metrics = train_step(state, batch, new_directions)
    if new_directions is not None:
      new_directions = None
      loop.directions_given += 1
    step += 1
    steps_done += 1
    window.append(metrics)
    if pending is not None and not math.isfinite(float(pending[1])):
      break
    pending = (step, metrics["loss"])
    if step % config.log_every_steps == 0 or step == schedule.total_steps:
      means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
      now = time.perf_counter()
      rate = len(window) * config.batch_size / (now - window_started)  # tracking included
      window, window_started = [], now
      if not math.isfinite(means["loss"]):
        continue  # reported at the next step's check, with its exact step
      elapsed = now - started
      log(step, {f"train/batch_{k}": v for k, v in means.items()})
      logger.info("step %d/%d (epoch %.2f)  %.0f examples/s  loss %.4f  λ_1 %s  left %s",
                   step, schedule.total_steps, schedule.epoch(step), rate, means["loss"],
                   lam_text, _format_eta(elapsed / steps_done * (schedule.total_steps - step)))

  if pending is not None and not math.isfinite(float(pending[1])):
    step, loss = pending[0], float(pending[1])
    status = {"status": "diverged", "reason": (
        f"non-finite training loss {loss} at step {step}: lower the learning rate (now "
        f"{config.optimizer.learning_rate * loop.lr_multiplier:g}) or clip gradients "
        "(optimizer.grad_clip_norm)")}
    log(step, {"diverged": 1, "train/batch_loss": loss})
  status.update(step=int(step), last=last)
  writer.write_json("status.json", status)
  writer.close()
  checkpoints.close()
  if status["status"] == "diverged":
    logger.warning("Run %s diverged: %s", workdir, status["reason"])
  return status


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
  config = config_lib.ConfigDict(stored)
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
      source = config_lib.ConfigDict(json.load(f))
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
