"""The same hessian_top_k call on batches sharded over 4 devices (data axis) and on one device."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from testing import with_test_xla_flags

HERE = pathlib.Path(__file__).parent


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_batches_give_the_same_eigenpairs_with_every_option(axis_type):
  """Default options, a tol stop, a warm start (init=) and linearize=True, each on the mesh."""
  flags = with_test_xla_flags("--xla_force_host_platform_device_count=4")
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONPATH=str(HERE))
  out = subprocess.run([sys.executable, str(HERE / "sharded_check.py"), axis_type], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["batch_devices"] == 4
  for name in ("default", "tol", "init", "linearize"):
    case = result[name]
    np.testing.assert_allclose(case["sharded"], case["local"], rtol=1e-4, err_msg=name)
    assert abs(case["sharded_hvps"] - case["local_hvps"]) <= 1, name
  assert result["tol"]["local_hvps"] < 20 and result["init"]["local_hvps"] < 20  # stopped early
  np.testing.assert_allclose(result["linearize"]["local"], result["default"]["local"], rtol=1e-4)
  assert not np.allclose(result["init"]["local"], result["default"]["local"], rtol=1e-3)
