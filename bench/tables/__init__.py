"""Rebuilding the paper's Cityscapes and KITTI tables (``python -m bench tables``).

* :mod:`bench.tables.paper` - the published numbers, as data.
* :mod:`bench.tables.sweeps` - the rows of each table and their staged parents.
* :mod:`bench.tables.profiles` - smoke / synthetic / synthetic-256 / synthetic-512 (default) / paper run sizes.
* :mod:`bench.tables.run` - one row's job, BOPs, records, CSVs, printed tables.
* :mod:`bench.tables.executors` - local and SLURM (submitit) executors.
* :mod:`bench.tables.cli` - the command line.

Importing this package is light: torch and the models load with the submodules that need them.
"""
