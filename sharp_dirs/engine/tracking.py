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
3. logs λ_1..λ_k, each with its estimated sample noise (the std of λ_i over fresh samples of N,
   ``hessian/noise_i``; ``sample_noise``), relative residuals, the tol used (a fraction of
   that noise under tol="auto"), the HVPs and seconds spent, η·λ_1 against the stability
   threshold 2(1+m) of SGD with momentum m on a quadratic (the edge-of-stability view), the
   fraction of a minibatch gradient's and of the sample gradient's squared norm inside the
   top-k subspace, and the overlap with the previous top-k subspace;
4. runs the analyses the config enables (``sharp_dirs.analyses``; docs/protocol.md, F3–F5), the
   Frobenius-norm estimates and the spectral density.
"""

import math
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs import analyses
from sharp_dirs.curvature import block_refresh
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import spectral
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.engine import programs
from sharp_dirs.models import loss as model_loss
from sharp_dirs.types import LossFn, PyTree

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


# ---------------------------------------------------------------------------------------------
# The sample noise of λ_i: how much λ_i of the Hessian of N examples moves from one random
# sample of N to another (bench/bench_sample_noise.py measures it directly; bench/RESULTS.md).
#
# Estimate (a grouped jackknife in the top-k Ritz subspace): split the sample into G groups of
# N/G examples (whole batches), project each group's Hessian onto the sample's top-k eigenvectors U,
# M_g = Uᵀ H_g U (k × k; k HVPs over the sample in all), and take the eigenvalues of the
# leave-one-group-out means M_(−g) = (G·M̄ − M_g)/(G − 1). The jackknife variance
#     Var̂(λ_i) = (G − 1)/G · Σ_g (λ_i(M_(−g)) − mean_g λ_i(M_(−g)))²
# estimates the variance of λ_i for N examples: its factor (G − 1) is the rescaling from the
# groups' sizes to N under the 1/N law of a mean's variance (for G = 2 it is the split-half
# spread std(λ_A, λ_B) = |λ_A − λ_B|/√2 of N/2 examples divided by √2). Samples drawn without
# replacement from M examples vary less: the variance is multiplied by 1 − N/M.
# ---------------------------------------------------------------------------------------------

# tol="auto" (tracking.tol_noise_fraction > 0) clamps its tolerance to this range.
AUTO_TOL_RANGE = (1e-4, 1e-1)


def effective_groups(num_batches: int, requested: int) -> int:
  """The number of jackknife groups for a sample of ``num_batches`` stacked batches: the
  largest divisor of it in [2, requested] (equal groups of whole batches), or 0 (no estimate)
  when there is none, e.g. a sample of one batch."""
  return max((d for d in range(2, requested + 1) if num_batches % d == 0), default=0)


def split_into_groups(sample: PyTree, num_groups: int) -> PyTree:
  """Stacked batches [B, b, ...] as G groups [G, B/G, b, ...] of B/G whole batches each.

  Only the leading (batch-of-batches) axis is split, so a sample sharded over a mesh's data
  axis (axis 1) keeps its sharding."""
  num, _ = hessian.check_batches(sample)
  if num_groups < 2 or num % num_groups:
    raise ValueError(f"num_groups={num_groups} must be >= 2 and divide the sample's {num} "
                     "batches (effective_groups(B, G) picks such a number).")
  return jax.tree.map(lambda x: x.reshape((num_groups, num // num_groups) + x.shape[1:]), sample)


def group_rayleigh_matrices(loss_fn: LossFn, params: PyTree, groups: PyTree,
                            eigvecs: PyTree) -> jax.Array:
  """[G, k, k]: M_g = Uᵀ H_g U for each group g of ``split_into_groups`` and the k stacked
  eigenvectors U (leaves [k, ...]); symmetrized. Costs k HVPs over all G groups together."""
  def one_group(group):
    matvec = hessian.dataset_hvp(loss_fn, params, group)
    hu = jax.vmap(matvec)(eigvecs)  # leaves [k, ...]
    m = jax.vmap(lambda w: tm.stack_dot(eigvecs, w))(hu)  # m[j, i] = u_iᵀ H_g u_j
    return 0.5 * (m + m.T)

  return jax.lax.map(one_group, groups)


def jackknife_noise(matrices: jax.Array, without_replacement: float = 1.0) -> jax.Array:
  """[k] estimated std of each λ_i (descending) over samples of N examples, from the groups'
  [G, k, k] Rayleigh matrices (module comment above); ``without_replacement`` = 1 − N/M."""
  g = matrices.shape[0]
  total = jnp.sum(matrices, axis=0)
  leave_one_out = (total[None] - matrices) / (g - 1)
  lam = jnp.linalg.eigvalsh(leave_one_out)[:, ::-1]  # [G, k] descending
  spread = jnp.sum((lam - jnp.mean(lam, axis=0)) ** 2, axis=0)
  return jnp.sqrt((g - 1) / g * spread * without_replacement)


def split_spread(matrices: jax.Array) -> jax.Array:
  """[k] std over the G groups of the groups' own λ_i (eigenvalues of M_g): the spread of
  λ_i over samples of N/G examples, NOT of N (biased high by √G under the 1/N law; kept to
  show that the rescaling matters: tests/test_sample_noise.py)."""
  lam = jnp.linalg.eigvalsh(matrices)[:, ::-1]
  return jnp.std(lam, axis=0, ddof=1)


def sample_noise(loss_fn: LossFn, params: PyTree, sample: PyTree, eigvecs: PyTree,
                 num_groups: int, population: int = 0) -> jax.Array:
  """[k] estimated std of λ_1..λ_k over fresh samples of N examples like ``sample`` (leaves
  [B, b, ...]), given its top-k eigenvectors (leaves [k, ...]); ``population``: M, the size of
  the set the samples are drawn from without replacement (0: infinite)."""
  num, size = hessian.check_batches(sample)
  fraction = 1.0 - num * size / population if population else 1.0
  matrices = group_rayleigh_matrices(loss_fn, params, split_into_groups(sample, num_groups),
                                     eigvecs)
  return jackknife_noise(matrices, max(fraction, 0.0))


def auto_tol(relative_noise: Optional[float], fraction: float, first_tol: float) -> float:
  """The relative-residual tolerance of the next solve under tol="auto": ``fraction`` of the
  smallest relative noise min_i σ̂_i/|λ_i| of the last evaluation, clamped to
  ``AUTO_TOL_RANGE`` (Bauer–Fike: |λ − θ| <= ‖Hu − θu‖, so each eigenvalue's solver error is
  then <= fraction·σ̂_i); ``first_tol`` while there is no finite estimate yet."""
  if relative_noise is None or not math.isfinite(relative_noise):
    return first_tol
  low, high = AUTO_TOL_RANGE
  return float(min(max(fraction * relative_noise, low), high))


class Programs(NamedTuple):
  """The tracker's jitted functions (``make_programs``), shared by the runs of a family."""
  solve: Callable
  step_loss_change: Callable
  cross_section: Callable
  alignment: Callable
  frobenius: Callable
  density: Callable


