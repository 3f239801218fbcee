"""Text: Keras-style IMDB encoding, and word-level language-model corpora (Jane Austen, PTB).

IMDB (``imdb_reviews`` from the tfds catalog), encoded like ``keras.datasets.imdb.load_data(
num_words=5000)`` followed by ``pad_sequences(maxlen=400)``, which the paper used:
- words: Keras' ``text_to_word_sequence`` (lower case, punctuation except ``'`` removed, split on
  whitespace) after removing the ``<br />`` tags of the raw reviews;
- word ranks by frequency in the 25k training reviews (ties alphabetical); id = rank + 3, with
  0 = padding, 1 = start of review, 2 = out of vocabulary (rank + 3 ≥ num_words);
- ``[1] + ids`` padded with 0 / truncated at the front to ``maxlen`` (Keras' 'pre' defaults).

Language-model corpora, word level with ``<unk>`` and ``<eos>``:
- Jane Austen's six novels from Debian's ``r-cran-janeaustenr`` (R data read with the PyPI
  package ``rdata``; no R needed). Lower-cased words (digits → ``N`` as in PTB), punctuation
  dropped, ``<eos>`` after every paragraph; each novel split into contiguous train / valid / test
  parts (90% / 5% / 5% of its paragraphs by default);
- PTB from the standard ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (Mikolov's
  preprocessed files; newline → ``<eos>``), as in Zaremba et al.'s reader.
The vocabulary is built from the training split only: ``<unk>``, ``<eos>``, then the most
frequent words (ties alphabetical) up to ``vocab_size`` entries; other words map to ``<unk>``.
"""

import bz2
import collections
import glob
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
import zlib
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from sharp_dirs.data import paths

UNK, EOS = "<unk>", "<eos>"
LM_SPECIALS = (UNK, EOS)

# ----------------------------------------------------------------------------------------------
# Vocabularies

def build_vocab(tokens: Iterable[str], vocab_size: int,
                specials: Sequence[str] = LM_SPECIALS) -> tuple[str, ...]:
  """``specials`` then the most frequent other tokens (ties alphabetical), ``vocab_size`` in all."""
  if vocab_size < len(specials):
    raise ValueError(f"vocab_size={vocab_size} < {len(specials)} special tokens")
  counts = collections.Counter(tokens)
  for s in specials:
    counts.pop(s, None)
  words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size - len(specials)]
  return tuple(specials) + tuple(w for w, _ in words)


def encode(tokens: Sequence[str], vocab: Sequence[str], unk: str = UNK) -> np.ndarray:
  """int32 [len(tokens)] ids in ``vocab``; unknown words → id of ``unk``."""
  index = {w: i for i, w in enumerate(vocab)}
  unk_id = index[unk]
  return np.fromiter((index.get(t, unk_id) for t in tokens), np.int32, count=len(tokens))


# ----------------------------------------------------------------------------------------------
# IMDB, the Keras way

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_KERAS_TABLE = str.maketrans({c: " " for c in KERAS_FILTERS})
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
PAD_ID, START_ID, OOV_ID, INDEX_FROM = 0, 1, 2, 3


def keras_words(text: str) -> list[str]:
  """Keras' ``text_to_word_sequence`` on a review with its ``<br />`` tags removed."""
  return _BR.sub(" ", text).lower().translate(_KERAS_TABLE).split()


def keras_word_ranks(texts: Iterable[str]) -> dict[str, int]:
  """word → 1-based frequency rank over ``texts`` (ties alphabetical), like Keras' word index."""
  counts = collections.Counter()
  for text in texts:
    counts.update(keras_words(text))
  ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return {w: r for r, (w, _) in enumerate(ordered, start=1)}


def keras_encode(text: str, ranks: Mapping[str, int], num_words: int) -> list[int]:
  """``[START] + ids`` with id = rank + 3, or OOV (2) when id ≥ num_words."""
  ids = [START_ID]
  for w in keras_words(text):
    i = ranks.get(w, num_words) + INDEX_FROM
    ids.append(i if i < num_words else OOV_ID)
  return ids


def pad_sequences(seqs: Sequence[Sequence[int]], maxlen: int, value: int = PAD_ID) -> np.ndarray:
  """int32 [N, maxlen]: Keras' defaults, padding and truncating at the front ('pre')."""
  out = np.full((len(seqs), maxlen), value, np.int32)
  for i, s in enumerate(seqs):
    s = list(s)[-maxlen:]
    if s:
      out[i, maxlen - len(s):] = s
  return out


