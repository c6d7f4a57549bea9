"""wcc-bench: the reproducibility and benchmarking suite around the ``wcc`` library."""
