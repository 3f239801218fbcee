"""The figures and the NSGD table, drawn from small synthetic run directories whose values are
known: files written, plotted data, colours, scales and table numbers checked."""

import functools
import importlib.util
import json
import math
import pathlib

from matplotlib import colors as mcolors
import numpy as np
import pytest

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.report import figures
from sharp_dirs.report import statistics

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "figures.py"
SPE = 8  # steps per epoch of the synthetic runs
EPOCHS = 6
PEAKS = {0.01: 40.0, 0.03: 25.0, 0.1: 12.0, 0.05: 20.0}


def make_config(**overrides) -> dict:
  """A cpu-scale config (SimpleCNN F = 8, Fashion-MNIST 10k) with dotted overrides."""
  c = config_lib.default_config()
  config_lib.cpu_scale(c, num_epochs=EPOCHS)
  for dotted, value in overrides.items():
    node = c
    parts = dotted.split(".")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  return c.to_dict()


def lam1(epoch, index, peak):
  """A rise-and-fall λ_1 with an alternating ±5% wiggle (so smoothing changes it)."""
  return peak * (1 + epoch) * np.exp(-epoch / 2) * (1 + 0.05 * (-1) ** index)


def tracking_steps(zoom_epochs, epochs=EPOCHS):
  zoom = [s for s in range(0, int(zoom_epochs * SPE), 2)]
  return sorted(set(zoom) | {e * SPE for e in range(epochs + 1)})


def write_run(path, config, *, k=10, zoom_epochs=1.0, extra=None, evals=None, alignment=False):
  """A run of config["num_epochs"]: tracking rows at the zoom then per-epoch steps, eval rows
  every epoch; λ_1's peak grows 10% per seed."""
  writer = metrics_io.MetricWriter(str(path))
  writer.write_json("config.json", config)
  lr, seed, epochs = config["optimizer"]["learning_rate"], config["seed"], config["num_epochs"]
  peak = PEAKS.get(lr, 10.0) * (128 / config["batch_size"]) ** 0.25 * (1 + 0.1 * seed)
  tracked = tracking_steps(zoom_epochs, epochs)
  for step in range(epochs * SPE + 1):
    epoch = step / SPE
    if step in tracked:
      index = tracked.index(step)
      l1 = lam1(epoch, index, peak)
      row = {"epoch": epoch, **{f"hessian/lambda_{i}": l1 / i for i in range(1, k + 1)}}
      row.update({"eos/eta_lambda_max": lr * l1, "eos/threshold": 2.0,
                  "hessian/frobenius_top_k": l1 * 1.2})
      if alignment:
        row.update({"alignment/mean_abs_cos": 0.2 / (1 + epoch) + 0.01 * (index % 3 + seed),
                    "alignment/random_baseline": 0.0013})
      if extra:
        row.update(extra(step, epoch, index))
      writer.write_row(step, row)
    if step % SPE == 0:
      e = step // SPE
      row = {"epoch": float(e), "train/loss": 1.0 / (1 + e), "train/accuracy": 0.5 + 0.05 * e,
             "valid/loss": 1.1 / (1 + e), "valid/accuracy": 0.48 + 0.04 * e,
             "test/loss": 1.2 / (1 + e), "test/accuracy": 0.47 + 0.04 * e,
             "learning_rate": lr, "distance_from_init": float(e)}
      if evals:
        row.update(evals(e))
      writer.write_row(step, row)
  writer.close()
  return metrics_io.read_run(str(path))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def lr_grid(root):
  """η = 0.1, 0.01, 0.03 at S = 128; the first tracks the top 10 (the general shape)."""
  return [write_run(root / "grid" / f"lr={lr}", make_config(
      **{"optimizer.learning_rate": lr, "tracking.k": 10, "tracking.zoom_epochs": 1.0}),
                    k=10 if lr == 0.1 else 5, alignment=True)
          for lr in (0.1, 0.01, 0.03)]


@pytest.fixture(scope="module")
def bs_grid(root):
  return [write_run(root / "grid" / f"bs={bs}", make_config(
      **{"optimizer.learning_rate": 0.05, "batch_size": bs, "tracking.zoom_epochs": 1.0}), k=2)
          for bs in (32, 1024, 128)]


def line(fig, gid, ax=None):
  """The one line with this gid in the figure (or in the axes ``ax``)."""
  axes = [ax] if ax is not None else fig.axes
  found = [l for a in axes for l in a.lines if l.get_gid() == gid]
  assert len(found) == 1, (gid, [l.get_gid() for a in axes for l in a.lines])
  return found[0]


def same_color(a, b):
  return np.allclose(mcolors.to_rgba(a), mcolors.to_rgba(b))


def expected_smooth(values, window):
  """The moving average by hand: the mean of the values in [i - ⌊w/2⌋, i + ⌊(w-1)/2⌋] (numpy's
  'same' alignment) that exist."""
  lo, hi = window // 2, (window - 1) // 2
  return np.array([np.mean(values[max(0, i - lo):i + hi + 1]) for i in range(len(values))])


def assert_saved(paths, names):
  assert sorted(pathlib.Path(p).name for p in paths) == sorted(
      f"{n}.{ext}" for n in names for ext in ("png", "pdf"))
  for p in paths:
    assert pathlib.Path(p).stat().st_size > 5000, p


# ------------------------------------------------------------------------------------------
# Helpers.

def test_smooth_matches_the_paper_inside_and_averages_what_is_there_at_the_edges():
  v = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0])
  paper = np.convolve(v, np.ones(5), "same") / 5
  got = statistics.smooth(v, 5)
  np.testing.assert_allclose(got[2:-2], paper[2:-2])
  np.testing.assert_allclose(got, expected_smooth(v, 5))
  assert got[0] == pytest.approx(np.mean(v[:3]))
  np.testing.assert_allclose(statistics.smooth(v[:2], 5), [2.0, 2.0])  # shorter than the window
  with_nan = statistics.smooth([1.0, np.nan, 3.0], 3)
  np.testing.assert_allclose(with_nan, [1.0, 2.0, 3.0])


