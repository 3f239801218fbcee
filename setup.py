"""sharp_dirs: the sharpest directions of a neural network's loss, in JAX."""

import setuptools

setuptools.setup(
    name="sharp_dirs",
    version="0.1.0",
    description=(
        "Hessian top eigenpairs by Lanczos, Nudged SGD as an optax transformation, and the "
        "experiments of Jastrzebski et al. (ICLR 2019) in JAX."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["sharp_dirs", "sharp_dirs.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "jaxlib>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.4",
        "numpy>=1.26",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "tensorflow-datasets>=4.9.6",
        "array_record>=0.5",
        "importlib_resources>=6.0",
        "matplotlib>=3.8",
        "orbax-checkpoint>=0.6",
        "rdata>=0.11",
    ],
    extras_require={"test": ["pytest>=8.0", "scipy>=1.11", "tensorboard"]},
)
