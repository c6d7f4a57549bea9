"""``python -m wcc.info``: versions and the availability of every WCC backend.

Never needs a GPU, Triton or a compiler: each backend's probe reports a reason instead.
"""

from __future__ import annotations

import platform
import sys

import torch

import wcc
from wcc.backends import ENV_VAR, backend_status, forced_backend, get_backend, list_backends
from wcc.config import WCCConfig
from wcc.cpu_features import int8_dot_product_isa

_PROBE_SHAPE = (1, 8, 64, 64)


def _probe_input(device: str, dtype: torch.dtype) -> torch.Tensor:
    """A stand-in input on ``device`` that needs no such device here (a fake tensor: metadata only)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(_PROBE_SHAPE, dtype=dtype, device=device)


def auto_lines(device: str, dtype: torch.dtype) -> list[str]:
    """How ``auto`` would dispatch a ``device``/``dtype`` input: each backend's refusal, in order,
    down to the one that runs it (the backends' own checks, on a stand-in tensor)."""
    try:
        x = _probe_input(device, dtype)
    except Exception as exc:  # noqa: BLE001 - a report, not a failure
        return [f"auto on {device} {dtype}: cannot probe ({type(exc).__name__}: {exc})"]
    lines = [f"auto on a {device} {str(dtype).replace('torch.', '')} input {_PROBE_SHAPE}:"]
    config = WCCConfig()
    for name in list_backends():
        backend = get_backend(name)
        try:
            reason = backend.unavailable_reason() or backend.unsupported_reason(x, config)
        except Exception as exc:  # noqa: BLE001
            reason = f"probe failed: {type(exc).__name__}: {exc}"
        if reason is None:
            lines.append(f"  -> {name} runs it")
            break
        lines.append(f"  {name:<10} refuses: {reason}")
    return lines


def info_lines() -> list[str]:
    lines = [
        f"wcc {wcc.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"torch {torch.__version__} (cuda build: {torch.version.cuda or 'no'}, "
        f"cuda available: {torch.cuda.is_available()})",
        f"threads: {torch.get_num_threads()}",
        f"int8 dot products (x86 VNNI/AMX): {int8_dot_product_isa() or 'none'}",
        f"{ENV_VAR}={forced_backend() or '(unset: auto)'}",
        "backends (auto tries them in this order):",
    ]
    for st in backend_status():
        state = "available" if st.available else f"unavailable: {st.reason}"
        lines.append(f"  {st.name:<10} priority {st.priority:>3}  {state}")
        details = get_backend(st.name).details() if st.available else None
        if details:
            lines.append(f"{'':<30}{details}")
    lines += auto_lines("cuda", torch.float16) + auto_lines("cpu", torch.float32)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print :func:`info_lines`. Takes no arguments; anything in ``argv`` (``sys.argv[1:]`` when run as
    ``python -m wcc.info``; none when called as a function) is an error (exit 2) before any probe."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wcc.info", description=(
        "Print wcc's version, torch's, every backend's availability (with the reason when unavailable) and how "
        f"'auto' would dispatch a CUDA and a CPU input. Takes no arguments; {ENV_VAR} selects a backend."))
    parser.parse_args([] if argv is None else argv)  # exits 2 naming the unrecognized argument
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