def test_describe_names_model_data_and_scale(lr_grid):
  assert figures.describe(lr_grid) == "SimpleCNN, Fashion-MNIST (10k), CPU scale"
  paper = metrics_io.Run("x", {"model": "resnet32", "dataset": "cifar10",
                               "num_train_examples": 0}, [], {})
  assert figures.describe([paper]) == "ResNet-32, CIFAR-10, paper scale"


def test_noise_colors_keep_blue_for_the_noisiest():
  assert figures.noise_colors(3) == ["red", "green", "blue"]
  assert figures.noise_colors(2) == ["red", "blue"]
  assert len(figures.noise_colors(5)) == 5 and same_color(figures.noise_colors(5)[-1], "blue")


# ------------------------------------------------------------------------------------------
# F2: the noise grid.

def test_noise_grid_plots_smoothed_lambdas_on_the_merged_axis(lr_grid):
  fig = figures.noise_grid(lr_grid)
  (ax,) = fig.axes
  assert ax.get_yscale() == "log"
  assert [l.get_xdata()[0] for l in ax.lines if l.get_gid() == "zoom_boundary"] == [1.0]
  last = float(EPOCHS)
  for run in lr_grid:
    epochs, lam = run.series("hessian/lambda_1", "epoch")
    early = epochs < 1.0
    want = np.concatenate([expected_smooth(lam[early], 5), expected_smooth(lam[~early], 5)])
    got = line(fig, f"{run.name}/hessian/lambda_1")
    np.testing.assert_allclose(got.get_ydata(), want)
    np.testing.assert_allclose(got.get_xdata(), np.where(  # the late part in log scale
        early, epochs, 1 + np.log(np.maximum(epochs, 1.0)) / np.log(last)))
    assert got.get_linestyle() == "-"
    assert line(fig, f"{run.name}/hessian/lambda_2").get_linestyle() == "-."
    assert statistics.peak_lambda_max(run) == pytest.approx(want.max())
  colour = {r.get("optimizer.learning_rate"): line(fig, f"{r.name}/hessian/lambda_1").get_color()
            for r in lr_grid}
  assert same_color(colour[0.01], "red") and same_color(colour[0.03], "green")
  assert same_color(colour[0.1], "blue")
  by_lr = sorted(lr_grid, key=lambda r: r.get("optimizer.learning_rate"))
  peaks = [statistics.peak_lambda_max(r) for r in by_lr]
  assert peaks == sorted(peaks, reverse=True)  # larger η, lower peak (built in)
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels[:3] == ["η = 0.01", "η = 0.03", "η = 0.1"]
  assert "SimpleCNN, Fashion-MNIST (10k), CPU scale" in fig.get_suptitle()


def test_noise_grid_of_batch_sizes_and_of_a_whole_sweep(lr_grid, bs_grid):
  fig = figures.noise_grid(bs_grid)
  colour = {r.get("batch_size"): line(fig, f"{r.name}/hessian/lambda_1").get_color()
            for r in bs_grid}
  assert same_color(colour[1024], "red") and same_color(colour[128], "green")
  assert same_color(colour[32], "blue")
  assert fig.axes[0].get_title().startswith("S: 1024/128/32")
  panels = figures.noise_panels(lr_grid + bs_grid)
  assert [field for field, _ in panels] == ["optimizer.learning_rate", "batch_size"]
  assert sorted(r.get("batch_size") for r in panels[1][1]) == [32, 128, 1024]
  assert len(figures.noise_grid(lr_grid + bs_grid).axes) == 2


SWEEP_POINTS = ((0.01, 128, 6), (0.03, 128, 5), (0.1, 128, 4), (0.03, 32, 5), (0.03, 512, 9))


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
  """The cpu noise grid's shape: (η, S, epochs) points, seeds 0 and 1, named as sweep.py."""
  root = tmp_path_factory.mktemp("sweep")
  runs = []
  for lr, bs, epochs in SWEEP_POINTS:
    for seed in (0, 1):
      name = f"optimizer.learning_rate={lr},batch_size={bs},num_epochs={epochs},seed={seed}"
      runs.append(write_run(root / name, make_config(**{
          "optimizer.learning_rate": lr, "batch_size": bs, "num_epochs": epochs, "seed": seed,
          "tracking.zoom_epochs": 1.0}), k=2, alignment=True))
  return runs


def setting(lr, bs, epochs):
  return f"optimizer.learning_rate={lr},batch_size={bs},num_epochs={epochs}"


def band_of(fig, gid, ax=None):
  """The one collection (a fill_between band) with this gid in the figure (or ``ax``)."""
  axes = [ax] if ax is not None else fig.axes
  found = [c for a in axes for c in a.collections if c.get_gid() == gid]
  assert len(found) == 1, (gid, [c.get_gid() for a in axes for c in a.collections])
  return found[0]


def band_range(band):
  """(lowest, highest) y of a fill_between band."""
  y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
  return y.min(), y.max()


