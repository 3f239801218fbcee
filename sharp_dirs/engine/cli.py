"""One line, not a traceback, for the user errors the launchers (experiments/*.py) can see.

``app.run(main, flags_parser=cli.parse_flags)`` turns a bad ``--config`` file, variant or
``--config.<field>`` override into one sentence; ``cli.user_errors()`` does the same for the
errors the library raises for a bad config or run directory (``ConfigError``, ``RunDirError``:
workdir, lock, another run's config, damaged checkpoints).
"""

import contextlib
import re
import sys

from absl import flags

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import rundir

DICT_FIELDS = ("model_kwargs", "optimizer.kwargs")


def _config_overrides(argv: list) -> list[str]:
  return [a for a in argv if a.startswith("--config.")]


def describe_flag_error(e: BaseException, argv: list) -> str:
  """A one-line description of an exception raised while parsing the launchers' flags."""
  text = str(e)
  unknown = re.search(r"Unknown command line flag '(config\.[^']+)'", text)
  key_error = e if isinstance(e, KeyError) else (
      e.__context__ if isinstance(e, AttributeError) and isinstance(e.__context__, KeyError)
      else None)
  if unknown or key_error is not None:
    suggestion = None
    if unknown:
      flag = "--" + unknown.group(1)
      key = flag.rpartition(".")[2]
    else:  # ml_collections' KeyError: "'key'\nDid you mean ...?"
      first, _, hint = str(key_error.args[0] if key_error.args else "").partition("\n")
      key = first.strip("'\"")
      suggestion = re.search(r'Did you mean "([^"]+)"', hint)
      culprits = [a.split("=")[0] for a in _config_overrides(argv)
                  if key in a.split("=")[0].split(".")]
      flag = culprits[0] if culprits else f"--config...{key}"
    message = f"{flag}: the config has no field {key!r}"
    message += (f"; did you mean {suggestion.group(1)!r}?" if suggestion else
                " (sharp_dirs/engine/config.py lists every field; check the spelling)")
    parent = flag[len("--config."):].rpartition(".")[0]
    if parent in DICT_FIELDS:
      message += (f"; to add a key to {parent}, pass it as a dict literal: "
                  f"--config.{parent}=\"{{'{key}': value}}\"")
    return message if message.endswith("?") else message + "."
  if "Failed loading config file" in text or "No such file" in text:
    path = re.search(r"Attempted \[[^\]]*\]:\s*\n\s*(\S+)", text)
    where = path.group(1) if path else "the --config file"
    return (f"--config: cannot load {where}: no such file (configs/*.py holds the configs; "
            "the form is --config=configs/<name>.py[:variant])")
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  if len(lines) > 1 and "Traceback" in text:  # an error inside the config file: its last line
    first = lines[0].split(":")[0]
    return f"{first}: {lines[-1]}"
  return lines[0] if lines else type(e).__name__


def parse_flags(argv: list) -> list:
  """``app.run``'s flags parser, exiting with one line on a bad flag."""
  try:
    args = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      # A config file that failed to load is an object that raises when first used.
      getattr(flags.FLAGS["config"].value, "to_dict", None)
    return args
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f"Bad flag: {describe_flag_error(e, argv)}")


@contextlib.contextmanager
def user_errors():
  """Exits with one line for a ConfigError or RunDirError raised inside the block."""
  try:
    yield
  except config_lib.ConfigError as e:
    if isinstance(e, rundir.RunDirError):
      sys.exit(f"Cannot run: {e}")
    sys.exit(f"Bad config: {e}")
  except rundir.RunDirError as e:
    sys.exit(f"Cannot run: {e}")
