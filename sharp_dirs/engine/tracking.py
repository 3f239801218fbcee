"""Tracking the top of the Hessian spectrum along a run, and the analyses that use it.

At each tracking evaluation (scheduled by ``train.Schedule``) the ``Tracker``
1. draws a fresh sample of N training examples (augmented like the training stream), as the
   paper's ``lanczos_aug=True``; or the same N examples every time (full-batch gradient
   descent, or ``tracking.fixed_sample=True``: the Hessian of a fixed subset, whose changes
   along a run are the trajectory's, not the sample's);
2. computes the top-k eigenpairs of the Hessian of the mean loss over it (inference mode, with
   the L2 term) by Lanczos on the dataset HVP, warm-started from the previous eigenvectors
   (one compiled program serves cold and warm starts; ``tracking.warm_method="block"`` refreshes
   by ``block_refresh.block_refresh`` instead);
3. logs λ_1..λ_k, relative residuals, the HVPs and seconds spent, η·λ_1 against the stability
   threshold 2(1+m) of SGD with momentum m on a quadratic (the edge-of-stability view), the
   fraction of a minibatch gradient's and of the sample gradient's squared norm inside the
   top-k subspace, and the overlap with the previous top-k subspace;
4. runs the analyses the config enables (``sharp_dirs.analyses``; docs/protocol.md, F3–F5), the
   Frobenius-norm estimates and the spectral density.
"""

import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs import analyses
from sharp_dirs.curvature import block_refresh
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import spectral
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.models import loss as model_loss

PyTree = Any

# Streams of randomness derived from the run's seed: fold_in(PRNGKey(seed), stream), then step.
SAMPLE_STREAM, LANCZOS_STREAM, ANALYSES_STREAM = 2, 3, 4


def curvature_loss_fn(model, model_state, l2: float):
  """The loss whose Hessian is tracked: inference mode (running BN stats, no dropout), with L2."""
  return model_loss.make_loss_fn(model, model_state, train=False, l2=l2)


def step_key(seed: int, stream: int, step: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), step)


def _unit_pairs(params, k: int) -> krylov.Eigenpairs:
  """Placeholder eigenpairs for a cold start (never used for the start vector, only shaped)."""
  dtype = krylov.krylov_dtype(params)
  ones = jax.tree.map(lambda p: jnp.ones((k,) + p.shape, p.dtype), params)
  return krylov.Eigenpairs(jnp.zeros([k], dtype), ones, jnp.zeros([k], dtype),
                           jnp.zeros([], jnp.int32))


