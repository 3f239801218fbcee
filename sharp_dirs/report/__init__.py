"""From run directories to the paper's figures and the claims report.

figures (each figure of the gallery from a group of runs) and claims (the paper's claims judged
on those runs: holds, fails or inconclusive, with the numbers). Reads run directories through
``sharp_dirs.engine.metrics_io``; nothing else imports it.
"""
