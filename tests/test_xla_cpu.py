"""The XLA CPU flag set at import (sharp_dirs/xla_cpu.py): parsing, when it is added, its effect."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from sharp_dirs import models
from sharp_dirs import xla_cpu

FLAG = xla_cpu.FLAG


def test_flag_value_reads_the_last_setting():
  assert xla_cpu.flag_value({}) is None
  assert xla_cpu.flag_value({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}) is None
  assert xla_cpu.flag_value({"XLA_FLAGS": f"{FLAG}=individual_dot {FLAG}="}) == ""
  assert xla_cpu.flag_value({"XLA_FLAGS": f"{FLAG}= {FLAG}=+individual_dot"}) == "+individual_dot"
  assert xla_cpu.ynn_fusions_disabled({"XLA_FLAGS": f"--a=1 {FLAG}="})
  assert not xla_cpu.ynn_fusions_disabled({"XLA_FLAGS": "--a=1"})


def test_apply_keeps_the_users_choice():
  """An opt-out or the user's own value of the flag is left alone (jax's backends are already up
  in this process, so nothing is added here either: checked before the version and the backends)."""
  for env in ({"SHARP_DIRS_KEEP_XLA_FLAGS": "1", "XLA_FLAGS": "--a=1"},
              {"XLA_FLAGS": f"{FLAG}=+individual_dot"}):
    before = dict(env)
    assert not xla_cpu.apply(env)
    assert env == before


def test_only_checked_jaxlib_releases_get_the_flag():
  """XLA aborts on unknown flags: the flag is added only for measured jaxlib releases."""
  assert xla_cpu.jaxlib_checked("0.10.2") and xla_cpu.jaxlib_checked("0.10.0")
  assert not xla_cpu.jaxlib_checked("0.11.0") and not xla_cpu.jaxlib_checked("0.9.1")


def _python(code, **env):
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, **env})
  assert out.returncode == 0, out.stderr
  return out


def test_import_adds_the_flag_before_jax_starts():
  code = "import os, sharp_dirs, jax; jax.numpy.ones(1); print(os.environ['XLA_FLAGS'])"
  assert _python(code, XLA_FLAGS="--xla_force_host_platform_device_count=2").stdout.split() == [
      "--xla_force_host_platform_device_count=2", f"{FLAG}="]
  assert _python(code.replace("os.environ['XLA_FLAGS']", "os.environ.get('XLA_FLAGS')"),
                 SHARP_DIRS_KEEP_XLA_FLAGS="1").stdout.strip() == "None"


def test_import_after_jax_started_warns_how_to_set_it():
  out = _python("import os, jax; jax.numpy.ones(1); import sharp_dirs; "
                "print(os.environ.get('XLA_FLAGS'))")
  assert out.stdout.strip() == "None"
  assert "was not applied" in out.stderr and f"XLA_FLAGS='{FLAG}='" in out.stderr


_COMPILE_CONV_GRAD = """
import sharp_dirs, flax.linen as nn, jax, jax.numpy as jnp
conv = nn.Conv(32, (3, 3))
x = jnp.ones((16, 28, 28, 32))
params = conv.init(jax.random.key(0), x)
grad = jax.jit(jax.grad(lambda p: jnp.sum(conv.apply(p, x) ** 2)))
print(grad.lower(params).compile().as_text())
"""


def test_the_flag_keeps_conv_gradients_out_of_ynnpack_fusions():
  """With the flag (the default) a conv gradient compiles to no YNNPACK fusion; opting out, the
  same program has them (the control: XLA 0.10 hands its convolutions to YNNPACK)."""
  with_flag = _python(_COMPILE_CONV_GRAD).stdout
  without = _python(_COMPILE_CONV_GRAD, SHARP_DIRS_KEEP_XLA_FLAGS="1").stdout
  assert "convolution(" in with_flag and "__ynn_fusion" not in with_flag
  assert "__ynn_fusion" in without
  assert xla_cpu.ynn_fusions_disabled()   # and this test session runs with it (conftest)


def test_auto_conv_impl_follows_the_flag(monkeypatch):
  """'auto' is flax's nn.Conv when YNNPACK fusions are off (the fast setting), im2col when on."""
  assert models.conv_module("auto") is nn.Conv
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  assert models.conv_module("auto") is not nn.Conv
  assert models.conv_module("auto").func is models.conv_module("im2col").func
