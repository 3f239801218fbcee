"""A run directory's guards: one writer at a time, and one config for the whole run.

- ``RunLock(workdir)``: ``<workdir>/.lock``, held with ``fcntl.flock`` while a run writes
  (``train.train_and_evaluate`` takes it). The kernel drops the lock when its process ends, a
  killed one included, so it is never left stuck; the file holds the writer's pid, host and
  start time, which a second launch names in its refusal (``RunDirLocked``).
- A run's identity: ``config.json`` is the config the run started with. A relaunch (to resume)
  must bring the same config: ``check_config(config, workdir)`` raises ``ConfigMismatch``
  naming every differing field. With ``allow_changes=True`` the fields of ``RESUMABLE_CHANGES``
  (more epochs, logging and checkpointing frequencies) may differ; the run then goes on with the
  new values, config.json is updated and ``config_changes.jsonl`` records each accepted change
  with the step it took effect. ``config_differences(config, workdir)`` lists the differences
  without raising (what ``experiments/demo.py`` asks before reusing a run).
- ``prepare_workdir(workdir)``: creates the directory or says in one line why it cannot.
"""

import datetime
import errno
import json
import math
import os
import socket
from typing import Any, Optional

from sharp_dirs.engine import config as config_lib

LOCK = ".lock"
CONFIG = "config.json"
CHANGES = "config_changes.jsonl"

# Changes a resumed run may take (train_and_evaluate(allow_changes=True), the launchers'
# --allow_changes): they do not alter what the run computed up to its checkpoint.
RESUMABLE_CHANGES = ("num_epochs", "log_every_steps", "checkpoint_every_epochs",
                     "keep_checkpoints")
# Not part of a run's identity: where the data is stored, not what it is.
IGNORED_FIELDS = ("data_dir",)


class RunDirError(RuntimeError):
  """A run directory cannot be used as asked; the message says why and what to do."""


class RunDirLocked(RunDirError):
  """Another process is writing the run directory."""


class ConfigMismatch(RunDirError, config_lib.ConfigError):
  """A relaunch brings another config than the one the run directory was started with."""


# ------------------------------------------------------------------------------------------
# The directory

def prepare_workdir(workdir: str) -> None:
  """Creates ``workdir`` (and its parents); RunDirError when it is a file or cannot be written."""
  if not workdir:
    raise RunDirError("the workdir is empty: pass --workdir=<directory of the run>.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise RunDirError(f"workdir {workdir!r} is a file, not a directory: pass another "
                      "--workdir (a new or existing run directory).")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise RunDirError(f"cannot create workdir {workdir!r}: {e.strerror or e}; pass a "
                      "--workdir in a writable place.") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise RunDirError(f"workdir {workdir!r} is not writable by this user: pass a --workdir in a "
                      "writable place (or fix its permissions).")


# ------------------------------------------------------------------------------------------
# One writer

class RunLock:
  """``<workdir>/.lock``, held (``fcntl.flock``, exclusive, non-blocking) until ``release``.

  A context manager. ``RunDirLocked`` names the process that holds it. The lock is an open file
  description's: a second ``RunLock`` on the same directory fails even in the same process, and
  a process that ends (killed or not) releases it. The file is left in place (deleting it would
  let two processes lock two different files).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self._file = None

  def acquire(self) -> "RunLock":
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
    f = open(self.path, "a+", encoding="utf-8")
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      f.seek(0)
      holder = f.read().strip()
      f.close()
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise RunDirError(f"cannot lock {self.path}: {e}") from None
      raise RunDirLocked(
          f"{os.path.dirname(self.path)} is being written by another process "
          f"({describe_holder(holder)}); two writers would corrupt its checkpoints and "
          "metrics: wait for that run to end, stop it, or use another --workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "since": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is not None:
      import fcntl  # pylint: disable=g-import-not-at-top
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def describe_holder(text: str) -> str:
  """'process 123 on host h since 2024-...' from a lock file's content."""
  try:
    info = json.loads(text)
    return f"process {info['pid']} on host {info['host']}, since {info['since']}"
  except (ValueError, KeyError, TypeError):
    return "a process that did not say which"


def holder(workdir: str) -> Optional[str]:
  """Who holds ``workdir``'s lock now (a description), or None when nobody does."""
  path = os.path.join(workdir, LOCK)
  if not os.path.exists(path):
    return None
  try:
    with RunLock(workdir):
      return None
  except RunDirLocked:
    with open(path, encoding="utf-8") as f:
      return describe_holder(f.read().strip())


