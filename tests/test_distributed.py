"""The engine on a device mesh (sharp_dirs.engine.distributed): the same results as on one device, the
work split per device in the compiled programs, two processes like one, bad meshes rejected.

The mesh tests run in fresh processes with ``--xla_force_host_platform_device_count`` (set
before jax starts): tests/distributed_check.py, and the launcher experiments/train.py itself
for the two-process run (``jax.distributed`` over localhost, CPU collectives by gloo).
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from testing import set_field, with_test_xla_flags
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import train

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def env_with(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=with_test_xla_flags(
                  f"--xla_force_host_platform_device_count={devices}"),
              JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))


def check(*args, timeout=600) -> dict:
  out = subprocess.run([sys.executable, str(HERE / "distributed_check.py"), *map(str, args)],
                       env=env_with(4), capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-4000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


# What each case must log (so a comparison cannot pass on missing values).
REQUIRED = {
    "sgd": ["train/batch_loss", "valid/loss", "hessian/lambda_1", "hessian/lambda_3",
            "hessian/grad_fraction_batch"],
    "nsgd": ["train/batch_loss", "hessian/lambda_1", "hessian/frobenius"],
    "nsgd_in_step": ["train/batch_loss", "hessian/lambda_1", "distance_from_init"],
    "analyses": ["hessian/lambda_1", "step_loss_change/e1/x1", "cross_section/width_e1",
                 "alignment/mean_abs_cos"],
}


@pytest.mark.parametrize("case, meshes", [
    ("sgd", "one,auto,explicit"),  # SGD + tracker, data axis Auto and Explicit
    ("nsgd", "one,auto,model"),  # NSGD fed by the tracker; Frobenius; a 2 × 2 data × model mesh
    ("nsgd_in_step", "one,explicit"),  # NSGD refreshing by Lanczos inside the train step
    ("analyses", "one,explicit"),  # step loss change, cross-sections, gradient alignment
])
def test_engine_on_4_devices_logs_and_trains_like_one_device(tmp_path, case, meshes):
  """Same logged losses, eigenvalues and analyses, and the same params after the run."""
  result = check("engine", case, tmp_path, meshes)
  names = meshes.split(",")
  ref = result["logged"]["one"]
  assert result["placement"]["one"] == "None"  # the plain single-device path
  for key in REQUIRED[case]:
    assert key in ref, (key, sorted(ref))
  for name in names[1:]:
    placement = result["placement"][name]
    assert placement.startswith("Placement("), placement
    if name == "explicit":
      assert "data=4" in placement and "'Explicit'" in placement
    if name == "model":
      assert "data=2, model=2" in placement
    logged = result["logged"][name]
    assert sorted(logged) == sorted(ref), name
    for key, series in ref.items():
      steps, values = np.array(series).T
      other_steps, other = np.array(logged[key]).T
      np.testing.assert_array_equal(other_steps, steps, err_msg=f"{name}: {key}")
      np.testing.assert_allclose(other, values, rtol=1e-4, atol=1e-6, err_msg=f"{name}: {key}")
    assert result["steps"][name] == result["steps"]["one"] > 0
    assert result["param_diff"][name] <= 1e-5 * result["param_scale"], result["param_diff"]


def entry_params(path: str) -> list:
  """The parameter shapes of a compiled module's ENTRY computation (per-device shapes)."""
  text = pathlib.Path(path).read_text()
  entry = next(line for line in text.splitlines() if line.startswith("ENTRY"))
  return re.findall(r"param[.\d]*: ([a-z0-9]+\[[\d,]*\])", entry.split(") ->")[0])


