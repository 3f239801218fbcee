"""The paper's figures and NSGD table from run directories (docs/protocol.md, F1–F7, NSGD tables).

Every figure function takes ``metrics_io.Run`` objects (``metrics_io.read_run``) and returns a
matplotlib ``Figure`` (object-oriented, no pyplot state; PNG/PDF go through the Agg and PDF
canvases); ``save(fig, out_dir, name)`` writes ``name.png`` and ``name.pdf``. ``render`` draws
a figure by name (the ``FIGURES`` registry) and saves it, as ``experiments/figures.py`` does.

One place per thing: ``STYLE`` (sizes, colours, line styles), ``describe`` (the "model, data,
scale" part of every title); the statistics (smoothing, peaks, per-run summaries) are
``sharp_dirs.report.statistics``, shared with the claims report.
"""

import dataclasses
import functools
import json
import math
import os
import re
from typing import Callable, Optional, Sequence

import matplotlib
from matplotlib import cm
from matplotlib import colors as mcolors
from matplotlib import lines as mlines
from matplotlib import ticker
from matplotlib.figure import Figure
import numpy as np

from sharp_dirs.curvature import spectral
from sharp_dirs.engine.metrics_io import Run
from sharp_dirs.report.statistics import BS, LAMBDA_1, LR  # pylint: disable=unused-import
from sharp_dirs.report.statistics import last_epoch, mean_std, peak_lambda_max  # pylint: disable=unused-import
from sharp_dirs.report.statistics import run_summary, smooth, smoothed_curve, zoom_end_of

LAMBDA_2 = "hessian/lambda_2"

STYLE = {
    "rc": {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8,
           "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12,
           "lines.linewidth": 1.6, "axes.grid": True, "grid.alpha": 0.3},
    "dpi": 150,
    "panel": (4.8, 3.6),  # inches per panel
    # F2/F5: least to most noisy (smallest η or largest S first); blue is the noisiest.
    "noise_colors": ("red", "green", "blue"),
    "lambda_styles": ("-", "-."),  # F2: λ_1 solid, λ_2 dash-dot
    "multiplier_colors": {0.5: "blue", 1.0: "green", 2.0: "red"},  # F3: γ = 0.5, 1, 2
    "eigen_cmap": "coolwarm_r",  # F1: λ_1..λ_10
    "lambda_cmap": "coolwarm",  # F4: cross-sections coloured by λ_1
    "series_cmap": "viridis",  # ordered families without a paper colour (γ, time)
    "group_colors": "tab10",  # unordered families (NSGD/SGD rows)
    # F6: (colour, line style) of the rules; the γ variants dashed, blue below 1, red above.
    "rescaling_styles": {"SGD (baseline)": ("black", "-"), "only top": ("tab:orange", "-"),
                         "constant top": ("tab:purple", "-."), "remove top": ("tab:green", "-")},
    "rescaling_gamma": ("coolwarm", "--"),
    "reference": {"color": "black", "linestyle": "--", "linewidth": 1.0},  # 0 lines, thresholds
    "zoom_line": {"color": "0.3", "linestyle": "-", "linewidth": 1.0},
    "scatter_alpha": 0.3,
}

MODEL_NAMES = {"mlp": "MLP", "simple_cnn_root": "SimpleCNN", "simple_cnn_medium":
               "SimpleCNN (medium)", "resnet32": "ResNet-32", "resnet32_bn": "ResNet-BN-32",
               "vgg11": "VGG-11", "imdb_cnn": "IMDB CNN", "imdb_lstm": "IMDB LSTM",
               "lstm_lm": "LSTM LM"}
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100", "imdb": "IMDB", "austen": "Jane Austen", "ptb": "PTB"}


# ------------------------------------------------------------------------------------------
# The shared helpers: smoothing, titles, labels, colours, saving.

def curves_band(curves):
  """(grid, mean, std) of curves [(x, y)] on the union of their x values (a curve counts only
  inside its own x range); None when all are empty."""
  curves = [(np.asarray(xs), np.asarray(ys)) for xs, ys in curves if len(xs)]
  if not curves:
    return None
  grid = np.unique(np.concatenate([xs for xs, _ in curves]))
  stack = [np.where((grid >= xs[0]) & (grid <= xs[-1]), np.interp(grid, xs, ys), np.nan)
           for xs, ys in curves]
  mean, std, _ = mean_std(stack)
  return grid, mean, std


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
  """The runs grouped by their config without ``seed`` (runs that differ only by seed), in
  order of first appearance."""
  groups = {}
  for run in runs:
    config = {k: v for k, v in run.config.items() if k != "seed"}
    groups.setdefault(json.dumps(config, sort_keys=True, default=str), []).append(run)
  return list(groups.values())


def group_name(group: Sequence[Run]) -> str:
  """The first run's name without its "seed=..." part when the group has several seeds."""
  name = group[0].name
  if len(group) > 1:
    name = re.sub(r"(^|,)seed=[^,]*", "", name).strip(",") or name
  return name


def seed_band(ax, x, mean, std, color, gid: str) -> None:
  """The ±1 std band over seeds around a mean curve."""
  ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0, gid=gid)


def _thousands(n: int) -> str:
  return f"{n / 1000:g}k" if n >= 1000 else str(n)


def describe(runs: Sequence[Run]) -> str:
  """"MLP, Fashion-MNIST (10k), CPU scale": model, data (subset size) and scale of the runs.

  The scale is the config's ``scale`` ("cpu" from ``sharp_dirs.engine.config.cpu_scale``, else
  "paper"); runs logged before that field existed count the MLP as CPU scale.
  """
  parts = []
  for run in runs:
    model = run.config.get("model", "?")
    data = DATASET_NAMES.get(run.config.get("dataset"), run.config.get("dataset", "?"))
    n = run.config.get("num_train_examples") or 0
    scale = run.config.get("scale") or ("cpu" if model == "mlp" else "paper")
    scale = "CPU scale" if scale == "cpu" else "paper scale"
    text = f"{MODEL_NAMES.get(model, model)}, {data}{f' ({_thousands(n)})' if n else ''}, {scale}"
    if text not in parts:
      parts.append(text)
  return "; ".join(parts)


def _wrap(parts: Sequence[str], width: int, sep: str) -> str:
  """``sep.join(parts)``, broken into lines of at most ``width`` characters between parts."""
  lines = []
  for part in parts:
    if lines and len(lines[-1]) + len(sep) + len(part) <= width:
      lines[-1] += sep + part
    else:
      lines.append(part)
  return "\n".join(lines)


def _title(fig: Figure, what: str, runs: Sequence[Run]) -> None:
  """The suptitle "what" over "model, data, scale", wrapped to the figure's width."""
  width = int(fig.get_figwidth() * 72 / (0.6 * STYLE["rc"]["figure.titlesize"]))
  fig.suptitle(_wrap(what.split(" "), width, " ") + "\n"
               + _wrap(describe(runs).split("; "), width, "; "))


