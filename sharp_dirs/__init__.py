"""sharp_dirs: the sharpest directions of a neural network's loss, in JAX.

Curvature core (pure functions on pytrees; the boundary is ``loss_fn(params, batch) -> scalar``):
Hessian-vector products, Lanczos, top-k eigenpairs with residuals, warm-started tracking,
Hutchinson estimators and spectral density; Nudged SGD as an optax transformation.
"""

from sharp_dirs.lanczos import Eigenpairs
from sharp_dirs.lanczos import lanczos
from sharp_dirs.lanczos import LanczosResult
from sharp_dirs.lanczos import top_k_eigenpairs
from sharp_dirs.lanczos import warm_start_vector
