"""The Hessian sample noise beside the solver's error (issue 18, item 1).

At fixed parameters of a run (checkpoints: init, the rise, the peak, late training) and for
each sample size N, draws ``--samples`` independent fresh samples of N training examples and
solves each for λ_1..λ_k (Lanczos to ``--noise-tol``, far below the noise). Reports

- the spread: std_s λ_i(sample s), and beside it the tracker's jackknife estimate of that std
  (``tracking.sample_noise``; its RMS over the samples, and the ratio);
- how the spread scales with N: the slope of log std against log N, raw and after dividing by
  √(1 − N/M) (samples are drawn without replacement from the M training examples);
- the solver's error at each tol of ``--tols`` on one sample per (point, N in
  ``--solver-sizes``): one Lanczos run of ``--ref-steps`` steps replays the stop rule of
  ``krylov.top_k_eigenpairs`` (k + 2 Ritz pairs with relative residual <= tol) step by step
  and compares the Ritz values where it would stop with those of the last step.

Prints a progress line at least every 20 s (after a solve, and 'still working' while one
runs longer: a solve at N = 2,560 takes 30–60 s on 2 cores) and writes a JSON of every
number.

  python bench/bench_sample_noise.py            # CPU-scale model, η = 0.03 seed-0 noise-grid run
  python bench/bench_sample_noise.py --quick    # a tiny MLP at init (smoke test)
"""

import argparse
import json
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

import timing
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.engine import checkpoint
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import rundir
from sharp_dirs.engine import tracking
from sharp_dirs.engine import train

RUN = "runs/cpu/noise_grid/optimizer.learning_rate=0.03,batch_size=128,num_epochs=10,seed=0"
POINTS = "init:0,rise:40,peak:80,late:200"  # name:step (λ_1 ≈ 3.9, 50, 111, 69 in that run)
TOLS = "1e-1,3e-2,1e-2,1e-3,1e-4"


class Progress:
  """Prints 'what, done/total, elapsed, time left' at most every ``every`` seconds, and from a
  background thread 'still working' whenever ``every`` seconds pass without a line (one solve
  can take longer than that), until all the work is done."""

  def __init__(self, total: float, every: float = 20.0):
    self.total, self.done, self.every = total, 0.0, every
    self.start = self.last = time.perf_counter()
    self.current = "starting"
    threading.Thread(target=self._heartbeat, daemon=True).start()

  def working_on(self, what: str) -> None:
    self.current = what

  def finish(self) -> None:
    """All done (the heartbeat stops)."""
    self.done = self.total

  def _heartbeat(self) -> None:
    while self.done < self.total:
      time.sleep(self.every / 4)
      now = time.perf_counter()
      if now - self.last >= self.every:
        self.last = now
        print(f"  {self.current}: still working, {now - self.start:.0f} s elapsed", flush=True)

  def step(self, what: str, work: float) -> None:
    self.done += work
    now = time.perf_counter()
    if now - self.last >= self.every or self.done >= self.total:
      self.last = now
      elapsed = now - self.start
      left = elapsed / max(self.done, 1e-9) * (self.total - self.done)
      print(f"  {what}: {100 * self.done / self.total:.0f}% of the work, {elapsed:.0f} s "
            f"elapsed, ~{left:.0f} s left", flush=True)


def stop_steps_and_errors(alphas, betas, last_beta, k: int, tols, num_guard: int = 2) -> dict:
  """Replays ``top_k_eigenpairs``' stop rule on one Lanczos run (numpy, float64).

  alphas [M], betas [M-1] (β after steps 1..M-1), last_beta β_M. For each tol: the step m at
  which k + num_guard Ritz pairs first have |β_m s_{m,i}| <= tol·|θ_i|, and the relative
  error |θ_i(m) − θ_i(M)|/|θ_i(M)| of the top k there (M: the reference). Returns
  {"reference": θ(M) [k], "reference_rel_residual": [k], str(tol): {"steps", "rel_error"}}.
  """
  alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
  m_total = len(alphas)
  beta_after = np.concatenate([betas, [float(last_beta)]])
  watched = min(k + num_guard, m_total)

  def ritz(m):
    t = np.diag(alphas[:m]) + np.diag(betas[:m - 1], 1) + np.diag(betas[:m - 1], -1)
    theta, s = np.linalg.eigh(t)
    order = np.argsort(-theta)[:min(watched, m)]
    return theta[order], np.abs(beta_after[m - 1] * s[m - 1, order])

  ref, ref_res = ritz(m_total)
  out = {"reference": ref[:k].tolist(),
         "reference_rel_residual": (ref_res[:k] / np.abs(ref[:k])).tolist()}
  for tol in tols:
    stop = m_total
    for m in range(watched, m_total + 1):
      theta, res = ritz(m)
      if np.all(res <= tol * np.abs(theta)):
        stop = m
        break
    theta, _ = ritz(stop)
    out[str(tol)] = {"steps": stop,
                     "rel_error": (np.abs(theta[:k] - ref[:k]) / np.abs(ref[:k])).tolist()}
  return out


