r"""Beyond the paper: full-batch gradient descent reaches the edge of stability, λ_1 ≈ 2/η.

Cohen et al. (ICLR 2021; docs/protocol.md): under full-batch GD the sharpness rises until η·λ_1
reaches 2 and then hovers there; SGD stays below. Here: gradient descent on the first 5,000
training examples (no augmentation), λ_1, λ_2 on a fixed sample every 10 steps; compare with
the SGD runs' η·λ_1 (``eos/eta_lambda_max`` is logged by every run).

  python experiments/train.py --config=configs/edge_of_stability.py --workdir=runs/eos_gd
  python experiments/sweep.py --config=configs/edge_of_stability.py:cpu --workdir=runs/eos_cpu

Variants: ``simple_cnn`` (default), ``cpu`` (``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with
F = 8 on 1,000 examples, 300 steps, η·λ_1 tracked every 10 steps on the whole 1,000; it starts
flat (η·λ_1 = 0.39 at initialization); its sweep is η = 0.1 (one run: the CPU budget).
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("simple_cnn", "cpu")


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.full_batch = True
  c.augment = False
  c.num_train_examples = 5000
  c.batch_size = 1000  # the chunk the full-batch gradient is accumulated over
  c.num_epochs = 2000  # one step per epoch
  c.optimizer.learning_rate = 0.02
  c.tracking.k = 2
  c.tracking.num_examples = 5000
  c.tracking.batch_size = 1000
  c.tracking.every_epochs = 10
  c.eval.every_epochs = 10
  c.checkpoint_every_epochs = 200
  c.log_every_steps = 10
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=300)
    c.augment = False
    c.epoch_size = 0
    c.num_train_examples = 1000
    c.batch_size = 500
    c.optimizer.learning_rate = 0.1
    c.tracking.num_examples = 1000
    c.tracking.batch_size = 500
    c.tracking.every_epochs = 10
    c.eval.every_epochs = 20
    c.checkpoint_every_epochs = 100
  return c


def get_sweep(arg=None):
  del arg
  return [{"optimizer.learning_rate": 0.1}]