def make_programs(config, model, placement=None) -> Programs:
  """The tracker's jitted functions for ``config``; they read only fields of its
  ``programs.program_key`` (keys and the learning rate come in as arguments), from a copy
  (they are traced at their first call)."""
  config = config.copy_and_resolve_references()
  t, l2 = config.tracking, config.l2
  if placement is None:
    jit = solve_jit = jax.jit
  else:  # small results replicated (every process reads them), eigenvectors like the params
    jit = lambda fn: placement.jit(fn, out_shardings_fn=lambda args: placement.replicated)
    solve_jit = lambda fn: placement.jit(fn, out_shardings_fn=lambda args: (
        krylov.Eigenpairs(placement.replicated, placement.stacked_shardings(args[0]),
                          placement.replicated, placement.replicated), placement.replicated,
        placement.replicated))
  auto = t.tol_noise_fraction > 0
  groups = noise_groups(config)

  def solve(params, model_state, sample, key, init, warm, tol, without_replacement):
    """One program for cold (warm=False) and warm starts: compiled once per family. ``tol`` is
    traced under tol="auto" (a new tolerance each evaluation, no recompile), else unused."""
    tol = tol if auto else (t.tol or None)
    loss_fn = curvature_loss_fn(model, model_state, l2)
    start_key, noise_key = jax.random.split(key)
    v0 = jax.tree.map(lambda w, c: jnp.where(warm, w, c),
                      tm.cast(krylov.warm_start_vector(init, noise_key), params),
                      tm.normal_like(start_key, params))
    matvec = hessian.dataset_hvp(loss_fn, params, sample, linearize=t.linearize)
    lanczos = lambda v0: krylov.top_k_eigenpairs(  # noqa: E731
        matvec, v0, t.k, t.num_lanczos_steps, which=t.which, tol=tol)
    if t.warm_method == "block":  # warm: block refresh; cold: Lanczos
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
    noise = jnp.full([t.k], jnp.nan)
    if groups:
      matrices = group_rayleigh_matrices(loss_fn, params, split_into_groups(sample, groups),
                                         pairs.eigvecs)
      noise = jackknife_noise(matrices, without_replacement)
    return pairs, stats, noise

  a = config.analyses

  def frobenius(params, ms, sample, key):
    matvec = hessian.dataset_hvp(curvature_loss_fn(model, ms, l2), params, sample)
    n = a.frobenius.num_samples
    return (spectral.frobenius_norm(matvec, params, key, n),
            spectral.frobenius_norm_as_in_paper(matvec, params, key, n))

  def density(params, ms, sample, key):
    matvec = hessian.dataset_hvp(curvature_loss_fn(model, ms, l2), params, sample)
    d = a.spectral_density
    return spectral.spectral_density(matvec, params, key, num_draws=d.num_draws,
                                     num_steps=d.num_steps)

  multipliers = tuple(a.step_loss_change.multipliers)
  offsets = tuple(a.cross_section.offsets)
  return Programs(
      solve=solve_jit(solve),
      step_loss_change=jit(
          lambda params, ms, vecs, grad_b, eval_b, lr, key: analyses.step_loss_change(
              curvature_loss_fn(model, ms, l2), params, vecs, grad_b, eval_b, lr, key,
              multipliers)),
      cross_section=jit(
          lambda params, ms, vecs, grad_b, eval_b, lr: analyses.cross_section(
              curvature_loss_fn(model, ms, l2), params, vecs, grad_b, eval_b, lr, offsets)),
      alignment=jit(
          lambda params, ms, vecs, batches: analyses.gradient_alignment(
              curvature_loss_fn(model, ms, l2), params, vecs, batches)),
      frobenius=jit(frobenius),
      density=jit(density))