def test_noise_grid_draws_seeds_as_a_mean_line_with_a_std_band(seed_sweep):
  fig = figures.noise_grid(seed_sweep)
  eta_panel = fig.axes[0]
  lam_lines = [l for l in eta_panel.lines if l.get_gid().endswith("/hessian/lambda_1")]
  assert len(lam_lines) == 3  # one per η, not one per seed
  assert not any("seed=" in str(l.get_gid()) for ax in fig.axes for l in ax.lines)
  for lr, bs, epochs in SWEEP_POINTS[:3]:
    seeds = [r for r in seed_sweep if r.name.startswith(setting(lr, bs, epochs) + ",")]
    curves = []
    for run in seeds:
      x, lam = run.series("hessian/lambda_1", "epoch")
      early = x < 1.0
      curves.append(np.concatenate([expected_smooth(lam[early], 5),
                                    expected_smooth(lam[~early], 5)]))
    mean, std = np.mean(curves, axis=0), np.std(curves, axis=0, ddof=1)
    got = line(fig, f"{setting(lr, bs, epochs)}/hessian/lambda_1", eta_panel)
    np.testing.assert_allclose(got.get_ydata(), mean)
    band = band_of(fig, f"{setting(lr, bs, epochs)}/hessian/lambda_1/seeds", eta_panel)
    assert same_color(band.get_facecolor()[0][:3], mcolors.to_rgb(got.get_color()))
    np.testing.assert_allclose(band_range(band), ((mean - std).min(), (mean + std).max()))
    assert std.max() > 0
  labels = [t.get_text() for t in eta_panel.get_legend().get_texts()]
  assert labels[:3] == ["η = 0.01 (2 seeds)", "η = 0.03 (2 seeds)", "η = 0.1 (2 seeds)"]
  assert "mean ± 1 std over seeds" in fig.get_suptitle()
  single = figures.noise_grid([r for r in seed_sweep if r.name.endswith("seed=0")])
  assert not [c for ax in single.axes for c in ax.collections]  # one seed: no band


def test_noise_grid_panels_end_at_their_longest_run(seed_sweep):
  fig = figures.noise_grid(seed_sweep)
  eta_panel, s_panel = fig.axes
  for ax, longest in ((eta_panel, 6), (s_panel, 9)):
    assert ax.get_xlim() == (0.0, 2.0)  # the merged axis: [1, 2] holds epochs 1..longest
    ends = [l.get_xdata()[-1] for l in ax.lines if l.get_gid().endswith("lambda_1")]
    assert max(ends) == pytest.approx(2.0)
    labels = np.array([float(t.get_text()) for t in ax.get_xticklabels()])
    assert labels.max() <= longest  # the ticks are the panel's own epochs
    np.testing.assert_allclose(ax.get_xticks(), figures.merged_epoch(labels, 1.0, longest))
  # η = 0.1 ran 4 epochs of the η panel's 6: it ends at 1 + log 4 / log 6 (log scale after 1).
  got = line(fig, f"{setting(0.1, 128, 4)}/hessian/lambda_1", eta_panel)
  assert got.get_xdata()[-1] == pytest.approx(1 + np.log(4) / np.log(6))



def test_noise_grid_without_zoom_ends_at_the_last_epoch(tmp_path):
  runs = [write_run(tmp_path / f"lr={lr}", make_config(**{
      "optimizer.learning_rate": lr, "num_epochs": epochs, "tracking.zoom_epochs": 0.0}),
                    k=2, zoom_epochs=0.0) for lr, epochs in ((0.01, 7), (0.1, 3))]
  (ax,) = figures.noise_grid(runs).axes
  assert ax.get_xlim() == (0.0, 7.0)


# ------------------------------------------------------------------------------------------
# F1, F3, F4, F9: one run.

def test_general_shape(lr_grid):
  run = lr_grid[0]
  fig = figures.general_shape(run)
  full, zoom, acc = fig.axes
  assert zoom.get_xlim() == (0.0, 1.0)
  lines = [l for l in full.lines if l.get_gid().startswith("full/")]
  assert len(lines) == 10
  assert same_color(lines[0].get_color(), figures.matplotlib.colormaps["coolwarm_r"](0.0))
  assert same_color(lines[-1].get_color(), figures.matplotlib.colormaps["coolwarm_r"](1.0))
  epochs, lam = run.series("hessian/lambda_3", "epoch")
  np.testing.assert_allclose(line(fig, "zoom/hessian/lambda_3").get_ydata(), lam[epochs <= 1])
  np.testing.assert_allclose(line(fig, "valid/accuracy").get_ydata(),
                             100 * run.series("valid/accuracy")[1])


@pytest.fixture(scope="module")
def analysis_run(root):
  """step_loss_change rows every 2nd evaluation, cross-sections and spectral densities."""
  rng = np.random.default_rng(0)
  config = make_config(**{"optimizer.learning_rate": 0.05, "epoch_size": 1280,
                          "tracking.zoom_epochs": 0.0})
  offsets = np.array([-16, -8, -4, -2, -1, -0.5, 0, 0.5, 1, 2, 4, 8, 16], np.float64)
  path = root / "analysis"

  def extra(step, epoch, index):
    out = {}
    if index % 2 == 0:
      for i, row in enumerate(["e1", "e2", "e3", "e4", "e5", "random", "full_step"]):
        for m in (0.25, 0.5, 1.0, 2.0, 4.0):
          out[f"step_loss_change/{row}/x{m:g}"] = (m - 1) * 10 / (i + 1) + epoch
    return out

  run = write_run(path, config, k=5, zoom_epochs=0.0, extra=extra)
  writer = metrics_io.MetricWriter(str(path), resume_step=10**9)  # keeps the rows
  for step, l1 in zip(*run.series("hessian/lambda_1")):
    step = int(step)
    base = 1.0 / (1 + step / SPE)
    losses = base + np.array([0.05, 0.2, 0.5])[:, None] * offsets[None] ** 2
    writer.write_arrays(step, "cross_section", {
        "offsets": offsets, "scale": np.ones(3), "losses": losses,
        "directions": np.array([0, 2, 4]), "lambda": np.array([l1, l1 / 3, l1 / 5]),
        "width": np.ones((3, 4))})
    writer.write_arrays(step, "spectral_density", {
        "nodes": np.sort(rng.normal(size=(2, 12)) * l1 / 4, axis=1),
        "weights": np.full((2, 12), 1 / 12)})
  writer.close()
  return metrics_io.read_run(str(path))


