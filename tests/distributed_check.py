"""Run by test_distributed.py in a fresh process with 4 simulated host devices (XLA_FLAGS set
before jax): the engine on meshes of them against the engine on one device, and the compiled
programs' shapes.

  python tests/distributed_check.py engine <case> <workdir> one,auto,explicit
  python tests/distributed_check.py hlo <workdir>

Prints one JSON line (the last line of stdout).
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from testing import set_field
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import distributed
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import train
from test_train import load_config, shrink

# Each case: (config module, variant, overrides); tiny: 4 steps of 64, tracking at 0 and 4.
CASES = {
    "sgd": ("noise_grid", "cpu", {"tracking.zoom_epochs": 0.0, "tracking.k": 3}),
    "nsgd": ("nsgd", "cpu", {"analyses.frobenius.num_samples": 2}),
    "nsgd_in_step": ("nsgd", "cpu", {"nsgd.eigenpairs_from": "train_batch",
                                     "nsgd.refresh_every": 2, "nsgd.num_lanczos_steps": 6,
                                     "analyses.frobenius.enabled": False}),
    # 128 examples for the step loss change, a difference of losses whose float32 rounding
    # differs between meshes by ~3e-4 of it on 64 (test_distributed.py compares to 1e-4).
    "analyses": ("sharp_analysis", "cpu", {"analyses.alignment.enabled": True,
                                           "analyses.step_loss_change.num_examples": 128}),
}
# The logged values compared between runs (those present in each case's rows).
COMPARED = ("train/batch_loss", "train/loss", "valid/loss", "test/accuracy",
            "distance_from_init", "hessian/lambda_1", "hessian/lambda_2", "hessian/lambda_3",
            "hessian/frobenius", "hessian/grad_fraction_batch",
            "step_loss_change/e1/x1", "cross_section/width_e1", "alignment/mean_abs_cos")


def case_config(case: str, **mesh):
  name, variant, overrides = CASES[case]
  _, c = load_config(name, variant)
  c = shrink(c, epochs=1)
  c.model = "mlp"  # dense kernels split over the model axis
  c.model_kwargs = config_lib.ConfigDict({"hidden": (32,)})  # divisible by the model axis
  for field, value in {**overrides, **{f"mesh.{k}": v for k, v in mesh.items()}}.items():
    set_field(c, field, value)
  return c


def run(c, workdir):
  status = train.train_and_evaluate(c, workdir)
  assert status["status"] == "finished", status
  rows = metrics_io.read_run(workdir).rows
  logged = {}
  for r in rows:
    for k in COMPARED:
      if k in r:
        logged.setdefault(k, []).append([r["step"], r[k]])
  return logged


def params_of(workdir):
  *_, step, tree = train.restore_run(workdir)
  return step, jax.tree.map(np.asarray, tree["state"].params)


def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b)))


MESHES = {"one": dict(data=1), "auto": dict(data=-1, axis_types="auto"),
          "explicit": dict(data=4, axis_types="explicit"),
          "model": dict(data=2, model=2, axis_types="explicit")}


def engine(case: str, workdir: str, names: str):
  """The same run on one device (the first name), then on the other meshes of 4 devices."""
  assert jax.device_count() == 4, jax.devices()
  meshes = {name: MESHES[name] for name in names.split(",")}
  out = {"logged": {}, "param_diff": {}, "steps": {}}
  ref_params = None
  out["placement"] = {}
  for name, mesh in meshes.items():
    d = os.path.join(workdir, f"{case}_{name}")
    c = case_config(case, **mesh)
    out["placement"][name] = repr(distributed.placement_from_config(c))
    out["logged"][name] = run(c, d)
    step, p = params_of(d)
    out["steps"][name] = step
    if ref_params is None:
      ref_params = p
      out["param_scale"] = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(p))
    else:
      out["param_diff"][name] = max_diff(p, ref_params)
  return out


def hlo(workdir: str):
  """Compiled programs on 4 devices, written to files for the test to read: the train step with
  an in-step NSGD refresh (its HVPs) on a data mesh (4) and on a data × model mesh (2 × 2); the
  tracker's solve on the data mesh; and, as a control, the train step fed a replicated batch
  (what a silent gather onto every device compiles to)."""
  from sharp_dirs.engine import tracking  # pylint: disable=g-import-not-at-top
  out = {}
  for name, mesh in (("data", MESHES["auto"]), ("model", MESHES["model"])):
    c = case_config("nsgd_in_step", **mesh)
    run_data = train.load_run_data(c)
    placement = distributed.placement_from_config(c)
    model, tx, tree = train.initial_tree(c, run_data)
    tree = placement.put_tree(tree, tree["init_params"])
    state = tree["state"]
    batch = jax.tree.map(lambda x: x[:c.batch_size], run_data.train)
    step = train.make_train_step(c, model, placement)
    texts = {"train_step": step.lower(state, batch, None).compile().as_text()}
    if name == "data":
      tracker = tracking.Tracker(c, model, run_data, placement=placement)
      sample = tracker.sample(0, c.tracking.num_examples, c.tracking.batch_size)
      init = tracking._unit_pairs(state.params, c.tracking.k)  # pylint: disable=protected-access
      texts["tracker_solve"] = tracker.programs.solve.lower(
          state.params, state.model_state, sample, jax.random.PRNGKey(0), init,
          False, jnp.float32(1e-3), jnp.float32(1.0)).compile().as_text()
      gathered = jax.device_put(batch, placement.replicated)
      texts["gathered_control"] = step.lower(state, gathered, None).compile().as_text()
      out["sample"] = {"spec": str(sample["image"].sharding.spec),
                       "shape": list(sample["image"].shape)}
    out[name] = {"placement": repr(placement), "batch_size": c.batch_size,
                 "kernel_spec": str(state.params["dense1"]["kernel"].sharding.spec),
                 "kernel_shape": list(state.params["dense1"]["kernel"].shape)}
    for program, text in texts.items():
      path = os.path.join(workdir, f"{name}_{program}.hlo.txt")
      with open(path, "w") as f:
        f.write(text)
      out[name][program] = path
  return out


def main(argv):
  jax.config.update("jax_disable_most_optimizations", True)  # compile faster; not under test
  mode = argv[1]
  if mode == "engine":
    out = engine(argv[2], argv[3], argv[4])
  else:
    out = hlo(argv[2])
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv)
