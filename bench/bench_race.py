"""The race, side by side in one run: hessian_top_k vs PyHessian, scipy eigsh, and a PyTorch step.

Same architecture, same real Fashion-MNIST Hessian examples (fixed subset, the library's
'center' preprocessing, no augmentation), same initial weights on both sides (the flax
initialization exported to an .npz and converted to torch layouts by bench_race_torch.py),
float32 both sides, inference mode. For each model:

- a converged reference: hessian_top_k with many Lanczos steps and no tol;
- ours: hessian_top_k for top-1 and top-5 with tol chosen as the largest of --tols whose
  eigenvalues are within 1e-3 relative error of the reference; wall time of the compiled solve
  (compile time reported apart) and its HVPs;
- scipy eigsh(which='LA', tol=1e-3) driven by our jitted HVP (jvp of grad) on a flat vector;
- PyHessian (hessian(model, criterion, data=...).eigenvalues(top_n=k), its defaults
  maxIter=100, tol=1e-3), run with the benchmark venv's python as a subprocess right after
  (one per solve, after an untimed warm-up backward); its λ_1 is checked against the
  reference (same Hessian). Its tol stops on a relative change of the Rayleigh quotient, not
  at an error, so ``--pyhessian-tols 1e-3,1e-4,1e-5`` also runs it at tighter tols until its
  top-k is within 1e-3 of the reference: the race at matched accuracy.
Then one SGD training step of SimpleCNN root on 512 images: a plain jitted JAX step (flax
nn.Conv, the library's default with sharp_dirs.xla_cpu's flag; and the im2col conv) vs a plain
PyTorch step.

  .venv/bin/python bench/bench_race.py                      # full (see RESULTS.md for sizes)
  .venv/bin/python bench/bench_race.py --cnn-examples 256   # cheaper CNN Hessian
  .venv/bin/python bench/bench_race.py --quick               # tiny smoke run (seconds)

The torch side needs .venv_bench (see bench_race_torch.py); without it that side is skipped
and the run says so.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.sparse.linalg import LinearOperator, eigsh

import sharp_dirs
from sharp_dirs import data
from sharp_dirs import models
from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import hessian

import timing  # bench/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_SCRIPT = ROOT / "bench" / "bench_race_torch.py"
DEFAULT_BENCH_PYTHON = ROOT / ".venv_bench" / "bin" / "python"
ACCURACY = 1e-3


def rel_err(vals, ref) -> float:
  vals = np.sort(np.asarray(vals, np.float64))[::-1]
  ref = np.asarray(ref, np.float64)[:len(vals)]
  return float(np.max(np.abs(vals - ref) / np.abs(ref)))


def flat_params(params, prefix):
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = "/".join(str(getattr(p, "key", p)) for p in path)
    out[f"{prefix}/params/{keys}"] = np.asarray(leaf, np.float32)
  return out


def setup(name, model, dataset, num_examples, batch_size, key):
  """Initial params, loss and the fixed Hessian sample [num_batches, batch_size, ...]."""
  params, state = models.init_model(model, key, jax.tree.map(lambda x: x[:2], dataset.train))
  loss_fn = models.make_loss_fn(model, state, train=False)
  sample = data.hessian_sample(dataset.train, num_examples=num_examples,
                               batch_size=min(batch_size, num_examples), fresh=False,
                               augment=False)
  flat = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), sample)
  export = flat_params(params, name)
  export[f"{name}/images"] = flat["image"].astype(np.float32)
  export[f"{name}/labels"] = flat["label"].astype(np.int64)
  return params, loss_fn, sample, export


def compiled_solve(loss_fn, params, sample, key, *, k, steps, tol, linearize, num_guard=2):
  """(compile seconds, callable) of one hessian_top_k solve, ahead of time."""
  start = time.perf_counter()
  compiled = hessian._hessian_top_k.lower(
      loss_fn, params, sample, key, None, k=k, num_lanczos_steps=steps, which="largest",
      tol=tol, num_guard=num_guard, exact_residuals=False, linearize=linearize,
      canonical_convs=conv_layout.use_canonical_convs(None)).compile()
  return time.perf_counter() - start, lambda: jax.block_until_ready(
      compiled(params, sample, key, None))


def ours(loss_fn, params, sample, key, ref, *, k, steps, tols, linearize, num_guard):
  """hessian_top_k at the largest tol reaching ACCURACY: dict of the chosen solve and all tried."""
  tried = []
  for tol in sorted(tols, reverse=True):
    compile_s, solve = compiled_solve(loss_fn, params, sample, key, k=k, steps=steps, tol=tol,
                                      linearize=linearize, num_guard=num_guard)
    seconds, result = timing.timed(solve)
    err = rel_err(np.asarray(result.eigvals), ref[:k])
    tried.append(dict(tol=tol, seconds=seconds, compile_s=compile_s,
                      hvps=int(result.num_matvecs), err=err,
                      eigvals=np.asarray(result.eigvals).tolist()))
    if err <= ACCURACY:
      return tried[-1], tried
  return tried[-1], tried


def run_eigsh(loss_fn, params, sample, k, tol=1e-3):
  flat0, unravel = ravel_pytree(params)
  matvec = jax.jit(lambda p, s, v: ravel_pytree(hessian.dataset_hvp(loss_fn, p, s)(
      unravel(v)))[0])
  count = {"n": 0}

  def mv(x):
    count["n"] += 1
    return np.asarray(matvec(params, sample, jnp.asarray(x.reshape(-1), jnp.float32)),
                      np.float64)

  jax.block_until_ready(matvec(params, sample, flat0))   # compile outside the timing
  v0 = np.asarray(jax.random.normal(jax.random.PRNGKey(1), flat0.shape), np.float64)
  op = LinearOperator((flat0.size, flat0.size), matvec=mv, dtype=np.float64)
  start = time.perf_counter()
  vals = eigsh(op, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
  return time.perf_counter() - start, count["n"], np.sort(vals)[::-1]


def torch_side(bench_python, args_list, timeout):
  """Runs bench_race_torch.py with the benchmark venv; None (and why) when it cannot."""
  if bench_python is None or not pathlib.Path(bench_python).exists():
    return None, f"torch side skipped: no benchmark venv python at {bench_python}"
  proc = subprocess.run([str(bench_python), str(TORCH_SCRIPT), *args_list], capture_output=True,
                        text=True, timeout=timeout)
  if proc.returncode != 0:
    return None, f"torch side failed (rc {proc.returncode}): {proc.stderr[-1500:]}"
  return json.loads(proc.stdout.strip().splitlines()[-1]), None


def pyhessian_rows(args, npz, name, k, ref_vals, res, notes):
  """PyHessian's top-k at each of --pyhessian-tols (largest first) until one reaches ACCURACY:
  its defaults (tol 1e-3) stop on a 1e-3 change of the Rayleigh quotient, not at 1e-3 error."""
  rows = []
  ours_row = next(r for r in res["rows"] if r["solver"] == "ours" and r["top"] == k)
  for tol in sorted((float(t) for t in args.pyhessian_tols.split(",")), reverse=True):
    out, why = torch_side(args.bench_python,
                          ["hessian", "--npz", npz, "--model", name, "--top", str(k),
                           "--tol", str(tol), "--threads", str(args.torch_threads)],
                          args.timeout)
    if out is None:
      print(f"  {why}", flush=True)
      notes.append(why)
      return rows
    res["torch_loss"] = out["loss"]
    row = out["rows"][0]
    err = rel_err(row["eigvals"], ref_vals[:k])
    lam1_diff = abs(max(row["eigvals"]) - ref_vals[0]) / abs(ref_vals[0])
    speedup = row["seconds"] / ours_row["seconds"]
    print(f"  PyHessian top-{k} tol={tol:g} (torch {out['torch']}, {out['threads']} threads, "
          f"loss {out['loss']:.6f}): {row['seconds']:.2f} s, {row['hvps']} HVPs, rel err "
          f"{err:.1e} (λ_1 {max(row['eigvals']):.5f} vs reference {ref_vals[0]:.5f}: "
          f"{lam1_diff:.1e}); ours is {speedup:.1f}× faster "
          f"({row['seconds'] / (ours_row['seconds'] + ours_row['compile_s']):.1f}× with "
          "compile)", flush=True)
    rows.append(dict(solver="pyhessian", top=k, tol=tol, seconds=row["seconds"],
                     hvps=row["hvps"], err=err, lam1_rel_diff=lam1_diff,
                     eigvals=row["eigvals"], speedup=speedup, matched=err <= ACCURACY))
    if err <= ACCURACY:
      break
  return rows


def jax_train_step_time(model, dataset_images, labels, repeats):
  params, state = models.init_model(model, jax.random.PRNGKey(0),
                                    {"image": dataset_images[:2], "label": labels[:2]})
  loss_fn = models.make_loss_fn(model, state, train=True)

  @jax.jit
  def step(params, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), loss

  batch = {"image": jnp.asarray(dataset_images), "label": jnp.asarray(labels)}
  start = time.perf_counter()
  params, loss = jax.block_until_ready(step(params, batch))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, loss = jax.block_until_ready(step(params, batch))
    times.append(time.perf_counter() - start)
  return statistics.median(times), first, times


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny models and sizes (smoke test)")
  parser.add_argument("--models", default="mlp,cnn")
  parser.add_argument("--mlp-examples", type=int, default=1024)
  parser.add_argument("--cnn-examples", type=int, default=1024)
  parser.add_argument("--cnn-batch", type=int, default=128, help="our batches for the CNN Hessian")
  parser.add_argument("--tops", default="1,5")
  parser.add_argument("--tols", default="1e-2,3e-3,1e-3,1e-4")
  parser.add_argument("--ref-steps", type=int, default=80)
  parser.add_argument("--max-steps", type=int, default=60)
  parser.add_argument("--linearize", type=int, default=1, help="hessian_top_k(linearize=...)")
  parser.add_argument("--num-guard", type=int, default=2, help="hessian_top_k(num_guard=...)")
  parser.add_argument("--eigsh", type=int, default=1)
  parser.add_argument("--train", type=int, default=1, help="0 skips the training-step race")
  parser.add_argument("--cnn-tols", default=None, help="tols tried on the CNN (default --tols)")
  parser.add_argument("--cnn-ref-steps", type=int, default=None)
  parser.add_argument("--cnn-eigsh-tops", default=None, help="eigsh on the CNN only for these k")
  parser.add_argument("--train-batch", type=int, default=512)
  parser.add_argument("--train-repeats", type=int, default=3)
  parser.add_argument("--train-cifar", type=int, default=1, help="also CIFAR-shaped (random) images")
  parser.add_argument("--pyhessian-tols", default="1e-3",
                      help="PyHessian tols tried, largest first, until its top-k is within 1e-3 "
                           "of the reference (1e-3: its default)")
  parser.add_argument("--bench-python", default=str(DEFAULT_BENCH_PYTHON))
  parser.add_argument("--torch-threads", type=int, default=0)
  parser.add_argument("--timeout", type=int, default=3000)
  args = parser.parse_args(argv)
  if args.quick and args.models == parser.get_default("models"):
    args.models = "mlp"   # the CNN's Lanczos alone compiles for ~20 s
  names = [m for m in args.models.split(",") if m]
  tops = [int(t) for t in args.tops.split(",")]
  tols = [float(t) for t in args.tols.split(",")]
  if args.quick:
    args.mlp_examples, args.cnn_examples, args.cnn_batch = 64, 16, 16
    args.ref_steps, args.max_steps, args.train_batch, args.train_repeats = 24, 20, 8, 1
    args.train_cifar = 0
    tops, tols = [t for t in tops if t <= 3] or [1], [1e-2]
  arch = {"mlp": models.get_model("mlp", **({"hidden": (32,)} if args.quick else {})),
          "cnn": models.get_model("simple_cnn_root",
                                  **({"features": 4, "dense_features": 16} if args.quick else {}))}
  examples = {"mlp": args.mlp_examples, "cnn": args.cnn_examples}
  batch = {"mlp": args.mlp_examples, "cnn": args.cnn_batch}
  header = (f"jax {jax.__version__} ({jax.default_backend()}), load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs"
            f"{', QUICK' if args.quick else ''}")
  print(header, flush=True)
  dataset = data.load_dataset("fashion_mnist")
  key = jax.random.PRNGKey(0)
  results = {"header": header, "args": vars(args), "models": {}}
  notes = []
  tmp = tempfile.TemporaryDirectory()
  npz = os.path.join(tmp.name, "race.npz")
  for name in names:
    params, loss_fn, sample, export = setup(name, arch[name], dataset, examples[name],
                                            batch[name], key)
    np.savez(npz, **export)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    loss0 = float(hessian.batch_mean(lambda b: loss_fn(params, b), jnp.zeros(()), sample))
    print(f"\n## {name}: {n_params:,} params, {examples[name]} examples "
          f"(batches of {batch[name]}), loss {loss0:.6f}", flush=True)
    k_ref = max(tops)
    is_cnn = name == "cnn"
    model_tols = [float(t) for t in args.cnn_tols.split(",")] if is_cnn and args.cnn_tols else tols
    ref_steps = min(args.cnn_ref_steps if is_cnn and args.cnn_ref_steps else args.ref_steps,
                    n_params)
    eigsh_tops = ([int(t) for t in args.cnn_eigsh_tops.split(",")]
                  if is_cnn and args.cnn_eigsh_tops else tops)
    _, ref_solve = compiled_solve(loss_fn, params, sample, key, k=k_ref, steps=ref_steps,
                                  tol=None, linearize=bool(args.linearize))
    ref_s, ref = timing.timed(ref_solve)
    ref_vals = np.asarray(ref.eigvals, np.float64)
    ref_res = np.asarray(ref.residuals) / np.abs(ref_vals)
    print(f"reference: {ref_steps} Lanczos steps ({ref_s:.1f} s), top-{k_ref} "
          f"{np.round(ref_vals, 5).tolist()}, max relative residual {ref_res.max():.1e}",
          flush=True)
    res = {"params": n_params, "examples": examples[name], "loss": loss0,
           "ref": ref_vals.tolist(), "ref_rel_residual": float(ref_res.max()), "rows": []}
    for k in tops:
      best, tried = ours(loss_fn, params, sample, key, ref_vals, k=k,
                         steps=min(args.max_steps, n_params), tols=model_tols,
                         linearize=bool(args.linearize), num_guard=args.num_guard)
      for t in tried:
        print(f"  ours top-{k} tol={t['tol']:g} num_guard={args.num_guard}: {t['seconds']:.2f} s "
              f"(+{t['compile_s']:.1f} s "
              f"compile), {t['hvps']} HVPs, rel err {t['err']:.1e}", flush=True)
      res["rows"].append(dict(solver="ours", top=k, **best, tried=tried))
      if args.eigsh and k in eigsh_tops:
        seconds, n, vals = run_eigsh(loss_fn, params, sample, k)
        err = rel_err(vals, ref_vals[:k])
        print(f"  scipy eigsh top-{k} (tol 1e-3, our jvp HVP): {seconds:.2f} s, {n} HVPs, "
              f"rel err {err:.1e}", flush=True)
        res["rows"].append(dict(solver="eigsh", top=k, seconds=seconds, hvps=n, err=err))
    for k in tops:
      for row in pyhessian_rows(args, npz, name, k, ref_vals, res, notes):
        res["rows"].append(row)
    results["models"][name] = res
  if not args.train:
    print(json.dumps(results))
    tmp.cleanup()
    return results
  # One training step of SimpleCNN root.
  print(f"\n## train step: SimpleCNN root, SGD, {args.train_batch} images", flush=True)
  train_rows = []
  cnn = arch["cnn"]
  step_npz = os.path.join(tmp.name, "train.npz")
  params, _ = models.init_model(cnn, key, {"image": dataset.train["image"][:2],
                                           "label": dataset.train["label"][:2]})
  export = flat_params(params, "cnn")
  export["cnn/images"] = np.asarray(dataset.train["image"][:args.train_batch], np.float32)
  export["cnn/labels"] = np.asarray(dataset.train["label"][:args.train_batch], np.int64)
  np.savez(step_npz, **export)
  shapes = [("fashion_mnist 28x28x1", False)] + ([("cifar-shaped 32x32x3", True)]
                                                 if args.train_cifar else [])
  rng = np.random.RandomState(0)
  for shape_name, cifar in shapes:
    if cifar:
      images = rng.normal(size=(args.train_batch, 32, 32, 3)).astype(np.float32)
      labels = rng.randint(0, 10, args.train_batch)
    else:
      images, labels = export["cnn/images"], export["cnn/labels"]
    for impl in ("xla", "im2col"):
      model = cnn.clone(conv_impl=impl)
      t, first, times = jax_train_step_time(model, images, labels, args.train_repeats)
      label = ("jax, nn.Conv (conv_impl='xla', what 'auto' picks under sharp_dirs' XLA flag)"
               if impl == "xla" else "jax, conv_impl='im2col'")
      print(f"  {shape_name}: {label}: {t:.3f} s (first call with compile {first:.1f} s)",
            flush=True)
      train_rows.append(dict(shape=shape_name, side=label, step_s=t, times=times))
    extra = ["--cifar-shape"] if cifar else []
    torch_out, why = torch_side(args.bench_python,
                                ["train", "--npz", step_npz, "--model", "cnn",
                                 "--batch", str(args.train_batch),
                                 "--repeats", str(args.train_repeats),
                                 "--threads", str(args.torch_threads), *extra], args.timeout)
    if torch_out is None:
      print(f"  {why}", flush=True)
      notes.append(why)
    else:
      print(f"  {shape_name}: pytorch {torch_out['torch']}: {torch_out['step_s']:.3f} s",
            flush=True)
      train_rows.append(dict(shape=shape_name, side="pytorch", step_s=torch_out["step_s"],
                             times=torch_out["times"]))
  results["train"] = train_rows
  results["notes"] = notes
  results["load_end"] = os.getloadavg()
  print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
  print(json.dumps(results))
  tmp.cleanup()
  return results


if __name__ == "__main__":
  main()
