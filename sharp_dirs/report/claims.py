r"""The paper's claims judged from run directories: a statistic, its uncertainty, a verdict.

Each ``claim_*`` function reads only logged runs (``sharp_dirs.engine.metrics_io.Run``) and returns a
``Verdict``: ``holds`` when every condition holds, ``fails`` when one is contradicted by the runs
beyond their noise, ``inconclusive`` when one cannot be judged (too few runs or evaluations, or a
difference within the noise). Every condition is named with its numbers, so a reader sees which
one decided. The thresholds below were fixed before the runs they judge were made; changing one
after seeing a verdict must be recorded in the README.

Noise: a quantity measured on several seeds is summarized by its mean ± std (ddof = 1). C2 and
C5 call two groups different when their mean ± std intervals do not overlap (``compare``); C4
pairs runs by seed and judges the differences by their t interval (``paired``), which sharpens
with more seeds where interval overlap cannot. The seed spread includes the Hessian sample's
own noise, since every seed draws its own samples.

The claims (Jastrzębski et al., ICLR 2019, abstract and sections 3-5):
- C1 ``claim_rise``: early in training λ_1 rises at least ``MIN_RISE``× from its initial value
  and then decreases or stabilizes: its smoothed curve within its noise of the maximum before
  ``SETTLED_BY`` of the run.
- C2 ``claim_peak_order``: that maximum is lower for a larger learning rate η (same S) and for a
  smaller batch size S (same η).
- C3 ``claim_overshoot``: after the peak, a step of the SGD length taken only along e_1
  increases the loss and half of it decreases it, and the minimum of the loss along e_1 lies
  within one SGD step length, in most evaluations.
- C4 ``claim_nsgd``: Nudged SGD with γ < 1 against γ = 1 (SGD) at the same η, paired by seed,
  reaches a sharper final λ_1, a lower training loss at half the run, and a test accuracy no
  more than ``ACCURACY_MARGIN`` points lower.
- C5 ``claim_steering``: in the rescaling ablation, the sharpness after the ablation decreases
  with the multiplier γ of the step along e_1 ("remove" is γ = 0).
- C6 ``claim_edge``: full-batch GD started below the edge (η·λ_1 ≤ ``FLAT_START``) drives
  η·λ_1 to 2 and its rolling median then stays within ``EDGE_BAND`` of 2.
"""

import dataclasses
import json
import math
from typing import Optional, Sequence

import numpy as np

from sharp_dirs.engine.metrics_io import Run
from sharp_dirs.report import statistics

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
LAMBDA_1, LR, BS = statistics.LAMBDA_1, statistics.LR, statistics.BS

# Thresholds, fixed before the runs they judge (issue 16; C1, C3, C4, C6 rewritten by issue 26
# before the runs of its gallery, each rule's reason in its docstring).
MIN_RISE = 2.0  # C1: λ_peak / λ_init
SETTLED_BY = 0.75  # C1: the smoothed λ_1 comes within its noise of its maximum before 75% of the run
EDGE_START = 0.05  # C1, stricter reading: a maximum in the first 5% is the initial value
EDGE_END = 0.25  # C1, stricter reading: a maximum in the last 25% may still be rising
SMOOTHING = 5  # points of the moving average (the paper's)
MIN_EVALUATIONS = 5  # C3: post-peak evaluations needed to judge "most"
VALLEY_RISE = 1.01  # C3, reported: the valley's wall: the loss 1% above the loss at θ
LOSS_EPOCH_FRACTION = 0.5  # C4: "trains faster" read at half the run (after several refreshes)
ACCURACY_MARGIN = 1.0  # C4: "at least as well": NSGD's test accuracy no more than 1 point lower
CONFIDENCE = 0.95  # C4: paired t intervals (two-sided for differences, one-sided for the margin)
FLAT_START = 1.0  # C6: η·λ_1 at initialization at most this (well below 2)
EDGE_REACH = 0.10  # C6: the maximum of η·λ_1 / 2 at least 1 − 10%
EDGE_MEDIAN = 6  # C6: evaluations in the rolling median of η·λ_1 / 2 (even: odd and even steps)
EDGE_BAND = 0.20  # C6: after reaching the edge, the rolling median within ±20% of 2 ...
EDGE_STAY = 0.80  # C6: ... in at least 80% of the evaluations after reaching it ...
EDGE_HOLD = 10  # C6: ... of which there are at least 10 (a run long enough to hold the edge)

STATEMENTS = {
    "C1": f"λ_1 rises ≥ {MIN_RISE:g}× early in training, then decreases or stabilizes",
    "C2": "the maximum of λ_1 is lower for larger η and for smaller S",
    "C3": "after the peak, the SGD step is too long along e_1 (a γ = 1 step along e_1 raises "
          "the loss, half of it lowers it, the step reaches past the minimum along e_1)",
    "C4": "Nudged SGD with γ < 1 finds sharper regions, trains faster and generalizes at least "
          "as well as SGD",
    "C5": "a longer step along e_1 (γ > 1) steers to flatter regions, a shorter one to sharper",
    "C6": "full-batch GD from a flat start drives η·λ_1 to 2 and hovers there",
}


