r"""λ_1, λ_2 along training for three learning rates and three batch sizes (the paper's "noise grid").

The paper (docs/protocol.md, F2): plain SGD (no momentum, constant η, L2 0), top-5 on a fresh
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
N = 500 sequences, clipnorm 5, η grid {5, 1, 0.2}, S grid {128, 32, 8}), and ``cpu``
(``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with F = 8 on 10k Fashion-MNIST examples, epochs
of 2,560 examples, top-2 on N = 512 fresh samples every epoch and every 256 examples over the
first epoch (the zoom), checkpoints every epoch (kept, for the rescaling ablation). Its sweep:
η ∈ {0.01, 0.03, 0.1} at S = 128 and S ∈ {32, 128, 512} at η = 0.03, seeds {0, 1}; each run
lasts long enough for its peak or plateau to lie inside it with margin (set from the pilots,
bench/pilot_scale.py and bench/RESULTS.md "Pilots of the gallery's run lengths": the rise
takes about 1/η steps, at S = 512 it peaks at epoch 12–24 and declines to epoch 48), so the run
length differs per point: 24 / 10 / 10 epochs for η = 0.01 / 0.03 / 0.1, 10 / 10 / 64 for
S = 32 / 128 / 512 (S = 512 tracked every 4 epochs).
Deviations from the paper: the model, N, the epoch size, the run lengths, 2 seeds.
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("simple_cnn", "resnet32", "vgg11", "lstm", "cpu")

# The cpu grid: (η, S) points with their run lengths in epochs of 2,560 examples (see above).
CPU_GRID = (
    {"optimizer.learning_rate": 0.01, "batch_size": 128, "num_epochs": 24},
    {"optimizer.learning_rate": 0.03, "batch_size": 128, "num_epochs": 10},
    {"optimizer.learning_rate": 0.1, "batch_size": 128, "num_epochs": 10},
    {"optimizer.learning_rate": 0.03, "batch_size": 32, "num_epochs": 10},
    {"optimizer.learning_rate": 0.03, "batch_size": 512, "num_epochs": 64,
     "tracking.every_epochs": 4},
)


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
    config_lib.cpu_scale(c, num_epochs=10)
    c.optimizer.learning_rate = 0.03
    c.tracking.k = 2
    c.tracking.zoom_epochs = 1.0
    c.tracking.zoom_every_examples = 256
    c.keep_checkpoints = 1000  # every epoch's checkpoint, for init_from_epoch
    if "lstm" in variant:
      c.dataset, c.model = "austen", "lstm_lm"
      c.model_kwargs = config_lib.ConfigDict({"dropout": 0.1})
      c.num_train_examples = 5000
      c.epoch_size = 0
      c.tracking.num_examples = 200
      c.tracking.batch_size = 100
  return c


def get_sweep(arg=None):
  """The η grid at S = 128 and the S grid at η = 0.05 (LSTM: its own grids)."""
  variant = config_lib.parse_variant(arg, VARIANTS)
  if "lstm" in variant:
    lrs, sizes, lr_for_sizes = (5.0, 1.0, 0.2), (128, 32, 8), 1.0
  else:
    lrs, sizes, lr_for_sizes = (0.1, 0.01, 0.001), (1024, 128, 32), 0.05
  if "cpu" in variant and "lstm" not in variant:
    return [dict(point, seed=seed) for point in CPU_GRID for seed in (0, 1)]
  grid = [{"optimizer.learning_rate": lr} for lr in lrs]
  grid += [{"optimizer.learning_rate": lr_for_sizes, "batch_size": s} for s in sizes]
  return grid
