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
    # Each one is used: imported by sharp_dirs, needed at run time by one that is, or by the
    # experiment engine (configs, launch scripts, checkpoints, figures).
    install_requires=[
        "jax>=0.4.35",
        "jaxlib>=0.4.35",
        "flax>=0.10",  # sharp_dirs.models
        "optax>=0.2.4",  # sharp_dirs.nudge
        "numpy>=1.26",
        # jax needs ml_dtypes >= 0.5; 0.7.0 spends 1.3 s of CPU importing its extension (0.2 s
        # for 0.6.0 beside numpy 2.4), in every process: each launcher, worker and test.
        "ml_dtypes>=0.5,<0.7",
        "ml-collections>=0.1.1",  # configs/ (experiment engine)
        "absl-py>=2.0",  # experiments/ flags and logging
        "tensorflow-datasets>=4.9.6",  # sharp_dirs.data
        "array_record>=0.5",  # tfds data sources read array_record files
        "importlib_resources>=6.0",  # tfds' download_and_prepare imports it (our builder)
        "matplotlib>=3.8",  # figures
        "orbax-checkpoint>=0.6",  # resumable runs
        "tensorboardX>=2.6",  # sharp_dirs.engine.tensorboard: a run's TensorBoard event files
        "rdata>=0.11",  # the Jane Austen corpus (.rda files, no R)
    ],
    extras_require={"test": ["pytest>=8.0", "pytest-xdist>=3.5", "scipy>=1.11", "tensorboard"]},
)
