"""asv benchmarks of wcc-bench (``benchmark_dir`` in asv.conf.json). See asv.conf.json for the
commands. Small and coarse on purpose (docs/design.md §7): each benchmark does real work.
asv is the per-commit history tool; the regression gate is ``python -m bench compare``.

* :mod:`.layer` - one 1x1 layer forward at three shapes: dense conv vs WCC per backend;
* :mod:`.model` - DeepLabV3+-MobileNetV2 forward: FP32, 8/8, WCC 25%;
* :mod:`.accuracy` - ``track_`` errors (lower is better) on a tiny fixed SynthStreets eval.

The timing benchmarks build their cases with the suite's own code (``bench.timing.layer`` /
``bench.timing.model``) and the accuracy one with ``wcc`` alone: the packages of the commit
under test (asv installs each commit's wheel, which carries ``wcc`` and ``bench``). A benchmark
whose feature the commit lacks raises ``NotImplementedError`` in ``setup``, which asv reports as
skipped. With ``--python=same`` nothing is installed: when ``wcc`` is not importable, the
working tree's is used (the folder that holds ``bench/``).
"""

import sys
from pathlib import Path

try:
    import wcc  # noqa: F401
except ImportError:
    _root = str(Path(__file__).resolve().parents[3])
    if _root not in sys.path:
        sys.path.insert(0, _root)
