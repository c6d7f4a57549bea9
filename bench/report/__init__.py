"""Versioned HTML reports and regression tracking, generated only from the results store.

* :mod:`bench.report.load` - records -> pandas frames (version, machine identity);
* :mod:`bench.report.regressions` - the comparison rules (the round verdict of
  :mod:`bench.report.verdict` for timing, with :mod:`bench.report.calibration` across sessions;
  per-metric tolerances for accuracy), per machine and configuration;
* :mod:`bench.report.plots` / :mod:`bench.report.sections` - figures and tables;
* :mod:`bench.report.build` - one static folder per version plus an index;
* ``python -m bench report`` (:mod:`bench.report.cli`) and ``python -m bench compare``
  (:mod:`bench.report.compare`).

Nothing is imported here eagerly: pandas, matplotlib and scipy load only when a report or a
comparison is made.
"""
