"""The package's layers: imports go one way (README "Layout")."""

import ast
import pathlib

import pytest

import sharp_dirs

ROOT = pathlib.Path(sharp_dirs.__file__).parent

BASE = {"types", "lazy", "xla_cpu"}  # the package's own plumbing, below every layer
# layer -> the sharp_dirs subpackages and modules it may import
ALLOWED = {name: layers | BASE for name, layers in {
    "curvature": {"curvature"},
    "nudge": {"curvature"},
    "analyses": {"curvature"},
    "models": {"models", "curvature"},
    "data": {"data"},
    "engine": {"engine", "curvature", "nudge", "analyses", "models", "data"},
    "report": {"report", "engine", "curvature"},
}.items()}


def _layer(path: pathlib.Path) -> str:
  return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_layers(path: pathlib.Path) -> set[str]:
  """The sharp_dirs layers a module imports (``from sharp_dirs.x import y`` -> x, or y when
  x is the package itself)."""
  layers = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sharp_dirs"):
      parts = node.module.split(".")
      layers |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    elif isinstance(node, ast.Import):
      layers |= {a.name.split(".")[1] for a in node.names
                 if a.name.startswith("sharp_dirs.")}
  return layers


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("*.py")
                                        if _layer(p) in ALLOWED), ids=str)
def test_imports_go_one_way(path):
  extra = _imported_layers(path) - ALLOWED[_layer(path)]
  assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}, which its layer may not"


def test_the_check_sees_an_upward_import(tmp_path):
  module = tmp_path / "bad.py"
  module.write_text("from sharp_dirs.engine import train\nimport sharp_dirs.report.claims\n")
  assert _imported_layers(module) == {"engine", "report"}


def test_public_api_is_re_exported():
  for name in ("hessian_top_k", "nudged_sgd", "scale_by_nudge", "block_refresh", "lanczos",
               "top_k_eigenpairs", "read_run", "spectral_density", "step_loss_change"):
    assert callable(getattr(sharp_dirs, name)), name
