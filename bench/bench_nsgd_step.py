r"""Where NSGD's extra time between refreshes goes: the engine's train steps and their pieces.

Side by side in one process, interleaved, median of ``--repeats`` rounds (timing.py), on one
real Fashion-MNIST batch of 128 (random with --quick), the MLP 784-256-256-10 (269,322
parameters), K = 5 directions kept in the optimizer state (``eigenpairs=nudge.KEEP``, as the
engine passes them between refreshes):

  sgd_step      the engine's jitted SGD train step (make_train_step)
  nsgd_step     the engine's jitted NSGD train step between refreshes
  sgd_carry_E   the SGD step whose optimizer state also carries (untouched) a K·D stack like
                NSGD's directions: the cost of passing the state through the step
  project       the nudge alone, u = g + (γ − 1) E Eᵀ g on a gradient-shaped tree (jit)
  coeffs        Eᵀ g alone ([K] inner products: one read of E)
  combine       Σ_i c_i e_i alone (one read of E, one write of D)
  read_E        Σ of all entries of E (one read of the K·D floats: the memory floor of a pass)

  .venv/bin/python bench/bench_nsgd_step.py
  .venv/bin/python bench/bench_nsgd_step.py --quick    # tiny smoke run

It also prints what the compiled NSGD step holds (``compile().as_text()``): conditionals and
loops (a refresh compiled into the step), copies of the K-stacked direction buffers, float64
ops, and the state buffers aliased from input to output (donation).
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import timing  # noqa: E402
from sharp_dirs import nudge  # noqa: E402
from sharp_dirs.curvature import tree_math as tm  # noqa: E402
from sharp_dirs.engine import config as config_lib  # noqa: E402
from sharp_dirs.engine import train  # noqa: E402


def make_config(quick: bool, k: int):
  c = config_lib.default_config()
  c.model = "mlp"
  c.nsgd.num_directions = k
  c.tracking.k = k
  c.num_train_examples = 4096
  c.tracking.num_examples = 128
  if quick:
    c.model_kwargs = config_lib.ConfigDict({"hidden": (32,)})
  return c


def engine_steps(c):
  """{name: (step, state)} for SGD and NSGD, and one batch; NSGD's state holds K unit vectors."""
  run_data = train.load_run_data(c)
  batch = jax.tree.map(lambda x: jnp.asarray(x[0]),
                       train.stack_batches(run_data.train, c.batch_size)[0])
  out = {}
  for name in ("sgd", "nsgd"):
    c = c.copy_and_resolve_references()  # each step reads its config when traced
    c.optimizer.name = name
    model, tx, tree = train.initial_tree(c, run_data)
    out[name] = [train.make_train_step(c, model), tree["state"]]
  params = out["nsgd"][1].params
  k = c.nsgd.num_directions
  c = c.copy_and_resolve_references()
  c.optimizer.name = "sgd"
  carry = optax.GradientTransformation(lambda p: tm.zeros_stack(k, p),
                                       lambda u, s, p=None: (u, s))
  make_tx = lambda h: optax.chain(carry, train.make_optimizer(c, h))  # noqa: E731
  tx = make_tx(None)
  state = jax.tree.map(jnp.copy, out["sgd"][1].replace(opt_state=tx.init(params)))  # donated
  out["sgd_carry_E"] = [train.make_train_step(c, model, make_tx=make_tx), state]
  draw = tm.normal_like(jax.random.key(0), tm.zeros_stack(k, params))
  q = nudge._orthonormal_rows(draw)  # pylint: disable=protected-access
  pairs = nudge.krylov.Eigenpairs(jnp.arange(k, 0, -1.0), q, jnp.zeros(k), jnp.int32(0))
  step, state = out["nsgd"]
  out["nsgd"][1], _ = step(state, batch, pairs)  # the directions enter the state once
  return out, batch, q, params


def hlo_summary(step, state, batch, k: int) -> dict:
  """Counts in the compiled step's HLO text that would each cost time between refreshes."""
  text = step.lower(state, batch, None).compile().as_text()
  header = text.split("\n", 1)[0]
  return {"conditional": text.count(" conditional("), "while": text.count(" while("),
          f"copy_f32[{k},..]": len(re.findall(rf"= f32\[{k},[^=]*\bcopy\(", text)),
          "f64": text.count("f64["), "aliased_buffers": header.count("may-alias")}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--repeats", type=int, default=41, help="interleaved rounds")
  p.add_argument("--k", type=int, default=5)
  args = p.parse_args(argv)
  load_before = os.getloadavg()[0]
  print(f"# bench_nsgd_step: jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} "
        f"CPUs, load average {load_before:.1f}, K={args.k}", flush=True)
  c = make_config(args.quick, args.k)
  steps, batch, q, params = engine_steps(c)
  print("NSGD step HLO:", json.dumps(hlo_summary(*steps["nsgd"], batch, args.k)),
        "| SGD step HLO:", json.dumps(hlo_summary(*steps["sgd"], batch, args.k)), flush=True)
  g = tm.normal_like(jax.random.key(1), params)
  gamma = jnp.float32(0.1)

  def engine(name):
    def run():
      steps[name][1], metrics = steps[name][0](steps[name][1], batch, None)
      return metrics
    return run

  pieces = {
      "sgd_step": engine("sgd"),
      "nsgd_step": engine("nsgd"),
      "sgd_carry_E": engine("sgd_carry_E"),
      "project": lambda f=jax.jit(nudge.rescale_along): f(q, g, gamma),
      "coeffs": lambda f=jax.jit(tm.stack_dot): f(q, g),
      "combine": lambda f=jax.jit(tm.stack_combine): f(jnp.ones(args.k), q),
      "read_E": lambda f=jax.jit(lambda e: sum(jnp.sum(x) for x in jax.tree.leaves(e))): f(q),
  }
  times = {name: [] for name in pieces}
  cpu = {name: [] for name in pieces}
  for fn in pieces.values():  # compile
    jax.block_until_ready(fn())
  for _ in range(args.repeats):
    for name, fn in pieces.items():
      start = time.process_time()  # CPU seconds of all threads: less sensitive to the load
      times[name].append(timing.timed(fn)[0])
      cpu[name].append(time.process_time() - start)
  med = {name: statistics.median(t) for name, t in times.items()}
  med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
  dim = tm.size(params)
  out = {"params": dim, "K": args.k, "E_MB": 4 * args.k * dim / 1e6,
         **{f"{n}_ms": round(1e3 * s, 3) for n, s in med.items()},
         **{f"{n}_cpu_ms": round(1e3 * s, 3) for n, s in med_cpu.items()},
         "nsgd_over_sgd": round(med["nsgd_step"] / med["sgd_step"], 3),
         "nsgd_over_sgd_cpu": round(med_cpu["nsgd_step"] / med_cpu["sgd_step"], 3),
         "extra_ms": round(1e3 * (med["nsgd_step"] - med["sgd_step"]), 3),
         "read_GBps": round(4 * args.k * dim / med["read_E"] / 1e9, 1),
         "load_before": load_before, "load_after": os.getloadavg()[0]}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
