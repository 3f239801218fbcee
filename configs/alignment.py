r"""How much the minibatch gradients point along the top eigenvectors: |cos(g_B, e_i)|.

The paper (PAPER.md F5): SimpleCNN root (and ResNet-32), S = 128, η ∈ {0.1, 0.01, 0.001}, epochs
of 1,800 examples; at each evaluation |cos(g_B, e_i)| of minibatch gradients with e_1..e_5,
plotted against training accuracy beside the random-vector baseline E|cos| ≈ sqrt(2/(πD)).

  python experiments/sweep.py --config=configs/alignment.py --workdir=runs/alignment
  python experiments/sweep.py --config=configs/alignment.py:cpu --workdir=runs/alignment_cpu

Variants: ``simple_cnn`` (default), ``resnet32`` (CIFAR-10, epochs of 9,000 examples), ``cpu``:
the MLP on 10k Fashion-MNIST examples, epochs of 2,000 examples, 20 of them, 20 minibatches per
evaluation (about a minute per learning rate on 2 CPU cores).
"""

from sharp_dirs import config as config_lib

VARIANTS = ("simple_cnn", "resnet32", "cpu")


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.optimizer.learning_rate = 0.01
  c.epoch_size = 1800
  c.num_epochs = 500
  c.analyses.alignment.enabled = True
  if "resnet32" in variant:
    c.dataset, c.model, c.epoch_size = "cifar10", "resnet32", 9000
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=20)
    c.epoch_size = 2000
  return c


def get_sweep(arg=None):
  return [{"optimizer.learning_rate": lr} for lr in (0.1, 0.01, 0.001)]
