"""sharp_dirs: the sharpest directions of a neural network's loss, in JAX.

Curvature core (pure functions on pytrees; the boundary is ``loss_fn(params, batch) -> scalar``):
Hessian-vector products, Lanczos, top-k eigenpairs with residuals, warm-started tracking,
Hutchinson estimators and spectral density; Nudged SGD as an optax transformation.
"""

from sharp_dirs.krylov import Eigenpairs
from sharp_dirs.krylov import lanczos
from sharp_dirs.krylov import LanczosResult
from sharp_dirs.krylov import top_k_eigenpairs
from sharp_dirs.krylov import warm_start_vector
from sharp_dirs.nudge import rescale_along
from sharp_dirs.nudge import scale_by_nudge
from sharp_dirs.nudge import nudged_sgd
from sharp_dirs.nudge import ScaleByNudgeState
from sharp_dirs import data  # lazy: see sharp_dirs/data/__init__.py
