r"""The paper's claims judged from run directories: a statistic, its uncertainty, a verdict.

Each ``claim_*`` function reads only logged runs (``sharp_dirs.engine.metrics_io.Run``) and returns a
``Verdict``: ``holds`` when every condition holds, ``fails`` when one is contradicted by the runs
beyond their noise, ``inconclusive`` when one cannot be judged (too few runs or evaluations, or a
difference within the noise). Every condition is named with its numbers, so a reader sees which
one decided. The thresholds below were fixed before the runs they judge were made; changing one
after seeing a verdict must be recorded in the README.

Noise: a quantity measured on several seeds is summarized by its mean ± std (ddof = 1); two
groups differ when their mean ± std intervals do not overlap (``compare``). The seed spread
includes the Hessian sample's own noise, since every seed draws its own samples.

The claims (Jastrzębski et al., ICLR 2019, abstract and sections 3-5):
- C1 ``claim_rise``: early in training λ_1 rises at least ``MIN_RISE``× from its initial value
  to a maximum inside the run (not in its first ``EDGE_START`` or last ``EDGE_END`` fraction).
- C2 ``claim_peak_order``: that maximum is lower for a larger learning rate η (same S) and for a
  smaller batch size S (same η).
- C3 ``claim_overshoot``: after the peak, a step of the SGD length taken only along e_1
  increases the loss in most evaluations, and the loss along e_1 rises by 1% within one SGD
  step length on both sides (the step is wider than the valley).
- C4 ``claim_nsgd``: Nudged SGD with γ < 1 against γ = 1 (SGD) at the same η reaches a sharper
  final λ_1, a lower training loss at an early epoch, and a test accuracy at least as high.
- C5 ``claim_steering``: in the rescaling ablation, the sharpness after the ablation decreases
  with the multiplier γ of the step along e_1 ("remove" is γ = 0).
- C6 ``claim_edge``: full-batch GD started below the edge (η·λ_1 ≤ ``FLAT_START``) drives
  η·λ_1 to 2 within ``EDGE_REACH`` and then stays within ``EDGE_BAND`` of 2.
"""

import dataclasses
import json
import math
from typing import Optional, Sequence

import numpy as np

from sharp_dirs.engine.metrics_io import Run
from sharp_dirs.report import figures

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
LAMBDA_1 = "hessian/lambda_1"
LR, BS = "optimizer.learning_rate", "batch_size"

# Thresholds, fixed before the runs (issue 16).
MIN_RISE = 2.0  # C1: λ_peak / λ_init
EDGE_START = 0.05  # C1: a maximum in the first 5% of the run is the initial value, not a peak
EDGE_END = 0.25  # C1: a maximum in the last 25% may still be rising
SMOOTHING = 5  # points of the moving average (the paper's)
MIN_EVALUATIONS = 5  # C3: post-peak evaluations needed to judge "most"
VALLEY_RISE = 1.01  # C3: the valley's wall: the loss 1% above the loss at θ
EARLY_FRACTION = 0.25  # C4: the "early epoch" at a quarter of the run (the paper: 50 of 200)
FLAT_START = 1.0  # C6: η·λ_1 at initialization at most this (well below 2)
EDGE_REACH = 0.10  # C6: the maximum of η·λ_1 / 2 at least 1 − 10%
EDGE_BAND = 0.20  # C6: after reaching the edge, η·λ_1 / 2 within ±20% ...
EDGE_STAY = 0.80  # C6: ... in at least 80% of the evaluations