def noise_groups(config) -> int:
  """G, the jackknife groups of the tracker's samples (0: no noise estimate)."""
  t = config.tracking
  return effective_groups(-(-t.num_examples // t.batch_size), t.noise_groups)


class Tracker:
  """The top-k eigenpairs along a run (see the module docstring); ``previous`` warm-starts."""

  def __init__(self, config, model, run_data, placement=None):
    """``placement``: a ``sharp_dirs.engine.distributed.Placement`` to run on a mesh (None: one
    device); samples are then split over its data axis, eigenvectors placed like the params.
    The jitted functions are those of every run with the same program key
    (``programs.shared``)."""
    self.config = config
    self.run_data = run_data
    self.placement = placement
    self.previous: Optional[krylov.Eigenpairs] = None
    self.relative_noise: Optional[float] = None  # min_i σ̂_i/|λ_i| of the last evaluation
    self.noise_groups = noise_groups(config)  # G actually used (0: no estimate)
    self.programs = programs.shared("tracker", config,
                                    lambda: make_programs(config, model, placement), placement)

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
            stream == SAMPLE_STREAM and self.config.tracking.fixed_sample)),
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
    tol = self.next_tol()
    num = int(np.prod(jax.tree.leaves(sample)[0].shape[:2]))
    population = len(next(iter(self.run_data.train.values())))
    start = time.perf_counter()
    pairs, stats, noise = jax.block_until_ready(self.programs.solve(
        params, model_state, sample, step_key(c.seed, LANCZOS_STREAM, step), init, warm,
        jnp.float32(tol), jnp.float32(max(1.0 - num / population, 0.0))))
    seconds = time.perf_counter() - start
    lam = np.asarray(pairs.eigvals, np.float64)
    finite = bool(np.all(np.isfinite(lam)))
    self.previous = pairs if finite else None
    noise = np.asarray(noise, np.float64)
    groups = self.noise_groups
    if groups and finite and np.all(np.isfinite(noise)):
      self.relative_noise = float(np.min(noise / np.maximum(np.abs(lam), 1e-30)))
    rel = np.asarray(pairs.residuals, np.float64) / np.maximum(np.abs(lam), 1e-30)
    momentum = c.optimizer.momentum if c.optimizer.name in ("sgd", "nsgd") else 0.0
    values = {f"hessian/lambda_{i + 1}": lam[i] for i in range(t.k)}
    values.update({f"hessian/rel_residual_{i + 1}": rel[i] for i in range(t.k)})
    if groups:  # the estimated std of λ_i over fresh samples of N (module comment)
      values.update({f"hessian/noise_{i + 1}": noise[i] for i in range(t.k)})
      values["hessian/noise_hvps"] = t.k
    values["hessian/tol"] = tol
    values.update({
        "hessian/num_hvps": int(pairs.num_matvecs), "hessian/seconds": seconds,
        "hessian/num_examples": num,
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

  def next_tol(self) -> float:
    """The next solve's tolerance: tracking.tol, or under tol="auto" (tol_noise_fraction > 0)
    that fraction of the last evaluation's relative noise (``auto_tol``)."""
    t = self.config.tracking
    fraction = t.tol_noise_fraction
    if fraction > 0:
      return auto_tol(self.relative_noise, fraction, t.tol)
    return float(t.tol)

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
      out = self.programs.step_loss_change(
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
      out = self.programs.cross_section(params, model_state, vecs,
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
      out = self.programs.alignment(params, model_state, pairs.eigvecs,
                            minibatches(a.alignment.num_batches, 30))
      for i in range(c.tracking.k):
        values[f"alignment/abs_cos_e{i + 1}"] = float(out.mean_abs_cos[i])
      values["alignment/mean_abs_cos"] = float(jnp.mean(out.mean_abs_cos))
      values["alignment/random_baseline"] = analyses.random_alignment_baseline(tm.size(params))
    if due(a.frobenius):
      sample = self.sample(step, c.tracking.num_examples, c.tracking.batch_size)
      fro, fro_paper = self.programs.frobenius(params, model_state, sample, key)
      values["hessian/frobenius"] = float(fro)
      values["hessian/frobenius_as_in_paper"] = float(fro_paper)
    if due(a.spectral_density):
      sample = self.sample(step, c.tracking.num_examples, c.tracking.batch_size)
      d = self.programs.density(params, model_state, sample, key)
      arrays["spectral_density"] = {"nodes": d.nodes, "weights": d.weights}
