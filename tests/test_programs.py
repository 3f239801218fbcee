"""Runs of a family share their compiled programs: η, γ and the seed are arguments, not constants."""

import json

import numpy as np
import pytest

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import programs
from sharp_dirs.engine import train
from test_train import load_config, shrink


def comparable_rows(workdir):
  return [{k: v for k, v in r.items() if "seconds" not in k}
          for r in metrics_io.read_run(workdir).rows]


def test_runs_differing_in_eta_gamma_and_seed_compile_nothing_the_second_time(tmp_path):
  """The second run of a family traces and compiles nothing, and its numbers are those of the
  same config compiled on its own (so η, γ and the seed really reach the shared programs)."""
  _, c = load_config("nsgd")
  c = shrink(c, epochs=2)
  other = c.copy_and_resolve_references()
  other.optimizer.learning_rate, other.nsgd.gamma, other.seed = 0.05, 0.5, 3
  train.train_and_evaluate(c, str(tmp_path / "first"))
  with programs.CompileCounter() as counts:
    train.train_and_evaluate(other, str(tmp_path / "shared"))
  assert (counts.traces, counts.compiles) == (0, 0), counts.as_dict()
  programs.clear_shared()  # the same config again, built and traced on its own
  with programs.CompileCounter() as alone:
    train.train_and_evaluate(other, str(tmp_path / "alone"))
  assert alone.traces >= 3, alone.as_dict()  # the train and eval steps, the solve, ...
  shared, own = comparable_rows(tmp_path / "shared"), comparable_rows(tmp_path / "alone")
  assert shared == own
  first = comparable_rows(tmp_path / "first")
  assert first[-1]["train/loss"] != shared[-1]["train/loss"]  # the values did change the run


def test_a_different_shape_or_option_builds_its_own_programs():
  _, c = load_config("noise_grid")
  values_only = c.copy_and_resolve_references()
  values_only.optimizer.learning_rate, values_only.seed, values_only.num_epochs = 0.5, 7, 99
  values_only.data_seed, values_only.init_from = 3, "runs/x"
  assert programs.program_key(values_only) == programs.program_key(c)
  for field, value in (("batch_size", 64), ("optimizer.momentum", 0.9), ("tracking.k", 7),
                       ("l2", 1e-4), ("model", "mlp")):
    changed = c.copy_and_resolve_references()
    *parents, last = field.split(".")
    node = changed
    for p in parents:
      node = node[p]
    node[last] = value
    assert programs.program_key(changed) != programs.program_key(c), field


def test_hyperparams_are_the_configs_values_as_float32_and_int32():
  _, c = load_config("nsgd")
  c.optimizer.learning_rate, c.nsgd.gamma, c.seed = 0.03, 0.25, 4
  h = programs.hyperparams(c)
  assert h == {"learning_rate": np.float32(0.03), "seed": np.int32(4),
               "gamma": np.float32(0.25)}
  assert [np.asarray(v).dtype for v in h.values()] == [np.float32, np.int32, np.float32]
  c.optimizer.name = "sgd"
  assert "gamma" not in programs.hyperparams(c)


def test_compile_counter_counts_a_new_program_once():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  x = np.ones(7, np.float32)
  with programs.CompileCounter() as counts:
    f(x)
    f(x)
  assert counts.traces == 1 and counts.compiles == 1, counts.as_dict()
  with programs.CompileCounter() as again:
    f(x)
  assert again.traces == again.compiles == 0


def test_a_stored_config_reads_the_schema_default_of_a_field_it_lacks():
  stored = json.loads(json.dumps(config_lib.default_config().to_dict(), default=str))
  del stored["tracking"]["noise_groups"]
  stored["optimizer"]["learning_rate"] = 0.5
  stored["model_kwargs"] = {"hidden": [16, 8]}
  config = config_lib.from_stored(stored)
  assert config.tracking.noise_groups == config_lib.default_config().tracking.noise_groups
  assert config.optimizer.learning_rate == 0.5
  assert config_lib.given_kwargs(config.model_kwargs) == {"hidden": (16, 8)}


@pytest.mark.parametrize("name", ["sgd", "nsgd"])
def test_the_optimizer_with_traced_values_is_the_optimizer_with_constants(name):
  """make_optimizer(config, hyperparams) gives the same updates as the config's constants."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  _, c = load_config("nsgd")
  c.optimizer.name, c.optimizer.momentum = name, 0.9
  c.nsgd.num_directions = 1
  params = {"w": jnp.arange(30.0).reshape(5, 6) / 7}
  grads = {"w": jnp.cos(jnp.arange(30.0)).reshape(5, 6)}
  e1 = {"w": jnp.ones((1, 5, 6)) / jnp.sqrt(30.0)}
  from sharp_dirs.curvature import krylov  # pylint: disable=import-outside-toplevel
  pairs = krylov.Eigenpairs(jnp.ones(1), e1, jnp.zeros(1), jnp.int32(0))
  extra = {"eigenpairs": pairs} if name == "nsgd" else {}
  constant = train.make_optimizer(c)
  expected, _ = constant.update(grads, constant.init(params), params, **extra)

  @jax.jit
  def traced(h):
    tx = train.make_optimizer(c, h)
    return tx.update(grads, tx.init(params), params, **extra)[0]

  got = traced(programs.hyperparams(c))
  np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)


def test_a_users_module_with_unhashable_fields_initializes_like_a_hashable_one():
  """init_model jits once per hashable module; a module with a list field takes the uncached
  path and gets the same variables as the same module with a tuple."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from sharp_dirs.models import loss as model_loss  # pylint: disable=import-outside-toplevel

  class UserMLP(nn.Module):
    hidden: object
    input_key = "image"

    @nn.compact
    def __call__(self, x, train=False):
      for width in self.hidden:
        x = nn.relu(nn.Dense(width)(x))
      return nn.Dense(3)(x)

  batch = {"image": np.ones((2, 5), np.float32)}
  listed, _ = model_loss.init_model(UserMLP([4, 2]), jax.random.PRNGKey(1), batch)
  tupled, _ = model_loss.init_model(UserMLP((4, 2)), jax.random.PRNGKey(1), batch)
  jax.tree.map(np.testing.assert_array_equal, listed, tupled)