def _num(value) -> str:
  return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _varying(runs: Sequence[Run], field: str) -> bool:
  return len({repr(r.get(field)) for r in runs}) > 1


def _fixed(runs: Sequence[Run], fields=((LR, "η"), (BS, "S"))) -> str:
  """The hyperparameters shared by all runs, e.g. "η = 0.05, S = 128"."""
  return ", ".join(f"{sym} = {_num(runs[0].get(f))}" for f, sym in fields
                   if runs and not _varying(runs, f) and runs[0].get(f) is not None)


def noise_colors(n: int) -> list:
  """Colours of n settings ordered from least to most noisy: the paper's red/green/blue."""
  base = STYLE["noise_colors"]
  if n <= 3:  # the paper's three; fewer keep blue for the noisiest
    return {0: [], 1: [base[2]], 2: [base[0], base[2]], 3: list(base)}[n]
  cmap = mcolors.LinearSegmentedColormap.from_list("noise", base)
  return [cmap(t) for t in np.linspace(0.0, 1.0, n)]


def _noise_key(field: str):
  """Sort key, least noisy first: ascending η, descending S."""
  return (lambda v: v) if field == LR else (lambda v: -v)


def _color_by(runs: Sequence[Run], field: str) -> dict:
  """{value of field: colour}, the paper's noise colours (blue = largest η / smallest S)."""
  values = sorted({r.get(field) for r in runs}, key=_noise_key(field))
  return dict(zip(values, noise_colors(len(values))))


def _epoch_label(run: Run) -> str:
  size = run.config.get("epoch_size") or 0
  if run.config.get("full_batch"):
    return "epoch (one gradient-descent step)"
  return f"epoch ({size:,} examples)" if size else "epoch"


def _epochs_by_step(run: Run) -> dict:
  return {int(r["step"]): float(r["epoch"]) for r in run.rows if "epoch" in r}


def _require(run: Run, key: str, why: str) -> None:
  if not run.has(key):
    raise ValueError(f"run {run.workdir} logged no {key!r}: {why}")


def _figure(ncols: int, nrows: int = 1, *, sharex=False, sharey=False, width: float = 1.0,
            height: float = 1.0):
  """A constrained-layout Figure and its axes (flat list, row by row)."""
  w, h = STYLE["panel"]
  fig = Figure(figsize=(w * ncols * width, h * nrows * height), dpi=STYLE["dpi"],
               layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
  return fig, list(axes.ravel())


def _styled(fn):
  """Draws under STYLE["rc"] (matplotlib reads rc parameters when artists are created)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with matplotlib.rc_context(STYLE["rc"]):
      return fn(*args, **kwargs)
  return wrapper


def save(fig: Figure, out_dir: str, name: str) -> list[str]:
  """Writes ``out_dir/name.png`` and ``out_dir/name.pdf``; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "pdf")]
  with matplotlib.rc_context(STYLE["rc"]):
    fig.savefig(paths[0], dpi=STYLE["dpi"])
    engine = fig.get_layout_engine()
    fig.set_layout_engine("none")  # the first save laid it out: keep it (half the cost)
    fig.savefig(paths[1], dpi=STYLE["dpi"])
    fig.set_layout_engine(engine)
  return paths


# ------------------------------------------------------------------------------------------
# F1: the general shape of the top-10 eigenvalues.

@_styled
def noise_of(run: Run, key: str) -> Optional[np.ndarray]:
  """The tracker's estimated sample noise (std over fresh samples) of each logged value of
  ``key`` = "hessian/lambda_i", aligned with ``run.series(key)``; None when not logged."""
  noise_key = key.replace("/lambda_", "/noise_")
  if not run.has(noise_key):
    return None
  x, sigma = run.series(noise_key)
  if len(x) != len(run.series(key)[0]):
    return None
  return sigma


def noise_band(ax, x, y, sigma, color, gid: str) -> None:
  """A translucent band y ± σ (the sample noise) behind a curve, where σ is finite."""
  ok = np.isfinite(sigma)
  ax.fill_between(x, y - np.where(ok, sigma, 0.0), y + np.where(ok, sigma, 0.0), color=color,
                  alpha=0.18, linewidth=0, gid=gid)


def general_shape(run: Run, k: int = 10) -> Figure:
  """λ_1..λ_k vs epoch (coolwarm_r), the dense early zoom on [0, zoom end], accuracies."""
  keys = [f"hessian/lambda_{i}" for i in range(1, k + 1) if run.has(f"hessian/lambda_{i}")]
  if not keys:
    raise ValueError(f"run {run.workdir} logged no hessian/lambda_i: enable tracking.")
  zoom = float(run.get("tracking.zoom_epochs", 0) or 0)
  fig, axes = _figure(3 if zoom > 0 else 2)
  cmap = matplotlib.colormaps[STYLE["eigen_cmap"]]
  colors = [cmap(i / max(len(keys) - 1, 1)) for i in range(len(keys))]
  panels = [(axes[0], None)] + ([(axes[1], zoom)] if zoom > 0 else [])
  for ax, end in panels:
    for i, (key, color) in enumerate(zip(keys, colors)):
      x, y = run.series(key, "epoch")
      sigma = noise_of(run, key)
      if end is not None:
        keep = x <= end + 1e-9
        x, y, sigma = x[keep], y[keep], None if sigma is None else sigma[keep]
      if sigma is not None:  # ± the estimated sample noise of each evaluation
        noise_band(ax, x, y, sigma, color, f"{'zoom' if end else 'full'}/{key}/noise")
      ax.plot(x, y, color=color, label=rf"$\lambda_{{{i + 1}}}$",
              gid=f"{'zoom' if end else 'full'}/{key}")
    ax.set_xlabel(_epoch_label(run))
    ax.set_ylabel(r"Hessian eigenvalue $\lambda_i$")
  axes[0].set_title(f"top-{len(keys)} eigenvalues ({_fixed([run])})")
  axes[0].legend(ncol=2, title="largest → smaller")
  if zoom > 0:
    every = run.get("tracking.zoom_every_examples")
    axes[1].set_xlim(0, zoom)
    axes[1].set_title(f"zoom: first {zoom:g} epoch, every {every} examples")
  ax = axes[-1]
  for split, style in (("train", "-"), ("valid", "--")):
    x, y = run.series(f"{split}/accuracy", "epoch")
    ax.plot(x, 100 * y, style, color="black", label=split, gid=f"{split}/accuracy")
  ax.set_xlabel(_epoch_label(run))
  ax.set_ylabel("accuracy (%)")
  ax.set_title("train / validation accuracy")
  ax.legend()
  _title(fig, "Top of the Hessian spectrum along training", [run])
  return fig


# ------------------------------------------------------------------------------------------
# F2: λ_1 and λ_2 for different η and S, the noise grid.