def load_point(run: str, config, run_data, step: int):
  """(params, model_state) of ``run`` at checkpoint ``step`` (0: the run's initialization)."""
  _, _, tree = train.initial_tree(config, run_data)
  state = tree["state"]
  if step == 0:
    return state.params, state.model_state
  _, part = checkpoint.restore_part(
      run, {"state": {"params": state.params, "model_state": state.model_state}},
      choose=lambda steps: step)
  return part["state"]["params"], part["state"]["model_state"]


def make_solvers(model, l2: float, k: int, noise_tol: float, max_steps: int, ref_steps: int,
                 groups: int):
  """Jitted (λ [k], HVPs, jackknife std [k]) of one sample, and a reference Lanczos run."""
  def solve(params, ms, sample, key, without_replacement):
    loss_fn = tracking.curvature_loss_fn(model, ms, l2)
    matvec = hessian.dataset_hvp(loss_fn, params, sample)
    pairs = krylov.top_k_eigenpairs(matvec, tm.normal_like(key, params), k, max_steps,
                                    tol=noise_tol)
    num_groups = tracking.effective_groups(hessian.check_batches(sample)[0], groups)
    matrices = tracking.group_rayleigh_matrices(
        loss_fn, params, tracking.split_into_groups(sample, num_groups), pairs.eigvecs)
    return (pairs.eigvals, pairs.num_matvecs, tracking.jackknife_noise(matrices,
                                                                       without_replacement))

  def reference(params, ms, sample, key):
    loss_fn = tracking.curvature_loss_fn(model, ms, l2)
    matvec = hessian.dataset_hvp(loss_fn, params, sample)
    r = krylov.lanczos(matvec, tm.normal_like(key, params), ref_steps)
    return r.alphas, r.betas, r.residual_norm

  return jax.jit(solve), jax.jit(reference)


def fit_exponent(sizes, stds) -> float:
  """The slope p of log std = c − p·log N (least squares): std ∝ N^(−p); NaN for one size."""
  if len(set(sizes)) < 2:
    return float("nan")
  return float(-np.polyfit(np.log(sizes), np.log(stds), 1)[0])


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--run", default=RUN, help="a finished run directory with checkpoints")
  p.add_argument("--points", default=POINTS, help="name:step,... (step 0: initialization)")
  p.add_argument("--sizes", default="256,512,1024,2560")
  p.add_argument("--samples", type=int, default=10)
  p.add_argument("--k", type=int, default=2)
  p.add_argument("--noise-tol", type=float, default=1e-2,
                 help="the spread's solves (error ~ residual² / gap, far below the noise)")
  p.add_argument("--max-steps", type=int, default=30)
  p.add_argument("--tols", default=TOLS)
  p.add_argument("--solver-sizes", default="512", help="N of the solver-error replay")
  p.add_argument("--ref-steps", type=int, default=40)
  p.add_argument("--groups", type=int, default=8, help="jackknife groups (tracking.noise_groups)")
  p.add_argument("--out", default="bench/sample_noise.json")
  p.add_argument("--quick", action="store_true", help="a tiny MLP at init, tiny sizes")
  return p.parse_args(argv)


def setup(args):
  """(config, run data, {point: (params, model_state)}, population M)."""
  if args.quick:
    config = config_lib.cpu_scale(config_lib.default_config())
    config.num_train_examples = 512
    config.model = "mlp"  # compiles in seconds: the smoke test checks the plumbing only
    config.model_kwargs = config_lib.ConfigDict({"hidden": (16,)})
    points = {"init": 0}
  else:
    config = config_lib.from_stored(rundir.read_config(args.run))
    points = {n: int(s) for n, s in (p.split(":") for p in args.points.split(","))}
  run_data = train.load_run_data(config)
  params = {name: load_point(args.run, config, run_data, step) for name, step in points.items()}
  population = len(next(iter(run_data.train.values())))
  return config, run_data, params, population


