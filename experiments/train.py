r"""Launches one experiment: ``train_and_evaluate(config, workdir)`` from a config file.

  python experiments/train.py --config=configs/noise_grid.py:cpu --workdir=runs/grid_cpu
  python experiments/train.py --config=configs/nsgd.py --workdir=runs/nsgd \
      --config.nsgd.gamma=0.01 --config.seed=1

``--config.a.b=value`` overrides any field (see sharp_dirs/engine/config.py for all of them); a dict
field takes new keys as a dict literal (``--config.optimizer.kwargs="{'b1': 0.95}"``). A run
directory that already holds checkpoints is resumed, with the config it was started with: another
config is refused, naming the fields that differ (``--allow_changes`` lets a resumed run take
more epochs or other logging/checkpointing frequencies, ``sharp_dirs.engine.rundir.RESUMABLE_CHANGES``).
One process writes a run directory at a time (``<workdir>/.lock``).

Devices: the run uses a mesh over all devices (``--config.mesh.data=-1``, the default; batches
split over them, see ``sharp_dirs.engine.distributed``). Multi-host: start the same command on every
host with ``jax.distributed``'s coordinates, or ``--distributed`` on a cluster jax detects
(SLURM, Open MPI, Cloud TPU, GKE); every host writes to the same (shared) workdir, only process
0 writes logs:

  python experiments/train.py --config=configs/nsgd.py --workdir=/shared/runs/nsgd \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # 1 on the other host
"""

import json
import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sharp_dirs.engine import cli
from sharp_dirs.engine import distributed
from sharp_dirs.engine import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (logs, checkpoints).")
_STOP_AT_STEP = flags.DEFINE_integer("stop_at_step", None,
                                     "Stop after this many steps (resume later).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0's coordinator "
    "(jax.distributed.initialize); with --num_processes and --process_id.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id, from 0.")
_ALLOW_CHANGES = flags.DEFINE_bool(
    "allow_changes", False, "Resuming: accept a config that differs from the run's in "
    "sharp_dirs.engine.rundir.RESUMABLE_CHANGES (num_epochs, log/checkpoint frequencies).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host with auto-detected coordinates (jax.distributed.initialize"
    "() on SLURM, Open MPI, Cloud TPU, GKE).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  pylogging.getLogger("sharp_dirs").setLevel(pylogging.INFO)  # the run's progress
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           auto=_DISTRIBUTED.value)
  except ValueError as e:
    sys.exit(f"Bad flags: {e}")
  with cli.user_errors():
    status = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                      stop_at_step=_STOP_AT_STEP.value,
                                      allow_changes=_ALLOW_CHANGES.value)
  summary = {k: v for k, v in status.items() if k != "last"}
  if jax.process_index() == 0:
    print(json.dumps(summary))
  if status["status"] == "diverged":
    sys.exit(f"The run diverged: {status['reason']}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
