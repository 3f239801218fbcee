r"""The pilots behind the gallery's run lengths and seed counts, read from their run directories.

The pilots (commands in bench/RESULTS.md, "Pilots of the gallery's run lengths") are ordinary
sweeps into ``runs/pilot/<family>``; this script prints, as markdown:
- for each SGD run: λ_1 at initialization, the smoothed maximum and its epoch, and the first
  epoch where the smoothed λ_1 came within one evaluation's noise of it (C1's reading,
  ``sharp_dirs.report.claims.find_peak``), as fractions of the run;
- for each full-batch GD run: η·λ_1 / 2 over the run (where it first reaches 0.9, its levels
  on odd and even evaluations after that), the reading C6 makes;
- for NSGD runs at two γ with shared seeds: the differences paired by seed (final λ_1, the
  training loss at half the run, the test accuracy) with their std, and the seeds a paired
  t-test needs for 80% power at the observed effect (two-sided 5%; for the accuracy, the
  non-inferiority margin of C4 one-sided).

  .venv/bin/python bench/pilot_report.py --runs=runs/pilot
"""

import glob
import math
import os

from absl import app
from absl import flags
import numpy as np

from sharp_dirs.engine import metrics_io
from sharp_dirs.report import claims

_RUNS = flags.DEFINE_string("runs", "runs/pilot", "Parent of the pilot families.")

Z = {0.975: 1.960, 0.95: 1.645, 0.8: 0.842}  # standard normal quantiles


def seeds_for_power(effect: float, sd: float, alpha_quantile: float = 0.975) -> float:
  """n of a paired t-test with 80% power at ``effect`` (normal approximation, +1 for the t):
  n = ((z_α + z_0.8)·sd / effect)² + 1."""
  if not effect or not math.isfinite(effect) or not math.isfinite(sd):
    return math.inf
  return ((Z[alpha_quantile] + Z[0.8]) * sd / abs(effect)) ** 2 + 1


def sgd_table(runs) -> list[str]:
  lines = ["| run | λ_1 init | smoothed max | at epoch | within σ of it from | of the run |",
           "| --- | --- | --- | --- | --- | --- |"]
  for run in runs:
    p = claims.find_peak(run)
    if p is None:
      continue
    lines.append(f"| {run.name} | {p.lambda_init:.3g} | {p.lambda_peak:.3g} (σ {p.noise:.2g}) | "
                 f"{p.epoch:g} of {p.last_epoch:g} ({100 * p.position:.0f}%) | epoch "
                 f"{p.settled_epoch:g} | {100 * p.settled_position:.0f}% |")
  return lines


def gd_table(runs) -> list[str]:
  lines = ["| run | steps | η·λ_1/2 at init | first ≥ 0.9 at step | after it: median, odd / even "
           "evaluations | max |", "| --- | --- | --- | --- | --- | --- |"]
  for run in runs:
    steps, eta_lam = run.series("eos/eta_lambda_max")
    ratio = eta_lam / 2
    reached = np.nonzero(ratio >= 0.9)[0]
    if reached.size:
      after = ratio[reached[0]:]
      levels = (f"{np.median(after):.2f}, {np.median(after[0::2]):.2f} / "
                f"{np.median(after[1::2]):.2f}" if after.size > 1 else "—")
      at = f"{steps[reached[0]]:g}"
    else:
      levels, at = "—", "never"
    lines.append(f"| {run.name} | {steps[-1]:g} | {ratio[0]:.3f} | {at} | {levels} | "
                 f"{ratio.max():.2f} |")
  return lines


def nsgd_table(runs) -> list[str]:
  by_gamma = {}
  for run in runs:
    by_gamma.setdefault(claims.nsgd_gamma(run), []).append(run)
  if 1.0 not in by_gamma:
    return []
  last = min(float(r.series("valid/accuracy", "epoch")[0][-1]) for r in runs)
  epoch = claims.LOSS_EPOCH_FRACTION * last
  q = {g: {r.get("seed", 0): claims.nsgd_quantities(r, epoch) for r in rs}
       for g, rs in by_gamma.items()}
  lines = ["| γ vs 1 | quantity | paired difference: mean ± std (n) | seeds for 80% power |",
           "| --- | --- | --- | --- |"]
  for gamma in sorted(g for g in q if g != 1.0):
    for key, sign, margin in (("final_lambda_1", 1, 0.0), ("train_loss", -1, 0.0),
                              ("test_accuracy", 1, claims.ACCURACY_MARGIN)):
      d = claims.paired({s: sign * v[key] for s, v in q[gamma].items()},
                        {s: sign * v[key] for s, v in q[1.0].items()})
      sd = d.se * math.sqrt(d.n) if d.n > 1 else math.nan
      need = (seeds_for_power(d.mean + margin, sd, 0.95) if margin
              else seeds_for_power(d.mean, sd))
      what = {"final_lambda_1": "final λ_1 (higher)",
              "train_loss": f"training loss at epoch {epoch:g} (lower)",
              "test_accuracy": f"test accuracy % (margin −{margin:g})"}[key]
      lines.append(f"| {gamma:g} | {what} | {d.mean:+.3g} ± {sd:.2g} ({d.n}) | "
                   f"{math.ceil(need) if math.isfinite(need) else '∞'} |")
  return lines


def main(argv):
  del argv
  for family in sorted(glob.glob(os.path.join(_RUNS.value, "*"))):
    runs = [metrics_io.read_run(d) for d in sorted(glob.glob(os.path.join(family, "*")))
            if os.path.isfile(os.path.join(d, metrics_io.METRICS))]
    if not runs:
      continue
    print(f"\n### {os.path.basename(family)}\n")
    if all(r.get("full_batch") for r in runs):
      print("\n".join(gd_table(runs)))
    elif any(r.get("optimizer.name") == "nsgd" for r in runs):
      print("\n".join(nsgd_table(runs)))
    else:
      print("\n".join(sgd_table(runs)))


if __name__ == "__main__":
  app.run(main)
