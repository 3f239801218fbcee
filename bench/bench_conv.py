"""Conv implementations side by side: forward, gradient and HVP of SimpleCNN's mean CE loss.

Run:  .venv/bin/python bench/bench_conv.py [--model simple_cnn_root] [--batch 128]
        [--shape 28,28,1] [--repeats 7] [--layers]

One process, the same params and batch for every implementation (the params are
interchangeable); each function is jitted, warmed up once, then timed as the median of
``--repeats`` calls (block_until_ready). HVP = jax.jvp of jax.grad (forward-over-reverse).
``--layers`` adds a per-layer breakdown (forward and VJP of each conv alone) to show where the
time goes. Prints markdown tables.
"""

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sharp_dirs import models  # noqa: E402
import timing  # noqa: E402  # bench/timing.py

IMPLS = ("xla", "im2col", "im2col_full")


def model_timings(name: str, batch: dict, repeats: int, impls=IMPLS) -> dict:
  """{impl: {'fwd','grad','hvp': ms}} on shared params, inference-mode loss.

  impls: conv implementations to time; (None,) for a model without ``conv_impl`` (the MLP).
  """
  overrides = lambda impl: {} if impl is None else {"conv_impl": impl}  # noqa: E731
  base = models.get_model(name, **overrides(impls[0]))
  params, state = models.init_model(base, jax.random.key(0), batch)
  v = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype), params)
  out = {}
  for impl in impls:
    model = models.get_model(name, **overrides(impl))
    loss_fn = models.make_loss_fn(model, state, train=False)
    grad_fn = jax.grad(loss_fn)
    fwd = jax.jit(loss_fn)
    grad = jax.jit(grad_fn)
    hvp = jax.jit(lambda p, b, v: jax.jvp(lambda q: grad_fn(q, b), (p,), (v,))[1])
    out[impl] = {
        "fwd": 1e3 * timing.median_seconds(fwd, params, batch, repeats=repeats),
        "grad": 1e3 * timing.median_seconds(grad, params, batch, repeats=repeats),
        "hvp": 1e3 * timing.median_seconds(hvp, params, batch, v, repeats=repeats),
    }
  return out


def layer_timings(name: str, batch: dict, repeats: int) -> list:
  """Per conv layer of the model: (label, impl, fwd ms, vjp ms)."""
  model = models.get_model(name, conv_impl="xla")
  params, _ = models.init_model(model, jax.random.key(0), batch)
  rows = []
  x = batch["image"]
  convs = sorted(k for k in params if k.startswith("conv"))
  specs = {"conv1": "SAME", "conv2": "VALID", "conv3": "SAME", "conv4": "VALID"}
  for layer in convs:
    kernel = params[layer]["kernel"]
    for impl in IMPLS:
      conv = models.conv_module(impl)(kernel.shape[-1], kernel.shape[:2], padding=specs[layer])
      apply = lambda p, x: conv.apply({"params": p}, x)  # noqa: E731
      fwd = jax.jit(apply)
      y = fwd(params[layer], x)
      vjp = jax.jit(lambda p, x, dy: jax.vjp(apply, p, x)[1](dy))
      rows.append((f"{layer} {tuple(x.shape)}→{tuple(y.shape)}", impl,
                   1e3 * timing.median_seconds(fwd, params[layer], x, repeats=repeats),
                   1e3 * timing.median_seconds(vjp, params[layer], x, jnp.ones_like(y),
                                            repeats=repeats)))
    x = jax.nn.relu(y)
    if layer in ("conv2", "conv4"):
      x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
      x = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2, x.shape[3]).max((2, 4))
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default="simple_cnn_root")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--shape", default="28,28,1")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--layers", action="store_true")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  key_x, key_y = jax.random.split(jax.random.key(42))
  batch = {"image": jax.random.normal(key_x, (args.batch, *shape), jnp.float32),
           "label": jax.random.randint(key_y, (args.batch,), 0, 10, jnp.int32)}

  print(f"# conv impls: {args.model}, batch {args.batch} × {shape}, median of {args.repeats}")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, load average before: "
        f"{os.getloadavg()[0]:.1f} (1 min)\n")
  t = model_timings(args.model, batch, args.repeats)
  print("| impl | fwd ms | grad ms | HVP ms | grad/fwd | HVP/grad |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  for impl in IMPLS:
    r = t[impl]
    print(f"| {impl} | {r['fwd']:.1f} | {r['grad']:.1f} | {r['hvp']:.1f} | "
          f"{r['grad'] / r['fwd']:.1f} | {r['hvp'] / r['grad']:.2f} |")
  print("\n| speed-up over xla (xla ms / impl ms) | fwd | grad | HVP |")
  print("| --- | ---: | ---: | ---: |")
  for impl in IMPLS[1:]:
    print(f"| {impl} | " + " | ".join(
        f"{t['xla'][k] / t[impl][k]:.2f}×" for k in ("fwd", "grad", "hvp")) + " |")
  print(f"\nload average after the run: {os.getloadavg()[0]:.1f} (1 min)")

  if args.layers:
    print("\n| conv layer | impl | fwd ms | VJP ms (dx, dW, db) | VJP/fwd |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, impl, f, b in layer_timings(args.model, batch, args.repeats):
      print(f"| {label} | {impl} | {f:.2f} | {b:.2f} | {b / f:.1f} |")


if __name__ == "__main__":
  main()
