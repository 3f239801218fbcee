r"""Launches one experiment: ``train_and_evaluate(config, workdir)`` from a config file.

  python experiments/train.py --config=configs/noise_grid.py:cpu --workdir=runs/grid_cpu
  python experiments/train.py --config=configs/nsgd.py --workdir=runs/nsgd \
      --config.nsgd.gamma=0.01 --config.seed=1

``--config.a.b=value`` overrides any field (see sharp_dirs/config.py for all of them). A run
directory that already holds checkpoints is resumed. Multi-host: see ``--coordinator_address``.
"""

import json
import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sharp_dirs import config as config_lib
from sharp_dirs import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (logs, checkpoints).")
_STOP_AT_STEP = flags.DEFINE_integer("stop_at_step", None,
                                     "Stop after this many steps (resume later).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  pylogging.getLogger("sharp_dirs").setLevel(pylogging.INFO)  # the run's progress
  try:
    status = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                      stop_at_step=_STOP_AT_STEP.value)
  except config_lib.ConfigError as e:
    sys.exit(f"Bad config: {e}")
  summary = {k: v for k, v in status.items() if k != "last"}
  print(json.dumps(summary))
  if status["status"] == "diverged":
    sys.exit(f"The run diverged: {status['reason']}")


if __name__ == "__main__":
  app.run(main)
