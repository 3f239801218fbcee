r"""How much the minibatch gradients point along the top eigenvectors: |cos(g_B, e_i)|.

The paper (docs/protocol.md, F5): SimpleCNN root (and ResNet-32), S = 128, η ∈ {0.1, 0.01, 0.001}, epochs
of 1,800 examples; at each evaluation |cos(g_B, e_i)| of minibatch gradients with e_1..e_5,
plotted against training accuracy beside the random-vector baseline E|cos| ≈ sqrt(2/(πD)).

  python experiments/sweep.py --config=configs/alignment.py --workdir=runs/alignment
  python experiments/sweep.py --config=configs/alignment.py:cpu --workdir=runs/alignment_cpu

Variants: ``simple_cnn`` (default), ``resnet32`` (CIFAR-10, epochs of 9,000 examples), ``cpu``
(``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with F = 8 on 10k Fashion-MNIST examples, 12
epochs of 2,560 examples, 20 minibatches per evaluation; its sweep is η ∈ {0.1, 0.03, 0.01}
(the paper's 0.001 would not leave the initial plateau in a CPU run).
"""

from sharp_dirs.engine import config as config_lib

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
    config_lib.cpu_scale(c, num_epochs=12)
  return c


def get_sweep(arg=None):
  lrs = (0.1, 0.03, 0.01) if "cpu" in config_lib.parse_variant(arg, VARIANTS) else (
      0.1, 0.01, 0.001)
  return [{"optimizer.learning_rate": lr} for lr in lrs]