def collectives(path: str) -> dict:
  text = pathlib.Path(path).read_text()
  return {op: len(re.findall(rf"\b{op}\(", text))
          for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all")}


def test_compiled_programs_hold_per_device_shards_of_the_batch(tmp_path):
  """The partitioned train step (with an in-step NSGD Lanczos refresh) and the tracker's solve
  take 1/4 of each batch per device and all-reduce; a replicated (gathered) batch would show
  the whole batch in the same place, as the control does."""
  result = check("hlo", tmp_path)
  b = result["data"]["batch_size"]  # 64 examples of 28×28×1 per batch
  whole, shard = f"f32[{b},28,28,1]", f"f32[{b // 4},28,28,1]"

  step = result["data"]["train_step"]
  assert shard in entry_params(step) and f"s32[{b // 4}]" in entry_params(step)
  assert whole not in pathlib.Path(step).read_text()
  ops = collectives(step)
  assert ops["all-reduce"] >= 2 and ops["all-gather"] == 0, ops  # gradient, HVP: reduced

  nb, hb = result["sample"]["shape"][:2]
  assert result["sample"]["spec"] == "PartitionSpec(None, 'data')" or (
      result["sample"]["spec"] == "P(None, 'data')")
  solve = result["data"]["tracker_solve"]
  assert f"f32[{nb},{hb // 4},28,28,1]" in entry_params(solve)
  assert f"[{nb},{hb},28,28,1]" not in pathlib.Path(solve).read_text()
  assert f"f32[{hb},28,28,1]" not in pathlib.Path(solve).read_text()
  ops = collectives(solve)
  assert ops["all-reduce"] >= 1 and ops["all-gather"] == 0, ops

  control = result["data"]["gathered_control"]
  assert whole in entry_params(control) and shard not in entry_params(control)

  # data × model (2 × 2): half the batch per device, and the first kernel [784, 32] split over
  # 'model' (as are NSGD's eigenvectors of it, [k, 784, 32] → [k, 392, 32]).
  model = result["model"]
  assert model["kernel_spec"] in ("P('model', None)", "PartitionSpec('model', None)")
  params = entry_params(model["train_step"])
  assert f"f32[{b // 2},28,28,1]" in params
  assert "f32[392,32]" in params and "f32[784,32]" not in params
  assert "f32[3,392,32]" in params


TINY = ["--config=configs/noise_grid.py:cpu", "--config.num_train_examples=256",
        "--config.batch_size=64", "--config.num_epochs=1", "--config.model_kwargs.features=2",
        "--config.epoch_size=0",
        "--config.tracking.num_examples=64", "--config.tracking.batch_size=32",
        "--config.tracking.num_lanczos_steps=8", "--config.tracking.k=3",
        "--config.tracking.zoom_epochs=0.0", "--config.eval.num_train_examples=64",
        "--config.eval.max_examples=64", "--config.eval.batch_size=64",
        "--config.log_every_steps=2"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_track_like_one(tmp_path):
  """experiments/train.py as two jax.distributed processes of 2 CPU devices each (a 4-device
  mesh over localhost) and as one single-device process: the same logged losses and λ's, one
  set of logs (process 0's), and the two-process orbax checkpoint restores to the same params."""
  launcher = [sys.executable, str(ROOT / "experiments" / "train.py"), *TINY]
  port = free_port()
  multi, single = tmp_path / "multi", tmp_path / "single"
  procs = [subprocess.Popen(
      launcher + [f"--workdir={multi}", f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}"],
      env=env_with(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in (0, 1)]
  one = subprocess.run(launcher + [f"--workdir={single}", "--config.mesh.data=1"],
                       env=env_with(1), cwd=ROOT, capture_output=True, text=True, timeout=600)
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      p.kill()
      raise
    assert p.returncode == 0, err[-4000:]
    outs.append(out)
  assert one.returncode == 0, one.stderr[-4000:]
  summaries = [[line for line in out.splitlines() if line.startswith('{"status"')]
               for out in outs]
  assert len(summaries[0]) == 1 and not summaries[1]  # only process 0 reports
  assert json.loads(summaries[0][0])["status"] == "finished"

  a, b = metrics_io.read_run(str(multi)), metrics_io.read_run(str(single))
  assert [r["step"] for r in a.rows] == [r["step"] for r in b.rows]  # no row written twice
  assert a.config["mesh"] == {"data": -1, "model": 1, "axis_types": "auto"}
  compared = 0
  for ra, rb in zip(a.rows, b.rows):
    assert sorted(ra) == sorted(rb)
    for key, value in rb.items():
      if isinstance(value, float) and "seconds" not in key:
        np.testing.assert_allclose(ra[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
        compared += 1
  assert compared > 10 and len(a.series("hessian/lambda_1")[1]) == 2

  *_, step_a, tree_a = train.restore_run(str(multi))
  *_, step_b, tree_b = train.restore_run(str(single))
  assert step_a == step_b == 4
  for x, y in zip(*(jax_leaves(t["state"].params) for t in (tree_a, tree_b))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# -- bad meshes, rejected by name (no devices needed) -----------------------------------------

def cpu_config(**overrides):
  c = config_lib.default_config()
  config_lib.cpu_scale(c)
  for field, value in overrides.items():
    set_field(c, field, value)
  return c


@pytest.mark.parametrize("overrides, devices, processes, field, message", [
    ({"batch_size": 100}, 8, 1, "batch_size", "split over the 8 devices of the mesh's data axis"),
    ({"tracking.batch_size": 250}, 4, 1, "tracking.batch_size", "every Hessian sample"),
    ({"eval.batch_size": 1002}, 4, 1, "eval.batch_size", "use a multiple of 4"),
    ({"batch_size": 129, "mesh.model": 2}, 4, 1, "batch_size", "the 2 devices"),
    ({"mesh.data": 3}, 4, 1, "mesh.data", "the mesh must use all of them"),
    ({"mesh.data": 8}, 4, 1, "mesh.data", "8 devices, but there are 4"),
    ({"mesh.model": 3}, 4, 1, "mesh.model", "must divide the 4 devices"),
    ({"mesh.data": 1}, 4, 2, "mesh.data", "cannot span the 2 processes"),
    ({"mesh.data": 0}, 4, 1, "mesh.data", "must be >= 1, or -1"),
    ({"mesh.model": 0}, 4, 1, "mesh.model", "must be > 0"),
    ({"mesh.axis_types": "manual"}, 4, 1, "mesh.axis_types", "allowed: auto, explicit"),
])
def test_bad_meshes_are_rejected_by_name(overrides, devices, processes, field, message):
  c = cpu_config(**overrides)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate_mesh(c, devices, processes)
  assert f"config.{field} = " in str(e.value) and message in str(e.value), str(e.value)


def test_good_meshes_resolve_their_sizes():
  assert config_lib.validate_mesh(cpu_config(), 4) == (4, 1)
  assert config_lib.validate_mesh(cpu_config(**{"mesh.model": 2}), 4) == (2, 2)
  assert config_lib.validate_mesh(cpu_config(**{"mesh.data": 1}), 4) == (1, 1)  # one device
  assert config_lib.validate_mesh(cpu_config(), 1) == (1, 1)
  config_lib.validate(cpu_config(**{"mesh.data": 4}))  # fixed sizes checked by validate too
  with pytest.raises(config_lib.ConfigError, match="config.batch_size = 100"):
    config_lib.validate(cpu_config(**{"mesh.data": 8, "batch_size": 100}))


def test_a_mesh_larger_than_the_devices_fails_before_anything_runs(tmp_path):
  c = cpu_config(**{"mesh.data": 2})
  with pytest.raises(config_lib.ConfigError, match=r"config.mesh.data = 2 .* there are 1"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "metrics.jsonl")
