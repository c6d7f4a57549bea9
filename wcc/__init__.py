"""wcc: Wavelet Compressed Convolution (Finder et al., NeurIPS 2022) as a library.

Quick use::

    import wcc
    report = wcc.convert(model, wcc.WCCConfig(levels=3, keep_ratio=0.25), keep_fp=["features.0.0"])
    print(report)

``import wcc`` needs only torch: GPU kernels, Triton and compilers are loaded on first use.
"""

from __future__ import annotations

from wcc import backends
from wcc.config import QuantConfig, WCCConfig
from wcc.convert import ConversionReport, convert
from wcc.haar import haar2d, ihaar2d
from wcc.layers import QuantConv2d, WCCConv2d

__version__ = "0.1.0"

__all__ = [
    "WCCConfig",
    "QuantConfig",
    "WCCConv2d",
    "QuantConv2d",
    "convert",
    "ConversionReport",
    "haar2d",
    "ihaar2d",
    "backends",
    "__version__",
]
