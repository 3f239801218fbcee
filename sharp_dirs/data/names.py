"""The datasets and the kind of data each holds; no heavy imports (the config checks use it).

Kinds: "image" (classification of images), "text" (classification of token sequences), "lm"
(next-token prediction). A model takes one kind (``sharp_dirs.models.registry.MODEL_KINDS``).
"""

DATASET_KINDS = {"fashion_mnist": "image", "cifar10": "image", "cifar100": "image",
                 "imdb": "text", "austen": "lm", "ptb": "lm",
                 "arrays": "image"}  # a user's own images: a .npz file (pipeline.load_arrays)
DATASETS = tuple(DATASET_KINDS)
