r"""Beyond the paper: full-batch gradient descent reaches the edge of stability, λ_1 ≈ 2/η.

Cohen et al. (ICLR 2021; docs/protocol.md): under full-batch GD the sharpness rises until η·λ_1
reaches 2 and then hovers there; SGD stays below. Here: gradient descent on the first 5,000
training examples (no augmentation), λ_1, λ_2 on a fixed sample every 10 steps; compare with
the SGD runs' η·λ_1 (``eos/eta_lambda_max`` is logged by every run).

  python experiments/train.py --config=configs/edge_of_stability.py --workdir=runs/eos_gd
  python experiments/sweep.py --config=configs/edge_of_stability.py:cpu --workdir=runs/eos_cpu

Variants: ``simple_cnn`` (default), ``cpu`` (``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with
F = 8 on 1,000 examples, η·λ_1 tracked every 5 steps (odd and even steps in turn) on the whole
1,000, the loss logged every step; it starts flat (η·λ_1 = 0.04–0.4 at initialization). Its
sweep (from the pilot, bench/RESULTS.md "Pilots of the gallery's run lengths"): η = 0.01 for
400 steps, where sharpening is gradual (the loss plateau lasts to step ~90, η·λ_1 crosses 2
near step 150) and the edge is held for 250 steps, the run that C6 judges; and η = 0.1 for 300
steps, labelled the catapult run: η·λ_1 overshoots 2 several-fold and falls back in cycles.
(η = 0.03 catapulted too in the pilot: η·λ_1 6.6 at step 50.)
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
    c.tracking.every_epochs = 5
    c.log_every_steps = 1
    c.eval.every_epochs = 20
    c.checkpoint_every_epochs = 100
  return c


def get_sweep(arg=None):
  if "cpu" in config_lib.parse_variant(arg, VARIANTS):
    return [{"optimizer.learning_rate": 0.01, "num_epochs": 400},
            {"optimizer.learning_rate": 0.1, "num_epochs": 300}]
  return [{"optimizer.learning_rate": 0.02}]