def keras_vocab(ranks: Mapping[str, int], num_words: int) -> tuple[str, ...]:
  """id → word for ids < num_words (0 ``<pad>``, 1 ``<start>``, 2 ``<oov>``, 3 unused)."""
  vocab = ["<pad>", "<start>", "<oov>", "<unused>"] + [""] * (num_words - INDEX_FROM - 1)
  for w, r in ranks.items():
    if r + INDEX_FROM < num_words:
      vocab[r + INDEX_FROM] = w
  return tuple(vocab)


# ----------------------------------------------------------------------------------------------
# Word-level LM tokenization

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+(?:[.,][0-9]+)*")


def lm_words(text: str) -> list[str]:
  """Lower-cased words, numbers → ``N`` (PTB's convention), punctuation dropped."""
  return ["N" if w[0].isdigit() else w for w in _WORD.findall(text.lower())]


def paragraphs(lines: Iterable[str]) -> list[str]:
  """Joins physical lines into paragraphs separated by blank lines."""
  out, current = [], []
  for line in lines:
    line = str(line).strip()
    if line:
      current.append(line)
    elif current:
      out.append(" ".join(current))
      current = []
  if current:
    out.append(" ".join(current))
  return out


def paragraph_tokens(paras: Iterable[str]) -> list[str]:
  """Words of each paragraph followed by ``<eos>`` (paragraphs without words are skipped)."""
  tokens = []
  for p in paras:
    words = lm_words(p)
    if words:
      tokens.extend(words)
      tokens.append(EOS)
  return tokens


# ----------------------------------------------------------------------------------------------
# R data: .rda / .rds files and installed packages' lazy-load databases (Rdata.rdb + .rdx)

def _rdata():
  import rdata  # pylint: disable=g-import-not-at-top
  return rdata


def read_rda(path: str) -> dict[str, object]:
  """Objects of an .rda file (``save()`` output), converted by ``rdata``."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return dict(_rdata().read_rda(path))


def read_lazyload_db(prefix: str) -> dict[str, object]:
  """Objects of an R lazy-load database ``prefix.rdx`` (index) + ``prefix.rdb`` (data).

  This is how installed R packages (e.g. Debian's ``/usr/lib/R/site-library/<pkg>/data/Rdata``)
  store their data sets: the index maps each name to (offset, length) in the .rdb, where each
  record is a 4-byte big-endian uncompressed length followed by the zlib-compressed serialized
  object (or, for bzip2/xz databases, a type byte 'Z'/'2'/'X'/'0' then the data).
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    index = _rdata().conversion.convert(_rdata().parser.parse_file(prefix + ".rdx"))
  variables = index["variables"]
  compressed = int(np.asarray(index.get("compressed", [1])).ravel()[0])
  with open(prefix + ".rdb", "rb") as f:
    blob = f.read()
  out = {}
  for name, (offset, length) in variables.items():
    record = blob[int(offset):int(offset) + int(length)]
    (size,), body = struct.unpack(">I", record[:4]), record[4:]
    if compressed in (2, 3):
      kind, body = body[:1], body[1:]
      raw = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress,
             b"0": lambda b: b}[kind](body)
    else:
      raw = zlib.decompress(body)
    if len(raw) != size:
      raise ValueError(f"{prefix}.rdb: record {name} has {len(raw)} bytes, expected {size}")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # rdata warns that the bare serialization is "assumed RDS"
      out[str(name)] = _rdata().conversion.convert(_rdata().parser.parse_data(raw))
  return out


def read_r_data_dir(data_dir: str) -> dict[str, object]:
  """All objects in an R package's data dir: a lazy-load ``Rdata`` database or ``*.rda`` files."""
  if os.path.isfile(os.path.join(data_dir, "Rdata.rdx")):
    return read_lazyload_db(os.path.join(data_dir, "Rdata"))
  out = {}
  for path in sorted(glob.glob(os.path.join(data_dir, "*.rda")) +
                     glob.glob(os.path.join(data_dir, "*.RData"))):
    out.update(read_rda(path))
  return out


# ----------------------------------------------------------------------------------------------
# Jane Austen (Debian r-cran-janeaustenr)

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_DIR_ENV = "SHARP_DIRS_AUSTEN_DIR"
_AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data"
AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                 "sensesensibility")


def austen_extract_dir() -> str:
  """Where ``fetch_janeaustenr`` extracts the .deb: ``<cache dir>/janeaustenr``."""
  return os.path.join(paths.cache_dir(), "janeaustenr")


def _is_r_data_dir(d: Optional[str]) -> bool:
  return bool(d) and os.path.isdir(d) and (
      os.path.isfile(os.path.join(d, "Rdata.rdx")) or bool(glob.glob(os.path.join(d, "*.rda"))))


