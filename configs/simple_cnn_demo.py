r"""SimpleCNN root on real Fashion-MNIST for 50 SGD steps, its top-3 eigenvalues every 25 steps.

The project's first demo, kept as a quick look at the paper's own model on a CPU: η = 0.05,
S = 128, top-3 on fresh augmented samples of 256 examples (linearized HVPs), tol 1e-2.

  python experiments/train.py --config=configs/simple_cnn_demo.py --workdir=runs/scnn_demo
"""

from sharp_dirs.engine import config as config_lib


def get_config(arg=None):
  config_lib.parse_variant(arg, ())
  c = config_lib.default_config()
  c.model = "simple_cnn_root"
  c.optimizer.learning_rate = 0.05
  c.epoch_size = 25 * 128  # an "epoch" of 25 steps: evaluate and track every 25 steps
  c.num_epochs = 2
  c.augment = True
  c.tracking.k = 3
  c.tracking.num_lanczos_steps = 30
  c.tracking.tol = 1e-2
  c.tracking.num_examples = 256
  c.tracking.linearize = True
  c.eval.num_train_examples = 1000
  c.eval.max_examples = 1000
  c.log_every_steps = 5
  return c
