"""Where the ``cpu`` backend's WCC forward spends its time, step by step, against the floor.

``WCC_CPU_PROFILE=1 python -m bench.timing.cpu_profile [--shape C_IN,C_OUT,H,W] [--repeats N]``

Side by side in one process, for one 1x1 layer shape (float32, batch 1, J=3, keep 25%, 8/8,
inference): the WCC layer (``WCCConv2d``, integer weight codes cached), the phases of its kernel
(pass 1 = transform + energy + int8 codes, select = top-k, pass 2 = gather + GEMM + scatter +
inverse + bias; the kernels sum the pass-2 phases over the threads, shown divided by the thread
count), ONNX Runtime static int8 and FP32 of the dense conv, and the floor (bytes / measured
bandwidth, MACs / measured int8 peak; :mod:`bench.timing.floor`). A diagnostic: it prints a
table and stores nothing (the timing suite's rows are ``python -m bench timing``).

The phase profile needs ``WCC_CPU_PROFILE=1`` in the environment before the kernels load
(without it the phase columns read 0).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

__all__ = ["main", "profile_shape"]

_PHASES = ("pass1", "select", "pass2", "gather", "gemm", "scatter_inverse")


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """(min, median, max) of ``repeats`` calls in ms, after two warm-up calls."""
    fn()
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return min(samples), statistics.median(samples), max(samples)


def _interleaved_ratios(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float, float, float]:
    """``a`` and ``b`` called alternately: (min, median, max) of the per-pair time ratios a/b and
    min(a) / min(b). On a shared machine the pairs see the same load, so their ratio is steadier
    than a ratio of two medians measured one after the other."""
    ratios, ta, tb = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return min(ratios), statistics.median(ratios), max(ratios), min(ta) / min(tb)


def profile_shape(c_in: int, c_out: int, h: int, w: int, repeats: int, peaks: dict[str, Any]) -> list[str]:
    """Lines of the profile table for one shape (see the module docstring)."""
    from bench.timing.floor import conv_floor
    from bench.timing.runtimes import RuntimeUnavailableError, build_runtime
    from wcc.config import WCCConfig
    from wcc.haar import padded_size
    from wcc.layers import WCCConv2d

    torch.manual_seed(0)
    x = torch.randn(1, c_in, h, w)
    dense = torch.nn.Conv2d(c_in, c_out, 1).eval()
    layer = WCCConv2d.from_conv2d(dense, WCCConfig(levels=3, keep_ratio=0.25, backend="cpu")).eval()

    def wcc() -> Any:
        with torch.no_grad():
            return layer(x)

    lines = [f"shape 1x{c_in}->{c_out}@{h}x{w}, float32, {torch.get_num_threads()} threads, J=3, keep 25%, 8/8"]
    wcc()
    torch.ops.wcc_cpu.profile_take()
    t_wcc = _median_ms(wcc, repeats)
    phases = [v / 1e6 / (repeats + 2) for v in torch.ops.wcc_cpu.profile_take()]
    threads = torch.get_num_threads()
    lines.append(f"  WCC layer (cpu backend)       {t_wcc[1]:7.2f} ms  (min {t_wcc[0]:.2f}, max {t_wcc[2]:.2f})")
    for name, ms in zip(_PHASES, phases):
        per = " (thread-time / threads)" if name in ("gather", "gemm", "scatter_inverse") else ""
        val = ms / threads if per else ms
        lines.append(f"    {name:<26}  {val:7.2f} ms{per}")
    for op in ("ort_int8", "ort_fp32"):
        try:
            built = build_runtime(op, dense, x)
        except RuntimeUnavailableError as exc:
            lines.append(f"  {op}: unavailable ({exc})")
            continue
        t = _median_ms(built.fn, repeats)
        pairs = _interleaved_ratios(wcc, built.fn, repeats)
        lines.append(f"  {op:<28}  {t[1]:7.2f} ms  (min {t[0]:.2f}, max {t[2]:.2f}); WCC / it = "
                     f"{t_wcc[1] / t[1]:.2f} (medians), interleaved pairs: median {pairs[1]:.2f}, "
                     f"range {pairs[0]:.2f}-{pairs[2]:.2f}, ratio of minima {pairs[3]:.2f}")
    kept = int(padded_size(h, 3) * padded_size(w, 3) * 0.25)
    fl = conv_floor(1, c_in, c_out, h, w, c_out * c_in * kept, c_out * c_in, "int8", peaks)
    if fl is not None:
        bw, rate = peaks["bandwidth_Bps"], peaks["int8_macs_per_s"]
        moved, macs = fl["floor_bytes"], fl["floor_macs"]
        lines.append(f"  floor                         {fl['floor_s'] * 1e3:7.2f} ms  (bytes {moved / 1e6:.1f} MB "
                     f"/ {bw / 1e9:.1f} GB/s = {moved / bw * 1e3:.2f} ms; {macs / 1e9:.3f} GMAC "
                     f"/ {rate / 1e9:.0f} GMAC/s = {macs / rate * 1e3:.2f} ms)")
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.timing.floor import measure_peaks

    parser = argparse.ArgumentParser(prog="python -m bench.timing.cpu_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="append", default=None,
                        help="C_IN,C_OUT,H,W (repeatable); default: the three extra shapes of the layer grid")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    args = parser.parse_args(argv)
    shapes = []
    for text in args.shape or ["256,256,128,256", "320,1280,64,128", "144,24,256,512"]:
        try:
            c_in, c_out, h, w = (int(v) for v in text.split(","))
        except ValueError:
            parser.error(f"--shape {text!r}: expected four integers C_IN,C_OUT,H,W, e.g. --shape 256,256,128,256")
        shapes.append((c_in, c_out, h, w))
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be at least 1")
    peaks = measure_peaks("cpu")
    for s in shapes:
        print("\n".join(profile_shape(*s, args.repeats, peaks)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