@dataclasses.dataclass
class Condition:
  """One condition of a claim: ``passed`` True/False, or None when it cannot be judged."""
  name: str
  passed: Optional[bool]
  detail: str
  decides: bool = True  # False: a reported reading (e.g. a stricter rule) that does not decide

  def __post_init__(self):
    self.passed = None if self.passed is None else bool(self.passed)  # numpy bools too


@dataclasses.dataclass
class Verdict:
  """A claim's verdict with the conditions that decided it and the numbers behind them."""
  claim: str  # "C1", ...
  statement: str
  verdict: str  # HOLDS | FAILS | INCONCLUSIVE
  conditions: list
  statistics: dict
  runs: list

  @property
  def reasons(self) -> list[str]:
    """The conditions that kept the claim from holding, as 'name: detail'."""
    return [f"{c.name}: {c.detail}" for c in self.conditions
            if c.decides and c.passed is not True]

  def to_dict(self) -> dict:
    return {"claim": self.claim, "statement": self.statement, "verdict": self.verdict,
            "conditions": [dataclasses.asdict(c) for c in self.conditions],
            "statistics": self.statistics, "runs": self.runs}


def combine(conditions: Sequence[Condition]) -> str:
  """fails if any deciding condition failed, else inconclusive if any is undecided (or none
  decides), else holds."""
  conditions = [c for c in conditions if c.decides]
  if any(c.passed is False for c in conditions):
    return FAILS
  if not conditions or any(c.passed is None for c in conditions):
    return INCONCLUSIVE
  return HOLDS


def _verdict(claim, conditions, statistics, runs) -> Verdict:
  return Verdict(claim, STATEMENTS[claim], combine(conditions), list(conditions), statistics,
                 [r.workdir for r in runs])


def mean_std(values) -> tuple[float, float, int]:
  """(mean, std with ddof = 1 (0 for a single value), count) of the finite values."""
  mean, std, count = statistics.mean_std(np.asarray(values, np.float64))
  return float(mean), float(std), int(count)


def compare(a: Sequence[float], b: Sequence[float], noise_a: Optional[float] = None,
            noise_b: Optional[float] = None) -> str:
  """"greater" / "less" when mean ± std of ``a`` lies wholly above / below that of ``b``,
  "tied" when the intervals overlap, "unknown" when a side has fewer than 2 values and no
  ``noise_*`` (the std to use for a single value, e.g. the spread of the evaluations it
  averages)."""
  (ma, sa, na), (mb, sb, nb) = mean_std(a), mean_std(b)
  if na == 1 and noise_a is not None:
    sa = noise_a
  if nb == 1 and noise_b is not None:
    sb = noise_b
  if (na < 2 and noise_a is None) or (nb < 2 and noise_b is None) or not na or not nb:
    return "unknown"
  if ma - sa > mb + sb:
    return "greater"
  if ma + sa < mb - sb:
    return "less"
  return "tied"


def _pm(values, digits: int = 3) -> str:
  m, s, n = mean_std(values)
  return f"{m:.{digits}g} ± {s:.2g} (n={n})" if n > 1 else f"{m:.{digits}g} (n={n})"


# ----------------------------------------------------------------------------------------------
# C1, C2: the rise of λ_1 and its peak.


@dataclasses.dataclass
class Peak:
  """The maximum of the smoothed λ_1 of one run, and when the curve first came near it."""
  lambda_init: float
  lambda_peak: float
  epoch: float  # where the maximum is
  last_epoch: float
  rise: float  # lambda_peak / lambda_init
  position: float  # epoch / last_epoch, in [0, 1]
  spread: float  # std (ddof = 1) of the raw evaluations the smoothed maximum averages
  noise: float  # σ of one evaluation of λ_1 near the maximum (logged hessian/noise_1, or spread)
  settled_epoch: float  # the first epoch where the smoothed λ_1 ≥ lambda_peak − noise
  settled_position: float  # settled_epoch / last_epoch