def test_step_loss_change(analysis_run):
  fig = figures.step_loss_change(analysis_run)
  assert [ax.get_title() for ax in fig.axes] == [
      "along $e_{1}$ only", "along $e_{2}$ only", "along $e_{3}$ only", "along $e_{4}$ only",
      "none (the full SGD step)"]
  for m, colour in ((0.5, "blue"), (1.0, "green"), (2.0, "red")):
    got = line(fig, f"step_loss_change/e1/x{m:g}")
    assert same_color(got.get_color(), colour)
    epochs, values = analysis_run.series(f"step_loss_change/e1/x{m:g}", "epoch")
    np.testing.assert_allclose(got.get_xdata(), epochs)
    np.testing.assert_allclose(got.get_ydata(), values)
  zeros = [l for ax in fig.axes for l in ax.lines if l.get_gid() == "zero"]
  assert len(zeros) == 5 and all(l.get_linestyle() == "--" and l.get_ydata()[0] == 0
                                 for l in zeros)
  assert not any(l.get_gid() == "step_loss_change/e1/x4" for l in fig.axes[0].lines)
  # Each panel on its own y scale: e_1 spans -5..16 %, the full step -0.7..7.4 %.
  first, full = fig.axes[0], fig.axes[-1]
  assert not first.get_shared_y_axes().joined(first, full)
  for ax in fig.axes:
    data = np.concatenate([l.get_ydata() for l in ax.lines if l.get_gid() != "zero"])
    lo, hi = ax.get_ylim()
    assert lo <= data.min() and data.max() <= hi and hi - lo < 1.3 * (data.max() - data.min())
  assert np.diff(first.get_ylim()) > 2 * np.diff(full.get_ylim())


def test_cross_sections_relative_to_the_loss_at_theta_coloured_by_lambda_1_and_clipped(
    analysis_run):
  fig = figures.cross_sections(analysis_run)
  entries = analysis_run.arrays("cross_section")
  steps, lam = analysis_run.series("hessian/lambda_1")
  norm = mcolors.Normalize(lam.min(), lam.max())
  cap = max(a["losses"][:, 6].max() for _, a in entries)  # offset 0, the training loss
  cmap = figures.matplotlib.colormaps["coolwarm"]
  for (step, a), l1 in zip(entries, lam):
    got = line(fig, f"{step}/e3")
    np.testing.assert_allclose(got.get_xdata(), a["offsets"][1:-1])  # |k| <= 8
    loss_at_theta = a["losses"][1][6]
    np.testing.assert_allclose(got.get_ydata(), 100 * (
        np.minimum(a["losses"][1][1:-1], cap) / loss_at_theta - 1))
    assert same_color(got.get_color(), cmap(norm(l1)))
  assert len(fig.axes) == 4  # three panels and the colorbar
  assert fig.axes[-1].get_ylabel() == r"$\lambda_1$ at the evaluation"
  panels = fig.axes[:3]
  assert "relative to L(θ)" in panels[0].get_ylabel()
  for ax in panels:  # one SGD step either side, the 1% rise (L = 1.01 L(θ), i.e. +1 %)
    assert ax.get_yscale() == "symlog"
    assert line(fig, "step/-1", ax).get_xdata()[0] == -1
    assert line(fig, "step/+1", ax).get_xdata()[0] == 1
    assert line(fig, "rise", ax).get_ydata()[0] == pytest.approx(1.0)
  (legend,) = fig.legends
  labels = [t.get_text() for t in legend.get_texts()]
  epochs = [float(t.split()[1]) for t in labels if t.startswith("epoch ")]
  assert len(epochs) == 6 and epochs == sorted(epochs)  # earliest first
  assert epochs[0] == 0.0 and epochs[-1] == float(EPOCHS)
  assert labels[6:] == ["±1 SGD step", "1% rise: 1.01·L(θ)"]


