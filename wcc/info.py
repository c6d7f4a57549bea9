"""``python -m wcc.info``: versions and the availability of every WCC backend.

Never needs a GPU, Triton or a compiler: each backend's probe reports a reason instead.
"""

from __future__ import annotations

import platform
import sys

import torch

import wcc
from wcc.backends import ENV_VAR, backend_status, forced_backend, get_backend


def info_lines() -> list[str]:
    lines = [
        f"wcc {wcc.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"torch {torch.__version__} (cuda build: {torch.version.cuda or 'no'}, "
        f"cuda available: {torch.cuda.is_available()})",
        f"threads: {torch.get_num_threads()}",
        f"{ENV_VAR}={forced_backend() or '(unset: auto)'}",
        "backends (auto tries them in this order):",
    ]
    for st in backend_status():
        state = "available" if st.available else f"unavailable: {st.reason}"
        lines.append(f"  {st.name:<10} priority {st.priority:>3}  {state}")
        details = get_backend(st.name).details() if st.available else None
        if details:
            lines.append(f"{'':<30}{details}")
    return lines


def main() -> int:
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
