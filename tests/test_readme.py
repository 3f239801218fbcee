"""The README's Python examples run as written, and do what their comments say."""

import pathlib
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse.linalg

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _run(source: str) -> dict:
  namespace = {}
  exec(compile(source, str(README), "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def _dense_top(loss_fn, params, batches, k):
  """Top-k eigenvalues of the dense Hessian of the mean loss over all batches."""
  merged = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batches)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  h = jax.hessian(lambda f: loss_fn(unravel(f), merged))(flat)
  return np.linalg.eigvalsh(np.asarray(h, np.float64))[::-1][:k]


def _block(marker: str) -> str:
  """The README's python block that contains ``marker``."""
  found = [b for b in BLOCKS if marker in b]
  assert len(found) == 1, f"{len(found)} README python blocks contain {marker!r}"
  return found[0]


def test_readme_has_its_examples():
  assert len(BLOCKS) >= 4, "README.md lost its python examples"


def test_own_model_example_finds_the_top_of_a_flax_cnn_hessian():
  """Against scipy's eigsh on the same Hessian (a dense one of this conv net is slow to build)."""
  ns = _run(_block("class CNN(nn.Module)"))
  merged = {"image": ns["images"].reshape(-1, 8, 8, 1), "label": ns["labels"].reshape(-1)}
  flat, unravel = jax.flatten_util.ravel_pytree(ns["params"])
  grad = lambda f: jax.flatten_util.ravel_pytree(  # noqa: E731
      jax.grad(ns["loss_fn"])(unravel(f), merged))[0]
  hvp = jax.jit(lambda v: jax.jvp(grad, (flat,), (v,))[1])
  operator = scipy.sparse.linalg.LinearOperator(
      (flat.size, flat.size), matvec=lambda v: np.asarray(hvp(jnp.asarray(v, flat.dtype))),
      dtype=np.float32)
  reference = np.sort(scipy.sparse.linalg.eigsh(operator, k=3, which="LA", tol=1e-6)[0])[::-1]
  np.testing.assert_allclose(ns["top"].eigvals, reference, rtol=2e-3)
  assert np.all(np.asarray(ns["top"].residuals) <= 1e-2 * np.abs(reference))
  # exact_residuals: ‖Hu − λu‖ itself, computed here from the reference HVP.
  for i in range(3):
    u = jax.flatten_util.ravel_pytree(jax.tree.map(lambda e: e[i], ns["exact"].eigvecs))[0]
    direct = float(jnp.linalg.norm(hvp(u) - ns["exact"].eigvals[i] * u))
    assert abs(float(ns["exact"].residuals[i]) - direct) <= 0.2 * direct + 1e-6
    assert direct <= 1e-5 * abs(reference[i])  # converged to the float32 floor


def test_curvature_example_tracks_a_hessian_that_moved():
  ns = _run(_block("logistic regression"))
  loss_fn, batches = ns["loss_fn"], ns["batches"]
  start = jax.tree.map(lambda w: 0 * w, ns["params"])  # the example starts from w = 0
  np.testing.assert_allclose(ns["first"].eigvals, _dense_top(loss_fn, start, batches, 3),
                             rtol=1e-4)
  moved = _dense_top(loss_fn, ns["params"], batches, 3)
  # The Hessian depends on the parameters: the warm start had new eigenvalues to find ...
  assert np.min(np.abs(moved / np.asarray(ns["first"].eigvals) - 1)) > 0.05
  # ... and found them, to the tolerance it was given, within the 10 HVPs allowed.
  np.testing.assert_allclose(ns["pairs"].eigvals, moved, rtol=1e-3)
  assert np.all(ns["pairs"].residuals <= 1e-4 * np.abs(ns["pairs"].eigvals))
  assert int(ns["pairs"].num_matvecs) <= 10


def test_nsgd_example_trains_and_gamma_is_what_changes_the_steps():
  source = "\n".join(b for b in BLOCKS if "nudged_sgd" in b or "class MLP" in b)
  tx_line = "tx = sharp_dirs.nudged_sgd(learning_rate=0.1, num_directions=2, gamma=0.1, "
  assert tx_line in source
  nsgd = _run(source)
  assert nsgd["final_loss"] < nsgd["initial_loss"]
  # γ = 1 is plain SGD: the same run with optax.sgd gives the same parameters, and γ = 0.1
  # gives different ones.
  plain = _run(source.replace("gamma=0.1", "gamma=1.0"))
  sgd = _run(re.sub(r"tx = sharp_dirs\.nudged_sgd\(.*\)  # 1", "tx = optax.sgd(0.1)", source))
  params = lambda ns: jax.flatten_util.ravel_pytree(ns["state"].params)[0]  # noqa: E731
  np.testing.assert_allclose(params(plain), params(sgd), rtol=1e-5, atol=1e-6)
  assert np.max(np.abs(params(nsgd) - params(plain))) > 1e-3


def test_nsgd_chain_example_clips_nudges_and_refreshes():
  """The optax.chain example: it trains, the nudge inside the chain refreshed its directions
  (eigenvalues of the Hessian batch's loss, not the zeros it starts with), and its γ is what
  makes it differ from the same chain without the nudge."""
  source = "\n".join(b for b in BLOCKS if "class MLP" in b or "scale_by_nudge(" in b)
  ns = _run(source)
  assert float(ns["loss_fn"](ns["params"], ns["batch"])) < float(
      ns["loss_fn"](ns["model"].init(jax.random.PRNGKey(1), ns["x"])["params"], ns["batch"]))
  # The refresh at step 40 solved the Hessian batch's Hessian at the parameters after 40
  # steps: its eigenvalues are the dense top-2 there.
  at_40 = _run(source.replace("range(50)", "range(40)"))
  after_refresh = _run(source.replace("range(50)", "range(41)"))
  eigvals = np.asarray(optax.tree.get(after_refresh["opt_state"], "eigvals"))
  dense = _dense_top(at_40["loss_fn"], at_40["params"],
                     jax.tree.map(lambda b: b[None], at_40["hessian_batch"]), 2)
  np.testing.assert_allclose(eigvals, dense, rtol=1e-3)
  plain = _run(source.replace("gamma=0.1", "gamma=1.0"))
  no_nudge = _run(re.sub(r"    sharp_dirs\.scale_by_nudge\(.*\),\n", "", source))
  params = lambda n: jax.flatten_util.ravel_pytree(n["params"])[0]  # noqa: E731
  np.testing.assert_allclose(params(plain), params(no_nudge), rtol=1e-5, atol=1e-6)
  assert np.max(np.abs(params(ns) - params(plain))) > 1e-4


def test_loading_a_run_example_gives_its_params_and_eigenpairs(tmp_path):
  """The README's loader block on a tiny run: the restored parameters apply to test images, and
  the eigenpairs are the tracker's last (the logged λ_1)."""
  from test_faults import tiny  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import metrics_io, train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  assert train.train_and_evaluate(tiny(), workdir)["status"] == "finished"
  ns = _run(f"workdir = {workdir!r}\n" + _block("train.restore_run(workdir)"))
  assert ns["step"] == 6 and ns["logits"].shape == (8, 10)
  run = metrics_io.read_run(workdir)
  _, lam = run.series("hessian/lambda_1")
  np.testing.assert_allclose(ns["pairs"].eigvals[0], lam[-1], rtol=1e-6)
  leaves = jax.tree.leaves(ns["pairs"].eigvecs)
  assert all(leaf.shape[0] == 2 for leaf in leaves)  # tiny(): k = 2
