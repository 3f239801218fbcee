"""`make demo`'s job end to end on real Fashion-MNIST (tiny settings): runs, figures, summary."""

import json
import pathlib
import subprocess
import sys

import numpy as np

from sharp_dirs import figures
from sharp_dirs import metrics_io

DEMO = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "demo.py"


def run_demo(*flags):
  return subprocess.run([sys.executable, str(DEMO), *flags], capture_output=True, text=True,
                        timeout=900)


def test_demo_trains_tracks_plots_and_summarizes(tmp_path):
  out = run_demo("--learning_rates=0.2,0.05", "--num_epochs=2", "--num_train_examples=512",
                 "--hessian_examples=256", "--k=2", "--hidden=16", f"--workdir={tmp_path}",
                 f"--figures_dir={tmp_path / 'figures'}")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert [r["learning_rate"] for r in summary["runs"]] == [0.05, 0.2]
  for row in summary["runs"]:
    run = metrics_io.read_run(row["workdir"])
    assert row["status"] == "finished"
    assert row["peak_lambda_max"] == figures.peak_lambda_max(run)
    steps, lam = run.series("hessian/lambda_1")
    np.testing.assert_array_equal(steps, [0, 4, 8])  # 4 steps of 128 per epoch of 512
    assert row["final_lambda_max"] == lam[-1] > 0
    _, acc = run.series("test/accuracy")
    assert row["final_test_accuracy"] == acc[-1]
    assert row["batch_size"] == 128
  peaks = [r["peak_lambda_max"] for r in summary["runs"]]
  assert summary["claim_holds"] == (peaks[0] > peaks[1])
  for name in ("demo_noise_grid", "demo_edge_of_stability"):
    for ext in ("png", "pdf"):
      assert (tmp_path / "figures" / f"{name}.{ext}").stat().st_size > 5000
  assert "The paper's claim" in out.stdout and "peak λ_1" in out.stdout
  # A second call reuses the finished runs instead of training again.
  again = run_demo("--learning_rates=0.2,0.05", "--num_epochs=2", f"--workdir={tmp_path}",
                   f"--figures_dir={tmp_path / 'figures'}")
  assert again.returncode == 0 and "Training the MLP" not in again.stdout


def test_demo_rejects_bad_flags_with_a_clear_message(tmp_path):
  out = run_demo("--learning_rates=fast")
  assert out.returncode != 0
  assert "--learning_rates must be numbers" in out.stderr
  out = run_demo("--batch_size=20000", f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "config.batch_size = 20000 is not valid: must be <= the 10000" in out.stderr
