"""One 1x1 layer forward: dense conv vs WCC (J=3, 25% kept, 8/8) on each backend.

The cases are the suite's own (:class:`bench.timing.layer.CaseGroup` builds the input, the
seeded source conv and the op), so asv and ``python -m bench timing`` time the same thing; asv
only adds its per-commit history. A commit without those cases, or a backend the commit or
machine lacks, is skipped.
"""

from __future__ import annotations

from ._common import TIMER, device, require, sync

# The extra shape set of bench.timing.shapes (literal: asv needs its parameters at discovery).
SHAPES = ["1x256x256@128x256", "1x320x1280@64x128", "1x144x24@256x512"]
OPS = ["dense", "wcc-reference", "wcc-cpu", "wcc-triton"]


class LayerForward:
    """Forward time of one layer; a backend the commit or machine lacks is skipped."""

    params = (SHAPES, OPS)
    param_names = ["shape", "op"]
    number = 1
    timer = TIMER
    repeat = (5, 15, 20.0)
    warmup_time = 0.2
    timeout = 300

    def setup(self, shape: str, op: str) -> None:
        layer = require("bench.timing.layer", "suite layer cases")
        shapes = require("bench.timing.shapes", "suite shape sets")
        backends = require("wcc.backends", "backend registry")
        self.dev = device()
        dtype = "float32" if self.dev.type == "cpu" else "float16"
        conv_shape = shapes.parse_shape(shape)
        if op == "dense":
            case = layer.LayerCase("extra", conv_shape, op="dense_nchw", dtype=dtype)
        else:
            case = layer.LayerCase("extra", conv_shape, op="wcc", dtype=dtype, backend=op.split("-", 1)[1],
                                   keep_ratio=0.25, levels=3)
        try:
            self.fn = layer.CaseGroup(conv_shape, "fwd", dtype, self.dev).callable(case)
        except backends.BackendUnavailableError as exc:
            raise NotImplementedError(str(exc)) from None
        self.fn()  # first call: lazy initialisation, kernel builds
        sync(self.dev)

    def time_forward(self, shape: str, op: str) -> None:
        self.fn()
        sync(self.dev)