def main(argv=None):
  args = parse_args(argv)
  if args.quick:
    args.sizes, args.samples, args.tols, args.solver_sizes = "32,64", 3, "1e-1,1e-2", "64"
    args.max_steps, args.ref_steps, args.groups = 10, 12, 4
  sizes = [int(s) for s in args.sizes.split(",")]
  tols = [float(t) for t in args.tols.split(",")]
  solver_sizes = [int(s) for s in args.solver_sizes.split(",")]
  config, run_data, points, population = setup(args)
  model, _, _ = train.initial_tree(config, run_data)
  solve, reference = make_solvers(model, config.l2, args.k, args.noise_tol, args.max_steps,
                                  args.ref_steps, args.groups)
  augment = run_data.augment if config.tracking.augment is None else config.tracking.augment
  from sharp_dirs import data  # pylint: disable=g-import-not-at-top

  def draw(point_index, n, s):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(18), point_index * 7919 + n), s)
    batch = min(config.tracking.batch_size, n // args.groups)  # >= G batches: G groups
    sample = data.hessian_sample(run_data.train, key, num_examples=n, batch_size=batch,
                                 augment=augment)
    return sample, jax.random.fold_in(key, 1)

  print(f"sample noise of λ_1..λ_{args.k}: {config.model} {dict(config.model_kwargs)} on "
        f"{population} training examples; points {list(points)}; N {sizes}; {args.samples} "
        f"samples each; load average {os.getloadavg()[0]:.2f}", flush=True)
  work = len(points) * (args.samples * sum(sizes) + sum(n for n in solver_sizes if n in sizes)
                        * args.ref_steps / args.max_steps)
  progress = Progress(work)
  results = {"args": vars(args), "population": population, "points": {},
             "load_average_start": os.getloadavg()}
  for p_index, (name, (params, ms)) in enumerate(points.items()):
    per_n = {}
    for n in sizes:
      lam, hvps, est, seconds = [], [], [], []
      fraction = jnp.float32(max(1.0 - n / population, 0.0))
      for s in range(args.samples):
        sample, key = draw(p_index, n, s)
        progress.working_on(f"{name} N={n} sample {s + 1}/{args.samples}")
        sec, (values, used, noise) = timing.timed(solve, params, ms, sample, key, fraction)
        lam.append(np.asarray(values, np.float64))
        hvps.append(int(used))
        est.append(np.asarray(noise, np.float64))
        seconds.append(sec)
        progress.step(f"{name} N={n} sample {s + 1}/{args.samples}", n)
      lam, est = np.array(lam), np.array(est)
      std = lam.std(axis=0, ddof=1)
      rms = np.sqrt(np.mean(est ** 2, axis=0))
      per_n[n] = {"lambdas": lam.tolist(), "mean": lam.mean(axis=0).tolist(),
                  "std": std.tolist(), "rel_std": (std / np.abs(lam.mean(axis=0))).tolist(),
                  "estimate_rms": rms.tolist(), "estimate_over_std": (rms / std).tolist(),
                  "hvps_mean": float(np.mean(hvps)), "seconds_median": float(np.median(seconds))}
      if n in solver_sizes:
        sample, key = draw(p_index, n, 1000)
        progress.working_on(f"{name} N={n} reference solve")
        a, b, last = reference(params, ms, sample, key)
        per_n[n]["solver"] = stop_steps_and_errors(a, b, last, args.k, tols)
        progress.step(f"{name} N={n} reference solve", n * args.ref_steps / args.max_steps)
    stds = np.array([per_n[n]["std"] for n in sizes])  # [sizes, k]
    fpc = np.sqrt(np.maximum(1.0 - np.array(sizes) / population, 1e-12))[:, None]
    exponents = [fit_exponent(sizes, stds[:, i]) for i in range(args.k)]
    exponents_fpc = [fit_exponent(sizes, (stds / fpc)[:, i]) for i in range(args.k)]
    results["points"][name] = {"sizes": per_n, "exponent": exponents,
                               "exponent_without_replacement_removed": exponents_fpc}
    write_json(args.out, results)  # after each point: a partial run keeps what it measured
  results["load_average_end"] = os.getloadavg()
  progress.finish()
  print_tables(results, sizes, tols, args.k)
  write_json(args.out, results)
  print(f"wrote {args.out}")
  return results


def write_json(path: str, results: dict) -> None:
  if path:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1, default=float)


def print_tables(results, sizes, tols, k):
  print("\n| point | N | " + " | ".join(f"λ_{i + 1} mean ± std (rel)" for i in range(k))
        + " | jackknife / std | HVPs |")
  print("|---|---:|" + "---:|" * k + "---|---:|")
  for name, r in results["points"].items():
    for n in sizes:
      d = r["sizes"][n]
      cells = [f"{m:.3g} ± {s:.3g} ({100 * rs:.1f}%)" for m, s, rs in
               zip(d["mean"], d["std"], d["rel_std"])]
      ratio = ", ".join(f"{x:.2f}" for x in d["estimate_over_std"])
      print(f"| {name} | {n} | " + " | ".join(cells) + f" | {ratio} | {d['hvps_mean']:.1f} |")
  print("\n| point | std ∝ N^−p: p for " + ", ".join(f"λ_{i + 1}" for i in range(k))
        + " | p with √(1 − N/M) removed |")
  print("|---|---|---|")
  for name, r in results["points"].items():
    print(f"| {name} | " + ", ".join(f"{p:.2f}" for p in r["exponent"]) + " | "
          + ", ".join(f"{p:.2f}" for p in r["exponent_without_replacement_removed"]) + " |")
  print("\n| point | N | tol | HVPs | rel. error of " + ", ".join(f"λ_{i + 1}" for i in range(k))
        + " | sample noise (rel. std) |")
  print("|---|---:|---:|---:|---|---|")
  for name, r in results["points"].items():
    for n, d in r["sizes"].items():
      if "solver" not in d:
        continue
      for tol in tols:
        e = d["solver"][str(tol)]
        print(f"| {name} | {n} | {tol:g} | {e['steps']} | "
              + ", ".join(f"{x:.1e}" for x in e["rel_error"]) + " | "
              + ", ".join(f"{100 * x:.1f}%" for x in d["rel_std"]) + " |")


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
