r"""The general shape of the top of the spectrum: λ_1..λ_10 along training, with the early zoom.

The paper (docs/protocol.md, F1): top-10 on N = 2560 fresh augmented examples per epoch, and a Hessian at
every iteration over the first half epoch (the zoom); SimpleCNN root at η = 0.01 for 300 epochs,
ResNet-32 (L2 1e-4 kept) at η = 0.1 for 400 epochs; S = 128, no momentum.

  python experiments/train.py --config=configs/general_shape.py --workdir=runs/general_scnn
  python experiments/train.py --config=configs/general_shape.py:resnet32 --workdir=runs/general_rn

Variants: ``simple_cnn`` (default; Fashion-MNIST offline, ``--config.dataset=cifar10`` for the
paper), ``resnet32`` (CIFAR-10), ``cpu`` (``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with
F = 8 on 10k Fashion-MNIST examples at η = 0.03 for 10 epochs of 2,560 examples, top-10 on
N = 256 (at most 30 HVPs per solve; each pair's residual is logged) every epoch and every 8
steps over the first 3 epochs, where λ_1 rises (the zoom; the paper: every step over half an
epoch, at η = 0.01).
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("simple_cnn", "resnet32", "cpu")


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.num_epochs = 300
  c.optimizer.learning_rate = 0.01
  c.tracking.k = 10
  c.tracking.num_lanczos_steps = 60
  c.tracking.zoom_epochs = 0.5
  c.tracking.zoom_every_examples = 128  # every step at S = 128
  if "resnet32" in variant:
    c.dataset, c.model = "cifar10", "resnet32"
    c.l2 = 1e-4
    c.optimizer.learning_rate = 0.1
    c.num_epochs = 400
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=10)
    c.optimizer.learning_rate = 0.03
    c.tracking.num_examples = 256
    c.tracking.zoom_epochs = 3.0
    c.tracking.zoom_every_examples = 8 * c.batch_size
  return c