def austen_how_to() -> str:
  return (
      f"Jane Austen's novels come from Debian's {AUSTEN_PACKAGE} (no R needed):\n"
      f"  cd $(mktemp -d) && apt-get download {AUSTEN_PACKAGE} && "
      f"dpkg -x {AUSTEN_PACKAGE}_*.deb {austen_extract_dir()}\n"
      f"(or `apt-get install {AUSTEN_PACKAGE}`; or `python -m sharp_dirs.data fetch-austen` as "
      f"root), or point ${AUSTEN_DIR_ENV} / austen_dir= at a directory with the package's "
      f"data (Rdata.rdb/.rdx) or the novels as .rda files.")


def find_austen_dir(austen_dir: Optional[str] = None) -> str:
  """The first directory holding the novels' R data; raises ``DatasetNotFoundError`` if none.

  Looked up in order: ``austen_dir``, ``$SHARP_DIRS_AUSTEN_DIR``, the installed R package
  (``/usr/lib/R/site-library/janeaustenr/data``), the extracted .deb under the cache dir.
  """
  if austen_dir:
    if _is_r_data_dir(austen_dir):
      return austen_dir
    raise paths.DatasetNotFoundError(f"No R data (Rdata.rdx or *.rda) in {austen_dir}.\n"
                                     + austen_how_to())
  candidates = [os.environ.get(AUSTEN_DIR_ENV), "/" + _AUSTEN_DATA,
                os.path.join(austen_extract_dir(), _AUSTEN_DATA)]
  for d in candidates:
    if _is_r_data_dir(d):
      return d
  raise paths.DatasetNotFoundError("Jane Austen corpus not found in "
                                   f"{[c for c in candidates if c]}.\n" + austen_how_to())


def fetch_janeaustenr(timeout_s: float = 300.0) -> str:
  """Returns the novels' data dir, fetching the .deb first when missing and we are root.

  ``apt-get download r-cran-janeaustenr`` into a temporary dir, then ``dpkg -x`` into
  ``austen_extract_dir()``. Without root or apt, raises ``DatasetNotFoundError`` with the commands.
  """
  try:
    return find_austen_dir()
  except paths.DatasetNotFoundError:
    pass
  if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
          and shutil.which("dpkg")):
    raise paths.DatasetNotFoundError("Cannot fetch the Jane Austen corpus here (needs root, "
                                     "apt-get and dpkg).\n" + austen_how_to())
  with tempfile.TemporaryDirectory() as tmp:
    try:
      subprocess.run(["apt-get", "download", AUSTEN_PACKAGE], cwd=tmp, check=True,
                     capture_output=True, timeout=timeout_s)
      debs = glob.glob(os.path.join(tmp, f"{AUSTEN_PACKAGE}_*.deb"))
      os.makedirs(austen_extract_dir(), exist_ok=True)
      subprocess.run(["dpkg", "-x", debs[0], austen_extract_dir()], check=True,
                     capture_output=True, timeout=timeout_s)
    except (subprocess.SubprocessError, IndexError, OSError) as e:
      detail = getattr(e, "stderr", b"") or b""
      raise paths.DatasetNotFoundError(
          f"Fetching {AUSTEN_PACKAGE} failed ({e}; {detail.decode(errors='replace')[-300:]}).\n"
          + austen_how_to()) from None
  return find_austen_dir()


