"""From run directories to the paper's figures and the claims report.

statistics (smoothing, peaks, spreads over seeds, the NSGD table's per-run quantities: numpy
only), figures (each figure of the gallery from a group of runs, matplotlib) and claims (the
paper's claims judged on those runs: holds, fails or inconclusive, with the numbers; it reads
the statistics, never the plots). Reads run directories through
``sharp_dirs.engine.metrics_io``; nothing else imports it.
"""