def merged_epoch(epoch, zoom_end: float, last_epoch: float) -> np.ndarray:
  """The paper's merged axis: epochs [0, zoom_end) on [0, 1] (linear: the zoom), then
  [zoom_end, last] on [1, 2] in log scale, so that runs of 10 and of 64 epochs in one panel
  both show their course."""
  epoch = np.asarray(epoch, np.float64)
  span = math.log(max(last_epoch / zoom_end, 1.0 + 1e-12))
  with np.errstate(divide="ignore", invalid="ignore"):
    late = 1.0 + np.log(np.maximum(epoch, zoom_end) / zoom_end) / span
  return np.where(epoch < zoom_end, epoch / zoom_end, late)


def _merged_ticks(ax, zoom_end: float, last_epoch: float) -> None:
  early = [t for t in ticker.MaxNLocator(3).tick_values(0, zoom_end) if 0 <= t < zoom_end * 0.8]
  late = [t for t in (2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000)
          if 1.5 * zoom_end <= t * 1.0 <= last_epoch]
  if last_epoch not in late and (not late or last_epoch >= 1.3 * late[-1]):
    late.append(last_epoch)
  ticks = early + [zoom_end] + late
  ax.set_xticks(merged_epoch(ticks, zoom_end, last_epoch), [f"{t:g}" for t in ticks])


def noise_panels(runs: Sequence[Run]) -> list[tuple[str, list]]:
  """[(field, runs)]: the η grid and/or the S grid in ``runs`` (the field that varies).

  When both vary (a whole noise-grid sweep), the η panel holds the runs at the batch size
  shared by the most learning rates and the S panel those at the most shared learning rate.
  """
  runs = list(runs)
  panels = []
  for field, other in ((LR, BS), (BS, LR)):
    if not _varying(runs, field):
      continue
    if not _varying(runs, other):
      return [(field, runs)]
    counts = {}
    for r in runs:
      counts.setdefault(r.get(other), set()).add(r.get(field))
    anchor = max(counts, key=lambda v: len(counts[v]))
    group = [r for r in runs if r.get(other) == anchor]
    if _varying(group, field):
      panels.append((field, group))
  return panels or [(LR, runs)]


def _noise_curve(ax, group: Sequence[Run], key: str, window: int, zoom_end: float,
                 last: float, color, gid: str):
  """The mean over seeds of ``key`` smoothed (on the merged axis when zoomed) with its band:
  ±1 std over seeds, or for one seed ± its sample noise σ/√window where logged."""
  x, y, std = curves_band([smoothed_curve(r, key, window, zoom_end) for r in group])
  xs = merged_epoch(x, zoom_end, last) if zoom_end > 0 else x
  if len(group) > 1:
    seed_band(ax, xs, y, std, color, f"{gid}/seeds")
  elif (sigma := noise_of(group[0], key)) is not None:  # a mean of `window` evaluations
    noise_band(ax, xs, y, smooth(sigma, window) / np.sqrt(window), color, f"{gid}/noise")
  return xs, y


def _fit_y_to_lines(ax, margin: float = 1.25) -> None:
  """Log y limits around the curves (a seed band reaching 0 would stretch them by decades)."""
  y = np.concatenate([np.asarray(l.get_ydata(), np.float64) for l in ax.lines])
  y = y[np.isfinite(y) & (y > 0)]
  if y.size:
    ax.set_ylim(y.min() / margin, y.max() * margin)


@_styled
def noise_grid(runs: Sequence[Run], window: int = 5) -> Figure:
  """λ_1 (solid) and λ_2 (dash-dot) vs epoch, log y, one panel per varying η or S.

  Smoothed with ``smoothed_curve``; the dense zoom drawn on [0, 1] and the per-epoch part on
  [1, 2], a vertical line at x = 1, ticks labelled in epochs (docs/protocol.md, F2); each
  panel's x axis ends at its longest run. Runs that differ only by seed are one mean curve
  with a ±1 std band over seeds; a single run, where it logged the sample noise
  (hessian/noise_i), a band ± σ/√window: the noise of a mean of ``window`` evaluations.
  """
  for run in runs:
    _require(run, LAMBDA_1, "enable tracking.")
  panels = noise_panels(runs)
  zoom_end = zoom_end_of(runs)
  fig, axes = _figure(len(panels))
  most_seeds = 1
  for ax, (field, group) in zip(axes, panels):
    last = max(float(np.max(r.series(LAMBDA_1, "epoch")[0])) for r in group)
    colors = _color_by(group, field)
    symbol = "η" if field == LR else "S"
    labelled = set()
    for seeds in sorted(seed_groups(group), key=lambda g: _noise_key(field)(g[0].get(field))):
      value, n = seeds[0].get(field), len(seeds)
      most_seeds = max(most_seeds, n)
      for key, style in zip((LAMBDA_1, LAMBDA_2), STYLE["lambda_styles"]):
        have = [r for r in seeds if r.has(key)]
        if not have:
          continue
        gid = f"{group_name(seeds)}/{key}"
        x, y = _noise_curve(ax, have, key, window, zoom_end, last, colors[value], gid)
        label = None
        if key == LAMBDA_1 and value not in labelled:
          label = f"{symbol} = {_num(value)}" + (f" ({n} seeds)" if n > 1 else "")
          labelled.add(value)
        ax.plot(x, y, style, color=colors[value], label=label, gid=gid)
    ax.set_yscale("log")
    _fit_y_to_lines(ax)
    if zoom_end > 0:
      ax.axvline(1.0, gid="zoom_boundary", **STYLE["zoom_line"])
      _merged_ticks(ax, zoom_end, last)
      ax.set_xlim(0.0, 2.0)
      ax.set_xlabel(f"epoch (the first {zoom_end:g} zoomed, left of the line; log scale after)")
    else:
      ax.set_xlim(0.0, last)
      ax.set_xlabel(_epoch_label(group[0]))
    ax.set_ylabel(r"Hessian eigenvalue $\lambda$ (log scale)")
    values = "/".join(_num(v) for v in colors)
    fixed = _fixed(group, ((BS, "S"),) if field == LR else ((LR, "η"),))
    ax.set_title(f"{symbol}: {values}" + (f" ({fixed})" if fixed else ""))
    styles = [mlines.Line2D([], [], color="black", linestyle=s, label=l)
              for s, l in zip(STYLE["lambda_styles"], (r"$\lambda_1$", r"$\lambda_2$"))]
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + styles)
  seeds = "; mean ± 1 std over seeds" if most_seeds > 1 else ""
  _title(fig, rf"$\lambda_1$, $\lambda_2$ along training (smoothed over {window}{seeds})", runs)
  return fig


# ------------------------------------------------------------------------------------------
# F3: loss change after a step only along e_i.

