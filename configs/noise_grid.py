r"""λ_1, λ_2 along training for three learning rates and three batch sizes (the paper's "noise grid").

The paper (PAPER.md §2.3, F2): plain SGD (no momentum, constant η, L2 0), top-5 on a fresh
augmented sample of N = 2560 examples at every epoch, plus a zoom run with a Hessian every 512
examples over the first epochs; η ∈ {0.1, 0.01, 0.001} at S = 128 and S ∈ {32, 128, 1024} at
η = 0.05; 200 epochs. Claim: λ_1 rises early to a peak that is lower for larger η and smaller S.

  python experiments/train.py --config=configs/noise_grid.py --workdir=runs/grid/scnn_lr0.01
  python experiments/sweep.py --config=configs/noise_grid.py:cpu --workdir=runs/grid_cpu
  python experiments/sweep.py --config=configs/noise_grid.py:resnet32 --workdir=runs/grid_resnet \
      --print_only     # one command per run, for a cluster

Variants (``:a,b``): ``simple_cnn`` (default; SimpleCNN root on Fashion-MNIST offline, CIFAR-10
in the paper: add ``--config.dataset=cifar10``), ``resnet32`` and ``vgg11`` (CIFAR-10), ``lstm``
(the 2×200 LSTM language model on the Jane Austen corpus offline, PTB in the paper: K = 5 on
N = 500 sequences, clipnorm 5, η grid {5, 1, 0.2}, S grid {128, 32, 8}), and ``cpu``: the MLP on
10k Fashion-MNIST examples for 12 epochs, N = 1024, zoom every 512 examples over the first
epoch, so each run takes about a minute on 2 CPU cores (``sharp_dirs.config.cpu_scale``).
"""

from sharp_dirs import config as config_lib

VARIANTS = ("simple_cnn", "resnet32", "vgg11", "lstm", "cpu")


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.optimizer.learning_rate = 0.01
  c.tracking.k = 5
  c.tracking.zoom_epochs = 2.0
  c.tracking.zoom_every_examples = 512
  if "resnet32" in variant or "vgg11" in variant:
    c.dataset = "cifar10"
    c.model = "resnet32" if "resnet32" in variant else "vgg11"
  if "lstm" in variant:
    c.dataset = "austen"
    c.model = "lstm_lm"
    c.model_kwargs = config_lib.ConfigDict({"dropout": 0.1})  # keep_prob 0.9
    c.optimizer.learning_rate = 1.0
    c.optimizer.grad_clip_norm = 5.0
    c.batch_size = 32
    c.num_epochs = 400
    c.tracking.num_examples = 500
    c.tracking.batch_size = 100
    c.tracking.zoom_epochs = 0.5
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=12)
    if "lstm" in variant:
      c.dataset, c.model = "austen", "lstm_lm"
      c.num_train_examples = 5000
      c.tracking.num_examples = 200
      c.tracking.batch_size = 100
    c.tracking.zoom_epochs = 1.0
  return c


def get_sweep(arg=None):
  """The η grid at S = 128 and the S grid at η = 0.05 (LSTM: its own grids)."""
  variant = config_lib.parse_variant(arg, VARIANTS)
  if "lstm" in variant:
    lrs, sizes, lr_for_sizes = (5.0, 1.0, 0.2), (128, 32, 8), 1.0
  else:
    lrs, sizes, lr_for_sizes = (0.1, 0.01, 0.001), (1024, 128, 32), 0.05
  if "cpu" in variant and "lstm" not in variant:
    lrs = (0.1, 0.03, 0.01)  # 0.001 would still be rising after the few epochs of a CPU run
  grid = [{"optimizer.learning_rate": lr} for lr in lrs]
  grid += [{"optimizer.learning_rate": lr_for_sizes, "batch_size": s} for s in sizes]
  return grid
