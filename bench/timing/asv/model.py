"""DeepLabV3+-MobileNetV2 inference forward: FP32, 8/8 and WCC 25% (backend "auto").

The models are the suite's (:func:`bench.timing.model.build_model`: the paper's surgery of one
seeded model), so asv and ``python -m bench timing`` time the same variants.
"""

from __future__ import annotations

import torch

from ._common import TIMER, device, require, sync

VARIANTS = ["FP32", "8/8", "WCC 25%"]


class ModelForward:
    params = VARIANTS
    param_names = ["variant"]
    number = 1
    timer = TIMER
    repeat = (3, 10, 30.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, variant: str) -> None:
        model = require("bench.timing.model", "suite model cases")
        self.dev = device()
        # Coarse and CPU-friendly; a CUDA run uses the paper's resolution.
        height, width = (128, 256) if self.dev.type == "cpu" else (1024, 2048)
        dtype = "float32" if self.dev.type == "cpu" else "float16"
        case = model.ModelCase("deeplabv3plus-mobilenetv2", "dense" if variant == "FP32" else variant, 1, height,
                               width, dtype=dtype, backend="auto" if variant.startswith("WCC") else None)
        self.model = model.build_model(case, self.dev)
        param_dtype = next(self.model.parameters()).dtype
        self.x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(self.dev, param_dtype)
        with torch.no_grad():
            self.model(self.x)
        sync(self.dev)

    def time_forward(self, variant: str) -> None:
        with torch.no_grad():
            self.model(self.x)
        sync(self.dev)