def _multiplier_color(m: float, multipliers: Sequence[float]):
  fixed = STYLE["multiplier_colors"]
  if m in fixed:
    return fixed[m]
  cmap = matplotlib.colormaps[STYLE["series_cmap"]]
  return cmap(list(multipliers).index(m) / max(len(multipliers) - 1, 1))


def _row_title(row: str) -> str:
  if row == "full_step":
    return "none (the full SGD step)"
  if row == "random":
    return "a random direction"
  return rf"along $e_{{{row[1:]}}}$ only"


@_styled
def step_loss_change(run: Run, rows: Sequence[str] = ("e1", "e2", "e3", "e4", "full_step"),
                     multipliers: Sequence[float] = (0.5, 1.0, 2.0),
                     ylim: Optional[tuple] = None) -> Figure:
  """ΔLoss (%) after a step of γ·η along e_i only (panels e_1..e_4 and the full step), each
  panel on its own y scale (``ylim`` sets them all)."""
  key = lambda row, m: f"step_loss_change/{row}/x{m:g}"
  present = [row for row in rows if any(run.has(key(row, m)) for m in multipliers)]
  if not present:
    raise ValueError(f"run {run.workdir} logged no step_loss_change/...: enable "
                     "analyses.step_loss_change (configs/sharp_analysis.py).")
  fig, axes = _figure(len(present), width=0.8)
  for ax, row in zip(axes, present):
    for m in multipliers:
      if run.has(key(row, m)):
        x, y = run.series(key(row, m), "epoch")
        ax.plot(x, y, "o-", markersize=3, color=_multiplier_color(m, multipliers),
                label=f"γ = {m:g}", gid=key(row, m))
    ax.axhline(0.0, gid="zero", **STYLE["reference"])
    ax.set_title(_row_title(row))
    ax.set_xlabel(_epoch_label(run))
    ax.set_ylabel("ΔLoss (%) after a step of γ·η")
    if ylim is not None:
      ax.set_ylim(*ylim)
  axes[0].legend(title="step multiplier")
  _title(fig, f"Loss change of an SGD step along the sharpest directions ({_fixed([run])})",
         [run])
  return fig


# ------------------------------------------------------------------------------------------
# F4: loss cross-sections along e_1, e_3, e_5.

def _spread(n: int, most: int) -> list[int]:
  """Up to ``most`` indices of range(n), evenly spread, the first and the last included."""
  return sorted({int(i) for i in np.linspace(0, n - 1, min(n, most)).round()})


RISE = 1.01  # F4's smallest width threshold: the loss 1% above L(θ)


@_styled
def cross_sections(run: Run, directions: Sequence[int] = (0, 2, 4),
                   max_offset: float = 8.0, num_labels: int = 6) -> Figure:
  """The loss along e_i relative to L(θ), 100·(L/L(θ) − 1) % (symlog), against the offset
  in SGD step lengths; one curve per evaluation coloured by λ_1.

  ``directions`` are 0-based eigen indices; offsets are clipped to |k| <= max_offset and the
  loss at the training loss's maximum over the run (the loss at offset 0), as the paper.
  Marks: offsets ±1 (one SGD step) and the 1% rise (L = 1.01·L(θ)); the legend names up to
  ``num_labels`` evaluations by epoch, earliest first.
  """
  entries = run.arrays("cross_section")
  if not entries:
    raise ValueError(f"run {run.workdir} has no arrays/cross_section: enable "
                     "analyses.cross_section (configs/sharp_analysis.py).")
  available = [int(d) for d in entries[0][1]["directions"]]
  dirs = [d for d in directions if d in available] or available
  steps, lam = run.series(LAMBDA_1)
  lam1 = dict(zip(steps.astype(int).tolist(), lam.tolist()))
  values = np.array([lam1.get(step, np.nan) for step, _ in entries])
  zero = [int(np.argmin(np.abs(a["offsets"]))) for _, a in entries]
  cap = float(np.nanmax([np.nanmax(a["losses"][:, z]) for (_, a), z in zip(entries, zero)]))
  finite = values[np.isfinite(values)]
  lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
  norm = mcolors.Normalize(lo, hi if hi > lo else lo + 1.0)
  cmap = matplotlib.colormaps[STYLE["lambda_cmap"]]
  epochs = _epochs_by_step(run)
  labelled = _spread(len(entries), num_labels)
  fig, axes = _figure(len(dirs), width=0.85)
  for ax, d in zip(axes, dirs):
    for j, ((step, a), value, z) in enumerate(zip(entries, values, zero)):
      row = [int(v) for v in a["directions"]].index(d)
      offsets = np.asarray(a["offsets"], np.float64)
      keep = np.abs(offsets) <= max_offset
      losses = np.asarray(a["losses"][row], np.float64)
      label = f"epoch {epochs.get(step, math.nan):g}" if j in labelled else None
      ax.plot(offsets[keep], 100 * (np.minimum(losses[keep], cap) / losses[z] - 1),
              color=cmap(norm(value)) if np.isfinite(value) else "0.5", linewidth=1.0,
              label=label, gid=f"{step}/e{d + 1}")
    for sign in (-1, 1):
      ax.axvline(sign, gid=f"step/{sign:+d}", label="±1 SGD step" if sign > 0 else None,
                 **STYLE["zoom_line"])
    ax.axhline(100 * (RISE - 1), gid="rise", label=f"1% rise: {RISE:g}·L(θ)",
               **STYLE["reference"])
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title(rf"along $e_{{{d + 1}}}$")
    ax.set_xlabel(r"offset along $e_i$ (SGD step lengths $\eta\,E|g_B\cdot e_i|$)")
  n = run.get("analyses.cross_section.num_examples")
  axes[0].set_ylabel(f"loss relative to L(θ): 100·(L / L(θ) − 1) %\n"
                     f"(training loss, first {n:,} examples; symlog)")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=len(labels),
             title=r"evaluation (coloured by $\lambda_1$) and marks")
  fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
               label=r"$\lambda_1$ at the evaluation")
  _title(fig, f"Loss cross-sections along the top eigenvectors ({_fixed([run])})", [run])
  return fig


# ------------------------------------------------------------------------------------------
# F5: alignment of minibatch gradients with the top eigenvectors.

def alignment_curve(run: Run, window: int = 10):
  """(train accuracy % at each alignment evaluation, mean |cos|, its moving average)."""
  steps, cos = run.series("alignment/mean_abs_cos")
  return _accuracy_at(run, steps), cos, smooth(cos, window)


def _accuracy_at(run: Run, steps) -> np.ndarray:
  acc_steps, acc = run.series("train/accuracy")
  if not acc_steps.size:
    raise ValueError(f"run {run.workdir} logged no train/accuracy.")
  return 100 * np.interp(steps, acc_steps, acc)


