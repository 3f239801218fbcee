"""The PyTorch side of bench/bench_race.py: PyHessian's top-k and a plain PyTorch training step.

Runs in the separate benchmark venv (never the project's dependencies):

  python3 -m venv .venv_bench && .venv_bench/bin/pip install torch==2.13.0 numpy \
      && .venv_bench/bin/pip install --no-deps pyhessian
  .venv_bench/bin/python bench/bench_race_torch.py hessian --npz race.npz --model mlp --top 1,5

The .npz is written by bench_race.py from the project venv: the preprocessed Fashion-MNIST
examples ('<model>/images' NHWC, '<model>/labels') and the flax initial weights
('<model>/params/<layer>/<kernel|bias>'), converted here to torch layouts (Linear weight = kernelᵀ,
Conv2d weight = HWIO → OIHW, flatten in NHWC order), so both sides hold the same Hessian.
Prints one JSON object on its last stdout line.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn


class Flatten(nn.Module):
  """Flatten in flax's NHWC order (the dense weights were laid out for it); ``nchw``: the input
  is a conv stack's NCHW activation."""

  def __init__(self, nchw=False):
    super().__init__()
    self.nchw = nchw

  def forward(self, x):
    if self.nchw:
      x = x.permute(0, 2, 3, 1)
    return x.reshape(x.shape[0], -1)


def layer_names(arrays, model):
  prefix = f"{model}/params/"
  names = sorted({k[len(prefix):].split("/")[0] for k in arrays if k.startswith(prefix)})
  return prefix, names


def linear_from(arrays, name):
  """nn.Linear holding the flax Dense params at ``name`` (kernel [in, out] → weight [out, in])."""
  kernel = arrays[f"{name}/kernel"]
  lin = nn.Linear(*kernel.shape)
  with torch.no_grad():
    lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
    lin.bias.copy_(torch.from_numpy(arrays[f"{name}/bias"]))
  return lin


def build_mlp(arrays, model="mlp"):
  prefix, names = layer_names(arrays, model)
  dense = sorted([n for n in names if n.startswith("dense")]) + ["logits"]
  layers = [Flatten()]
  for i, name in enumerate(dense):
    layers.append(linear_from(arrays, f"{prefix}{name}"))
    if i < len(dense) - 1:
      layers.append(nn.ReLU())
  return nn.Sequential(*layers)