STATEMENTS = {
    "C1": f"λ_1 rises ≥ {MIN_RISE:g}× from initialization to a maximum inside the run",
    "C2": "the maximum of λ_1 is lower for larger η and for smaller S",
    "C3": "after the peak, the SGD step is too long along e_1 (it increases the loss, and is "
          "wider than the valley)",
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
    return [f"{c.name}: {c.detail}" for c in self.conditions if c.passed is not True]

  def to_dict(self) -> dict:
    return {"claim": self.claim, "statement": self.statement, "verdict": self.verdict,
            "conditions": [dataclasses.asdict(c) for c in self.conditions],
            "statistics": self.statistics, "runs": self.runs}


def combine(conditions: Sequence[Condition]) -> str:
  """fails if any condition failed, else inconclusive if any is undecided (or none), else holds."""
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
  mean, std, count = figures.mean_std(np.asarray(values, np.float64))
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
  """The maximum of the smoothed λ_1 of one run."""
  lambda_init: float
  lambda_peak: float
  epoch: float  # where the maximum is
  last_epoch: float
  rise: float  # lambda_peak / lambda_init
  position: float  # epoch / last_epoch, in [0, 1]
  spread: float  # std (ddof = 1) of the raw evaluations the smoothed maximum averages


def find_peak(run: Run, window: int = SMOOTHING) -> Optional[Peak]:
  """The maximum of λ_1 smoothed as the paper (zoom and per-epoch parts apart); None without
  at least 3 finite evaluations."""
  epochs, smoothed = figures.smoothed_curve(run, LAMBDA_1, window)
  _, raw = run.series(LAMBDA_1, "epoch")
  finite = np.isfinite(smoothed)
  if finite.sum() < 3:
    return None
  i = int(np.nanargmax(smoothed))
  last = float(epochs[finite][-1])
  init = float(raw[0])
  near = raw[max(0, i - window // 2):i + window // 2 + 1]
  return Peak(init, float(smoothed[i]), float(epochs[i]), last,
              float(smoothed[i] / init) if init > 0 else math.inf,
              float(epochs[i] / last) if last > 0 else 0.0,
              float(np.std(near, ddof=1)) if near.size > 1 else 0.0)


def is_interior(peak: Optional[Peak]) -> bool:
  """Whether a maximum lies inside the run: neither the start nor a still-rising end."""
  return peak is not None and EDGE_START < peak.position < 1 - EDGE_END


def rise_conditions(run: Run) -> tuple[list[Condition], Optional[Peak]]:
  """C1's conditions for one run: a rise of at least MIN_RISE×, at a maximum inside the run."""
  peak = find_peak(run)
  name = run.name
  if peak is None:
    return [Condition(f"{name}: tracked", None, "fewer than 3 evaluations of λ_1")], None
  return [
      Condition(f"{name}: rises ≥ {MIN_RISE:g}×", peak.rise >= MIN_RISE,
                f"λ_1 {peak.lambda_init:.3g} at init → {peak.lambda_peak:.3g} at its maximum "
                f"({peak.rise:.2f}×)"),
      Condition(f"{name}: maximum inside the run", is_interior(peak),
                f"at epoch {peak.epoch:.3g} of {peak.last_epoch:.3g} ({100 * peak.position:.0f}%"
                f" of the run; inside means {100 * EDGE_START:.0f}–{100 * (1 - EDGE_END):.0f}%)"
                + ("; still rising?" if peak.position >= 1 - EDGE_END else "")),
  ], peak


def claim_rise(runs: Sequence[Run]) -> Verdict:
  """C1 on every run of ``runs`` (e.g. a noise grid): each must rise to an interior maximum."""
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
  evaluations its smoothed peak averages). Runs whose maximum is not inside the run make the
  pair undecided (their "peak" is the start or the end)."""
  fixed = BS if varied == LR else LR
  conditions, stats = [], {}
  for fixed_value, by_value in sorted(_groups(runs, fixed, varied).items()):
    values = sorted(by_value)
    peaks, spreads = {}, {}
    for v in values:
      found = [(find_peak(r), r) for r in by_value[v]]
      peaks[v] = [p.lambda_peak for p, _ in found if is_interior(p)]
      spreads[v] = next((p.spread for p, _ in found if is_interior(p)), None)
      outside = [r.name for p, r in found if not is_interior(p)]
      stats[f"{symbol}={v:g} ({'η' if fixed == LR else 'S'}={fixed_value:g})"] = {
          "peaks": [p.lambda_peak for p, _ in found if p], "excluded_no_interior_peak": outside}
      if outside:
        conditions.append(Condition(f"{symbol} = {v:g}: interior peaks", None,
                                    f"no maximum inside the run in {', '.join(outside)}"))
    for lo, hi in zip(values, values[1:]):
      expected = "greater" if lower_when == "larger" else "less"  # peak(lo) vs peak(hi)
      got = compare(peaks[lo], peaks[hi], spreads[lo], spreads[hi])
      text = (f"peak λ_1 {_pm(peaks[lo])} at {symbol} = {lo:g} vs {_pm(peaks[hi])} at "
              f"{symbol} = {hi:g}")
      passed = {expected: True, "tied": None, "unknown": None}.get(got, False)
      note = {"tied": " (within the seed spread)", "unknown": " (no interior peak to compare)"}
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


def claim_overshoot(runs: Sequence[Run]) -> Verdict:
  """C3 on runs with the step-loss-change and cross-section analyses (sharp_analysis)."""
  ups, widths, stats = [], [], {}
  for run in runs:
    peak = find_peak(run)
    after = peak.epoch if peak else 0.0
    x, change = run.series("step_loss_change/e1/x1", "epoch")
    ups += list(change[x >= after] > 0)
    xw, width = run.series("cross_section/width_e1", "epoch")
    widths += list(width[xw >= after])
    eta_lam = run.series("eos/eta_lambda_max", "epoch")[1]
    stats[run.name] = {"after_epoch": after, "eta_lambda_1_after_peak": [
        float(v) for v, e in zip(eta_lam, run.series("eos/eta_lambda_max", "epoch")[0])
        if e >= after]}
  conditions = []
  n = len(ups)
  frac = float(np.mean(ups)) if n else math.nan
  se = math.sqrt(frac * (1 - frac) / n) if n else math.nan
  conditions.append(Condition(
      "a γ = 1 step along e_1 increases the loss in most evaluations",
      None if n < MIN_EVALUATIONS else frac > 0.5,
      f"in {sum(ups)} of {n} post-peak evaluations ({100 * frac:.0f}% ± {100 * se:.0f}%)"
      + (f"; needs ≥ {MIN_EVALUATIONS}" if n < MIN_EVALUATIONS else "")))
  m = len(widths)
  within = float(np.mean(np.asarray(widths) <= 1.0)) if m else math.nan
  conditions.append(Condition(
      "the loss along e_1 rises 1% within one SGD step on both sides in most evaluations",
      None if m < MIN_EVALUATIONS else within > 0.5,
      f"in {int(round(within * m)) if m else 0} of {m} post-peak evaluations "
      f"(median width {np.median(widths) if m else math.nan:.3g} step lengths)"))
  stats.update(fraction_increasing=frac, fraction_std=se, fraction_within_one_step=within,
               widths=[float(w) for w in widths])
  return _verdict("C3", conditions, stats, runs)


# ----------------------------------------------------------------------------------------------
# C4: Nudged SGD.


def _is_baseline(run: Run) -> bool:
  return run.get("optimizer.name") == "sgd" or (
      run.get("optimizer.name") == "nsgd" and run.get("nsgd.gamma") == 1.0)


def _value_at_epoch(run: Run, key: str, epoch: float) -> float:
  x, y = run.series(key, "epoch")
  before = y[x <= epoch + 1e-9]
  return float(before[-1]) if before.size else math.nan


def nsgd_quantities(run: Run, early_epoch: float) -> dict:
  """final λ_1, the training loss at ``early_epoch``, the final test accuracy (best-validation
  checkpoint's when experiments/evaluate.py wrote it)."""
  _, lam = run.series(LAMBDA_1)
  return {"final_lambda_1": float(lam[-1]) if lam.size else math.nan,
          "early_train_loss": _value_at_epoch(run, "train/loss", early_epoch),
          "test_accuracy": figures.run_summary(run, early_epoch)["test_accuracy"]}


def claim_nsgd(runs: Sequence[Run]) -> Verdict:
  """C4: every γ < 1 group against the γ = 1 (or SGD) group at the same η, over seeds."""
  groups = {}
  for run in runs:
    if run.get("optimizer.name") not in ("sgd", "nsgd"):
      continue
    gamma = 1.0 if _is_baseline(run) else run.get("nsgd.gamma")
    groups.setdefault((run.get(LR), gamma), []).append(run)
  last = min((float(r.series("valid/accuracy", "epoch")[0][-1]) for r in runs
              if r.has("valid/accuracy")), default=math.nan)
  early = EARLY_FRACTION * last
  conditions, stats = [], {"early_epoch": early}
  for (lr, gamma), group in sorted(groups.items()):
    q = [nsgd_quantities(r, early) for r in group]
    stats[f"η={lr:g}, γ={gamma:g}"] = {k: [x[k] for x in q] for k in q[0]}
  for (lr, gamma), group in sorted(groups.items()):
    base = stats.get(f"η={lr:g}, γ=1")
    if gamma >= 1 or base is None:
      continue
    mine = stats[f"η={lr:g}, γ={gamma:g}"]
    for key, want, what in (("final_lambda_1", "greater", "sharper final λ_1"),
                            ("early_train_loss", "less", f"lower training loss at epoch "
                             f"{early:.3g}"),
                            ("test_accuracy", "greater", "test accuracy at least as high")):
      got = compare(mine[key], base[key])
      passed = True if got == want else None if got in ("tied", "unknown") else False
      if key == "test_accuracy" and got == "tied":
        passed = None  # "at least as high" within noise: not shown
      conditions.append(Condition(
          f"γ = {gamma:g} vs γ = 1 at η = {lr:g}: {what}", passed,
          f"{_pm(mine[key])} vs {_pm(base[key])}" + {
              "tied": " (within the seed spread)", "unknown": " (needs ≥ 2 seeds)"}.get(got, "")))
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


def claim_edge(runs: Sequence[Run]) -> Verdict:
  """C6 on full-batch GD runs: a flat start, then η·λ_1 reaches 2(1+m) and stays near it."""
  conditions, stats = [], {}
  gd = [r for r in runs if r.get("full_batch")]
  for run in gd:
    _, eta_lam = run.series("eos/eta_lambda_max")
    _, threshold = run.series("eos/threshold")
    if eta_lam.size < 3:
      conditions.append(Condition(f"{run.name}: tracked", None, "fewer than 3 evaluations"))
      continue
    ratio = eta_lam / threshold
    reached = np.nonzero(ratio >= 1 - EDGE_REACH)[0]
    stay = float(np.mean(np.abs(ratio[reached[0]:] - 1) <= EDGE_BAND)) if reached.size else 0.0
    stats[run.name] = {"start": float(ratio[0]), "max": float(ratio.max()),
                       "reached_at_evaluation": int(reached[0]) if reached.size else None,
                       "fraction_within_band": stay}
    conditions += [
        Condition(f"{run.name}: flat start", eta_lam[0] <= FLAT_START,
                  f"η·λ_1 = {eta_lam[0]:.3g} at initialization (≤ {FLAT_START:g} required)"),
        Condition(f"{run.name}: reaches the edge", bool(reached.size),
                  f"max η·λ_1 / 2 = {ratio.max():.3f} (≥ {1 - EDGE_REACH:g} required)"),
        Condition(f"{run.name}: stays at the edge", bool(reached.size) and stay >= EDGE_STAY,
                  f"{100 * stay:.0f}% of the evaluations after reaching it within ±"
                  f"{100 * EDGE_BAND:.0f}% of 2 ({100 * EDGE_STAY:.0f}% required)")]
  if not gd:
    conditions.append(Condition("runs", None, "no full-batch runs"))
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
              for c in v.conditions]
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
