"""Smoke tests of the benchmark scripts: they run end to end at tiny sizes (numbers not read)."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
# Benchmarks run in subprocesses skip most XLA optimizations too (conftest.fast_compiles):
# compiling is most of a smoke run, and the numbers are not read.
FAST_COMPILE = "JAX_DISABLE_MOST_OPTIMIZATIONS"


def fast_env():
  return {**os.environ, FAST_COMPILE: "1"}


def load_script(name):
  """The script ``bench/<name>.py`` as a module (bench/ on the path, as when run as a script)."""
  if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
  spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_user_conv_quick(capsys):
  """Every path of bench_user_conv.py on the MLP (the conv model's layouts are checked in
  tests/test_conv_layout.py; its numbers are the benchmark's)."""
  bench = load_script("bench_user_conv")
  rows = bench.main(["--quick", "--models", "mlp", "--num-batches", "2"])
  out = capsys.readouterr().out
  assert "| mlp | hessian_top_k, default (CPU: canonical_convs on) |" in out
  assert len(rows) == 1 + len(bench.PATHS)
  assert all(math.isfinite(row[2]) and row[2] >= 0 for row in rows)


def test_bench_sharding_quick():
  """bench_sharding.py at tiny sizes, one process each for 1 and 2 simulated devices."""
  rows = load_script("bench_sharding").main(["--quick"])
  assert {r[0] for r in rows} == {1, 2} and all(math.isfinite(r[3]) and r[3] > 0 for r in rows)


def test_bench_train_quick():
  """bench_train.py on a tiny MLP: the SGD/NSGD step and tracking timings are positive."""
  import subprocess
  import sys
  out = subprocess.run([sys.executable, str(BENCH / "bench_train.py"), "--quick",
                        "--models=mlp", "--repeats=2", "--track_repeats=1"],
                       capture_output=True, text=True, timeout=600, env=fast_env())
  assert out.returncode == 0, out.stderr[-2000:]
  import json
  row = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
  assert row["sgd_step_s"] > 0 and row["nsgd_step_s"] > 0 and 0 < row["tracking_fraction"] < 1


def test_bench_race_quick_without_torch(capsys, tmp_path):
  """bench_race.py --quick runs our side end to end and skips the torch side cleanly, saying so,
  when the benchmark venv is absent (as in CI)."""
  bench = load_script("bench_race")
  results = bench.main(["--quick", "--bench-python", str(tmp_path / "no_venv" / "python")])
  out = capsys.readouterr().out
  assert "torch side skipped: no benchmark venv python" in out
  rows = results["models"]["mlp"]["rows"]
  assert {r["solver"] for r in rows} == {"ours", "eigsh"}
  assert all(r["hvps"] > 0 and math.isfinite(r["err"]) and r["err"] < 1e-2 for r in rows)
  assert results["train"] and all(r["step_s"] > 0 for r in results["train"])
  assert results["notes"]


def test_bench_warm_quick(capsys):
  """bench_warm.py --quick: cold, warm Lanczos and the block refresh (with and without carried
  guard vectors) along a tiny SGD run, in both refresh regimes."""
  results = load_script("bench_warm").main(["--quick"])
  out = capsys.readouterr().out
  assert "| warm-block |" in out and "### B. every epoch" in out
  for rows in results.values():
    assert [r[0] for r in rows] == ["cold", "warm-lanczos", "warm-block", "warm-block-carry"]
    assert all(math.isfinite(r[1]) and r[1] > 0 and min(r[4]) > 0 for r in rows)


def test_bench_xla_cpu_quick(capsys, monkeypatch):
  """bench_xla_cpu.py: one worker process per setting, tiny SimpleCNN sizes."""
  monkeypatch.setenv(FAST_COMPILE, "1")   # inherited by the workers
  median = load_script("bench_xla_cpu").main(["--quick"])
  assert set(median) == {True, False} and median[True].keys() == median[False].keys()
  assert all(math.isfinite(ms) and ms > 0 for row in median.values() for ms in row.values())
  assert "| simple_cnn_root xla grad |" in capsys.readouterr().out


def test_bench_hessian_solve_tiny():
  """bench_hessian_solve.py end to end on 8 real examples and a SimpleCNN of width 2 (it calls
  the private solve directly, so it breaks when that signature changes: this keeps it honest)."""
  import subprocess
  import sys
  out = subprocess.run([sys.executable, str(BENCH / "bench_hessian_solve.py"), "--examples=8",
                        "--steps=3", "--k=1", "--repeats=1", "--features=2"],
                       capture_output=True, text=True, timeout=600, env=fast_env())
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| jvp | " in out.stdout and "| linearize | " in out.stdout


def test_bench_pool_quick(capsys):
  """bench_pool.py at tiny sizes: both pool variants of every path time positive."""
  rows = load_script("bench_pool").main(["--quick"])
  assert [r[0] for r in rows] == ["train step", "HVP", "HVP in Lanczos"]
  assert all(math.isfinite(r[3]) and r[1] > 0 and r[2] > 0 for r in rows)
  assert "| HVP in Lanczos (per HVP) |" in capsys.readouterr().out


def test_bench_full_batch_quick():
  """bench_full_batch.py at tiny sizes: the engine's full-batch step with and without the rewrite."""
  best = load_script("bench_full_batch").main(["--quick"])
  assert set(best) == {"xla", "rewrite"} and all(0 < t < math.inf for t in best.values())


def test_bench_sample_noise_quick(capsys, tmp_path):
  """bench_sample_noise.py --quick (a tiny MLP at init): the spread, the jackknife's ratio
  to it, the exponent and the solver-error replay are finite, and the JSON is written."""
  out = tmp_path / "noise.json"
  results = load_script("bench_sample_noise").main(["--quick", "--out", str(out)])
  text = capsys.readouterr().out
  assert "jackknife / std" in text and "% of the work" in text and out.exists()
  point = results["points"]["init"]
  assert all(math.isfinite(p) for p in point["exponent"])
  for d in point["sizes"].values():
    assert all(s > 0 and math.isfinite(r) for s, r in zip(d["std"], d["estimate_over_std"]))
  solver = point["sizes"][64]["solver"]
  assert solver["0.01"]["steps"] >= solver["0.1"]["steps"]


def test_bench_nsgd_step_quick(capsys):
  """bench_nsgd_step.py --quick: every piece times positive, and NSGD's step between refreshes
  compiles to no more conditionals or loops than SGD's (the refresh is not traced into it)."""
  out = load_script("bench_nsgd_step").main(["--quick", "--repeats", "2", "--k", "2"])
  text = capsys.readouterr().out
  nsgd_part, sgd_part = text.split("NSGD step HLO:", 1)[1].split("| SGD step HLO:", 1)
  nsgd_hlo, sgd_hlo = json.loads(nsgd_part), json.loads(sgd_part.splitlines()[0])
  # As many as SGD's, not zero: the tests' unoptimized compiles keep a while that XLA removes.
  for op in ("conditional", "while"):
    assert nsgd_hlo[op] == sgd_hlo[op], (op, nsgd_hlo, sgd_hlo)
  assert all(out[f"{name}_ms"] > 0 for name in ("sgd_step", "nsgd_step", "project", "read_E"))
  assert out["nsgd_over_sgd"] > 0 and out["K"] == 2


def test_bench_sample_noise_progress_speaks_while_a_solve_runs(capsys):
  """A solve longer than the progress interval still gets a line, from the heartbeat, which
  stops once the work is done."""
  import time  # pylint: disable=g-import-not-at-top
  progress = load_script("bench_sample_noise").Progress(total=1, every=0.1)
  progress.working_on("init N=64 sample 1/1")
  time.sleep(0.5)  # a long solve: no step() call
  assert "init N=64 sample 1/1: still working" in capsys.readouterr().out
  progress.step("init N=64 sample 1/1", 1)
  assert "init N=64 sample 1/1: 100% of the work" in capsys.readouterr().out
  time.sleep(0.5)
  assert "still working" not in capsys.readouterr().out


def test_bench_vmap_runs_smoke():
  """bench_vmap_runs.py on the MLP for R = 1, 2: both pieces timed, separate and vmapped."""
  out = subprocess.run([sys.executable, str(BENCH / "bench_vmap_runs.py"), "--runs=1,2",
                        "--repeats=1", "--models=mlp", "--hessian_examples=256",
                        "--lanczos_steps=4", "--batch_size=8"],
                       capture_output=True, text=True, timeout=600, env=fast_env())
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith("| mlp |")]
  assert len(rows) == 4 and all(float(r.split("|")[-2].strip(" ×")) > 0 for r in rows), rows