@_styled
def alignment(runs: Sequence[Run], window: int = 10) -> Figure:
  """Mean over i of mean |cos(g_B, e_i)| vs training accuracy, one curve per η (the mean over
  seeds, a moving average of ``window`` evaluations) over the points of every run, with the
  random-vector baseline (docs/protocol.md, F5)."""
  for run in runs:
    _require(run, "alignment/mean_abs_cos", "enable analyses.alignment (configs/alignment.py).")
  fig, axes = _figure(1, width=1.3)
  ax = axes[0]
  colors = _color_by(runs, LR)
  for group in sorted(seed_groups(runs), key=lambda g: (g[0].get(LR), g[0].get(BS))):
    color, name = colors[group[0].get(LR)], group_name(group)
    cos_curves = [r.series("alignment/mean_abs_cos") for r in group]
    acc_curves = [(x, _accuracy_at(r, x)) for r, (x, _) in zip(group, cos_curves)]
    for run, (_, acc), (_, cos) in zip(group, acc_curves, cos_curves):
      ax.scatter(acc, cos, s=10, color=color, alpha=STYLE["scatter_alpha"],
                 gid=f"{run.name}/points")
    _, acc, _ = curves_band(acc_curves)
    _, cos, _ = curves_band(cos_curves)
    label = f"η = {_num(group[0].get(LR))}" + (
        f", S = {group[0].get(BS)}" if _varying(runs, BS) else "") + (
        f" ({len(group)} seeds)" if len(group) > 1 else "")
    ax.plot(acc, smooth(cos, window), color=color, label=label, gid=f"{name}/mean")
  baseline = np.concatenate([r.series("alignment/random_baseline")[1] for r in runs])
  if baseline.size:
    ax.axhline(float(np.nanmean(baseline)), gid="random_baseline",
               label=f"random vector ({np.nanmean(baseline):.2g})", **STYLE["reference"])
  k = runs[0].get("tracking.k")
  ax.set_xlabel("training accuracy (%)")
  ax.set_ylabel(rf"mean over $i\leq{k}$ of mean $|\cos(g_B, e_i)|$")
  ax.set_ylim(bottom=0)
  ax.legend()
  fixed = _fixed(runs, ((BS, "S"),))
  ax.set_title(f"moving average over {window} evaluations" + (f", {fixed}" if fixed else ""))
  _title(fig, "Minibatch gradients along the top eigenvectors", runs)
  return fig


# ------------------------------------------------------------------------------------------
# F6: the step-rescaling ablation.

def rescaling_label(run: Run) -> str:
  """The ablation's legend: SGD (baseline), only top, constant top, remove top, γ = ..."""
  if run.get("optimizer.name") != "nsgd":
    return "SGD (baseline)"
  rule = run.get("nsgd.rule")
  if rule == "only_top":
    return "constant top" if run.get("nsgd.freeze_directions") else "only top"
  if rule == "remove":
    return "remove top"
  if rule == "constant":
    return f"γ = {_num(run.get('nsgd.gamma'))}"
  return f"NSGD {rule}"


def _rescaling_order(run: Run) -> tuple:
  label = rescaling_label(run)
  order = list(STYLE["rescaling_styles"])
  return (0, order.index(label), 0.0) if label in order else (1, 0, run.get("nsgd.gamma", 0.0))


def rescaling_style(run: Run) -> tuple:
  """(colour, line style) of a variant: STYLE's for the rules; for γ, coolwarm over
  log2 γ ∈ [-2, 2] (γ = 0.25 deep blue ... γ = 4 deep red), dashed."""
  label = rescaling_label(run)
  if label in STYLE["rescaling_styles"]:
    return STYLE["rescaling_styles"][label]
  cmap, style = STYLE["rescaling_gamma"]
  t = 0.5 + np.log2(float(run.get("nsgd.gamma"))) / 4
  return matplotlib.colormaps[cmap](float(np.clip(t, 0.0, 1.0))), style


@_styled
def rescaling(runs: Sequence[Run], window: int = 5) -> Figure:
  """λ_1 and the training loss vs iteration for each variant of the ablation, each smoothed
  by a moving average over ``window`` evaluations (docs/protocol.md, F6)."""
  for run in runs:
    _require(run, LAMBDA_1, "enable tracking (configs/rescaling.py tracks every step).")
  runs = sorted(runs, key=_rescaling_order)
  fig, axes = _figure(2)
  for run in runs:
    label = rescaling_label(run)
    color, style = rescaling_style(run)
    for ax, key in zip(axes, (LAMBDA_1, "train/loss")):
      x, y = run.series(key)
      ax.plot(x, smooth(y, window), style, color=color, label=label, gid=f"{label}/{key}")
  n = runs[0].get("eval.num_train_examples")
  steps = runs[0].series(LAMBDA_1)[0]
  every = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
  for ax, ylabel in zip(axes, (r"$\lambda_1$", f"training loss (first {n:,} examples)")):
    ax.set_xlabel("iteration (from the checkpoint)")
    ax.set_ylabel(ylabel)
  axes[0].set_title(rf"$\lambda_1$ every {every:g} iterations, moving average over {window}")
  axes[1].set_title(f"training loss, moving average over {window}")
  fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper",
             title="update along $e_1$")
  _title(fig, f"Rescaling the step along $e_1$ ({_fixed(runs)})", runs)
  return fig


# ------------------------------------------------------------------------------------------
# F7 and the table: Nudged SGD.

def nsgd_label(run: Run, runs: Sequence[Run]) -> str:
  """"γ = 0.01" (with K, η, S, m when they vary among the NSGD runs) or "SGD(η = 0.1)"."""
  if run.get("optimizer.name") != "nsgd":
    return f"SGD(η = {_num(run.get(LR))})"
  nsgd = [r for r in runs if r.get("optimizer.name") == "nsgd"]
  extra = [f"{sym} = {_num(run.get(f))}" for f, sym in (
      ("nsgd.num_directions", "K"), (LR, "η"), (BS, "S"), ("optimizer.momentum", "m"))
           if _varying(nsgd, f)]
  return ", ".join([f"γ = {_num(run.get('nsgd.gamma'))}"] + extra)


def nsgd_groups(runs: Sequence[Run]) -> list[tuple[str, list]]:
  """[(label, runs over seeds)]: NSGD by γ (then K) first, then SGD by η."""
  groups = {}
  for run in runs:
    groups.setdefault(nsgd_label(run, runs), []).append(run)
  def order(item):
    r = item[1][0]
    if r.get("optimizer.name") == "nsgd":
      return (0, r.get("nsgd.gamma"), r.get("nsgd.num_directions"), r.get(LR))
    return (1, r.get(LR), 0, 0)
  return sorted(groups.items(), key=order)


def _group_colors(n: int) -> list:
  cmap = matplotlib.colormaps[STYLE["group_colors"]]
  return [cmap(i % cmap.N) for i in range(n)]


def _is_nsgd(group: Sequence[Run]) -> bool:
  return group[0].get("optimizer.name") == "nsgd"


