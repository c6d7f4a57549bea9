"""Backend self-benchmark: triton WCC (each forward strategy) vs dense cuDNN 1x1 conv vs the reference.

    python -m bench.timing.backend_bench                      # (8, 256->256, 128x256) fp16, keep 25%
    python -m bench.timing.backend_bench --backward --json out.json

Times one WCC layer op (the backend call; the weight is already quantized, as WCCConv2d hands
it over) against ``F.conv2d`` with the same 1x1 weight (cuDNN, ``cudnn.benchmark`` on) and
against the reference backend with the suite's one harness (:func:`bench.timing.harness.time_callable`:
CUDA events, warm-up, ``reps`` samples); reports the median. The triton
backend is timed with each forward strategy (``_autograd.FORWARD_STRATEGY``: "gather", the
default, and "compact"). Targets (docs/design.md §8): triton <= 1.0x dense latency and >= 3x faster
than the reference.

On a CPU (for a smoke test under ``TRITON_INTERPRET=1``) the harness times with
``time.perf_counter``; such numbers mean nothing about GPU speed.

(Until the tree was reorganised this was ``python -m wcc.backends.triton.bench``; the method
library no longer carries a timer of its own.)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import torch
import torch.nn.functional as F

from bench.timing.harness import time_callable
from wcc.config import WCCConfig

__all__ = ["benchmark", "main"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def benchmark(
    batch: int = 8,
    c_in: int = 256,
    c_out: int = 256,
    height: int = 128,
    width: int = 256,
    dtype: torch.dtype = torch.float16,
    keep_ratio: float = 0.25,
    levels: int = 3,
    act_bits: int | None = 8,
    backward: bool = False,
    device: str | torch.device = "cuda",
    warmup: int = 10,
    reps: int = 50,
    seed: int = 0,
) -> dict:
    """Median latency (ms) of dense conv, the reference and the triton backend on one shape.

    Returns a JSON-ready dict: the settings, medians in ``ms`` for ``dense``, ``reference``,
    ``triton`` (the default strategy) and ``triton-<strategy>`` for each forward strategy, and
    the ratios ``triton_over_dense`` and ``reference_over_triton`` of the default.
    """
    from wcc.backends import get_backend
    from wcc.backends.triton import _autograd

    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, c_in, height, width, generator=gen).to(device, dtype)
    weight = (torch.randn(c_out, c_in, generator=gen) / c_in**0.5).to(device, dtype)
    bias = torch.randn(c_out, generator=gen).to(device, dtype)
    alpha = torch.tensor(8.0, device=device)
    config = WCCConfig(levels=levels, keep_ratio=keep_ratio, act_bits=act_bits)
    grad = torch.randn(batch, c_out, height, width, generator=gen).to(device, dtype) if backward else None
    params = [x, weight, bias, alpha]

    def step(op: Callable[[], torch.Tensor]) -> Callable[[], object]:
        if not backward:
            def forward_only() -> object:
                with torch.no_grad():
                    return op()
            return forward_only

        def forward_backward() -> object:
            for p in params:
                p.grad = None
            op().backward(grad)
            return None
        return forward_backward

    if backward:
        for p in params:
            p.requires_grad_(True)
    weight4d = weight.view(c_out, c_in, 1, 1)

    def triton_with(strategy: str) -> Callable[[], torch.Tensor]:
        def op() -> torch.Tensor:
            default, _autograd.FORWARD_STRATEGY = _autograd.FORWARD_STRATEGY, strategy
            try:
                return get_backend("triton").wcc_conv(x, weight, bias, alpha, config)
            finally:
                _autograd.FORWARD_STRATEGY = default
        return op

    ops = {
        "dense": lambda: F.conv2d(x, weight4d, bias),
        "reference": lambda: get_backend("reference").wcc_conv(x, weight, bias, alpha, config),
        **{f"triton-{s}": triton_with(s) for s in _autograd.STRATEGIES},
    }
    reason = get_backend("triton").unavailable_reason() or get_backend("triton").unsupported_reason(x, config)
    if reason is not None:
        raise RuntimeError(f"the triton backend cannot run this benchmark: {reason}")

    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        ms = {name: time_callable(step(op), device, warmup=warmup, min_samples=reps, max_samples=reps).median * 1e3
              for name, op in ops.items()}
    finally:
        torch.backends.cudnn.benchmark = prev
    ms["triton"] = ms[f"triton-{_autograd.FORWARD_STRATEGY}"]
    return {
        "shape": {"batch": batch, "c_in": c_in, "c_out": c_out, "height": height, "width": width},
        "dtype": str(dtype).removeprefix("torch."),
        "config": config.to_dict(),
        "backward": backward,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "warmup": warmup,
        "reps": reps,
        "ms": ms,
        "triton_over_dense": ms["triton"] / ms["dense"],
        "reference_over_triton": ms["reference"] / ms["triton"],
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.timing.backend_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--c-in", type=int, default=256)
    p.add_argument("--c-out", type=int, default=256)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float16")
    p.add_argument("--keep-ratio", type=float, default=0.25)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--act-bits", type=int, default=8, help="0 for no activation quantization")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    result = benchmark(
        args.batch, args.c_in, args.c_out, args.height, args.width, _DTYPES[args.dtype], args.keep_ratio,
        args.levels, args.act_bits or None, args.backward, args.device, args.warmup, args.reps,
    )
    ms = result["ms"]
    print(f"{result['device']}  {result['shape']}  {result['dtype']}  keep {args.keep_ratio}  "
          f"J={args.levels}  {'fwd+bwd' if args.backward else 'forward'}")
    for name, value in ms.items():
        if name != "triton":
            print(f"  {name:<16} {value:9.3f} ms")
    print(f"  triton / dense      {result['triton_over_dense']:6.2f}x   (target <= 1.0x)")
    print(f"  reference / triton  {result['reference_over_triton']:6.2f}x   (target >= 3x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
