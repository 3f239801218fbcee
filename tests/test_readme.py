"""The README's Python examples run as written, and do what their comments say."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
  assert len(blocks) >= 3, "README.md lost its python examples"
  # The curvature example: least squares, H = 2XᵀX/n (``pairs`` is the warm-started one).
  curvature = {}
  exec(compile(blocks[0], str(README), "exec"), curvature)  # pylint: disable=exec-used
  x = np.asarray(curvature["x"]).reshape(-1, 10)
  expected = np.linalg.eigvalsh(2 * x.T @ x / len(x))[::-1][:3]
  np.testing.assert_allclose(curvature["pairs"].eigvals, expected, rtol=1e-4)
  # The Nudged SGD example (two blocks): training decreases the loss.
  nsgd = {}
  exec(compile("\n".join(blocks[1:]), str(README), "exec"), nsgd)  # pylint: disable=exec-used
  assert nsgd["final_loss"] < nsgd["initial_loss"]
