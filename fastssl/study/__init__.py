"""Studies: a grid of runs (methods × view transformations × data sets × α × seeds) as one
command (``tools/study.py``), dispatched through submitit, resumable cell by cell, and
tabulated as the seed-003 study prints its results."""
