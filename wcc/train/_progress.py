"""Progress output that suits where stderr goes (the one home of this rule: the training loops, the
evaluators and ``bench timing``'s layer and model benchmarks all draw with :func:`progress_bar`).

A terminal gets a tqdm bar. A log file or pipe (CI, SLURM, nohup) gets one plain line every few
percent: tqdm would write a carriage-return update per step, one "line" per update in the log.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["progress_bar"]


class _LineProgress:
    """The part of tqdm's interface the loops use, as a plain line every ``every`` percent."""

    def __init__(self, total: int, initial: int, desc: str, every: float = 10.0) -> None:
        self.total, self.n, self.desc = max(1, total), initial, desc
        self.step = max(1, int(self.total * every / 100))
        self.postfix = ""
        self.t0 = time.perf_counter()
        self._next = (initial // self.step + 1) * self.step

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or self.n == self.total:
            self._next = (self.n // self.step + 1) * self.step
            print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                  f"{time.perf_counter() - self.t0:.0f} s{self.postfix}", file=sys.stderr, flush=True)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        del refresh  # tqdm's signature; a plain line has nothing to redraw
        self.postfix = f", {text}" if text else ""

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0, unit: str = "it") -> Any:
    """A tqdm bar on a terminal, plain lines every 10 % otherwise, or a silent bar when disabled.

    The caller drives it with ``update(n)``, ``set_postfix(**values)`` / ``set_postfix_str(text)``
    and ``close()`` (the subset of tqdm both kinds implement)."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return _LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True,
                unit=unit, file=sys.stderr)
