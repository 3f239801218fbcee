"""``python -m sharp_dirs.data prepare|fetch-austen|status [--data_dir DIR] [--idx_dir DIR]``.

prepare: Fashion-MNIST from the IDX files into the data dir, then the Jane Austen corpus
(fetched with apt-get download + dpkg -x when missing and root; only a warning when it cannot
be had). Never downloads from tfds.
"""

import argparse
import sys

from sharp_dirs.data import catalog
from sharp_dirs.data import fashion_mnist
from sharp_dirs.data import paths
from sharp_dirs.data import text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m sharp_dirs.data")
  parser.add_argument("command", choices=("prepare", "fetch-austen", "status"))
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--idx_dir", default=paths.DEBIAN_FASHION_MNIST_DIR)
  args = parser.parse_args(argv)
  data_dir = paths.resolve_data_dir(args.data_dir)
  try:
    if args.command == "prepare":
      fashion_mnist.prepare(data_dir, args.idx_dir)
      print(f"fashion_mnist: prepared in {fashion_mnist.builder_dir(data_dir)}")
    if args.command == "prepare":
      try:  # optional: only the language-model runs need it
        print(f"austen: {text.fetch_janeaustenr()}")
      except paths.DatasetNotFoundError as e:
        print(f"warning: the Jane Austen corpus is not available: {e}", file=sys.stderr)
    if args.command == "fetch-austen":
      print(f"austen: {text.fetch_janeaustenr()}")
    if args.command == "status":
      print(f"data dir: {data_dir}")
      print(f"fashion_mnist: {'prepared' if fashion_mnist.is_prepared(data_dir) else 'missing'}")
      for name in ("cifar10", "cifar100", "imdb_reviews"):
        try:
          print(f"{name}: prepared in {catalog.check_prepared(name, data_dir)}")
        except paths.DatasetNotFoundError:
          print(f"{name}: missing")
      try:
        print(f"austen: {text.find_austen_dir()}")
      except paths.DatasetNotFoundError:
        print("austen: missing")
  except paths.DatasetNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
