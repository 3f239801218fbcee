"""The experiment engine: configs, the training loop and what it records.

config (ml_collections configs and their checks), train (``train_and_evaluate``), tracking (the
top of the spectrum along a run), checkpoint and rundir (resumable, single-writer run
directories), metrics_io and tensorboard (what a run writes and its reader), distributed (the
device mesh), cli (the launchers' one-line errors). It imports the curvature core, Nudged SGD,
the analyses, the models and the data; none of those imports it.
"""