def nsgd_curve_styles(groups: Sequence[tuple[str, list]]) -> list[tuple[str, object]]:
  """[(legend label, colour)] of ``nsgd_groups``: NSGD rows as labelled, in STYLE's group
  colours; the SGD baselines "SGD η = 0.03", black to grey by η."""
  nsgd_colors = iter(_group_colors(sum(_is_nsgd(g) for _, g in groups)))
  sgd = [g for _, g in groups if not _is_nsgd(g)]
  greys = iter(str(v) for v in np.linspace(0.0, 0.6, len(sgd)))
  return [(label, next(nsgd_colors)) if _is_nsgd(group) else
          (f"SGD η = {_num(group[0].get(LR))}", next(greys)) for label, group in groups]


def mean_band(runs: Sequence[Run], key: str, x: str = "epoch"):
  """(grid, mean, std) of ``key`` over runs (``curves_band``); None when no run logged it."""
  return curves_band([r.series(key, x) for r in runs])


@_styled
def nsgd(runs: Sequence[Run], window: int = 1) -> Figure:
  """Validation accuracy, and λ_1 (solid) with the ‖H‖_F proxy (dashed, right axis), vs epoch
  for each γ and each SGD baseline η: mean over seeds, a ±1 std band."""
  fig, axes = _figure(2, width=1.1)
  ax_acc, ax_lam = axes
  ax_fro = ax_lam.twinx()
  ax_fro.grid(False)
  groups = nsgd_groups(runs)
  for (_, group), (label, color) in zip(groups, nsgd_curve_styles(groups)):
    n = len(group)
    for ax, key, scale, style in ((ax_acc, "valid/accuracy", 100.0, "-"),
                                  (ax_lam, LAMBDA_1, 1.0, "-"),
                                  (ax_fro, "hessian/frobenius_top_k", 1.0, "--")):
      band = mean_band(group, key)
      if band is None:
        continue
      x, mean, std = band
      mean, std = scale * smooth(mean, window), scale * smooth(std, window)
      ax.plot(x, mean, style, color=color, gid=f"{label}/{key}",
              label=f"{label} (n={n})" if key == "valid/accuracy" else None)
      if n > 1:
        seed_band(ax, x, mean, std, color, f"{label}/{key}/seeds")
  ax_acc.set_ylabel("validation accuracy (%)")
  ax_acc.set_title("validation accuracy (mean ± std over seeds)")
  ax_acc.legend()
  ax_lam.set_ylabel(r"$\lambda_1$ (solid)")
  ax_fro.set_ylabel(r"$\|H\|_F$ proxy $\sqrt{\sum_{i\leq k}\lambda_i^2}$ (dashed)")
  ax_lam.set_title(r"sharpness: $\lambda_1$ and $\|H\|_F$")
  ax_lam.legend(handles=[mlines.Line2D([], [], color="black", linestyle="-",
                                       label=r"$\lambda_1$"),
                         mlines.Line2D([], [], color="black", linestyle="--",
                                       label=r"$\|H\|_F$ proxy")])
  for ax in axes:
    ax.set_xlabel(_epoch_label(runs[0]))
  fixed = _fixed([r for r in runs if r.get("optimizer.name") == "nsgd"] or runs,
                 ((LR, "η"), (BS, "S"), ("nsgd.num_directions", "K")))
  _title(fig, f"Nudged SGD against SGD ({fixed})", runs)
  return fig


@_styled
def nsgd_k_ablation(runs: Sequence[Run]) -> Figure:
  """Test accuracy (best-val checkpoint) and λ_1 (best-val) vs K for NSGD, SGD runs as
  horizontal lines; mean ± std over seeds."""
  nsgd_runs = [r for r in runs if r.get("optimizer.name") == "nsgd"]
  sgd_runs = [r for r in runs if r.get("optimizer.name") != "nsgd"]
  if not nsgd_runs:
    raise ValueError("the K ablation needs NSGD runs (optimizer.name = 'nsgd').")
  val_epoch = min(last_epoch(r) for r in runs)
  summaries = {r.workdir: run_summary(r, val_epoch) for r in runs}
  fig, axes = _figure(2)
  gammas = sorted({r.get("nsgd.gamma") for r in nsgd_runs})
  for gamma, color in zip(gammas, _group_colors(len(gammas))):
    ks = sorted({r.get("nsgd.num_directions") for r in nsgd_runs
                 if r.get("nsgd.gamma") == gamma})
    for ax, field in zip(axes, ("test_accuracy", "lambda_best")):
      values = [[summaries[r.workdir][field] for r in nsgd_runs
                 if r.get("nsgd.gamma") == gamma and r.get("nsgd.num_directions") == k]
                for k in ks]
      stats = [mean_std(v) for v in values]
      bars = ax.errorbar(ks, [float(s[0]) for s in stats], yerr=[float(s[1]) for s in stats],
                         fmt="o-", color=color, capsize=3, label=f"NSGD γ = {_num(gamma)}")
      bars.lines[0].set_gid(f"nsgd/{gamma:g}/{field}")
  sgd_groups = nsgd_groups(sgd_runs)
  for (_, group), (label, color) in zip(sgd_groups, nsgd_curve_styles(sgd_groups)):
    for ax, field in zip(axes, ("test_accuracy", "lambda_best")):
      mean, _, _ = mean_std([summaries[r.workdir][field] for r in group])
      ax.axhline(float(mean), color=color, linestyle=":", label=label, gid=f"{label}/{field}")
  ks = sorted({r.get("nsgd.num_directions") for r in nsgd_runs})
  for ax in axes:
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("K (directions nudged)")
    ax.legend()
  axes[0].set_ylabel("test accuracy of the best-val checkpoint (%)")
  axes[1].set_ylabel(r"$\lambda_1$ at the best-val checkpoint")
  _title(fig, "NSGD: the number of directions K", runs)
  return fig


_COLUMNS = ("", "Seeds", "‖H‖_F estimate (best-val / final)",
            "paper's ‖H‖_F quantity (best-val / final)", "Test acc. (%)",
            "Val. acc. at epoch {e} (%)", "Loss", "Dist.")
EARLY_FRACTION = 0.25  # the table's early epoch: a quarter of the run (the paper: 50 of 200)


def _decimals(value: float, significant: int = 3) -> int:
  if not np.isfinite(value) or value == 0:
    return 2
  return int(min(4, max(0, significant - 1 - math.floor(math.log10(abs(value))))))


def _pm(values, decimals: Optional[int] = None) -> str:
  """"mean ± std" (std with ddof=1) of the finite values; "—" when none."""
  mean, std, n = mean_std(values)
  if n == 0:
    return "—"
  d = _decimals(float(mean)) if decimals is None else decimals
  return f"{mean:.{d}f}" + (f" ± {std:.{d}f}" if n > 1 else "")