# ------------------------------------------------------------------------------------------
# One config

def _flatten(tree: Any, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    if not tree and prefix:
      out[prefix[:-1]] = {}
    return out
  return {prefix[:-1]: tree}


def _plain(config: Any) -> dict:
  """A config (ConfigDict or dict) as config.json stores it (tuples as lists)."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  return json.loads(json.dumps(config, default=str))


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  if isinstance(a, bool) != isinstance(b, bool):
    return False
  return a == b


def read_config(workdir: str) -> Optional[dict]:
  """The config.json of ``workdir`` as a dict, or None when it has none."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:
    raise RunDirError(f"{path} is damaged ({e}): it is the config the run was started with; "
                      f"restore it, or delete {workdir} to start the run over.") from None


def diff_configs(stored: dict, config: Any) -> list[tuple[str, Any, Any]]:
  """[(dotted field, value in ``stored``, value in ``config``)] of the fields that differ.

  ``IGNORED_FIELDS`` are left out. A field that ``stored`` lacks (added to the schema after
  the run started) differs only when ``config`` sets it to something other than
  ``config.default_config()``'s value; a field only one side has is reported as ``"(absent)"``
  on the other.
  """
  old, new = _flatten(_plain(stored)), _flatten(_plain(config))
  defaults = _flatten(_plain(config_lib.default_config()))
  missing = object()
  out = []
  for field in sorted(set(old) | set(new)):
    if field in IGNORED_FIELDS:
      continue
    a, b = old.get(field, missing), new.get(field, missing)
    if a is missing and _same(defaults.get(field, missing), b):
      continue
    if a is missing or b is missing or not _same(a, b):
      out.append((field, "(absent)" if a is missing else a, "(absent)" if b is missing else b))
  return out


def config_differences(config: Any, workdir: str) -> list[tuple[str, Any, Any]]:
  """The fields where ``config`` differs from the config ``workdir`` was started with.

  [(dotted field, value of the run, value of ``config``)]; empty when they agree or when
  ``workdir`` holds no config.json (no run yet).
  """
  stored = read_config(workdir)
  return [] if stored is None else diff_configs(stored, config)


def describe(differences: list[tuple[str, Any, Any]]) -> str:
  return "; ".join(f"{f}: {a!r} in the run, {b!r} now" for f, a, b in differences)


def check_config(config: Any, workdir: str, *, allow_changes: bool = False
                 ) -> list[tuple[str, Any, Any]]:
  """Raises ConfigMismatch unless ``config`` is the config ``workdir`` was started with.

  With ``allow_changes`` the fields of ``RESUMABLE_CHANGES`` may differ; the accepted
  differences are returned (empty: the same config, or no run yet).
  """
  differences = config_differences(config, workdir)
  if not differences:
    return []
  refused = [d for d in differences if not (allow_changes and d[0] in RESUMABLE_CHANGES)]
  if refused:
    fix = (f"relaunch with the run's values, use another --workdir for the new config, or "
           f"delete {workdir} to start it over")
    if all(d[0] in RESUMABLE_CHANGES for d in refused):
      fix += (f"; to change {', '.join(d[0] for d in refused)} of this run on resuming, pass "
              "--allow_changes (train_and_evaluate(allow_changes=True))")
    raise ConfigMismatch(f"{workdir} holds a run made with another config ({describe(refused)})"
                         f": {fix}. Changes a resumed run may take (with --allow_changes): "
                         f"{', '.join(RESUMABLE_CHANGES)}.")
  return differences


def record_config(config: Any, workdir: str, step: Optional[int]) -> None:
  """Writes config.json at a run's start; on a resume, records accepted changes (if any).

  ``step``: the step the run resumes from (None: a fresh start).
  """
  path = os.path.join(workdir, CONFIG)
  stored = read_config(workdir)
  plain = _plain(config)
  if stored is not None:
    differences = diff_configs(stored, config)
    if not differences:
      return
    with open(os.path.join(workdir, CHANGES), "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": step, "time": datetime.datetime.now().isoformat(
          timespec="seconds"), "changes": {k: [a, b] for k, a, b in differences}}) + "\n")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(plain, f, indent=2)
  os.replace(tmp, path)