def _text_cache_path(source_dir: str) -> str:
  """``<cache dir>/text/austen-<hash>.json``, the hash over the R data files' paths/sizes/mtimes."""
  h = hashlib.sha1()
  for name in sorted(os.listdir(source_dir)):
    st = os.stat(os.path.join(source_dir, name))
    h.update(f"{os.path.realpath(source_dir)}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
  return os.path.join(paths.cache_dir(), "text", f"austen-{h.hexdigest()[:16]}.json")


def read_austen(austen_dir: Optional[str] = None, *, cache: bool = True) -> dict[str, list[str]]:
  """novel name → its lines, for every character-vector object in the R data (sorted by name).

  Parsing the R data takes seconds (rdata is pure Python); with ``cache`` the lines are kept as
  JSON under the cache dir, keyed by the source files' sizes and modification times.
  """
  source_dir = find_austen_dir(austen_dir)
  cache_path = _text_cache_path(source_dir) if cache else None
  if cache_path and os.path.isfile(cache_path):
    with open(cache_path, encoding="utf-8") as f:
      return json.load(f)
  novels = _read_austen_uncached(source_dir)
  if cache_path:
    try:
      os.makedirs(os.path.dirname(cache_path), exist_ok=True)
      with open(cache_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(novels, f)
      os.replace(cache_path + ".tmp", cache_path)
    except OSError:
      pass  # a read-only cache dir only costs speed
  return novels


def _read_austen_uncached(source_dir: str) -> dict[str, list[str]]:
  objects = read_r_data_dir(source_dir)
  novels = {}
  for name in sorted(objects):
    value = objects[name]
    array = np.asarray(value) if not isinstance(value, dict) else None
    if array is not None and array.ndim == 1 and array.dtype.kind in "OUS":
      novels[name] = ["" if v is None else str(v) for v in array.tolist()]
  if not novels:
    raise paths.DatasetNotFoundError(f"No character vectors in the R data of {source_dir}.")
  return novels


def split_contiguous(items: Sequence, fractions: Sequence[float]) -> list[Sequence]:
  """Consecutive pieces of ``items`` with the given fractions (last piece takes the rest)."""
  n, out, start = len(items), [], 0
  for i, frac in enumerate(fractions):
    stop = n if i == len(fractions) - 1 else start + int(round(frac * n))
    out.append(items[start:stop])
    start = stop
  return out


def austen_splits(novels: Mapping[str, Sequence[str]],
                  fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> dict[str, list[str]]:
  """Token streams {'train','valid','test'}: each novel's paragraphs split contiguously."""
  out = {"train": [], "valid": [], "test": []}
  for name in sorted(novels):
    pieces = split_contiguous(paragraphs(novels[name]), fractions)
    for split, piece in zip(out, pieces):
      out[split].extend(paragraph_tokens(piece))
  return out


# ----------------------------------------------------------------------------------------------
# PTB

PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
PTB_DIR_ENV = "SHARP_DIRS_PTB_DIR"


def ptb_how_to() -> str:
  return ("PTB is not shipped here. Put the standard files ptb.train.txt, ptb.valid.txt and "
          "ptb.test.txt (from simple-examples.tgz, data/ folder, of Mikolov's RNNLM page) in one "
          f"directory and pass it as ptb_dir= (or set ${PTB_DIR_ENV}).")


def read_ptb(ptb_dir: Optional[str] = None) -> dict[str, list[str]]:
  """Token streams {'train','valid','test'}: whitespace words, newline → ``<eos>``."""
  ptb_dir = ptb_dir or os.environ.get(PTB_DIR_ENV)
  if not ptb_dir:
    raise paths.DatasetNotFoundError(ptb_how_to())
  missing = [f for f in PTB_FILES.values() if not os.path.isfile(os.path.join(ptb_dir, f))]
  if missing:
    raise paths.DatasetNotFoundError(f"Missing {missing} in {ptb_dir}. " + ptb_how_to())
  out = {}
  for split, fname in PTB_FILES.items():
    with open(os.path.join(ptb_dir, fname), encoding="utf-8") as f:
      out[split] = f.read().replace("\n", f" {EOS} ").split()
  return out


# ----------------------------------------------------------------------------------------------
# Language-model batches (Zaremba et al.'s reader)

def lm_num_steps_per_epoch(num_tokens: int, batch_size: int, num_steps: int) -> int:
  """(⌊num_tokens / batch_size⌋ − 1) // num_steps."""
  for value, name in ((batch_size, "batch_size"), (num_steps, "num_steps")):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return max(0, (num_tokens // batch_size - 1) // num_steps)


def lm_epoch_batches(ids: np.ndarray, batch_size: int, num_steps: int, *, start_step: int = 0):
  """Yields {'inputs','targets'}: int32 [batch_size, num_steps] in order (for a stateful LSTM).

  The stream is cut into ``batch_size`` contiguous rows [B, L]; batch i is columns
  [i·T, (i+1)·T) and targets are the same shifted by one token. Deterministic; resumes at
  ``start_step``.
  """
  ids = np.asarray(ids, np.int32)
  row_len = len(ids) // batch_size
  rows = ids[:batch_size * row_len].reshape(batch_size, row_len)
  for i in range(start_step, lm_num_steps_per_epoch(len(ids), batch_size, num_steps)):
    cols = slice(i * num_steps, (i + 1) * num_steps)
    cols_next = slice(i * num_steps + 1, (i + 1) * num_steps + 1)
    yield {"inputs": rows[:, cols], "targets": rows[:, cols_next]}


def lm_windows(ids: np.ndarray, num_steps: int) -> dict[str, np.ndarray]:
  """Non-overlapping windows as examples: {'inputs','targets'} int32 [M, num_steps]."""
  ids = np.asarray(ids, np.int32)
  m = (len(ids) - 1) // num_steps
  return {"inputs": ids[:m * num_steps].reshape(m, num_steps),
          "targets": ids[1:m * num_steps + 1].reshape(m, num_steps)}