def _latex(text: str) -> str:
  text = text.replace("`", "")
  for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
               ("_", r"\_"), ("‖H‖\\_F", r"\(\|H\|_F\)"), ("γ", r"\(\gamma\)"),
               ("η", r"\(\eta\)"), ("±", r"\(\pm\)"), ("†", r"\(^\dagger\)"),
               ("‡", r"\(^\ddagger\)"), ("θ", r"\(\theta\)"), ("−", "-"), ("‖", r"\(\|\)"),
               ("—", "--")):
    text = text.replace(a, b)
  return text


def nsgd_table(runs: Sequence[Run], val_epoch: Optional[float] = None) -> tuple[str, str]:
  """The NSGD table as (Markdown, LaTeX): one row per γ (and SGD(η)), mean ± std
  over seeds; ``val_epoch`` (the validation accuracy's early epoch, a speed proxy) defaults to
  a quarter of the shortest run, as the paper's epoch 50 of 200 (docs/protocol.md, NSGD tables)."""
  if val_epoch is None:
    val_epoch = float(np.floor(EARLY_FRACTION * min(last_epoch(r) for r in runs)))
  groups = nsgd_groups(runs)
  header = [c.format(e=f"{val_epoch:g}") for c in _COLUMNS]
  body, any_fro_logged, any_best_logged = [], False, False
  for label, group in groups:
    s = [run_summary(r, val_epoch) for r in group]
    col = lambda k: [x[k] for x in s]
    fro_logged = any(x["fro_logged"] for x in s)
    best_logged = any(x["best_logged"] for x in s)
    any_fro_logged |= fro_logged
    any_best_logged |= best_logged
    mark = lambda text, flag, sym: text + (sym if flag and text != "—" else "")
    body.append([
        label, str(len(group)),
        mark(f"{_pm(col('est_best'))} / {_pm(col('est_final'))}", fro_logged, "†"),
        mark(f"{_pm(col('fro_best'))} / {_pm(col('fro_final'))}", fro_logged, "†"),
        mark(_pm(col("test_accuracy"), 2), best_logged, "‡"),
        _pm(col("val_accuracy"), 2), _pm(col("train_loss"), 3),
        mark(_pm(col("distance")), best_logged, "‡")])
  notes = [
      "Mean ± std (ddof=1) over the seeds of each row.",
      "‖H‖_F estimate: sqrt(mean ‖Hz‖²) over Gaussian probes z (Hutchinson, `frobenius`); "
      "the paper's quantity: sqrt(mean ‖Hz‖) (`frobenius_as_in_paper`, docs/protocol.md, "
      "Post-hoc evaluation), which "
      "is what its table reports though it is not an estimate of ‖H‖_F; each at the "
      "best-validation checkpoint / at the end, from evaluation_best.json / "
      "evaluation_last.json (experiments/evaluate.py) or the logs (†).",
      f"Test acc.: of the best-validation checkpoint. Val. acc. ({val_epoch:g}): at the last "
      f"evaluation at or before epoch {val_epoch:g}. Loss: the final training loss. Dist.: "
      "‖θ_best − θ_init‖."]
  if any_fro_logged:
    notes.append("† some seeds have no evaluation_*.json: the logged `hessian/frobenius` and "
                 "`hessian/frobenius_as_in_paper` (best-val: the last ones at or before the "
                 "best-validation evaluation; final: the last ones logged).")
  if any_best_logged:
    notes.append("‡ some seeds have no evaluation_best.json: the test accuracy and distance "
                 "logged at the best-validation evaluation.")
  markdown = "\n".join(
      ["| " + " | ".join(header) + " |",
       "|" + "|".join(["---"] + [":-:"] * (len(header) - 1)) + "|"]
      + ["| " + " | ".join(row) + " |" for row in body] + [""] + notes) + "\n"
  latex = "\n".join(
      ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering",
       "\\begin{tabular}{l" + "c" * (len(header) - 1) + "}", "\\toprule",
       " & ".join(_latex(h) for h in header) + " \\\\", "\\midrule"]
      + [" & ".join(_latex(c) for c in row) + " \\\\" for row in body]
      + ["\\bottomrule", "\\end{tabular}",
         "\\caption{Nudged SGD against SGD (" + _latex(describe(runs)) + "). "
         + " ".join(_latex(n) for n in notes) + "}", "\\end{table}"]) + "\n"
  return markdown, latex


# ------------------------------------------------------------------------------------------
# Beyond the paper: edge of stability, spectral density.

def _eos_label(run: Run) -> str:
  if run.get("full_batch"):
    return f"GD η = {_num(run.get(LR))}"
  return f"SGD η = {_num(run.get(LR))}, S = {run.get(BS)}"


def _loss_series(run: Run, x: str, keys: Sequence[str]):
  """(x, loss) of the first of ``keys`` the run logged; None when none."""
  return next((run.series(k, x) for k in keys if run.has(k)), None)


@_styled
def edge_of_stability(runs: Sequence[Run]) -> Figure:
  """η·λ_1 (top) and the training loss (below, log y) for full-batch GD runs against the step
  and SGD runs against the epoch (a column each), with the threshold η·λ_1 = 2(1+m)."""
  for run in runs:
    _require(run, "eos/eta_lambda_max", "enable tracking.")
  runs = sorted(runs, key=lambda r: (r.get(LR), -r.get(BS)))
  columns = [(kind, x, group) for kind, x, group in (
      ("full-batch GD", "step", [r for r in runs if r.get("full_batch")]),
      ("SGD", "epoch", [r for r in runs if not r.get("full_batch")])) if group]
  fig, axes = _figure(len(columns), 2, sharex="col", width=1.1, height=0.8)
  colors = _color_by(runs, LR)
  for col, (kind, x, group) in enumerate(columns):
    ax_eos, ax_loss = axes[col], axes[len(columns) + col]
    # GD: the loss of every step (its batch is the training set); SGD: the evaluations'.
    loss_keys = (("train/batch_loss", "train/loss") if kind != "SGD" else
                 ("train/loss", "train/batch_loss"))
    for run in group:
      color, label = colors[run.get(LR)], _eos_label(run)
      ax_eos.plot(*run.series("eos/eta_lambda_max", x), color=color, label=label,
                  gid=f"{run.name}/eta_lambda_max")
      if (loss := _loss_series(run, x, loss_keys)) is not None:
        ax_loss.plot(*loss, color=color, linewidth=1.0, label=label, gid=f"{run.name}/loss")
    for t in sorted({float(v) for r in group for v in r.series("eos/threshold")[1]}):
      ax_eos.axhline(t, gid=f"threshold/{t:g}", label=(
          rf"$\eta\lambda_1 = {t:g}$" if t == 2 else f"2(1+m) = {t:g}"),
                     **{**STYLE["reference"], "linestyle": ":"})
    ax_eos.set_title(f"{kind}: above the line a quadratic would diverge")
    ax_eos.set_ylabel(r"$\eta\,\lambda_1$")
    ax_eos.legend()
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss (log scale)")
    ax_loss.set_title("training loss" + (" of every step" if kind != "SGD" else ""))
    ax_loss.set_xlabel("step (one full-batch gradient step each)" if kind != "SGD"
                       else _epoch_label(group[0]))
  _title(fig, "Edge of stability", runs)
  return fig