class Tracker:
  """The top-k eigenpairs along a run (see the module docstring); ``previous`` warm-starts."""

  def __init__(self, config, model, run_data, placement=None):
    """``placement``: a ``sharp_dirs.engine.distributed.Placement`` to run on a mesh (None: one device);
    samples are then split over its data axis, eigenvectors placed like the parameters."""
    self.config = config
    self.run_data = run_data
    self.placement = placement
    self.previous: Optional[krylov.Eigenpairs] = None
    t = config.tracking
    l2 = config.l2
    if placement is None:
      jit = solve_jit = jax.jit
    else:  # small results replicated (every process reads them), eigenvectors like the params
      jit = lambda fn: placement.jit(fn, out_shardings_fn=lambda args: placement.replicated)
      solve_jit = lambda fn: placement.jit(fn, out_shardings_fn=lambda args: (
          krylov.Eigenpairs(placement.replicated, placement.stacked_shardings(args[0]),
                            placement.replicated, placement.replicated), placement.replicated))

    def solve(params, model_state, sample, key, init, warm):
      """One program for cold (warm=False) and warm starts: compiled once per run."""
      loss_fn = curvature_loss_fn(model, model_state, l2)
      start_key, noise_key = jax.random.split(key)
      v0 = jax.tree.map(lambda w, c: jnp.where(warm, w, c),
                        tm.cast(krylov.warm_start_vector(init, noise_key), params),
                        tm.normal_like(start_key, params))
      matvec = hessian.dataset_hvp(loss_fn, params, sample, linearize=t.linearize)
      lanczos = lambda v0: krylov.top_k_eigenpairs(  # noqa: E731
          matvec, v0, t.k, t.num_lanczos_steps, which=t.which, tol=t.tol or None)
      if t.get("warm_method", "lanczos") == "block":  # warm: block refresh; cold: Lanczos
        pairs = jax.lax.cond(warm, lambda: block_refresh.block_refresh(
            jax.vmap(matvec), hessian.start_block(init, noise_key, params, t.k + 2), t.k,
            tol=t.tol, which=t.which, matvec=matvec, fallback_steps=t.num_lanczos_steps,
            key=noise_key), lambda: lanczos(tm.normal_like(start_key, params)))
      else:
        pairs = lanczos(v0)
      g_batch = jax.grad(loss_fn)(params, hessian.first_batch(sample))
      g_sample = hessian.mean_grad(loss_fn, params, sample)
      stats = {
          "grad_fraction_batch": analyses.gradient_fraction_in_subspace(g_batch, pairs.eigvecs),
          "grad_fraction_sample": analyses.gradient_fraction_in_subspace(g_sample,
                                                                          pairs.eigvecs)}
      overlap = analyses.mean_squared_principal_cosine(init.eigvecs, pairs.eigvecs)
      stats["overlap_previous"] = jnp.where(warm, overlap, jnp.nan)
      return pairs, stats

    self._solve = solve_jit(solve)
    self._step_loss_change = jit(
        lambda params, ms, vecs, grad_b, eval_b, lr, key: analyses.step_loss_change(
            curvature_loss_fn(model, ms, l2), params, vecs, grad_b, eval_b, lr, key,
            tuple(config.analyses.step_loss_change.multipliers)))
    self._cross_section = jit(
        lambda params, ms, vecs, grad_b, eval_b, lr: analyses.cross_section(
            curvature_loss_fn(model, ms, l2), params, vecs, grad_b, eval_b, lr,
            tuple(config.analyses.cross_section.offsets)))
    self._alignment = jit(
        lambda params, ms, vecs, batches: analyses.gradient_alignment(
            curvature_loss_fn(model, ms, l2), params, vecs, batches))

    def frobenius(params, ms, sample, key):
      matvec = hessian.dataset_hvp(curvature_loss_fn(model, ms, l2), params, sample)
      n = config.analyses.frobenius.num_samples
      return (spectral.frobenius_norm(matvec, params, key, n),
              spectral.frobenius_norm_as_in_paper(matvec, params, key, n))
    self._frobenius = jit(frobenius)

    def density(params, ms, sample, key):
      matvec = hessian.dataset_hvp(curvature_loss_fn(model, ms, l2), params, sample)
      d = config.analyses.spectral_density
      return spectral.spectral_density(matvec, params, key, num_draws=d.num_draws,
                                       num_steps=d.num_steps)
    self._density = jit(density)

  def sample(self, step: int, num_examples: int, batch_size: int, stream: int = SAMPLE_STREAM,
             augment: Optional[bool] = None) -> dict:
    """N training examples as stacked batches [⌈N/b⌉, b, ...], fresh per step; the same examples
    every time in GD and, for the tracker's own samples, with ``tracking.fixed_sample``."""
    from sharp_dirs import data  # pylint: disable=g-import-not-at-top
    if augment is None:
      augment = self.run_data.augment if self.config.tracking.augment is None else (
          self.config.tracking.augment)
    sample = data.hessian_sample(
        self.run_data.train, step_key(self.config.seed, stream, step), num_examples=num_examples,
        batch_size=batch_size, fresh=not (self.config.full_batch or (
            stream == SAMPLE_STREAM and self.config.tracking.get("fixed_sample", False))),
        augment=augment,
        seed=self.config.seed)
    if self.placement is not None:
      sample = self.placement.put_batch(sample, batch_dim=1)
    return sample

  def evaluate(self, params, model_state, step: int, index: int, learning_rate: float):
    """One tracking evaluation at ``step`` (the ``index``-th of the run).

    Returns (eigenpairs, scalars to log, {name: arrays to save}).
    """
    c, t = self.config, self.config.tracking
    sample = self.sample(step, t.num_examples, t.batch_size)
    warm = t.warm_start and self.previous is not None
    init = self.previous if warm else _unit_pairs(params, t.k)
    start = time.perf_counter()
    pairs, stats = jax.block_until_ready(self._solve(
        params, model_state, sample, step_key(c.seed, LANCZOS_STREAM, step), init, warm))
    seconds = time.perf_counter() - start
    lam = np.asarray(pairs.eigvals, np.float64)
    finite = bool(np.all(np.isfinite(lam)))
    self.previous = pairs if finite else None
    rel = np.asarray(pairs.residuals, np.float64) / np.maximum(np.abs(lam), 1e-30)
    momentum = c.optimizer.momentum if c.optimizer.name in ("sgd", "nsgd") else 0.0
    values = {f"hessian/lambda_{i + 1}": lam[i] for i in range(t.k)}
    values.update({f"hessian/rel_residual_{i + 1}": rel[i] for i in range(t.k)})
    values.update({
        "hessian/num_hvps": int(pairs.num_matvecs), "hessian/seconds": seconds,
        "hessian/num_examples": int(np.prod(jax.tree.leaves(sample)[0].shape[:2])),
        "hessian/warm": int(warm),
        "hessian/frobenius_top_k": float(np.sqrt(np.sum(lam ** 2))),
        "eos/eta_lambda_max": learning_rate * lam[0],
        "eos/threshold": 2.0 * (1.0 + momentum),
    })
    values.update({f"hessian/{k}": float(v) for k, v in stats.items()
                   if np.isfinite(float(v))})
    arrays = {}
    if finite:
      self._analyses(params, model_state, pairs, step, index, learning_rate, values, arrays)
    return pairs, values, arrays

  def _analyses(self, params, model_state, pairs, step, index, lr, values, arrays) -> None:
    a, c = self.config.analyses, self.config
    key = step_key(c.seed, ANALYSES_STREAM, step)
    lr = jnp.asarray(lr, jnp.float32)
    due = lambda cfg: cfg.enabled and index % cfg.every == 0
    fixed = lambda n: self.sample(0, n, c.tracking.batch_size, augment=False)

    def minibatches(num, salt):
      return self.sample(step, num * c.batch_size, c.batch_size, stream=ANALYSES_STREAM + salt,
                         augment=False)

    if due(a.step_loss_change):
      out = self._step_loss_change(
          params, model_state, pairs.eigvecs, minibatches(a.step_loss_change.num_trials, 10),
          fixed(a.step_loss_change.num_examples), lr, key)
      rows = [f"e{i + 1}" for i in range(c.tracking.k)] + ["random", "full_step"]
      for i, row in enumerate(rows):
        for j, m in enumerate(a.step_loss_change.multipliers):
          values[f"step_loss_change/{row}/x{m:g}"] = float(out.relative_change[i, j])
      arrays["step_loss_change"] = {"relative_change": out.relative_change,
                                    "multipliers": out.multipliers,
                                    "loss_before": out.loss_before, "rows": np.array(rows)}
    if due(a.cross_section):
      directions = list(a.cross_section.directions)
      vecs = jax.tree.map(lambda e: e[np.asarray(directions)], pairs.eigvecs)
      out = self._cross_section(params, model_state, vecs,
                                minibatches(a.cross_section.num_trials, 20),
                                fixed(a.cross_section.num_examples), lr)
      zero = int(np.argmin(np.abs(np.asarray(out.offsets))))
      widths = analyses.cross_section_width(np.asarray(out.offsets), np.asarray(out.losses),
                                            float(out.losses[0, zero]))
      for i, d in enumerate(directions):
        values[f"cross_section/width_e{d + 1}"] = float(widths.width[i, 0])
      arrays["cross_section"] = {"offsets": out.offsets, "scale": out.scale,
                                 "losses": out.losses, "directions": np.array(directions),
                                 "lambda": np.asarray(pairs.eigvals)[directions],
                                 "width": widths.width}
    if due(a.alignment):
      out = self._alignment(params, model_state, pairs.eigvecs,
                            minibatches(a.alignment.num_batches, 30))
      for i in range(c.tracking.k):
        values[f"alignment/abs_cos_e{i + 1}"] = float(out.mean_abs_cos[i])
      values["alignment/mean_abs_cos"] = float(jnp.mean(out.mean_abs_cos))
      values["alignment/random_baseline"] = analyses.random_alignment_baseline(tm.size(params))
    if due(a.frobenius):
      sample = self.sample(step, c.tracking.num_examples, c.tracking.batch_size)
      fro, fro_paper = self._frobenius(params, model_state, sample, key)
      values["hessian/frobenius"] = float(fro)
      values["hessian/frobenius_as_in_paper"] = float(fro_paper)
    if due(a.spectral_density):
      sample = self.sample(step, c.tracking.num_examples, c.tracking.batch_size)
      d = self._density(params, model_state, sample, key)
      arrays["spectral_density"] = {"nodes": d.nodes, "weights": d.weights}