def find_peak(run: Run, window: int = SMOOTHING) -> Optional[Peak]:
  """The maximum of λ_1 smoothed as the paper (zoom and per-epoch parts apart), and the first
  epoch where the smoothed curve comes within one evaluation's noise σ of it: the tracker's
  jackknife estimate ``hessian/noise_1`` averaged over the evaluations the maximum averages
  (the spread of those evaluations when the run did not log it). None without at least 3
  finite evaluations."""
  epochs, smoothed = statistics.smoothed_curve(run, LAMBDA_1, window)
  _, raw = run.series(LAMBDA_1, "epoch")
  finite = np.isfinite(smoothed)
  if finite.sum() < 3:
    return None
  i = int(np.nanargmax(smoothed))
  last = float(epochs[finite][-1])
  init = float(raw[0])
  near = slice(max(0, i - window // 2), i + window // 2 + 1)
  spread = float(np.std(raw[near], ddof=1)) if raw[near].size > 1 else 0.0
  _, logged = run.series("hessian/noise_1", "epoch")
  noise = (float(np.nanmean(logged[near])) if logged.size == raw.size
           and np.isfinite(logged[near]).any() else spread)
  settled = int(np.argmax(np.where(finite, smoothed, -np.inf) >= smoothed[i] - noise))
  return Peak(init, float(smoothed[i]), float(epochs[i]), last,
              float(smoothed[i] / init) if init > 0 else math.inf,
              float(epochs[i] / last) if last > 0 else 0.0, spread, noise,
              float(epochs[settled]), float(epochs[settled] / last) if last > 0 else 0.0)


def is_interior(peak: Optional[Peak]) -> bool:
  """The stricter reading of C1: the maximum itself lies inside the run (neither the start
  nor the last ``EDGE_END``); a plateau that creeps up within its noise fails it."""
  return peak is not None and EDGE_START < peak.position < 1 - EDGE_END


def has_peak(peak: Optional[Peak]) -> bool:
  """C1 for one run: λ_1 rose ≥ MIN_RISE× and then decreased or stabilized: its smoothed
  curve came within its noise of the maximum before SETTLED_BY of the run."""
  return (peak is not None and peak.rise >= MIN_RISE
          and peak.settled_position < SETTLED_BY)


def rise_conditions(run: Run) -> tuple[list[Condition], Optional[Peak]]:
  """C1's conditions for one run. The paper: λ_1 rises early in training and then "decreases
  or stabilizes"; so a rise of at least MIN_RISE×, and the smoothed λ_1 within its noise σ of
  its maximum before SETTLED_BY of the run (a peak or a plateau passes, a curve still rising
  beyond its noise at the end fails). The argmax inside EDGE_START–(1 − EDGE_END) of the run,
  the rule before issue 26, is reported as a stricter reading and does not decide."""
  peak = find_peak(run)
  name = run.name
  if peak is None:
    return [Condition(f"{name}: tracked", None, "fewer than 3 evaluations of λ_1")], None
  return [
      Condition(f"{name}: rises ≥ {MIN_RISE:g}×", peak.rise >= MIN_RISE,
                f"λ_1 {peak.lambda_init:.3g} at init → {peak.lambda_peak:.3g} at its maximum "
                f"({peak.rise:.2f}×)"),
      Condition(f"{name}: then decreases or stabilizes",
                peak.settled_position < SETTLED_BY,
                f"the smoothed λ_1 is within σ = {peak.noise:.2g} of its maximum from epoch "
                f"{peak.settled_epoch:.3g} of {peak.last_epoch:.3g} "
                f"({100 * peak.settled_position:.0f}% of the run; before "
                f"{100 * SETTLED_BY:.0f}% required)"
                + ("; still rising?" if peak.settled_position >= SETTLED_BY else "")),
      Condition(f"{name}: maximum itself inside the run", is_interior(peak),
                f"at epoch {peak.epoch:.3g} of {peak.last_epoch:.3g} ({100 * peak.position:.0f}%"
                f" of the run; inside means {100 * EDGE_START:.0f}–{100 * (1 - EDGE_END):.0f}%)",
                decides=False),
  ], peak


def claim_rise(runs: Sequence[Run]) -> Verdict:
  """C1 on every run of ``runs`` (e.g. a noise grid): each must rise, then settle."""
  conditions, stats = [], {}
  for run in runs:
    conds, peak = rise_conditions(run)
    conditions += conds
    if peak is not None:
      stats[run.name] = dataclasses.asdict(peak)
  return _verdict("C1", conditions or [Condition("runs", None, "no runs")], stats, runs)


def _groups(runs: Sequence[Run], fixed: str, varied: str) -> dict:
  """{value of ``fixed``: {value of ``varied``: [runs (seeds)]}} for the fixed values with at
  least two values of ``varied``."""
  out = {}
  for run in runs:
    out.setdefault(run.get(fixed), {}).setdefault(run.get(varied), []).append(run)
  return {k: v for k, v in out.items() if len(v) >= 2}


def order_conditions(runs: Sequence[Run], varied: str, symbol: str, lower_when: str
                     ) -> tuple[list[Condition], dict]:
  """C2 along one axis: for each pair of neighbouring values of ``varied`` (the other axis
  fixed), the peak is lower at the larger value (``lower_when="larger"``, η) or at the smaller
  (``"smaller"``, S), beyond the seed spread (a single seed: beyond the spread of the
  evaluations its smoothed peak averages). Runs without a peak by C1 (``has_peak``) make the
  pair undecided (their maximum is the start or a still-rising end)."""
  fixed = BS if varied == LR else LR
  conditions, stats = [], {}
  for fixed_value, by_value in sorted(_groups(runs, fixed, varied).items()):
    values = sorted(by_value)
    peaks, spreads = {}, {}
    for v in values:
      found = [(find_peak(r), r) for r in by_value[v]]
      peaks[v] = [p.lambda_peak for p, _ in found if has_peak(p)]
      spreads[v] = next((p.spread for p, _ in found if has_peak(p)), None)
      outside = [r.name for p, r in found if not has_peak(p)]
      stats[f"{symbol}={v:g} ({'η' if fixed == LR else 'S'}={fixed_value:g})"] = {
          "peaks": [p.lambda_peak for p, _ in found if p], "excluded_no_interior_peak": outside}
      if outside:
        conditions.append(Condition(f"{symbol} = {v:g}: peaks", None,
                                    f"no peak (a rise that settles, C1) in {', '.join(outside)}"))
    for lo, hi in zip(values, values[1:]):
      expected = "greater" if lower_when == "larger" else "less"  # peak(lo) vs peak(hi)
      got = compare(peaks[lo], peaks[hi], spreads[lo], spreads[hi])
      text = (f"peak λ_1 {_pm(peaks[lo])} at {symbol} = {lo:g} vs {_pm(peaks[hi])} at "
              f"{symbol} = {hi:g}")
      passed = {expected: True, "tied": None, "unknown": None}.get(got, False)
      note = {"tied": " (within the seed spread)", "unknown": " (no peak to compare)"}
      conditions.append(Condition(f"lower peak at {lower_when} {symbol} ({lo:g} vs {hi:g})",
                                  passed,
                                  text + note.get(got, "")))
  return conditions, stats


def claim_peak_order(runs: Sequence[Run], axes: Sequence[str] = (LR, BS)) -> Verdict:
  """C2 on a noise grid: lower peaks for larger η (at fixed S) and for smaller S (at fixed η);
  ``axes`` limits it to one of them (e.g. ``(LR,)`` for runs at a single S)."""
  conditions, stats = [], {}
  for field, symbol, lower_when in ((LR, "η", "larger"), (BS, "S", "smaller")):
    if field not in axes:
      continue
    conds, more = order_conditions(runs, field, symbol, lower_when)
    conditions += conds or [Condition(f"{symbol} grid", None,
                                      f"no two values of {symbol} with the other axis fixed")]
    stats.update(more)
  return _verdict("C2", conditions, stats, runs)


# ----------------------------------------------------------------------------------------------
# C3: the SGD step is too long along e_1.


def _fraction_condition(name: str, hits: Sequence[bool], decides: bool = True) -> Condition:
  """"``name`` in most post-peak evaluations": the fraction of ``hits`` above one half, with
  its binomial standard error; undecided below MIN_EVALUATIONS evaluations."""
  n = len(hits)
  frac = float(np.mean(hits)) if n else math.nan
  se = math.sqrt(frac * (1 - frac) / n) if n else math.nan
  return Condition(name, None if n < MIN_EVALUATIONS else frac > 0.5,
                   f"in {int(sum(hits))} of {n} post-peak evaluations ({100 * frac:.0f}% ± "
                   f"{100 * se:.0f}%)" + (f"; needs ≥ {MIN_EVALUATIONS}" if n < MIN_EVALUATIONS
                                          else ""), decides=decides)


def cross_section_minima(run: Run, after: float) -> list[float]:
  """|offset| of the minimum of the logged loss along e_1 (arrays/cross_section, offsets in
  SGD step lengths) at each evaluation at or after epoch ``after``."""
  epoch_of = {r["step"]: r["epoch"] for r in run.rows if "epoch" in r}
  out = []
  for step, arrays in run.arrays("cross_section"):
    if epoch_of.get(step, -math.inf) >= after:
      rows = np.nonzero(np.asarray(arrays["directions"]) == 0)[0]
      if rows.size:
        losses = np.asarray(arrays["losses"])[rows[0]]
        out.append(float(abs(np.asarray(arrays["offsets"])[int(np.argmin(losses))])))
  return out


def claim_overshoot(runs: Sequence[Run]) -> Verdict:
  """C3 on runs with the step-loss-change and cross-section analyses (sharp_analysis).

  The paper's reading (its F3): after the peak, a step of the SGD length taken only along e_1
  (γ = 1) often increases the loss, while half of it (γ = 0.5) decreases it: the step is too
  long along e_1. Its F4: the cross-section's minimum along e_1 lies within one SGD step
  length, so the step reaches past it (overshoots). Each "in most post-peak evaluations".
  The rule before issue 26, that the loss rises 1% within one step on both sides, needs the
  downhill side to rise within one step too (on a quadratic: η·λ_1 > 2); it is reported as a
  statistic and does not decide.
  """
  ups, halves, minima, widths, stats = [], [], [], [], {}
  for run in runs:
    peak = find_peak(run)
    after = peak.epoch if peak else 0.0
    x, change = run.series("step_loss_change/e1/x1", "epoch")
    ups += list(change[x >= after] > 0)
    x, change = run.series("step_loss_change/e1/x0.5", "epoch")
    halves += list(change[x >= after] < 0)
    minima += cross_section_minima(run, after)
    xw, width = run.series("cross_section/width_e1", "epoch")
    widths += list(width[xw >= after])
    eta_x, eta_lam = run.series("eos/eta_lambda_max", "epoch")
    stats[run.name] = {"after_epoch": after, "eta_lambda_1_after_peak": [
        float(v) for v, e in zip(eta_lam, eta_x) if e >= after]}
  conditions = [
      _fraction_condition("a γ = 1 step along e_1 increases the loss in most evaluations", ups),
      _fraction_condition("a γ = 0.5 step along e_1 decreases the loss in most evaluations",
                          halves),
      _fraction_condition("the minimum of the loss along e_1 lies within one SGD step in most "
                          "evaluations", [m <= 1.0 for m in minima]),
      _fraction_condition("(stricter, reported) the loss along e_1 rises 1% within one SGD step "
                          "on both sides in most evaluations",
                          [w <= 1.0 for w in widths], decides=False)]
  if widths:
    conditions[-1].detail += f" (median width {np.median(widths):.3g} step lengths)"
  stats.update(fraction_increasing=float(np.mean(ups)) if ups else math.nan,
               fraction_half_decreasing=float(np.mean(halves)) if halves else math.nan,
               minima_step_lengths=minima, widths=[float(w) for w in widths])
  return _verdict("C3", conditions, stats, runs)


# ----------------------------------------------------------------------------------------------
# C4: Nudged SGD.


def _is_baseline(run: Run) -> bool:
  return run.get("optimizer.name") == "sgd" or (
      run.get("optimizer.name") == "nsgd" and run.get("nsgd.gamma") == 1.0)


def nsgd_gamma(run: Run) -> float:
  """The multiplier γ of a run's step along the top directions: 1 for SGD (and NSGD at γ = 1)."""
  return 1.0 if _is_baseline(run) else run.get("nsgd.gamma")


def _value_at_epoch(run: Run, key: str, epoch: float) -> float:
  x, y = run.series(key, "epoch")
  before = y[x <= epoch + 1e-9]
  return float(before[-1]) if before.size else math.nan


# Student's t quantiles t_q(df) for df = 1..30 (beyond: the normal's), the paired intervals' own
# table (tests/test_claims.py checks it against scipy).
T_QUANTILES = {
    0.95: (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782,
           1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711,
           1.708, 1.706, 1.703, 1.701, 1.699, 1.697),
    0.975: (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
            2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
            2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
}
NORMAL_QUANTILES = {0.95: 1.645, 0.975: 1.960}


def t_quantile(q: float, df: int) -> float:
  """t_q(df) of Student's t distribution for q ∈ T_QUANTILES."""
  table = T_QUANTILES[q]
  return table[df - 1] if df <= len(table) else NORMAL_QUANTILES[q]


@dataclasses.dataclass
class Paired:
  """Differences a − b of runs paired by seed: their mean, standard error, and count."""
  mean: float
  se: float  # std (ddof = 1) / sqrt(n)
  n: int
  seeds: list

  def bound(self, q: float, side: int) -> float:
    """The one-sided q bound: mean + side·t_q(n − 1)·se (side −1: lower, +1: upper)."""
    return self.mean + side * t_quantile(q, self.n - 1) * self.se if self.n > 1 else math.nan

  def text(self, digits: int = 3) -> str:
    return f"{self.mean:+.{digits}g} ± {self.se:.2g} (SE, n={self.n} seeds paired)"


def paired(a: dict, b: dict) -> Paired:
  """``a``, ``b``: {seed: value}; the differences a − b over the seeds both have (finite)."""
  seeds = sorted(s for s in a if s in b and np.isfinite(a[s]) and np.isfinite(b[s]))
  d = np.array([a[s] - b[s] for s in seeds], np.float64)
  se = float(np.std(d, ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
  return Paired(float(d.mean()) if d.size else math.nan, se, int(d.size), seeds)


def difference_condition(name: str, diff: Paired, unpaired: str) -> Condition:
  """Holds when the paired difference is positive beyond its two-sided CONFIDENCE interval,
  fails when negative beyond it, undecided within it (or with fewer than 2 pairs)."""
  q = 1 - (1 - CONFIDENCE) / 2
  lo, hi = diff.bound(q, -1), diff.bound(q, +1)
  passed = None if diff.n < 2 else True if lo > 0 else False if hi < 0 else None
  return Condition(name, passed, f"{diff.text()}, {100 * CONFIDENCE:.0f}% interval "
                   f"[{lo:.3g}, {hi:.3g}]; unpaired {unpaired}"
                   + (" (needs ≥ 2 seeds paired)" if diff.n < 2 else
                      " (within the noise)" if passed is None else ""))


def non_inferiority_condition(name: str, diff: Paired, margin: float,
                              unpaired: str) -> Condition:
  """"At least as good": holds when the one-sided CONFIDENCE lower bound of the paired
  difference lies above −margin, fails when its upper bound lies below −margin (worse by more
  than the margin), undecided otherwise."""
  lo, hi = diff.bound(CONFIDENCE, -1), diff.bound(CONFIDENCE, +1)
  passed = None if diff.n < 2 else True if lo > -margin else False if hi < -margin else None
  return Condition(name, passed, f"{diff.text()}, one-sided {100 * CONFIDENCE:.0f}% bounds "
                   f"[{lo:.3g}, {hi:.3g}] against the margin −{margin:g}; unpaired {unpaired}"
                   + (" (needs ≥ 2 seeds paired)" if diff.n < 2 else ""))


def nsgd_quantities(run: Run, loss_epoch: float) -> dict:
  """final λ_1, the training loss at ``loss_epoch``, the final test accuracy in % (the
  best-validation checkpoint's when experiments/evaluate.py wrote it)."""
  _, lam = run.series(LAMBDA_1)
  return {"final_lambda_1": float(lam[-1]) if lam.size else math.nan,
          "train_loss": _value_at_epoch(run, "train/loss", loss_epoch),
          "test_accuracy": statistics.run_summary(run, loss_epoch)["test_accuracy"]}


def claim_nsgd(runs: Sequence[Run]) -> Verdict:
  """C4: every γ < 1 group against the γ = 1 (or SGD) group at the same η, paired by seed.

  The paper: NSGD with γ < 1 "finds sharper regions", optimizes faster and "generalizes at
  least as well" as SGD. Each part is a difference of runs paired by seed (same data order,
  init and samples: the seed-to-seed variation cancels), judged by its t interval:
  - sharper: the final λ_1 higher, beyond the two-sided CONFIDENCE interval;
  - faster: the training loss lower at LOSS_EPOCH_FRACTION of the run, beyond its interval
    (half the run: after several refreshes of the directions; an epoch before the second
    refresh measures almost nothing of NSGD);
  - at least as well: non-inferiority, the one-sided lower bound of the test accuracy's
    difference above −ACCURACY_MARGIN points (1 point, fixed before the runs: about the
    binomial noise of one accuracy on 2,000 test examples).
  The mean ± std of each group (unpaired) is reported beside each. Only the runs at the
  family's main K (the most common ``nsgd.num_directions`` among the nudged runs) are judged;
  the others are its K ablation."""
  runs = [r for r in runs if r.get("optimizer.name") in ("sgd", "nsgd")]
  nudged = [r.get("nsgd.num_directions") for r in runs if not _is_baseline(r)]
  main_k = max(set(nudged), key=nudged.count) if nudged else None
  groups = {}
  for run in runs:
    if not _is_baseline(run) and run.get("nsgd.num_directions") != main_k:
      continue  # a K ablation run: drawn, not judged
    groups.setdefault((run.get(LR), nsgd_gamma(run)), []).append(run)
  # "The run": the shortest of the runs compared (γ < 1 beside γ = 1 at one η), not of the
  # family's other rows (an early-stopped γ = 5 run or SGD baseline must not move the epoch).
  judged_etas = {lr for lr, gamma in groups if gamma < 1 and (lr, 1.0) in groups}
  compared = [r for (lr, gamma), group in groups.items() if lr in judged_etas and gamma <= 1
              for r in group]
  last = min((float(r.series("valid/accuracy", "epoch")[0][-1]) for r in compared
              if r.has("valid/accuracy")), default=math.nan)
  loss_epoch = LOSS_EPOCH_FRACTION * last
  conditions, stats = [], {"loss_epoch": loss_epoch}
  by_seed = {}
  for (lr, gamma), group in sorted(groups.items()):
    q = {r.get("seed", 0): nsgd_quantities(r, loss_epoch) for r in group}
    by_seed[lr, gamma] = q
    stats[f"η={lr:g}, γ={gamma:g}"] = {k: [x[k] for x in q.values()]
                                        for k in next(iter(q.values()))}
    stats[f"η={lr:g}, γ={gamma:g}"]["seeds"] = list(q)
  for (lr, gamma), mine in sorted(by_seed.items()):
    base = by_seed.get((lr, 1.0))
    if gamma >= 1 or base is None:
      continue
    def diff(key, sign=1.0):
      return paired({s: sign * v[key] for s, v in mine.items()},
                    {s: sign * v[key] for s, v in base.items()})
    def unpaired(key):
      return (f"{_pm([v[key] for v in mine.values()])} vs "
              f"{_pm([v[key] for v in base.values()])}")
    tag = f"γ = {gamma:g} vs γ = 1 at η = {lr:g}"
    sharper, faster, acc = diff("final_lambda_1"), diff("train_loss", -1.0), diff("test_accuracy")
    stats[f"{tag}: paired"] = {k: dataclasses.asdict(v) for k, v in (
        ("final_lambda_1", sharper), ("train_loss_decrease", faster), ("test_accuracy", acc))}
    conditions += [
        difference_condition(f"{tag}: sharper final λ_1", sharper, unpaired("final_lambda_1")),
        difference_condition(f"{tag}: lower training loss at epoch {loss_epoch:.3g}", faster,
                             unpaired("train_loss")),
        non_inferiority_condition(
            f"{tag}: test accuracy at most {ACCURACY_MARGIN:g} point lower", acc,
            ACCURACY_MARGIN, unpaired("test_accuracy"))]
  if not conditions:
    conditions.append(Condition("runs", None, "no γ < 1 runs beside γ = 1 / SGD at the same η"))
  return _verdict("C4", conditions, stats, runs)


# ----------------------------------------------------------------------------------------------
# C5: the step along e_1 steers the sharpness.


def rescaling_gamma(run: Run) -> Optional[float]:
  """The multiplier of the step along e_1: SGD 1, "remove" 0, "constant" γ; None otherwise."""
  if run.get("optimizer.name") == "sgd":
    return 1.0
  rule = run.get("nsgd.rule")
  if rule == "remove":
    return 0.0
  if rule == "constant" and not run.get("nsgd.freeze_directions"):
    return float(run.get("nsgd.gamma"))
  return None


def claim_steering(runs: Sequence[Run], window: float = 0.5) -> Verdict:
  """C5: λ_1 averaged over the last ``window`` of each ablation decreases with γ (rank
  correlation ≤ −0.8), and the smallest γ ends sharper than the largest beyond the spread of
  λ_1 over that window."""
  by_gamma = {}
  for run in runs:
    g = rescaling_gamma(run)
    if g is None:
      continue
    x, lam = run.series(LAMBDA_1, "epoch")
    by_gamma[g] = lam[x >= x[0] + (1 - window) * (x[-1] - x[0])] if x.size else np.array([])
  stats = {f"γ={g:g}": {"mean": mean_std(v)[0], "std": mean_std(v)[1], "n": mean_std(v)[2]}
           for g, v in sorted(by_gamma.items())}
  if len(by_gamma) < 3:
    return _verdict("C5", [Condition("variants", None, "fewer than 3 γ values")], stats, runs)
  gammas = sorted(by_gamma)
  means = [mean_std(by_gamma[g])[0] for g in gammas]
  rank = float(np.corrcoef(np.argsort(np.argsort(gammas)), np.argsort(np.argsort(means)))[0, 1])
  extremes = compare(by_gamma[gammas[0]], by_gamma[gammas[-1]])
  stats["rank_correlation"] = rank
  conditions = [
      Condition("λ_1 decreases with γ (rank correlation ≤ −0.8)",
                True if rank <= -0.8 else False if rank >= 0 else None,
                "mean λ_1 over the last half: " + ", ".join(
                    f"γ={g:g}: {m:.3g}" for g, m in zip(gammas, means))
                + f" (rank correlation {rank:.2f})"),
      Condition(f"γ = {gammas[0]:g} sharper than γ = {gammas[-1]:g} beyond the spread",
                {"greater": True, "less": False}.get(extremes),
                f"{_pm(by_gamma[gammas[0]])} vs {_pm(by_gamma[gammas[-1]])} (spread of λ_1 "
                "over the window's evaluations)")]
  return _verdict("C5", conditions, stats, runs)


# ----------------------------------------------------------------------------------------------
# C6: the edge of stability under full-batch GD.


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
  """[T] the median of each value and the ``window − 1`` before it (fewer at the start)."""
  return np.array([np.median(values[max(0, i - window + 1):i + 1]) for i in range(values.size)])


def edge_conditions(run: Run, decides: bool = True) -> tuple[list[Condition], dict]:
  """C6 for one full-batch GD run: a flat start, η·λ_1 reaching the edge 2, and its rolling
  median (EDGE_MEDIAN evaluations) within ±EDGE_BAND of 2 in EDGE_STAY of the evaluations
  after it first got there, of which there must be EDGE_HOLD (the run must last). A rolling
  median, not each evaluation: at the edge η·λ_1 oscillates around 2 from step to step
  (Cohen et al.); a run that keeps catapulting far above it fails either way. The window is
  even because the cpu runs are tracked every 5 steps, odd and even steps in turn, and the
  pilot GD run at the edge alternates between two levels of η·λ_1 on odd and even steps (a
  period-2 orbit across the valley): an even window weighs both alike, an odd one picks a
  phase. The fraction of
  single evaluations within the band, the rule before issue 26, is reported, not deciding."""
  name = run.name
  _, eta_lam = run.series("eos/eta_lambda_max")
  _, threshold = run.series("eos/threshold")
  if eta_lam.size < 3:
    return [Condition(f"{name}: tracked", None, "fewer than 3 evaluations", decides)], {}
  ratio = eta_lam / threshold
  median = rolling_median(ratio, EDGE_MEDIAN)
  reached = np.nonzero(ratio >= 1 - EDGE_REACH)[0]
  first = int(reached[0]) if reached.size else ratio.size
  after = median[first:]
  stay = float(np.mean(np.abs(after - 1) <= EDGE_BAND)) if after.size else 0.0
  raw_stay = float(np.mean(np.abs(ratio[first:] - 1) <= EDGE_BAND)) if after.size else 0.0
  stats = {"start": float(ratio[0]), "max": float(ratio.max()),
           "reached_at_evaluation": first if reached.size else None,
           "evaluations_after": int(after.size), "fraction_median_within_band": stay,
           "fraction_within_band": raw_stay,
           "median_after": float(np.median(ratio[first:])) if after.size else math.nan}
  holding = None if reached.size and after.size < EDGE_HOLD else (
      bool(reached.size) and stay >= EDGE_STAY)
  return [
      Condition(f"{name}: flat start", eta_lam[0] <= FLAT_START,
                f"η·λ_1 = {eta_lam[0]:.3g} at initialization (≤ {FLAT_START:g} required)",
                decides),
      Condition(f"{name}: reaches the edge", bool(reached.size),
                f"max η·λ_1 / 2 = {ratio.max():.3f} (≥ {1 - EDGE_REACH:g} required)", decides),
      Condition(f"{name}: stays at the edge", holding,
                f"the rolling median of η·λ_1 / 2 ({EDGE_MEDIAN} evaluations) within "
                f"±{100 * EDGE_BAND:.0f}% of 1 in {100 * stay:.0f}% of the {after.size} "
                f"evaluations after reaching it ({100 * EDGE_STAY:.0f}% of at least "
                f"{EDGE_HOLD} required); median η·λ_1 / 2 there {stats['median_after']:.3g}",
                decides),
      Condition(f"{name}: (stricter, reported) each evaluation at the edge", raw_stay >=
                EDGE_STAY, f"{100 * raw_stay:.0f}% of the single evaluations within the band",
                decides=False),
  ], stats


def claim_edge(runs: Sequence[Run]) -> Verdict:
  """C6 on full-batch GD runs (Cohen et al., beyond the paper): the run at the family's
  smallest η decides, an η where sharpening is gradual; the runs at larger η are reported (at
  η = 0.1 the CPU-scale GD catapults: η·λ_1 overshoots 2 several-fold and falls back in
  cycles, a regime of its own, not the edge)."""
  gd = [r for r in runs if r.get("full_batch")]
  if not gd:
    return _verdict("C6", [Condition("runs", None, "no full-batch runs")], {}, gd)
  smallest = min(r.get(LR) for r in gd)
  conditions, stats = [], {}
  for run in sorted(gd, key=lambda r: r.get(LR)):
    conds, stats[run.name] = edge_conditions(run, decides=run.get(LR) == smallest)
    if run.get(LR) != smallest:
      for c in conds:
        c.name = f"(η = {run.get(LR):g}, reported) {c.name}"
    conditions += conds
  return _verdict("C6", conditions, stats, gd)


# ----------------------------------------------------------------------------------------------
# The report.


def to_markdown(verdicts: Sequence[Verdict]) -> str:
  """A table of verdicts, then each claim's conditions."""
  lines = ["| claim | statement | verdict | what decided it |", "| --- | --- | --- | --- |"]
  for v in verdicts:
    decided = "; ".join(v.reasons) if v.reasons else "all conditions hold"
    lines.append(f"| {v.claim} | {v.statement} | **{v.verdict}** | {decided} |")
  for v in verdicts:
    lines += ["", f"### {v.claim}: {v.verdict}", "", v.statement, ""]
    lines += [f"- {'✓' if c.passed else '✗' if c.passed is False else '?'} {c.name}: {c.detail}"
              + ("" if c.decides else " *(reported, does not decide)*") for c in v.conditions]
  return "\n".join(lines) + "\n"


def to_json(verdicts: Sequence[Verdict]) -> str:
  return json.dumps([v.to_dict() for v in verdicts], indent=1, default=float)


# Which claim reads which family of runs (the sub-directories `make figures` writes).
FAMILIES = (
    ("C1", "noise_grid", claim_rise),
    ("C2", "noise_grid", claim_peak_order),
    ("C3", "sharp_analysis", claim_overshoot),
    ("C4", "nsgd", claim_nsgd),
    ("C5", "rescaling", claim_steering),
    ("C6", "edge_of_stability", claim_edge),
)


def report(runs_by_family: dict) -> list[Verdict]:
  """Every claim of FAMILIES on ``{family: [Run]}``; a missing family is inconclusive."""
  verdicts = []
  for claim, family, judge in FAMILIES:
    runs = runs_by_family.get(family, [])
    if runs:
      verdicts.append(judge(runs))
    else:
      verdicts.append(_verdict(claim, [Condition("runs", None, f"no runs in {family}/")], {},
                               []))
  return verdicts
