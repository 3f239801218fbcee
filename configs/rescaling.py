r"""The step-rescaling ablation: change only the step along e_1 and watch λ_1 and the loss.

The paper (docs/protocol.md, F6): from a SimpleCNN checkpoint trained with SGD at η = 0.005, run 1000 SGD
iterations at S = 128 where e_1 is recomputed by Lanczos at every iteration and the update is
  normal: g;   only_top: ⟨g, e_1⟩e_1;   constant_top: ⟨g, d₀⟩d₀ (d₀ = the first e_1);
  remove_top: g − ⟨g, e_1⟩e_1;   top_scaled: γ⟨g, e_1⟩e_1 + (g − ⟨g, e_1⟩e_1), γ ∈ {0.25, .., 4};
and plot λ_1 and the loss on the first 2250 training examples against the iteration. Here
each variant is Nudged SGD with one direction from the tracker (Lanczos every step, warm
started): rule "only_top", "only_top" with frozen directions, "remove", "constant" with γ.

  python experiments/train.py --config=configs/noise_grid.py --workdir=runs/scnn_lr0.005 \
      --config.optimizer.learning_rate=0.005
  python experiments/sweep.py --config=configs/rescaling.py --workdir=runs/rescaling \
      --config.init_from=runs/scnn_lr0.005     # every variant (get_sweep), from that run

Variants: ``normal`` (default), ``only_top``, ``constant_top``, ``remove_top``, ``top_scaled``;
``cpu`` (``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with F = 8 from the cpu noise grid's
η = 0.03 run at epoch 6, one epoch past the peak of its smoothed λ_1 (epoch 5 in the seed-0
run; ``--config.init_from=<run dir> --config.init_from_epoch=6``), at that run's η = 0.03 for
120 iterations (the paper: 1,000);
λ_1 on a fixed sample of 256 examples (``tracking.fixed_sample``, so that the variants differ
by their trajectories, not by their samples) every 2 iterations, which is also how often the
direction e_1 is refreshed (the paper: every iteration); the loss on 1,024 examples.
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("normal", "only_top", "constant_top", "remove_top", "top_scaled", "cpu")
RULES = {"only_top": "only_top", "constant_top": "only_top", "remove_top": "remove",
         "top_scaled": "constant"}


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.optimizer.learning_rate = 0.005
  c.epoch_size = c.batch_size  # one "epoch" per iteration: track and evaluate every step
  c.num_epochs = 1000
  c.tracking.k = 1
  c.tracking.num_lanczos_steps = 20
  c.eval.num_train_examples = 2250
  c.eval.max_examples = 1000
  c.checkpoint_every_epochs = 100
  c.log_every_steps = 10
  for name, rule in RULES.items():
    if name in variant:
      c.optimizer.name = "nsgd"
      c.nsgd.num_directions = 1
      c.nsgd.rule = rule
      c.nsgd.gamma = 1.0 if rule != "constant" else 0.5
      c.nsgd.freeze_directions = name == "constant_top"
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=60)
    c.optimizer.learning_rate = 0.03
    c.epoch_size = 2 * c.batch_size
    c.tracking.num_examples = 256
    c.tracking.fixed_sample = True
    c.tracking.num_lanczos_steps = 20
    c.eval.num_train_examples = 1024
    c.eval.max_examples = 100  # the figure reads the train loss; valid/test only for the log
    c.checkpoint_every_epochs = 20
  return c


def get_sweep(arg=None):
  """Every variant of the figure (sweep over ``init_from`` too with --sweep)."""
  del arg
  return ([{"optimizer.name": "sgd"}]
          + [{"optimizer.name": "nsgd", "nsgd.num_directions": 1, "nsgd.rule": rule,
              "nsgd.gamma": 1.0, "nsgd.freeze_directions": frozen}
             for rule, frozen in (("only_top", False), ("only_top", True), ("remove", False))]
          + [{"optimizer.name": "nsgd", "nsgd.num_directions": 1, "nsgd.rule": "constant",
              "nsgd.gamma": g} for g in (0.25, 0.5, 2.0, 4.0)])
