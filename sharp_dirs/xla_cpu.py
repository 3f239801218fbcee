"""The XLA CPU setting under which a conv net's gradients and HVPs run fast.

Why: jaxlib's CPU compiler (jax 0.10.x) hands convolutions and dots to YNNPACK fusions. Their
forward convolution is fast, but the convolutions that autodiff creates (weight gradients,
transposed convolutions) and their forward-over-reverse derivatives run several times slower
there than in XLA's own Eigen kernels. Measured on this project's 2-core CPU, SimpleCNN root
with ``flax.linen.Conv`` on 128 images, YNNPACK fusions on → off: gradient 601 → 202 ms,
jvp-of-grad HVP 1,003 → 333 ms, one HVP inside ``hessian_top_k`` on 256 images 1,860 → 543 ms;
the forward alone 24 → 35 ms; an MLP unchanged (bench/bench_xla_cpu.py, bench/RESULTS.md).

What: importing ``sharp_dirs`` calls ``apply()``, which adds ``FLAG`` (an empty list of YNNPACK
fusion types) to ``XLA_FLAGS`` before jax starts its CPU backend. It changes which kernels run,
not what they compute. It is skipped when the user set the flag themselves, or set
``SHARP_DIRS_KEEP_XLA_FLAGS=1``; when jax's backends were started before ``sharp_dirs`` was
imported it cannot take effect, and a warning says how to set it. GPU/TPU backends ignore it.
XLA aborts on a flag it does not know, and this one is experimental, so it is only added for
the jaxlib releases in ``CHECKED_JAXLIB`` (add one after running bench_xla_cpu.py on it).
"""

import logging
import os
from typing import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
OPT_OUT = "SHARP_DIRS_KEEP_XLA_FLAGS"
CHECKED_JAXLIB = ((0, 10),)   # (major, minor) releases that know FLAG and were measured

log = logging.getLogger("sharp_dirs")


def flag_value(environ: MutableMapping[str, str]) -> str | None:
  """The value ``XLA_FLAGS`` gives ``FLAG`` (the last one wins, as in XLA), or None if unset."""
  value = None
  for item in environ.get("XLA_FLAGS", "").split():
    name, _, rest = item.partition("=")
    if name == FLAG:
      value = rest
  return value


def ynn_fusions_disabled(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Whether ``XLA_FLAGS`` turns every YNNPACK fusion off (the fast setting for conv nets)."""
  return flag_value(environ) == ""


def jaxlib_checked(version: str) -> bool:
  """Whether jaxlib ``version`` ('0.10.2') is a release in CHECKED_JAXLIB."""
  major_minor = tuple(int(part) for part in version.split(".")[:2])
  return major_minor in CHECKED_JAXLIB


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Adds ``FLAG=`` to ``environ['XLA_FLAGS']`` unless set or opted out; True if it was added.

  Must run before jax initializes a backend (the first computation), which reads XLA_FLAGS once.
  """
  if environ.get(OPT_OUT, "") not in ("", "0") or flag_value(environ) is not None:
    return False
  import jaxlib  # pylint: disable=g-import-not-at-top
  if not jaxlib_checked(jaxlib.__version__):
    log.info("jaxlib %s is not in sharp_dirs.xla_cpu.CHECKED_JAXLIB; %s= not applied.",
             jaxlib.__version__, FLAG)
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    import jax  # pylint: disable=g-import-not-at-top
    if jax.default_backend() != "cpu":
      return False
    log.warning("jax's backends started before sharp_dirs was imported, so %s= (about 3x faster "
                "conv-net gradients and HVPs on CPU) was not applied; import sharp_dirs first, "
                "or set XLA_FLAGS='%s=' in the environment (%s=1 silences this).",
                FLAG, FLAG, OPT_OUT)
    return False
  environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {FLAG}=".strip()
  return True
