r"""Nudged SGD against SGD: γ along the top-K eigenvectors, the NSGD table's protocol.

The paper (docs/protocol.md, F7 and the tables): SimpleCNN medium (Fashion-MNIST with augmentation
offline; CIFAR-10 in the paper), S = 128, η = 0.01, no momentum, L2 0; the directions are the
top-K of a top-10 Lanczos solve on N = 2560 fresh augmented examples once per epoch; γ ∈ {0.01,
0.1, 1, 5}, K = 5 (the SimpleCNN table uses K = 10), seeds 777/778; reduce-on-plateau ×0.1 after
100 epochs without a better validation loss, early stopping after 200 without a better
validation accuracy, at most 2000 epochs; the best-validation checkpoint is evaluated post hoc
(experiments/evaluate.py). SGD baselines: η ∈ {0.3, 0.2, 0.1, 0.05, 0.01, 0.005}.

  python experiments/sweep.py --config=configs/nsgd.py --workdir=runs/nsgd \
      --sweep=nsgd.gamma=0.01,0.1,1.0,5.0 --sweep=seed=777,778
  python experiments/sweep.py --config=configs/nsgd.py:sgd --workdir=runs/nsgd_baselines
  python experiments/sweep.py --config=configs/nsgd.py --workdir=runs/nsgd_k \
      --sweep=nsgd.gamma=0.01 --sweep=nsgd.num_directions=1,3,5,10,20 --sweep=tracking.k=20

Variants: ``simple_cnn`` (default), ``resnet32`` (CIFAR-10), ``sgd`` (the baselines; the sweep
is the η grid), ``cpu`` (``sharp_dirs.engine.config.cpu_scale``): SimpleCNN with F = 8 on 10k
Fashion-MNIST examples (no augmentation) at η = 0.1 for 12 epochs of 2,560 examples, K = 5 from
a top-5 solve on N = 256 every 2 epochs (40 steps; the paper: every epoch of 351 steps),
reduce-on-plateau after 3 and early stopping after 5 evaluations without improvement; its
sweep is γ ∈ {0.01, 0.1, 1} with 12 seeds each (``CPU_SEEDS``, from the pilot's power
estimate), γ = 5 with 4, SGD at η ∈ {0.03, 0.3} with 2, and the K ablation (K = 1, 3 at
γ = 0.01; K = 5 is the main grid) with 2.
"""

from sharp_dirs.engine import config as config_lib

VARIANTS = ("simple_cnn", "resnet32", "sgd", "cpu")
# Seeds of the cpu sweep's γ = 0.01, 0.1, 1 groups: the pilot (bench/RESULTS.md, "Pilots of the
# gallery's run lengths") puts the paired training-loss gain at +0.10 ± 0.12 (std, 4 seeds), so
# a paired t-test needs 12 seeds for 80% power; the final λ_1 needs 3, the accuracy margin 4.
CPU_SEEDS = 12


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.default_config()
  c.model = "simple_cnn_medium"
  c.augment = True
  c.num_epochs = 2000
  c.optimizer.name = "sgd" if "sgd" in variant else "nsgd"
  c.optimizer.learning_rate = 0.01
  c.nsgd.num_directions = 5
  c.nsgd.gamma = 0.01
  c.tracking.k = 10
  c.tracking.num_lanczos_steps = 60
  c.plateau.enabled = True
  c.plateau.patience = 100
  c.early_stopping.enabled = True
  c.early_stopping.patience = 200
  c.analyses.frobenius.enabled = True
  c.analyses.frobenius.every = 10
  if "resnet32" in variant:
    c.dataset, c.model, c.augment = "cifar10", "resnet32", True
  if "cpu" in variant:
    config_lib.cpu_scale(c, num_epochs=12)
    c.augment = False
    c.optimizer.learning_rate = 0.1
    c.tracking.k = 5
    c.tracking.num_examples = 256
    c.tracking.every_epochs = 2
    c.plateau.patience = 3
    c.early_stopping.patience = 5
    c.analyses.frobenius.every = 2
    c.analyses.frobenius.num_samples = 5
  return c


def get_sweep(arg=None):
  variant = config_lib.parse_variant(arg, VARIANTS)
  if "sgd" in variant:
    return [{"optimizer.learning_rate": lr} for lr in (0.3, 0.2, 0.1, 0.05, 0.01, 0.005)]
  if "cpu" in variant:
    return ([{"nsgd.gamma": g, "seed": s} for g in (0.01, 0.1, 1.0) for s in range(CPU_SEEDS)]
            + [{"nsgd.gamma": 5.0, "seed": s} for s in range(4)]
            + [{"optimizer.name": "sgd", "optimizer.learning_rate": lr, "seed": s}
               for lr in (0.03, 0.3) for s in range(2)]
            + [{"nsgd.gamma": 0.01, "nsgd.num_directions": k, "seed": s}
               for k in (1, 3) for s in range(2)])
  return [{"nsgd.gamma": g, "seed": s} for g in (0.01, 0.1, 1.0, 5.0) for s in (777, 778)]
