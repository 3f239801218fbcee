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
  for run, hint in ((start, "%"), (end, "still rising")):
    v = claims.claim_rise([run])
    assert v.verdict == claims.FAILS
    assert any("maximum inside the run" in r and hint in r for r in v.reasons), v.reasons
  assert not claims.rise_conditions(end)[0][0].passed is False  # it did rise


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
  assert any("no maximum inside the run" in r and "falls0" in r for r in v.reasons)


def analysis_rows(peak_at=0.3, ups=(1.0,) * 8, widths=(0.5,) * 8, n=20):
  lam = bump(30.0, at=peak_at, n=n)
  rows = lambda_rows(lam, np.linspace(0, 10, n), {"eos/eta_lambda_max": 1.8})
  after = [r for r in rows if r["epoch"] > 10 * peak_at + 1]
  for row, up, width in zip(after, ups, widths):
    row["step_loss_change/e1/x1"] = up
    row["cross_section/width_e1"] = width
  return rows


def test_overshoot_holds_fails_and_needs_enough_evaluations(tmp_path):
  good = write_run(tmp_path / "good", sgd_config(), analysis_rows())
  assert claims.claim_overshoot([good]).verdict == claims.HOLDS
  no_up = write_run(tmp_path / "noup", sgd_config(), analysis_rows(ups=(-1.0,) * 6 + (1.0,) * 2))
  v = claims.claim_overshoot([no_up])
  assert v.verdict == claims.FAILS and any("increases the loss" in r for r in v.reasons)
  wide = write_run(tmp_path / "wide", sgd_config(), analysis_rows(widths=(4.0,) * 8))
  v = claims.claim_overshoot([wide])
  assert v.verdict == claims.FAILS and any("within one SGD step" in r for r in v.reasons)
  few = write_run(tmp_path / "few", sgd_config(), analysis_rows(ups=(1.0,) * 3, widths=(0.5,) * 3))
  assert claims.claim_overshoot([few]).verdict == claims.INCONCLUSIVE


def nsgd_run(tmp_path, name, gamma, final_lambda, early_loss, test_acc, seed, lr=0.1):
  config = {"optimizer": {"name": "nsgd" if gamma != 1 else "sgd", "learning_rate": lr},
            "nsgd": {"gamma": gamma}, "batch_size": 128, "seed": seed}
  rows = []
  for e in range(9):
    rows.append({"step": 10 * e, "epoch": float(e), "hessian/lambda_1": final_lambda,
                 "train/loss": early_loss if e <= 2 else early_loss / 2,
                 "valid/accuracy": 0.8, "test/accuracy": test_acc})
  return write_run(tmp_path / f"{name}_s{seed}", config, rows)


def test_nsgd_holds_and_is_inconclusive_when_the_gain_is_within_noise(tmp_path):
  base = [nsgd_run(tmp_path, "sgd", 1.0, 10 + s, 0.5 + 0.01 * s, 0.85 + 0.002 * s, s)
          for s in range(3)]
  sharp = [nsgd_run(tmp_path, "g01", 0.1, 30 + s, 0.3 + 0.01 * s, 0.87 + 0.002 * s, s)
           for s in range(3)]
  v = claims.claim_nsgd(base + sharp)
  assert v.verdict == claims.HOLDS, v.reasons
  assert v.statistics["early_epoch"] == pytest.approx(2.0)
  tied = [nsgd_run(tmp_path, "g001", 0.01, 30 + s, 0.3 + 0.01 * s, 0.85 + 0.004 * (s - 1), s)
          for s in range(3)]
  v = claims.claim_nsgd(base + tied)
  assert v.verdict == claims.INCONCLUSIVE
  assert [r for r in v.reasons if "test accuracy" in r and "within the seed spread" in r]


def test_nsgd_fails_when_flatter(tmp_path):
  base = [nsgd_run(tmp_path, "sgd", 1.0, 30 + s, 0.5, 0.85, s) for s in range(3)]
  flat = [nsgd_run(tmp_path, "g01", 0.1, 10 + s, 0.5, 0.85, s) for s in range(3)]
  v = claims.claim_nsgd(base + flat)
  assert v.verdict == claims.FAILS and any("sharper final" in r for r in v.reasons)


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


def eos_run(tmp_path, name, ratio):
  config = {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "full_batch": True}
  rows = [{"step": 5 * i, "epoch": 5.0 * i, "eos/eta_lambda_max": 2 * float(r),
           "eos/threshold": 2.0, "hessian/lambda_1": 20 * float(r)} for i, r in enumerate(ratio)]
  return write_run(tmp_path / name, config, rows)


def test_edge_holds_and_names_each_failure(tmp_path):
  rising = np.concatenate([np.linspace(0.2, 1.0, 20), 1 + 0.1 * np.sin(np.arange(40))])
  assert claims.claim_edge([eos_run(tmp_path, "good", rising)]).verdict == claims.HOLDS
  sharp_start = np.concatenate([np.ones(5), 1 + 0.1 * np.sin(np.arange(40))])
  v = claims.claim_edge([eos_run(tmp_path, "sharp", sharp_start)])
  assert v.verdict == claims.FAILS and any("flat start" in r for r in v.reasons)
  never = np.linspace(0.2, 0.7, 40)
  v = claims.claim_edge([eos_run(tmp_path, "never", never)])
  assert any("reaches the edge" in r for r in v.reasons) and v.verdict == claims.FAILS
  leaves = np.concatenate([np.linspace(0.2, 1.0, 10), np.full(30, 0.5)])
  v = claims.claim_edge([eos_run(tmp_path, "leaves", leaves)])
  assert v.verdict == claims.FAILS and any("stays at the edge" in r for r in v.reasons)


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