def test_spectral_density_equals_the_library_smoothing(analysis_run):
  from sharp_dirs.curvature import spectral  # pylint: disable=g-import-not-at-top
  fig = figures.spectral_density(analysis_run, num_curves=3)
  entries = analysis_run.arrays("spectral_density")
  chosen = [entries[0], entries[len(entries) // 2], entries[-1]]
  nodes = np.concatenate([a["nodes"].ravel() for _, a in chosen])
  sigma = 0.01 * (nodes.max() - nodes.min())
  (ax,) = fig.axes
  assert ax.get_yscale() == "log" and len(ax.lines) == 3
  for step, a in chosen:
    got = line(fig, f"density/{step}")
    want = spectral.density_on_grid(spectral.SpectralDensity(a["nodes"], a["weights"]),
                                    got.get_xdata(), sigma)
    np.testing.assert_allclose(got.get_ydata(), np.asarray(want), rtol=1e-4, atol=1e-30)


@functools.cache
def load_script():
  """experiments/figures.py as a module (once: its absl flags are global)."""
  spec = importlib.util.spec_from_file_location("figures_script", SCRIPT)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  return script


def run_script(script, *args):
  flags = script.flags.FLAGS
  try:
    flags(["figures", *args])
    script.main(["figures"])
  finally:
    flags.unparse_flags()


@pytest.fixture(scope="module")
def density_run(tmp_path_factory):
  """A run as analyses.spectral_density.enabled=True leaves it: tracking rows, and at each
  evaluation the library's SLQ (2 draws of 12 steps, float32) of a Hessian that grows over
  training (the SLQ of c·H is c times the nodes); the last evaluation's second draw broke
  down (NaN nodes, as ``spectral.spectral_density`` marks it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sharp_dirs.curvature import spectral  # pylint: disable=g-import-not-at-top
  h = np.diag(np.linspace(-1.0, 10.0, 30)).astype(np.float32)
  slq = spectral.spectral_density(lambda v: jnp.asarray(h) @ v, jnp.zeros(30, jnp.float32),
                                  jax.random.PRNGKey(0), num_draws=2, num_steps=12)
  path = tmp_path_factory.mktemp("density") / "run"
  config = make_config(**{"tracking.zoom_epochs": 0.0, "analyses.spectral_density.enabled": True})
  run = write_run(path, config, k=2, zoom_epochs=0.0)
  writer = metrics_io.MetricWriter(str(path), resume_step=10**9)
  steps = [int(x) for x in run.series("hessian/lambda_1")[0]]
  for i, step in enumerate(steps):
    nodes = np.asarray(slq.nodes) * (1 + i)
    if i == len(steps) - 1:
      nodes[1] = np.nan
    writer.write_arrays(step, "spectral_density", {"nodes": nodes, "weights": slq.weights})
  writer.close()
  return metrics_io.read_run(str(path))


def test_spectral_density_of_a_run_in_time_order_without_broken_draws(density_run, tmp_path):
  entries = density_run.arrays("spectral_density")
  assert entries[0][1]["nodes"].shape == (2, 12) and entries[0][1]["nodes"].dtype == np.float32
  fig = figures.spectral_density(density_run)
  (ax,) = fig.axes
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  epochs = [float(t.split()[1]) for t in labels]
  assert len(labels) == 4 and epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == EPOCHS
  last_step, last = entries[-1]
  got = line(fig, f"density/{last_step}")
  assert np.isfinite(got.get_ydata()).all()
  nodes = np.concatenate([a["nodes"].ravel() for _, a in [entries[i] for i in (0, 2, 4, 6)]])
  sigma = 0.01 * (np.nanmax(nodes) - np.nanmin(nodes))
  # The curve is spectral.density_on_grid; here in numpy: mean over draws of Σ_j w_j N(t; θ_j, σ²)
  diff = got.get_xdata()[:, None, None] - last["nodes"][:1][None]
  kernel = np.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
  reference = np.mean(np.sum(last["weights"][:1][None] * kernel, axis=-1), axis=-1)
  np.testing.assert_allclose(got.get_ydata(), reference, rtol=1e-4)
  script = load_script()
  run_script(script, "--figure=spectral_density", f"--runs={density_run.workdir}",
             f"--out={tmp_path}")
  assert_saved([str(p) for p in tmp_path.iterdir()], ["spectral_density"])


# ------------------------------------------------------------------------------------------
# F5, F6, F8: several runs.

def test_alignment(lr_grid):
  fig = figures.alignment(lr_grid)
  (ax,) = fig.axes
  for run in lr_grid:
    got = line(fig, f"{run.name}/mean")
    steps, cos = run.series("alignment/mean_abs_cos")
    acc_steps, acc = run.series("train/accuracy")
    np.testing.assert_allclose(got.get_xdata(), 100 * np.interp(steps, acc_steps, acc))
    np.testing.assert_allclose(got.get_ydata(), expected_smooth(cos, 10))
  assert same_color(line(fig, "lr=0.1/mean").get_color(), "blue")
  assert same_color(line(fig, "lr=0.01/mean").get_color(), "red")
  assert line(fig, "random_baseline").get_ydata()[0] == pytest.approx(0.0013)


def test_alignment_one_curve_per_eta_over_seeds(seed_sweep):
  runs = [r for r in seed_sweep if "batch_size=128" in r.name]  # η = 0.01, 0.03, 0.1 × 2 seeds
  fig = figures.alignment(runs)
  (ax,) = fig.axes
  means = [l for l in ax.lines if l.get_gid().endswith("/mean")]
  assert len(means) == 3
  assert len([c for c in ax.collections if c.get_gid().endswith("/points")]) == 6
  for lr, bs, epochs in SWEEP_POINTS[:3]:
    seeds = [r for r in runs if r.name.startswith(setting(lr, bs, epochs) + ",")]
    cos = np.mean([r.series("alignment/mean_abs_cos")[1] for r in seeds], axis=0)
    got = line(fig, f"{setting(lr, bs, epochs)}/mean")
    np.testing.assert_allclose(got.get_ydata(), expected_smooth(cos, 10))
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels == ["η = 0.01 (2 seeds)", "η = 0.03 (2 seeds)", "η = 0.1 (2 seeds)",
                    "random vector (0.0013)"]


def rescaling_sweep():
  """configs/rescaling.py's get_sweep: the figure's eight variants."""
  path = SCRIPT.parents[1] / "configs" / "rescaling.py"
  spec = importlib.util.spec_from_file_location("rescaling_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_sweep()


@pytest.fixture(scope="module")
def rescaling_runs(root):
  runs = []
  for i, v in enumerate(rescaling_sweep()):
    v = {"optimizer.name": "nsgd", "nsgd.num_directions": 1, "init_from": "runs/ckpt",
         "optimizer.learning_rate": 0.005, **v}
    runs.append(write_run(root / "rescaling" / f"v{i}", make_config(**v), k=1, zoom_epochs=0.0))
  return runs


RESCALING_LABELS = ["SGD (baseline)", "only top", "constant top", "remove top", "γ = 0.25",
                    "γ = 0.5", "γ = 2", "γ = 4"]


def test_rescaling_all_eight_variants_distinct_and_smoothed(rescaling_runs):
  runs = rescaling_runs
  assert len(runs) == 8
  fig = figures.rescaling(runs[::-1])  # any order in, the ablation's order out
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == RESCALING_LABELS
  styles = set()
  for label in RESCALING_LABELS:
    lam, loss = line(fig, f"{label}/hessian/lambda_1"), line(fig, f"{label}/train/loss")
    assert lam.get_color() == loss.get_color() and lam.get_linestyle() == loss.get_linestyle()
    styles.add((tuple(mcolors.to_rgba(lam.get_color())), lam.get_linestyle()))
  assert len(styles) == 8
  by_label = {figures.rescaling_label(r): r for r in runs}
  np.testing.assert_allclose(line(fig, "remove top/hessian/lambda_1").get_ydata(), expected_smooth(
      by_label["remove top"].series("hessian/lambda_1")[1], 5))
  np.testing.assert_allclose(line(fig, "γ = 2/train/loss").get_xdata(),
                             by_label["γ = 2"].series("train/loss")[0])
  np.testing.assert_allclose(line(fig, "γ = 2/train/loss").get_ydata(),
                             expected_smooth(by_label["γ = 2"].series("train/loss")[1], 5))
  assert same_color(line(fig, "SGD (baseline)/train/loss").get_color(), "black")
  assert all("moving average over 5" in ax.get_title() for ax in fig.axes)
  assert "every 8 iterations" in fig.axes[0].get_title()  # the runs track every epoch of 8


GD_STEPS = 60


def write_gd_run(path, lr):
  """Full-batch GD on 1k examples as configs/edge_of_stability.py:cpu logs it: the loss every
  step (log_every_steps = 1), η·λ_1 every 5 steps rising to 2.6, the loss spiking (a
  catapult) while η·λ_1 > 2."""
  config = make_config(**{"full_batch": True, "optimizer.learning_rate": lr, "batch_size": 500,
                          "num_train_examples": 1000, "epoch_size": 0, "log_every_steps": 1,
                          "num_epochs": GD_STEPS, "tracking.zoom_epochs": 0.0})
  writer = metrics_io.MetricWriter(str(path))
  writer.write_json("config.json", config)
  sharpness = lambda step: 2.6 / lr * min(step / 40, 1.0)
  for step in range(GD_STEPS + 1):
    eta_lam = lr * sharpness(step)
    if step:
      writer.write_row(step, {"epoch": float(step), "train/batch_loss": math.exp(-step / 30) * (
          4.0 if eta_lam > 2 and step % 4 == 0 else 1.0)})
    if step % 5 == 0:
      writer.write_row(step, {"epoch": float(step), "hessian/lambda_1": sharpness(step),
                              "hessian/lambda_2": sharpness(step) / 2,
                              "eos/eta_lambda_max": eta_lam, "eos/threshold": 2.0})
    if step % 10 == 0:
      writer.write_row(step, {"epoch": float(step), "train/loss": math.exp(-step / 30),
                              "train/accuracy": 0.5})
  writer.close()
  return metrics_io.read_run(str(path))


@pytest.fixture(scope="module")
def gd_runs(root):
  return [write_gd_run(root / "eos" / f"gd_lr{lr}", lr) for lr in (0.1, 0.01)]


def test_edge_of_stability_gd_by_step_with_its_loss_and_sgd_by_epoch(gd_runs, lr_grid):
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  fig = figures.edge_of_stability(gd_runs + [lr_grid[0]])
  gd_eos, sgd_eos, gd_loss, sgd_loss = fig.axes
  for run in gd_runs:  # GD against the step, its loss of every step below
    steps, eta_lam = run.series("eos/eta_lambda_max")
    got = line(fig, f"{run.name}/eta_lambda_max", gd_eos)
    np.testing.assert_allclose(got.get_xdata(), steps)
    np.testing.assert_allclose(got.get_ydata(), eta_lam)
    loss = line(fig, f"{run.name}/loss", gd_loss)
    np.testing.assert_allclose(loss.get_xdata(), np.arange(1, GD_STEPS + 1))
    np.testing.assert_allclose(loss.get_ydata(), run.series("train/batch_loss")[1])
    assert same_color(loss.get_color(), got.get_color())
  assert gd_eos.get_shared_x_axes().joined(gd_eos, gd_loss)
  assert not gd_eos.get_shared_x_axes().joined(gd_eos, sgd_eos)
  assert gd_loss.get_yscale() == "log" and "step" in gd_loss.get_xlabel()
  sgd = lr_grid[0]
  got = line(fig, f"{sgd.name}/eta_lambda_max", sgd_eos)  # SGD against the epoch
  np.testing.assert_allclose(got.get_xdata(), sgd.series("eos/eta_lambda_max", "epoch")[0])
  np.testing.assert_allclose(line(fig, f"{sgd.name}/loss", sgd_loss).get_ydata(),
                             sgd.series("train/loss")[1])
  assert sgd_loss.get_xlabel().startswith("epoch")
  assert line(fig, "threshold/2", gd_eos).get_ydata()[0] == 2.0
  labels = [t.get_text() for t in gd_eos.get_legend().get_texts()]
  assert labels == ["GD η = 0.01", "GD η = 0.1", r"$\eta\lambda_1 = 2$"]
  assert [t.get_text() for t in sgd_eos.get_legend().get_texts()][0] == "SGD η = 0.1, S = 128"
  assert same_color(line(fig, "gd_lr0.01/eta_lambda_max").get_color(), "red")  # the smaller η
  # The title, two data descriptions long, is wrapped inside the figure.
  canvas = backend_agg.FigureCanvasAgg(fig)
  canvas.draw()
  (title,) = [t for t in fig.texts if t.get_text() == fig.get_suptitle()]
  box = title.get_window_extent(canvas.get_renderer())
  assert "Fashion-MNIST (1k)" in fig.get_suptitle() and "(10k)" in fig.get_suptitle()
  assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
  only_sgd = figures.edge_of_stability(lr_grid)  # the demo's call: SGD runs only
  assert len(only_sgd.axes) == 2


# ------------------------------------------------------------------------------------------
# F7 and the NSGD table.

TEST_ACC = {(1.0, 0): 0.80, (1.0, 1): 0.82, ("sgd", 0): 0.80}


def nsgd_run(root, folder, gamma, seed, *, k_dirs=5, evaluation=None, test_acc=0.8, lr=0.1):
  """Valid accuracy peaks at epoch 3 (the best); logged ‖H‖_F 10(1 + e/2) + seed at e = 0, 2,
  4, 6; gamma None: an SGD baseline."""
  name = "sgd" if gamma is None else "nsgd"
  config = make_config(**{"optimizer.name": name, "optimizer.learning_rate": lr, "seed": seed,
                          "nsgd.gamma": gamma or 0.1, "nsgd.num_directions": k_dirs,
                          "tracking.zoom_epochs": 0.0})
  valid = [0.5, 0.6, 0.7, 0.8, 0.75, 0.78, 0.79]

  def evals(e):
    return {"valid/accuracy": valid[e] + 0.01 * seed, "test/accuracy": test_acc if e == 3 else 0.5,
            "train/loss": 0.3 + 0.01 * seed if e == EPOCHS else 1.0,
            "distance_from_init": 3.0 + seed if e == 3 else 99.0}

  def extra(step, epoch, index):
    return ({"hessian/frobenius_as_in_paper": 10 * (1 + epoch / 2) + seed,
             "hessian/frobenius": 100 * (1 + epoch / 2) + seed} if step % (2 * SPE) == 0 else {})

  path = root / folder / f"{name}_g{gamma}_k{k_dirs}_lr{lr}_s{seed}"
  run = write_run(path, config, k=5, zoom_epochs=0.0, extra=extra, evals=evals)
  for which, values in (evaluation or {}).items():
    with open(path / f"evaluation_{which}.json", "w", encoding="utf-8") as f:
      json.dump({"checkpoint": which, "step": 24, "epoch": 3.0, "k": 5, "num_examples": 1024,
                 "lambda": [values["lambda"], 1.0], "frobenius": 2 * values["fro"],
                 "frobenius_as_in_paper": values["fro"], "distance_from_init": values["dist"],
                 "train/loss": values["loss"], "train/accuracy": 0.9, "valid/loss": 0.5,
                 "valid/accuracy": 0.8, "test/loss": 0.5, "test/accuracy": values["test"]}, f)
  return run


@pytest.fixture(scope="module")
def nsgd_runs(root):
  runs = [nsgd_run(root, "nsgd", 1.0, s, test_acc=TEST_ACC[(1.0, s)]) for s in (0, 1)]
  for s in (0, 1):  # evaluated post hoc: the JSON values win over the logs
    ev = {"best": {"fro": 30.0 + 4 * s, "dist": 5.0 + s, "test": 0.86 + 0.02 * s, "loss": 9.0,
                   "lambda": 50.0 + s},
          "last": {"fro": 20.0 + 2 * s, "dist": 9.0, "test": 0.1, "loss": 0.2 + 0.02 * s,
                   "lambda": 40.0}}
    runs.append(nsgd_run(root, "nsgd", 0.1, s, evaluation=ev))
  runs.append(nsgd_run(root, "nsgd", None, 0, test_acc=TEST_ACC[("sgd", 0)]))
  return runs


def test_nsgd_table_mean_std_and_sources(nsgd_runs):
  markdown, latex = figures.nsgd_table(nsgd_runs)
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in markdown.splitlines()
          if line.startswith("| ") and "---" not in line}
  assert list(rows) == ["", "γ = 0.1", "γ = 1", "SGD(η = 0.1)"]
  assert rows[""][4] == "Val. acc. at epoch 1 (%)"  # a quarter of the 6 epochs, floored
  # From evaluation_*.json: ‖H‖_F estimate best 60/68, final 40/44, the paper's quantity best
  # 30/34, final 20/22, test 86/88, loss 0.2/0.22, dist 5/6.
  assert rows["γ = 0.1"] == ["2", "64.0 ± 5.7 / 42.0 ± 2.8", "32.0 ± 2.8 / 21.0 ± 1.4",
                             "87.00 ± 1.41", "60.50 ± 0.71", "0.210 ± 0.014", "5.50 ± 0.71 |"]
  # From the logs: at epoch 2 (before the best, epoch 3) 200/201 and 20/21, at epoch 6 400/401
  # and 40/41.
  assert rows["γ = 1"] == ["2", "200 ± 1 / 400 ± 1†", "20.5 ± 0.7 / 40.5 ± 0.7†",
                           "81.00 ± 1.41‡", "60.50 ± 0.71", "0.305 ± 0.007", "3.50 ± 0.71‡ |"]
  assert rows["SGD(η = 0.1)"][:4] == ["1", "200 / 400†", "20.0 / 40.0†", "80.00‡"]
  assert "† some seeds have no evaluation_*.json" in markdown
  assert "\\toprule" in latex and r"\(\gamma\) = 0.1" in latex and r"87.00 \(\pm\) 1.41" in latex
  assert "$$" not in latex and "%" not in latex.replace(r"\%", "").split("\n", 1)[1]
  markdown, _ = figures.nsgd_table(nsgd_runs, val_epoch=2)
  assert "| 70.50 ± 0.71 |" in markdown


def test_nsgd_curves_mean_over_seeds(nsgd_runs):
  fig = figures.nsgd(nsgd_runs)
  got = line(fig, "γ = 1/valid/accuracy")
  seeds = [r for r in nsgd_runs if r.get("optimizer.name") == "nsgd" and r.get("nsgd.gamma") == 1]
  np.testing.assert_allclose(got.get_ydata(), 100 * np.mean(
      [r.series("valid/accuracy")[1] for r in seeds], axis=0))
  fro = line(fig, "γ = 1/hessian/frobenius_top_k")
  assert fro.get_linestyle() == "--" and fro.axes is not got.axes
  np.testing.assert_allclose(fro.get_ydata(), np.mean(
      [r.series("hessian/frobenius_top_k")[1] for r in seeds], axis=0))
  labels = [t.get_text() for t in got.axes.get_legend().get_texts()]
  assert labels == ["γ = 0.1 (n=2)", "γ = 1 (n=2)", "SGD η = 0.1 (n=1)"]
  # The seeds' ±1 std band (ddof=1) around the mean, and none for the single SGD run.
  acc = 100 * np.array([r.series("valid/accuracy")[1] for r in seeds])
  band = band_of(fig, "γ = 1/valid/accuracy/seeds")
  np.testing.assert_allclose(band_range(band), (
      (acc.mean(0) - acc.std(0, ddof=1)).min(), (acc.mean(0) + acc.std(0, ddof=1)).max()))
  assert band_of(fig, "γ = 1/hessian/lambda_1/seeds").axes is fig.axes[1]  # λ_1's panel
  assert not [c for ax in fig.axes for c in ax.collections
              if c.get_gid().startswith("SGD η = 0.1/")]


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory):
  """SGD baselines at other learning rates, as the cpu NSGD sweep's η = 0.03 (2 seeds), 0.3
  (outside ``root``: the script's groups stay as they are)."""
  root = tmp_path_factory.mktemp("baselines")
  return [nsgd_run(root, "nsgd", None, s, lr=lr) for lr, s in ((0.03, 0), (0.03, 1), (0.3, 0))]


def test_nsgd_curves_with_the_sgd_baselines(nsgd_runs, baseline_runs):
  fig = figures.nsgd(nsgd_runs + baseline_runs)
  ax_acc = fig.axes[0]
  labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
  assert labels == ["γ = 0.1 (n=2)", "γ = 1 (n=2)", "SGD η = 0.03 (n=2)", "SGD η = 0.1 (n=1)",
                    "SGD η = 0.3 (n=1)"]
  got = line(fig, "SGD η = 0.03/valid/accuracy")
  np.testing.assert_allclose(got.get_ydata(), 100 * np.mean(
      [r.series("valid/accuracy")[1] for r in baseline_runs[:2]], axis=0))
  band_of(fig, "SGD η = 0.03/valid/accuracy/seeds")
  line(fig, "SGD η = 0.3/hessian/lambda_1")
  colours = {l.get_gid(): mcolors.to_rgba(l.get_color()) for l in ax_acc.lines}
  assert len(set(colours.values())) == 5  # each row its own colour
  for lr in (0.03, 0.1, 0.3):  # the baselines black to grey
    r, g, b, _ = colours[f"SGD η = {lr}/valid/accuracy"]
    assert r == g == b


@pytest.fixture(scope="module")
def k_runs(root):
  return [nsgd_run(root, "k", 0.01, s, k_dirs=k, test_acc=0.8 + 0.01 * k + 0.01 * s)
          for k in (1, 3) for s in (0, 1)]


def test_k_ablation(k_runs, nsgd_runs):
  runs = k_runs + [nsgd_runs[-1]]
  fig = figures.nsgd_k_ablation(runs)
  got = line(fig, "nsgd/0.01/test_accuracy")
  np.testing.assert_allclose(np.asarray(got.get_xdata(), float), [1, 3])
  np.testing.assert_allclose(np.asarray(got.get_ydata(), float), [81.5, 83.5])  # errorbar: objects
  assert line(fig, "SGD η = 0.1/test_accuracy").get_ydata()[0] == pytest.approx(80.0)
  assert fig.axes[0].get_xscale() == "log"
  markdown, latex = figures.nsgd_table(runs)
  assert "| γ = 0.01, K = 3 | 2 |" in markdown and "| SGD(η = 0.1) | 1 |" in markdown
  assert latex.count("\\\\") == 4  # the header and 3 rows


def test_render_nsgd_writes_the_k_ablation_when_k_varies(k_runs, nsgd_runs, tmp_path):
  written = figures.render("nsgd", k_runs + [nsgd_runs[-1]], str(tmp_path / "k"))
  assert_saved([p for p in written if not p.endswith((".md", ".tex"))],
               ["nsgd", "nsgd_k_ablation"])
  written = figures.render("nsgd", nsgd_runs, str(tmp_path / "one_k"))
  assert_saved([p for p in written if not p.endswith((".md", ".tex"))], ["nsgd"])


# ------------------------------------------------------------------------------------------
# The script.

def test_script_all_and_one(lr_grid, bs_grid, analysis_run, nsgd_runs, rescaling_runs, gd_runs,
                            k_runs, root, tmp_path):
  script = load_script()
  groups = script.find_groups(str(root))
  assert sorted(groups) == ["analysis", "eos", "grid", "k", "nsgd", "rescaling"]
  assert len(groups["grid"]) == 6
  assert script.find_runs([str(root / "grid" / "lr=*")]) == [
      str(root / "grid" / f"lr={lr}") for lr in (0.01, 0.03, 0.1)]
  assert len(script.find_runs([str(root / "grid"), str(root / "analysis")])) == 7
  with pytest.raises(script.app.UsageError, match="nothing matches"):
    script.find_runs([str(root / "missing")])
  # every figure, once, from every group that has what it needs
  run_script(script, "--figure=all", f"--runs_root={root}", f"--out={tmp_path}")
  stems = ["general_shape_grid", "noise_grid_grid", "step_loss_change_analysis",
           "cross_sections_analysis", "alignment_grid", "rescaling_rescaling", "nsgd_nsgd",
           "nsgd_k", "nsgd_k_k_ablation", "edge_of_stability_eos", "spectral_density_analysis"]
  figures_written = [str(p) for p in tmp_path.iterdir() if p.suffix in (".png", ".pdf")]
  assert_saved(figures_written, stems)
  assert sorted(p.name for p in tmp_path.glob("*_table.*")) == [
      "nsgd_k_table.md", "nsgd_k_table.tex", "nsgd_nsgd_table.md", "nsgd_nsgd_table.tex"]
  assert "| γ = 1 | 2 | 200 ± 1 / 400 ± 1† | 20.5 ± 0.7 / 40.5 ± 0.7† |" in (
      tmp_path / "nsgd_nsgd_table.md").read_text()


def test_script_runs_takes_sweep_run_names_with_commas(tmp_path):
  """sweep.py names a run 'a=1,b=2'; --runs splits at commas, find_runs puts it back."""
  script = load_script()
  sweep = tmp_path / "sweep"
  names = ["optimizer.learning_rate=0.03,batch_size=128,seed=0",
           "optimizer.learning_rate=0.03,batch_size=128,seed=1"]
  for name in names:
    (sweep / name).mkdir(parents=True)
    (sweep / name / "metrics.jsonl").write_text("")
  other = tmp_path / "eos"
  other.mkdir()
  (other / "metrics.jsonl").write_text("")
  flag = f"{other},{sweep / names[1]}"  # as a user writes it; absl splits it at every comma
  assert script.find_runs(flag.split(",")) == [str(other), str(sweep / names[1])]
  assert script.find_runs(str(sweep / "*seed=0").split(",")) == [str(sweep / names[0])]
  with pytest.raises(script.app.UsageError, match="nothing matches"):
    script.find_runs(f"{sweep}/optimizer.learning_rate=0.03,batch_size=512".split(","))