def _finite_draws(a: dict) -> tuple[np.ndarray, np.ndarray]:
  """(nodes, weights) of the draws whose Lanczos run stayed finite (the others are NaN)."""
  nodes, weights = np.asarray(a["nodes"], np.float64), np.asarray(a["weights"], np.float64)
  ok = np.isfinite(nodes).all(-1) & np.isfinite(weights).all(-1)
  return nodes[ok], weights[ok]


@_styled
def spectral_density(run: Run, num_curves: int = 4, num_points: int = 800,
                     sigma: Optional[float] = None) -> Figure:
  """The SLQ density of the Hessian (Gaussian-smoothed, log y) at up to ``num_curves``
  evaluations spread over the run, in time order (earliest first, viridis dark to light);
  draws that were not finite are left out.

  σ defaults to 1% of the width of all the plotted nodes (the library's default, shared by
  the curves so they compare).
  """
  entries = [(step, _finite_draws(a)) for step, a in run.arrays("spectral_density")]
  entries = [(step, d) for step, d in entries if d[0].size]
  if not entries:
    raise ValueError(f"run {run.workdir} has no finite arrays/spectral_density: enable "
                     "analyses.spectral_density.")
  chosen = [entries[i] for i in _spread(len(entries), num_curves)]
  nodes = np.concatenate([n.ravel() for _, (n, _) in chosen])
  lo, hi = float(nodes.min()), float(nodes.max())
  width = max(hi - lo, 1e-12)
  sigma = 0.01 * width if sigma is None else sigma
  grid = np.linspace(lo - 0.05 * width, hi + 0.05 * width, num_points)
  epochs = _epochs_by_step(run)
  cmap = matplotlib.colormaps[STYLE["series_cmap"]]
  fig, axes = _figure(1, width=1.3)
  ax = axes[0]
  peak = 0.0
  for i, (step, (n, w)) in enumerate(chosen):
    density = np.asarray(spectral.density_on_grid(spectral.SpectralDensity(n, w), grid, sigma),
                         np.float64)
    peak = max(peak, float(density.max()))
    ax.plot(grid, density, color=cmap(0.9 * i / max(len(chosen) - 1, 1)),
            label=f"epoch {epochs.get(step, math.nan):g} (step {step})", gid=f"density/{step}")
  ax.set_yscale("log")
  ax.set_ylim(peak * 1e-6, peak * 2)
  ax.set_xlabel(r"Hessian eigenvalue $\lambda$")
  ax.set_ylabel("spectral density (log scale)")
  ax.set_title(f"stochastic Lanczos quadrature, Gaussian σ = {sigma:.3g}")
  ax.legend(title="evaluation")
  _title(fig, "Hessian spectral density along training", [run])
  return fig


# ------------------------------------------------------------------------------------------
# The registry: which function draws which figure, from which runs of a group (--figure=all).

def _has_arrays(run: Run, name: str) -> bool:
  return os.path.isdir(os.path.join(run.workdir, "arrays", name))


def _plain(run: Run) -> bool:
  return run.get("optimizer.name") == "sgd" and not run.get("full_batch") and not run.get(
      "init_from")


def _select_noise_grid(runs):
  runs = [r for r in runs if _plain(r) and r.has(LAMBDA_2)]
  return runs if len(runs) > 1 and (_varying(runs, LR) or _varying(runs, BS)) else []


def _select_nsgd(runs):
  runs = [r for r in runs if not r.get("init_from") and r.has("valid/accuracy")]
  return runs if any(r.get("optimizer.name") == "nsgd" for r in runs) else []


def _select_eos(runs):
  return ([r for r in runs if r.has("eos/eta_lambda_max")]
          if any(r.get("full_batch") for r in runs) else [])


@dataclasses.dataclass(frozen=True)
class FigureSpec:
  """draw: (run) -> Figure when per_run, else (runs) -> Figure; select: the runs of a group
  (a sweep directory) it draws in ``--figure=all``."""
  draw: Callable
  per_run: bool
  select: Callable


FIGURES = {
    "general_shape": FigureSpec(general_shape, True, lambda runs: [
        r for r in runs if r.has("hessian/lambda_10")]),
    "noise_grid": FigureSpec(noise_grid, False, _select_noise_grid),
    "step_loss_change": FigureSpec(step_loss_change, True, lambda runs: [
        r for r in runs if any(k.startswith("step_loss_change/") for k in r.keys())]),
    "cross_sections": FigureSpec(cross_sections, True, lambda runs: [
        r for r in runs if _has_arrays(r, "cross_section")]),
    "alignment": FigureSpec(alignment, False, lambda runs: [
        r for r in runs if r.has("alignment/mean_abs_cos")]),
    "rescaling": FigureSpec(rescaling, False, lambda runs: [
        r for r in runs if r.get("init_from") and r.has(LAMBDA_1)]),
    "nsgd": FigureSpec(nsgd, False, _select_nsgd),
    "edge_of_stability": FigureSpec(edge_of_stability, False, _select_eos),
    "spectral_density": FigureSpec(spectral_density, True, lambda runs: [
        r for r in runs if _has_arrays(r, "spectral_density")]),
}


def safe_name(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def render(name: str, runs: Sequence[Run], out_dir: str, *, stem: Optional[str] = None,
           val_epoch: Optional[float] = None) -> list[str]:
  """Draws figure ``name`` from ``runs`` and saves it under ``out_dir``; returns the paths.

  Per-run figures give one file pair per run (``<stem>_<run>`` when several); ``nsgd`` also
  writes the K ablation when K varies and the table (``<stem>_table.md``/``.tex``).
  """
  if name not in FIGURES:
    raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
  if not runs:
    raise ValueError(f"figure {name!r}: no runs given.")
  spec, stem = FIGURES[name], stem or name
  written = []
  if spec.per_run:
    for run in runs:
      suffix = "" if len(runs) == 1 else f"_{safe_name(run.name)}"
      written += save(spec.draw(run), out_dir, stem + suffix)
    return written
  written += save(spec.draw(runs), out_dir, stem)
  if name == "nsgd":
    if _varying([r for r in runs if r.get("optimizer.name") == "nsgd"], "nsgd.num_directions"):
      written += save(nsgd_k_ablation(runs), out_dir, f"{stem}_k_ablation")
    markdown, latex = nsgd_table(runs, val_epoch)
    for ext, text in (("md", markdown), ("tex", latex)):
      path = os.path.join(out_dir, f"{stem}_table.{ext}")
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
      written.append(path)
  return written
