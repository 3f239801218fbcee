"""`make demo`'s job end to end on real Fashion-MNIST (tiny settings): runs, figures, verdicts."""

import json
import pathlib
import subprocess
import sys

import numpy as np

from sharp_dirs.engine import metrics_io
from sharp_dirs.report import claims

DEMO = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "demo.py"
TINY = ["--learning_rates=0.2,0.05", "--num_epochs=2,1", "--num_train_examples=512",
        "--epoch_size=256", "--hessian_examples=64", "--eval_examples=256", "--k=2",
        "--features=2"]


def run_demo(*flags):
  return subprocess.run([sys.executable, str(DEMO), *flags], capture_output=True, text=True,
                        timeout=900)


def test_demo_trains_tracks_plots_judges_and_summarizes(tmp_path):
  flags = [*TINY, f"--workdir={tmp_path}", f"--figures_dir={tmp_path / 'figures'}"]
  out = run_demo(*flags)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert [r["learning_rate"] for r in summary["runs"]] == [0.05, 0.2]
  runs = []
  for row in summary["runs"]:
    run = metrics_io.read_run(row["workdir"])
    runs.append(run)
    assert row["status"] == "finished"
    peak = claims.find_peak(run)  # None for the 1-epoch run: too few evaluations to smooth
    if peak is None:
      assert np.isnan(row["peak_lambda_max"]) and np.isnan(row["peak_epoch"])
    else:
      assert row["peak_lambda_max"] == peak.lambda_peak
    steps, lam = run.series("hessian/lambda_1")
    # Epochs of 2 steps (256 examples), tracked at each; per-η lengths: 2 epochs at η = 0.2,
    # 1 at η = 0.05.
    np.testing.assert_array_equal(steps, {0.2: [0, 2, 4], 0.05: [0, 2]}[row["learning_rate"]])
    assert row["final_lambda_max"] == lam[-1] > 0
    _, acc = run.series("test/accuracy")
    assert row["final_test_accuracy"] == acc[-1]
    assert row["batch_size"] == 128
    # N = 64 examples in two batches of 32, not rounded up to one batch of the cpu scale's 256.
    assert (run.config["tracking"]["num_examples"], run.config["tracking"]["batch_size"]) == (
        64, 32)
  # The verdicts are the claims module's own on these runs, and the output names them.
  expected = [claims.claim_rise(runs).verdict,
              claims.claim_peak_order(runs, axes=(claims.LR,)).verdict]
  assert [v["verdict"] for v in summary["verdicts"]] == expected
  assert summary["claim_holds"] == (expected == [claims.HOLDS] * 2)
  for v in summary["verdicts"]:
    assert f"{v['claim']} (" in out.stdout and v["verdict"].upper() in out.stdout
  for name in ("demo_noise_grid", "demo_edge_of_stability"):
    for ext in ("png", "pdf"):
      assert (tmp_path / "figures" / f"{name}.{ext}").stat().st_size > 5000
  assert "[run 1 of 2" in out.stdout and "peak λ_1" in out.stdout
  # A second call reuses the finished runs instead of training again ...
  again = run_demo(*flags)
  assert again.returncode == 0 and "reused" in again.stdout
  assert ": training (S =" not in again.stdout  # the line a run that trains prints
  # ... but never a run made with other settings.
  other = run_demo(*flags, "--hessian_examples=32")
  assert other.returncode != 0
  assert "holds a run made with other settings" in other.stderr
  assert "tracking.num_examples" in other.stderr


def test_demo_rejects_bad_flags_with_a_clear_message(tmp_path):
  out = run_demo("--learning_rates=fast")
  assert out.returncode != 0
  assert "--learning_rates must be numbers" in out.stderr
  out = run_demo("--learning_rates=0.1,0.2", "--num_epochs=1,2,3")
  assert out.returncode != 0
  assert "--num_epochs gives 3 values for 2 learning rates" in out.stderr
  out = run_demo("--batch_size=20000", f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "config.batch_size = 20000 is not valid: must be <= the 10000" in out.stderr
