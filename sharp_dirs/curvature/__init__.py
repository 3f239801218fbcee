"""The curvature core: pure functions on pytrees, nothing but jax.

tree_math (vector algebra on pytrees), krylov (Lanczos, top-k eigenpairs with residuals),
block_refresh (warm refresh from previous eigenvectors), hessian (HVPs by jvp of grad, GNVPs,
``hessian_top_k``), spectral (Hutchinson, stochastic Lanczos quadrature), conv_layout (the XLA
CPU convolution layout). The boundary is ``loss_fn(params, batch) -> scalar``; nothing here
imports the models, the data or the engine.
"""
