r"""Is the SGD step too long along the sharpest directions? Loss change and cross-sections along e_i.

The paper (docs/protocol.md, F3, F4): SimpleCNN root, S = 128, η = 0.01 (and 0.05), K = 5 on N = 2560;
every 5 evaluations the loss change after a step taken only along e_i (multipliers of η, 10
random minibatches, loss on the first 2560 training examples), and at every evaluation the loss
along e_1, e_3, e_5 in units of the typical SGD step length (10 minibatches, 1280 examples).
"early" runs use epochs of 512 examples (a dense view of the start), "late" ones full epochs.

  python experiments/train.py --config=configs/sharp_analysis.py --workdir=runs/sharp_early
  python experiments/train.py --config=configs/sharp_analysis.py:late --workdir=runs/sharp_late
  python experiments/train.py --config=configs/sharp_analysis.py:nsgd --workdir=runs/sharp_nsgd

Variants: ``early`` (default), ``late``, ``resnet32`` (CIFAR-10, L2 1e-4, epochs of 2048
examples), ``nsgd`` (the same analyses under NSGD, γ = 0.01, K = 5), ``cpu``
(``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with F = 8 on 10k Fashion-MNIST examples at
η = 0.1, epochs of 1,280 examples, 16 of them; λ_1 peaks within the first 3 and then settles
where η·λ_1 is about 1.5-2, the regime of the paper's claim. 5 minibatches per analysis (the
paper: 10), losses on 1,024 examples, the loss change every 2 evaluations.
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("early", "late", "resnet32", "nsgd", "cpu")


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.optimizer.learning_rate = 0.01
  c.epoch_size = 0 if "late" in variant else 512
  c.num_epochs = 300
  c.analyses.step_loss_change.enabled = True
  c.analyses.step_loss_change.every = 5
  c.analyses.cross_section.enabled = True
  if "resnet32" in variant:
    c.dataset, c.model, c.l2 = "cifar10", "resnet32", 1e-4
    c.epoch_size = 0 if "late" in variant else 2048
  if "nsgd" in variant:
    c.optimizer.name = "nsgd"
    c.nsgd.gamma = 0.01
    c.nsgd.num_directions = 5
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=16)
    c.optimizer.learning_rate = 0.1
    c.epoch_size = 1280
    c.analyses.step_loss_change.every = 2
    c.analyses.step_loss_change.num_trials = 5
    c.analyses.cross_section.num_trials = 5
  return c
