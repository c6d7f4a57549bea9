"""asv benchmarks of wcc-bench (``benchmark_dir`` in asv.conf.json). See asv.conf.json for the
commands. Small and coarse on purpose (DESIGN 7): each benchmark does real work.

* :mod:`.layer` - one 1x1 layer forward at three shapes: dense conv vs WCC per backend;
* :mod:`.model` - DeepLabV3+-MobileNetV2 forward: FP32, 8/8, WCC 25%;
* :mod:`.accuracy` - ``track_`` errors (lower is better) on a tiny fixed SynthStreets eval.

The benchmarks import only ``wcc``, the package of the commit under test (asv installs each
commit into its environment). A benchmark whose feature the commit lacks raises
``NotImplementedError`` in ``setup``, which asv reports as skipped. With ``--python=same``
nothing is installed: when ``wcc`` is not importable, the working tree's is used (the folder
that holds this benchmark directory's ``bench/``).
"""

import sys
from pathlib import Path

try:
    import wcc  # noqa: F401
except ImportError:
    _root = str(Path(__file__).resolve().parents[3])
    if _root not in sys.path:
        sys.path.insert(0, _root)