def build_cnn(arrays, model="cnn"):
  """The paper's SimpleCNN root: conv same, conv valid, pool, conv same, conv valid, pool,
  dense, dense (odd kernel sizes, stride 1)."""
  prefix = f"{model}/params/"
  layers = []
  for i, pad in enumerate(("same", "valid", "same", "valid"), start=1):
    kernel = arrays[f"{prefix}conv{i}/kernel"]            # [kh, kw, in, out]
    kh, _, cin, cout = kernel.shape
    conv = nn.Conv2d(cin, cout, kh, padding=(kh // 2 if pad == "same" else 0))
    with torch.no_grad():
      conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
      conv.bias.copy_(torch.from_numpy(arrays[f"{prefix}conv{i}/bias"]))
    layers += [conv, nn.ReLU()]
    if i % 2 == 0:
      layers.append(nn.MaxPool2d(2))
  layers.append(Flatten(nchw=True))
  for i, name in enumerate(("dense", "logits")):
    layers.append(linear_from(arrays, f"{prefix}{name}"))
    if i == 0:
      layers.append(nn.ReLU())
  return nn.Sequential(*layers)


def load(arrays, model):
  net = build_mlp(arrays, model) if model == "mlp" else build_cnn(arrays, model)
  images = torch.from_numpy(arrays[f"{model}/images"])   # NHWC
  if model != "mlp":
    images = images.permute(0, 3, 1, 2).contiguous()     # NCHW for Conv2d
  labels = torch.from_numpy(arrays[f"{model}/labels"].astype(np.int64))
  return net, images, labels


def hessian_task(args, arrays):
  import importlib
  import pyhessian
  ph = importlib.import_module("pyhessian.hessian")   # the module (pyhessian.hessian is the class)

  count = {"hvp": 0}
  original = ph.hessian_vector_product

  def counted(*a, **kw):
    count["hvp"] += 1
    return original(*a, **kw)

  ph.hessian_vector_product = counted   # pyhessian.hessian imported the name from utils
  net, images, labels = load(arrays, args.model)
  criterion = nn.CrossEntropyLoss()
  with torch.no_grad():
    loss0 = float(criterion(net(images), labels))
  with torch.enable_grad():   # warm-up outside the timings: torch's first backward is slower
    criterion(net(images[:8]), labels[:8]).backward()
  net.zero_grad()
  rows = []
  for top in [int(t) for t in args.top.split(",")]:
    torch.manual_seed(args.seed)
    count["hvp"] = 0
    net.zero_grad()
    start = time.perf_counter()
    # data=: PyHessian's single-batch mode (the graph of the gradient is built once and every
    # HVP is one backward through it: its fastest path on one machine).
    comp = ph.hessian(net, criterion, data=(images, labels), cuda=False)
    eigvals, _ = comp.eigenvalues(maxIter=args.max_iter, tol=args.tol, top_n=top)
    seconds = time.perf_counter() - start
    rows.append(dict(top=top, seconds=seconds, hvps=count["hvp"], eigvals=list(map(float, eigvals))))
    del comp
    net.zero_grad()
  return dict(task="hessian", model=args.model, loss=loss0, tol=args.tol, max_iter=args.max_iter,
              num_examples=int(images.shape[0]), rows=rows,
              pyhessian_file=pyhessian.__file__)


def train_task(args, arrays):
  net, images, labels = load(arrays, args.model)
  images, labels = images[:args.batch], labels[:args.batch]
  if args.cifar_shape:   # timing only: CIFAR-shaped random images, torch's default init
    in_ch = 3
    arrays = dict(arrays)
    rng = np.random.RandomState(0)
    for i in range(1, 5):
      k = arrays[f"{args.model}/params/conv{i}/kernel"]
      shape = (k.shape[0], k.shape[1], in_ch if i == 1 else k.shape[2], k.shape[3])
      arrays[f"{args.model}/params/conv{i}/kernel"] = rng.normal(0, 0.05, shape).astype(np.float32)
    k = arrays[f"{args.model}/params/dense/kernel"]
    arrays[f"{args.model}/params/dense/kernel"] = rng.normal(
        0, 0.02, (6 * 6 * k.shape[0] // 25, k.shape[1])).astype(np.float32)
    net = build_cnn(arrays, args.model)
    images = torch.from_numpy(rng.normal(size=(args.batch, 3, 32, 32)).astype(np.float32))
    labels = torch.from_numpy(rng.randint(0, 10, args.batch).astype(np.int64))
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=0.01)
  criterion = nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = criterion(net(images), labels)
    loss.backward()
    opt.step()
    return float(loss)

  step()   # warm-up
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return dict(task="train", model=args.model, batch=int(images.shape[0]),
              shape=list(images.shape[1:]), step_s=statistics.median(times), times=times)


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("task", choices=("hessian", "train"))
  parser.add_argument("--npz", required=True)
  parser.add_argument("--model", default="mlp")
  parser.add_argument("--top", default="1,5")
  parser.add_argument("--tol", type=float, default=1e-3, help="PyHessian's default")
  parser.add_argument("--max-iter", type=int, default=100, help="PyHessian's default")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--cifar-shape", action="store_true")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
  args = parser.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  with np.load(args.npz) as f:
    arrays = {k: f[k] for k in f.files}
  out = hessian_task(args, arrays) if args.task == "hessian" else train_task(args, arrays)
  out.update(torch=torch.__version__, threads=torch.get_num_threads())
  print(json.dumps(out))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
