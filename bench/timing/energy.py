"""Energy over timed windows: NVML's energy counter on discrete GPUs, INA3221 rails on Jetson.

:class:`EnergyMeter` is opened once per run; each timed case wraps its samples (not its
warm-up) in ``meter.window()``, and the row records what the window consumed. On a machine with
neither source the meter says why (``describe()``) and windows record only their length.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench.timing.probes import cuda_uuid, nvml_handle, open_nvml, read_ina3221_rails, unavailable

__all__ = ["EnergyMeter", "EnergyWindow"]


class EnergyWindow:
    """What one timed window consumed; a context manager made by :meth:`EnergyMeter.window`,
    filled in when its ``with`` block ends (read :meth:`to_dict` afterwards)."""

    def __init__(self, meter: "EnergyMeter | None" = None) -> None:
        self._meter = meter
        self.window_s: float | None = None
        self.nvml_energy_j: float | None = None
        self.rails: dict[str, dict[str, float]] = {}
        self._t0 = 0.0
        self._e0: int | None = None
        self._sampler: _RailSampler | None = None

    def __enter__(self) -> "EnergyWindow":
        m = self._meter
        if m is not None and m._rails:
            self._sampler = _RailSampler(lambda: read_ina3221_rails(m._root), m._interval)
            self._sampler.start()
        self._e0 = m._energy_mj() if m is not None else None
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.window_s = time.perf_counter() - self._t0
        e1 = self._meter._energy_mj() if self._meter is not None else None
        if self._e0 is not None and e1 is not None:
            self.nvml_energy_j = (e1 - self._e0) / 1000.0
        if self._sampler is not None:
            self.rails = self._sampler.stop(self.window_s)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"window_s": self.window_s}
        if self.nvml_energy_j is not None:
            out["nvml_energy_j"] = self.nvml_energy_j
            out["nvml_avg_power_w"] = self.nvml_energy_j / self.window_s if self.window_s else None
        if self.rails:
            out["rails"] = self.rails
        return out


class _RailSampler:
    """Samples rail powers in a thread; energy = mean sampled power x window length."""

    def __init__(self, read: Callable[[], dict[str, dict[str, Any]]], interval_s: float) -> None:
        self._read, self._interval = read, interval_s
        self._stop = threading.Event()
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            powers = {k: v["power_w"] for k, v in self._read().items() if isinstance(v.get("power_w"), float)}
            self._samples.append((time.perf_counter(), powers))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self, window_s: float) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._samples:  # a window shorter than the thread's first wake-up
            self._sample()
        names = sorted({k for _, p in self._samples for k in p})
        out = {}
        for name in names:
            values = [p[name] for _, p in self._samples if name in p]
            avg = sum(values) / len(values)
            out[name] = {"avg_power_w": avg, "energy_j": avg * window_s, "n_samples": len(values)}
        return out


class EnergyMeter:
    """Energy over timed windows, from whatever this machine offers.

    Discrete NVIDIA GPUs: NVML's total-energy counter (mJ, Volta and newer), read before and
    after the window. Jetson: the INA3221 rails in sysfs, sampled every ``interval_s``. Neither:
    ``available`` is False and ``reason`` says why; windows then record nothing.
    """

    def __init__(self, device: str = "cpu", nvml: Any = None, root: str | os.PathLike[str] = "/",
                 interval_s: float = 0.02) -> None:
        self._nvml = None
        self._handle = None
        self._interval = interval_s
        self._root = Path(root)
        reasons = []
        if device.startswith("cuda"):
            mod, why = open_nvml(nvml)
            if why is None:
                try:
                    index = int(device.split(":", 1)[1]) if ":" in device else 0
                    handle = nvml_handle(mod, index, cuda_uuid(index))
                    mod.nvmlDeviceGetTotalEnergyConsumption(handle)
                    self._nvml, self._handle = mod, handle
                except Exception as exc:  # noqa: BLE001
                    why = f"NVML energy counter unreadable ({type(exc).__name__}: {exc})"
                    with contextlib.suppress(Exception):
                        mod.nvmlShutdown()
            if why:
                reasons.append(f"nvml: {why}")
        else:
            reasons.append("nvml: not timing on CUDA")
        self._rails = bool(read_ina3221_rails(self._root))
        if not self._rails:
            reasons.append("rails: no INA3221 rails in sysfs")
        self.available = self._nvml is not None or self._rails
        self.reason = None if self.available else "; ".join(reasons)

    def describe(self) -> str:
        if not self.available:
            return unavailable(self.reason or "")
        return " + ".join(s for s, on in (("nvml energy counter", self._nvml is not None),
                                           ("INA3221 rails (sysfs)", self._rails)) if on)

    def window(self) -> EnergyWindow:
        """``with meter.window() as w: ...``; ``w.to_dict()`` after the block."""
        return EnergyWindow(self)

    def _energy_mj(self) -> int | None:
        if self._nvml is None:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:  # noqa: BLE001
            return None

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None

    def __enter__(self) -> "EnergyMeter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
