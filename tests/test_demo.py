"""`make demo`'s job runs end to end on the real Fashion-MNIST (tiny settings) and rejects bad flags."""

import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "demo.py"


def run_demo(*flags):
  return subprocess.run([sys.executable, str(DEMO), *flags], capture_output=True, text=True,
                        timeout=900)


def test_demo_tracks_the_top_eigenvalues_with_warm_starts():
  out = run_demo("--num_steps=1", "--eval_every=1", "--k=2", "--lanczos_steps=5",
                 "--hessian_examples=64", "--batch_size=32")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if "λ_1..λ_2" in l]
  assert len(lines) == 2, out.stdout
  assert "cold" in lines[0] and "warm" in lines[1]
  assert "50000 train / 10000 valid / 10000 test" in out.stdout


def test_demo_rejects_a_bad_flag_with_a_clear_message():
  out = run_demo("--eval_every=0")
  assert out.returncode != 0
  assert "--eval_every" in out.stderr
