"""``python -m bench.timing._planted FACTOR timing ARGS``: ``bench timing`` with the WCC cpu
forward made FACTOR times slower - the gate check's planted regression (``nox -s gate_check``,
:mod:`bench.timing.gate_check`), and nothing else.

The slowdown is real work, not a number edited afterwards: every call of the cpu backend's
``wcc_conv`` is followed by a busy wait of ``FACTOR - 1`` times that call's own duration, so the
callable the harness times takes FACTOR times as long. It lives in this private entry point (not
a flag of ``bench timing``) so that it cannot be left on in a normal timing.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any


def plant(factor: float) -> None:
    """Make :meth:`wcc.backends.cpu.CPUBackend.wcc_conv` ``factor`` times slower in this process."""
    from wcc.backends.cpu import CPUBackend

    inner = CPUBackend.wcc_conv

    @functools.wraps(inner)
    def slower(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = inner(self, *args, **kwargs)
        until = time.perf_counter() + (factor - 1) * (time.perf_counter() - t0)
        while time.perf_counter() < until:  # busy: the core is occupied, as slower code would occupy it
            pass
        return out

    CPUBackend.wcc_conv = slower  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "timing":
        print("usage: python -m bench.timing._planted FACTOR timing [bench timing args]", file=sys.stderr)
        return 2
    factor = float(argv[0])
    if not factor >= 1:
        print(f"python -m bench.timing._planted: FACTOR must be >= 1, got {factor}", file=sys.stderr)
        return 2
    plant(factor)
    from bench.cli import main as bench_main

    return bench_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
