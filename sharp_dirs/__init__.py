"""sharp_dirs: the sharpest directions of a neural network's loss, in JAX.

Curvature core (pure functions on pytrees; the boundary is ``loss_fn(params, batch) -> scalar``):
Hessian-vector products, Lanczos, top-k eigenpairs with residuals, warm-started tracking,
Hutchinson estimators and spectral density; Nudged SGD as an optax transformation; the paper's
analyses (loss change along e_i, cross-sections, gradient alignment, subspace overlaps); run
directories and their reader. The experiment engine is ``sharp_dirs.engine.train.train_and_evaluate``
(it loads flax and the data on first use), its configs ``sharp_dirs.engine.config``.

Importing it sets one XLA CPU flag before jax starts (``sharp_dirs.xla_cpu``: conv-net gradients
and HVPs about 3x faster on CPU; ``SHARP_DIRS_KEEP_XLA_FLAGS=1`` opts out).
"""

from sharp_dirs import xla_cpu
xla_cpu.apply()  # before anything starts a jax backend

from sharp_dirs import data  # lazy: see sharp_dirs/data/__init__.py
from sharp_dirs import models  # lazy: the flax models and the loss boundary (make_loss_fn, ...)
from sharp_dirs.analyses import cross_section
from sharp_dirs.analyses import cross_section_width
from sharp_dirs.analyses import gradient_alignment
from sharp_dirs.analyses import gradient_fraction_in_subspace
from sharp_dirs.analyses import random_alignment_baseline
from sharp_dirs.analyses import step_loss_change
from sharp_dirs.analyses import subspace_overlap
from sharp_dirs.curvature.block_refresh import block_refresh
from sharp_dirs.curvature.conv_layout import canonicalize_convs
from sharp_dirs.curvature.hessian import dataset_hvp
from sharp_dirs.curvature.hessian import gnvp
from sharp_dirs.curvature.hessian import hessian_top_k
from sharp_dirs.curvature.hessian import hvp
from sharp_dirs.curvature.krylov import Eigenpairs
from sharp_dirs.curvature.krylov import lanczos
from sharp_dirs.curvature.krylov import LanczosResult
from sharp_dirs.curvature.krylov import top_k_eigenpairs
from sharp_dirs.curvature.krylov import warm_start_vector
from sharp_dirs.curvature.spectral import density_on_grid
from sharp_dirs.curvature.spectral import frobenius_norm
from sharp_dirs.curvature.spectral import frobenius_norm_as_in_paper
from sharp_dirs.curvature.spectral import hutchinson_trace
from sharp_dirs.curvature.spectral import slq_expectation
from sharp_dirs.curvature.spectral import spectral_density
from sharp_dirs.curvature.spectral import SpectralDensity
from sharp_dirs.engine.metrics_io import read_run
from sharp_dirs.nudge import nudged_sgd
from sharp_dirs.nudge import rescale_along
from sharp_dirs.nudge import scale_by_nudge
from sharp_dirs.nudge import ScaleByNudgeState
