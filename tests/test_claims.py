"""The claims report on synthetic run directories: every verdict reachable, each failure named."""

import json
import os

import numpy as np
import pytest

from sharp_dirs.engine import metrics_io
from sharp_dirs.report import claims


def write_run(path, config, rows):
  """A run directory with ``config`` (nested dict) and ``rows`` (dicts with 'step', 'epoch')."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f)
  with open(os.path.join(path, metrics_io.METRICS), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(path, "status.json"), "w", encoding="utf-8") as f:
    json.dump({"status": "finished"}, f)
  return metrics_io.read_run(str(path))


def sgd_config(lr=0.1, bs=128, **extra):
  return {"optimizer": {"name": "sgd", "learning_rate": lr}, "batch_size": bs,
          "tracking": {"zoom_epochs": 0.0}, **extra}


def lambda_rows(curve, epochs=None, extra=None):
  epochs = np.linspace(0, 10, len(curve)) if epochs is None else epochs
  return [{"step": i, "epoch": float(e), "hessian/lambda_1": float(v), **(extra or {})}
          for i, (e, v) in enumerate(zip(epochs, curve))]


def bump(peak, at=0.4, start=2.0, n=41, end=None):
  """λ_1 rising from ``start`` to ``peak`` at fraction ``at`` of the run, then falling."""
  t = np.linspace(0, 1, n)
  end = peak * 0.6 if end is None else end
  return np.where(t <= at, start + (peak - start) * t / at,
                  peak + (end - peak) * (t - at) / (1 - at))


def test_rise_holds_for_an_interior_peak(tmp_path):
  run = write_run(tmp_path / "a", sgd_config(), lambda_rows(bump(20.0)))
  v = claims.claim_rise([run])
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["a"]["rise"] == pytest.approx(claims.find_peak(run).rise)
  assert v.statistics["a"]["rise"] > 5


def test_rise_fails_without_a_rise(tmp_path):
  run = write_run(tmp_path / "flat", sgd_config(), lambda_rows(bump(3.0, start=2.0)))
  v = claims.claim_rise([run])
  assert v.verdict == claims.FAILS
  assert any("rises" in r for r in v.reasons)
  assert not any("inside" in r for r in v.reasons)  # its maximum is interior: only the rise fails


def test_rise_fails_when_the_maximum_is_the_start_or_the_end(tmp_path):
  start = write_run(tmp_path / "start", sgd_config(), lambda_rows(np.linspace(30, 5, 41)))
  end = write_run(tmp_path / "end", sgd_config(), lambda_rows(np.linspace(2, 30, 41)))
  v = claims.claim_rise([start])
  assert v.verdict == claims.FAILS and any("rises" in r for r in v.reasons), v.reasons
  v = claims.claim_rise([end])
  assert v.verdict == claims.FAILS
  assert any("decreases or stabilizes" in r and "still rising" in r for r in v.reasons)
  assert not claims.rise_conditions(end)[0][0].passed is False  # it did rise


def test_rise_holds_for_a_plateau_within_its_noise(tmp_path):
  """The paper: λ_1 rises, then "decreases or stabilizes". A plateau from 30% of the run that
  creeps up by less than one evaluation's noise σ (logged hessian/noise_1) passes, though its
  maximum is at the end (the stricter reading, reported, fails); the same creep with a σ
  smaller than it fails."""
  t = np.linspace(0, 1, 41)
  curve = np.where(t < 0.3, 2 + 88 * t / 0.3, 90 + 4 * (t - 0.3) / 0.7)
  plateau = write_run(tmp_path / "plateau", sgd_config(),
                      lambda_rows(curve, extra={"hessian/noise_1": 5.0}))
  v = claims.claim_rise([plateau])
  assert v.verdict == claims.HOLDS, v.reasons
  stricter = [c for c in v.conditions if not c.decides]
  assert len(stricter) == 1 and stricter[0].passed is False
  assert "does not decide" in claims.to_markdown([v])
  creep = write_run(tmp_path / "creep", sgd_config(),
                    lambda_rows(curve, extra={"hessian/noise_1": 0.5}))
  assert claims.claim_rise([creep]).verdict == claims.FAILS
  peak = claims.find_peak(plateau)
  assert peak.noise == 5.0 and peak.settled_position < claims.SETTLED_BY < peak.position


def test_rise_is_inconclusive_without_evaluations(tmp_path):
  run = write_run(tmp_path / "short", sgd_config(), lambda_rows([2.0, 3.0]))
  assert claims.claim_rise([run]).verdict == claims.INCONCLUSIVE


def grid(tmp_path, peaks_by_lr, bs=128):
  runs = []
  for lr, peaks in peaks_by_lr.items():
    for seed, peak in enumerate(peaks):
      runs.append(write_run(tmp_path / f"lr{lr}_bs{bs}_s{seed}", sgd_config(lr, bs, seed=seed),
                            lambda_rows(bump(peak))))
  return runs


def test_peak_order_holds_when_ordered_beyond_the_seed_spread(tmp_path):
  runs = grid(tmp_path, {0.01: [60, 64], 0.03: [30, 33], 0.1: [12, 13]})
  v = claims.claim_peak_order(runs)
  lr_conditions = [c for c in v.conditions if "η" in c.name]
  assert [c.passed for c in lr_conditions] == [True, True]
  # No S grid in these runs: the S half of the claim cannot be judged.
  assert v.verdict == claims.INCONCLUSIVE
  assert any("S grid" in r for r in v.reasons)


def test_peak_order_with_both_axes(tmp_path):
  runs = grid(tmp_path, {0.01: [60, 64], 0.1: [12, 13]})
  runs += grid(tmp_path, {0.1: [20, 22]}, bs=512)
  v = claims.claim_peak_order(runs)
  assert v.verdict == claims.HOLDS, v.reasons


def test_peak_order_is_inconclusive_within_the_seed_spread(tmp_path):
  runs = grid(tmp_path, {0.01: [30, 50], 0.1: [28, 45]}) + grid(tmp_path, {0.1: [60, 62]}, 512)
  v = claims.claim_peak_order(runs)
  assert v.verdict == claims.INCONCLUSIVE
  assert any("within the seed spread" in r for r in v.reasons)


def test_peak_order_fails_when_reversed(tmp_path):
  runs = grid(tmp_path, {0.01: [12, 13], 0.1: [60, 64]}) + grid(tmp_path, {0.1: [70, 72]}, 512)
  v = claims.claim_peak_order(runs)
  assert v.verdict == claims.FAILS
  assert any("larger η" in r for r in v.reasons)


def test_peak_order_does_not_count_a_start_as_a_peak(tmp_path):
  """η = 0.1 'peaks' at initialization: the ordering is not judged for it."""
  runs = grid(tmp_path, {0.01: [60, 64]})
  for seed in range(2):
    runs.append(write_run(tmp_path / f"falls{seed}", sgd_config(0.1, seed=seed),
                          lambda_rows(np.linspace(20, 5, 41))))
  runs += grid(tmp_path, {0.1: [20, 22]}, bs=512)
  v = claims.claim_peak_order(runs)
  assert v.verdict == claims.INCONCLUSIVE
  assert any("no peak" in r and "falls0" in r for r in v.reasons)


def analysis_rows(path, peak_at=0.3, ups=(1.0,) * 8, halves=(-1.0,) * 8, minima=(0.5,) * 8,
                  widths=(0.5,) * 8, n=20):
  """λ_1 peaking at ``peak_at``; after it, the loss change of a γ = 1 and a γ = 0.5 step along
  e_1, the cross-section width, and cross-section arrays whose minimum along e_1 lies at
  offset ``minima[i]`` (SGD step lengths)."""
  lam = bump(30.0, at=peak_at, n=n)
  rows = lambda_rows(lam, np.linspace(0, 10, n), {"eos/eta_lambda_max": 1.8})
  after = [r for r in rows if r["epoch"] > 10 * peak_at + 1]
  offsets = np.array([-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0])
  os.makedirs(path / "arrays" / "cross_section", exist_ok=True)
  for row, up, half, minimum, width in zip(after, ups, halves, minima, widths):
    row["step_loss_change/e1/x1"] = up
    row["step_loss_change/e1/x0.5"] = half
    row["cross_section/width_e1"] = width
    losses = np.stack([(offsets - minimum) ** 2, offsets ** 2, offsets ** 2])  # e_1, e_3, e_5
    np.savez(path / "arrays" / "cross_section" / f"{row['step']}.npz", offsets=offsets,
             losses=losses, directions=np.array([0, 2, 4]))
  return rows


def overshoot(tmp_path, name, **kwargs):
  return claims.claim_overshoot(
      [write_run(tmp_path / name, sgd_config(), analysis_rows(tmp_path / name, **kwargs))])


def test_overshoot_holds_fails_and_needs_enough_evaluations(tmp_path):
  v = overshoot(tmp_path, "good")
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["minima_step_lengths"] == [0.5] * 8
  v = overshoot(tmp_path, "noup", ups=(-1.0,) * 6 + (1.0,) * 2)
  assert v.verdict == claims.FAILS and any("γ = 1 step" in r for r in v.reasons)
  v = overshoot(tmp_path, "nohalf", halves=(1.0,) * 8)
  assert v.verdict == claims.FAILS and any("γ = 0.5 step" in r for r in v.reasons)
  v = overshoot(tmp_path, "far", minima=(2.0,) * 8)
  assert v.verdict == claims.FAILS and any("minimum of the loss" in r for r in v.reasons)
  v = overshoot(tmp_path, "few", ups=(1.0,) * 3, halves=(-1.0,) * 3, minima=(0.5,) * 3)
  assert v.verdict == claims.INCONCLUSIVE


def test_overshoot_reports_the_one_percent_width_without_deciding(tmp_path):
  """The 1%-width rule needs the downhill side to rise within one step (on a quadratic
  η·λ > 2): reported, not deciding."""
  v = overshoot(tmp_path, "wide", widths=(4.0,) * 8)
  assert v.verdict == claims.HOLDS, v.reasons
  width = [c for c in v.conditions if "1%" in c.name]
  assert len(width) == 1 and width[0].passed is False and not width[0].decides
  assert "median width 4" in width[0].detail


def nsgd_run(tmp_path, name, gamma, final_lambda, loss, test_acc, seed, lr=0.1):
  """Evaluations at epochs 0..8; the training loss is ``loss`` from epoch 3 on (the C4
  reading is at half the run, epoch 4)."""
  config = {"optimizer": {"name": "nsgd" if gamma != 1 else "sgd", "learning_rate": lr},
            "nsgd": {"gamma": gamma}, "batch_size": 128, "seed": seed}
  rows = []
  for e in range(9):
    rows.append({"step": 10 * e, "epoch": float(e), "hessian/lambda_1": final_lambda,
                 "train/loss": 2.0 if e <= 2 else loss,
                 "valid/accuracy": 0.8, "test/accuracy": test_acc})
  return write_run(tmp_path / f"{name}_s{seed}", config, rows)


def test_t_quantiles_match_scipy():
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  for q in claims.T_QUANTILES:
    for df in range(1, 35):
      assert claims.t_quantile(q, df) == pytest.approx(
          scipy_stats.t.ppf(q, df), rel=2e-3 if df <= 30 else 0.05)


SPREAD = (0.0, 0.3, -0.2, 0.5, -0.4, 0.1)  # the seed-to-seed variation both optimizers share


def test_nsgd_paired_by_seed_holds_where_the_seed_spread_would_hide_it(tmp_path):
  """A gain smaller than the seed spread but the same in every seed: paired, it holds (the
  interval-overlap rule before issue 26 could never see it)."""
  base = [nsgd_run(tmp_path, "sgd", 1.0, 20 + 10 * d, 0.5 + d, 0.80 + 0.05 * d, s)
          for s, d in enumerate(SPREAD)]
  sharp = [nsgd_run(tmp_path, "g001", 0.01, 26 + 10 * d + 0.1 * s, 0.4 + d + 0.01 * s,
                    0.80 + 0.05 * d + 0.001 * s, s) for s, d in enumerate(SPREAD)]
  v = claims.claim_nsgd(base + sharp)
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["loss_epoch"] == pytest.approx(4.0)
  paired = v.statistics["γ = 0.01 vs γ = 1 at η = 0.1: paired"]
  assert paired["final_lambda_1"]["mean"] == pytest.approx(6.25)
  assert paired["final_lambda_1"]["n"] == 6
  assert paired["train_loss_decrease"]["mean"] == pytest.approx(0.075)


def test_nsgd_is_inconclusive_within_the_paired_noise(tmp_path):
  noise = (0.3, -0.3, 0.2, -0.25, 0.1)
  base = [nsgd_run(tmp_path, "sgd", 1.0, 20, 0.5, 0.80, s) for s in range(5)]
  tied = [nsgd_run(tmp_path, "g01", 0.1, 20 + 10 * n, 0.5 + n, 0.80 + 0.01 * n, s)
          for s, n in enumerate(noise)]
  v = claims.claim_nsgd(base + tied)
  assert v.verdict == claims.INCONCLUSIVE
  names = [r.split(":")[1] for r in v.reasons]
  assert any("sharper" in r for r in names) and any("lower training loss" in r for r in names)
  # A 0.2-point accuracy wobble is well inside the 1-point margin: non-inferior.
  assert not any("test accuracy" in r for r in v.reasons)


def test_nsgd_fails_when_flatter_or_worse_beyond_the_margin(tmp_path):
  base = [nsgd_run(tmp_path, "sgd", 1.0, 30 + s, 0.5, 0.85 + 0.01 * s, s) for s in range(4)]
  flat = [nsgd_run(tmp_path, "g01", 0.1, 10 + s, 0.5, 0.85 + 0.01 * s, s) for s in range(4)]
  v = claims.claim_nsgd(base + flat)
  assert v.verdict == claims.FAILS and any("sharper final" in r for r in v.reasons)
  worse = [nsgd_run(tmp_path, "g001", 0.01, 40 + s, 0.4, 0.82 + 0.01 * s - 0.001 * (s % 2), s)
           for s in range(4)]
  v = claims.claim_nsgd(base + worse)
  assert v.verdict == claims.FAILS
  assert [r for r in v.reasons if "at most 1 point lower" in r] and len(v.reasons) == 1


def test_nsgd_judges_the_main_k_and_leaves_the_k_ablation_out(tmp_path):
  """K-ablation runs share γ and seeds with the main grid: they are not pooled into (nor
  overwrite) its pairs."""
  base = [nsgd_run(tmp_path, "sgd", 1.0, 20 + 10 * d, 0.5 + d, 0.80, s)
          for s, d in enumerate(SPREAD)]
  main = [nsgd_run(tmp_path, "g001", 0.01, 26 + 10 * d, 0.4 + d, 0.80, s)
          for s, d in enumerate(SPREAD)]
  for run in main:
    run.config["nsgd"]["num_directions"] = 5
  ablation = [nsgd_run(tmp_path, "g001_k1", 0.01, 5.0, 2.0, 0.5, s) for s in range(2)]
  for run in ablation:
    run.config["nsgd"]["num_directions"] = 1
  v = claims.claim_nsgd(base + main + ablation)
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["γ = 0.01 vs γ = 1 at η = 0.1: paired"]["final_lambda_1"]["mean"] == 6.0


def test_nsgd_needs_seeds_in_both_groups(tmp_path):
  base = [nsgd_run(tmp_path, "sgd", 1.0, 30, 0.5, 0.85, 0)]
  other = [nsgd_run(tmp_path, "g01", 0.1, 40, 0.4, 0.85, 1)]  # another seed: nothing to pair
  v = claims.claim_nsgd(base + other)
  assert v.verdict == claims.INCONCLUSIVE and all("needs ≥ 2 seeds" in r for r in v.reasons)


def rescaling_run(tmp_path, gamma, level, noise=0.5):
  rule = "remove" if gamma == 0 else "constant"
  config = {"optimizer": {"name": "sgd" if gamma == 1 else "nsgd"},
            "nsgd": {"rule": rule, "gamma": gamma, "freeze_directions": False}}
  lam = level + noise * np.sin(np.arange(20))
  return write_run(tmp_path / f"g{gamma}", config, lambda_rows(lam, np.arange(20.0)))


def test_steering_holds_fails_and_is_inconclusive(tmp_path):
  ordered = [rescaling_run(tmp_path / "o", g, 40 - 5 * g) for g in (0, 0.5, 1, 2, 4)]
  assert claims.claim_steering(ordered).verdict == claims.HOLDS
  reversed_ = [rescaling_run(tmp_path / "r", g, 20 + 5 * g) for g in (0, 0.5, 1, 2, 4)]
  v = claims.claim_steering(reversed_)
  assert v.verdict == claims.FAILS and any("decreases with γ" in r for r in v.reasons)
  noisy = [rescaling_run(tmp_path / "n", g, 30 - 0.1 * g, noise=5) for g in (0, 0.5, 1, 2, 4)]
  v = claims.claim_steering(noisy)
  assert v.verdict == claims.INCONCLUSIVE and any("beyond the spread" in r for r in v.reasons)


def eos_run(tmp_path, name, ratio, lr=0.02):
  config = {"optimizer": {"name": "sgd", "learning_rate": lr}, "full_batch": True}
  rows = [{"step": 5 * i, "epoch": 5.0 * i, "eos/eta_lambda_max": 2 * float(r),
           "eos/threshold": 2.0, "hessian/lambda_1": 2 * float(r) / lr}
          for i, r in enumerate(ratio)]
  return write_run(tmp_path / name, config, rows)


RISE = np.linspace(0.2, 1.0, 20)  # η·λ_1 / 2 from a flat start to the edge


def test_edge_holds_on_a_hovering_trace_and_names_each_failure(tmp_path):
  # Hovering: η·λ_1 near 2 with spikes and dips beyond ±20% in a third of the evaluations;
  # its rolling median stays within the band.
  i = np.arange(40)
  hover = np.where(i % 3 == 0, 1.6, np.where(i % 7 == 1, 0.6, 1 + 0.08 * np.sin(i)))
  v = claims.claim_edge([eos_run(tmp_path, "good", np.concatenate([RISE, hover]))])
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["good"]["fraction_median_within_band"] == 1.0
  assert v.statistics["good"]["fraction_within_band"] < claims.EDGE_STAY  # each: fails
  sharp_start = np.concatenate([np.ones(5), 1 + 0.1 * np.sin(np.arange(40))])
  v = claims.claim_edge([eos_run(tmp_path, "sharp", sharp_start)])
  assert v.verdict == claims.FAILS and any("flat start" in r for r in v.reasons)
  never = np.linspace(0.2, 0.7, 40)
  v = claims.claim_edge([eos_run(tmp_path, "never", never)])
  assert any("reaches the edge" in r for r in v.reasons) and v.verdict == claims.FAILS
  leaves = np.concatenate([np.linspace(0.2, 1.0, 10), np.full(30, 0.5)])
  v = claims.claim_edge([eos_run(tmp_path, "leaves", leaves)])
  assert v.verdict == claims.FAILS and any("stays at the edge" in r for r in v.reasons)
  short = np.concatenate([RISE, np.ones(4)])  # reaches the edge, then the run ends
  v = claims.claim_edge([eos_run(tmp_path, "short", short)])
  assert v.verdict == claims.INCONCLUSIVE and any("at least 10" in r for r in v.reasons)


def test_edge_fails_on_a_catapulting_trace_and_reports_larger_eta(tmp_path):
  """Catapults: η·λ_1 shoots to several times 2 and falls back, in cycles; the rolling
  median sits far above the band. At the family's smallest η it decides; at a larger η it
  is reported only."""
  cycle = np.array([0.9, 1.2, 1.7, 2.4, 4.2, 3.7, 2.4, 0.7])
  catapults = np.concatenate([RISE, np.tile(cycle, 5)])
  hover = np.concatenate([RISE, np.ones(40)])
  v = claims.claim_edge([eos_run(tmp_path, "catapult", catapults)])
  assert v.verdict == claims.FAILS and any("stays at the edge" in r for r in v.reasons)
  gentle = eos_run(tmp_path, "gentle", hover, lr=0.02)
  wild = eos_run(tmp_path, "wild", catapults, lr=0.1)
  v = claims.claim_edge([wild, gentle])
  assert v.verdict == claims.HOLDS, v.reasons
  reported = [c for c in v.conditions if not c.decides]
  assert reported and all("η = 0.1, reported" in c.name or "stricter" in c.name
                          for c in reported)
  assert any(c.passed is False and "wild: stays" in c.name for c in reported)


def test_report_markdown_and_json_name_every_condition(tmp_path):
  run = write_run(tmp_path / "a", sgd_config(), lambda_rows(np.linspace(2, 30, 41)))
  verdicts = [claims.claim_rise([run]), claims.claim_peak_order([run])]
  text = claims.to_markdown(verdicts)
  assert "| C1 |" in text and "**fails**" in text and "still rising" in text
  assert "**inconclusive**" in text
  data = json.loads(claims.to_json(verdicts))
  assert [d["verdict"] for d in data] == ["fails", "inconclusive"]
  assert data[0]["conditions"][1]["passed"] is False


def test_report_script_judges_families_and_marks_missing_ones(tmp_path):
  """experiments/claims.py on a directory with one family: its claims judged, the rest
  inconclusive with the missing family named; claims.md and claims.json written."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = tmp_path / "runs"
  grid(root / "noise_grid", {0.01: [60, 64], 0.1: [12, 13]})
  grid(root / "noise_grid", {0.1: [20, 22]}, bs=512)
  script = os.path.join(os.path.dirname(__file__), "..", "experiments", "claims.py")
  out = subprocess.run([sys.executable, script, f"--runs={root}", f"--out={tmp_path / 'out'}"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  data = json.loads((tmp_path / "out" / "claims.json").read_text())
  assert [d["claim"] for d in data] == ["C1", "C2", "C3", "C4", "C5", "C6"]
  assert [d["verdict"] for d in data] == ["holds", "holds"] + ["inconclusive"] * 4
  assert "no runs in sharp_analysis/" in (tmp_path / "out" / "claims.md").read_text()
  assert "| C2 |" in out.stdout
  # A run still going (no final status) is listed, not judged.
  os.remove(root / "noise_grid" / "lr0.01_bs128_s0" / "status.json")
  out = subprocess.run([sys.executable, script, f"--runs={root}", f"--out={tmp_path / 'out'}"],
                       capture_output=True, text=True, timeout=300)
  assert "Not judged, unfinished: noise_grid/lr0.01_bs128_s0." in out.stdout
  judged = json.loads((tmp_path / "out" / "claims.json").read_text())[0]["runs"]
  assert len(judged) == 5 and not any(r.endswith("lr0.01_bs128_s0") for r in judged)
  missing = subprocess.run([sys.executable, script, f"--runs={tmp_path / 'nowhere'}"],
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and "run `make figures` first" in missing.stderr


def test_edge_median_weighs_odd_and_even_steps_alike():
  """Tracked every 5 steps, the evaluations alternate between odd and even steps; at the
  edge GD's η·λ_1 alternates between two levels: the even window's median is their middle."""
  alternating = np.tile([0.9, 1.3], 10)
  assert np.allclose(claims.rolling_median(alternating, claims.EDGE_MEDIAN)[6:], 1.1)
  assert claims.rolling_median(np.array([3.0, 1.0, 2.0]), 2).tolist() == [3.0, 2.0, 1.5]


def test_nsgd_reads_the_loss_at_half_of_the_compared_runs(tmp_path):
  """An SGD row at another η or a γ = 5 run that stopped early does not move the epoch of the
  loss reading (a bug of the first gallery report: it took half of the family's shortest
  run)."""
  base = [nsgd_run(tmp_path, "sgd", 1.0, 20 + 10 * d, 0.5 + d, 0.80, s)
          for s, d in enumerate(SPREAD)]
  sharp = [nsgd_run(tmp_path, "g001", 0.01, 26 + 10 * d, 0.4 + d, 0.80, s)
           for s, d in enumerate(SPREAD)]
  other = write_run(tmp_path / "sgd_lr0.3", {"optimizer": {"name": "sgd", "learning_rate": 0.3},
                                             "seed": 0},
                    [{"step": 0, "epoch": 0.0, "valid/accuracy": 0.5, "train/loss": 2.0},
                     {"step": 20, "epoch": 2.0, "valid/accuracy": 0.5, "train/loss": 2.0}])
  unstable = [nsgd_run(tmp_path, "g5", 5.0, 5.0, 2.0, 0.3, s) for s in range(2)]
  for run in unstable:  # γ = 5 at the same η, early-stopped at epoch 2
    run.rows[:] = run.rows[:3]
  v = claims.claim_nsgd(base + sharp + [other] + unstable)
  assert v.statistics["loss_epoch"] == pytest.approx(4.0), v.statistics["loss_epoch"]
  assert v.verdict == claims.HOLDS, v.reasons
