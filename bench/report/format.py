"""Text formatting shared by the HTML reports and ``python -m bench compare``: numbers with
units, comparison rows, environment cards."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["ms", "mib", "num", "is_missing", "compare_rows", "COMPARE_HEADERS", "group_rows", "GROUP_HEADERS",
           "env_card", "is_unavailable", "short_machine_names"]

_UNAVAILABLE = "unavailable: "


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def is_unavailable(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(_UNAVAILABLE)


def ms(seconds: Any) -> str:
    return "-" if is_missing(seconds) else f"{seconds * 1e3:.3g} ms"


def mib(nbytes: Any) -> str:
    return "-" if is_missing(nbytes) else f"{nbytes / 2**20:.1f} MiB"


def num(v: Any, digits: int = 3) -> str:
    return "-" if is_missing(v) else f"{v:.{digits}f}"


def _value(rule: str, metric: str, v: Any) -> str:
    if rule == "timing":
        return ms(v)
    if rule == "memory":
        return mib(v)
    return num(v, 4)


def _change(rule: str, c: Any, base: Any) -> str:
    if is_missing(c):
        return "-"
    if rule in ("timing", "memory"):
        return f"x{c:.2f}"
    rel = "" if is_missing(base) or base == 0 else f" ({c / abs(base):+.1%})"
    return f"{c:+.4f}{rel}"


def _band(band: Any) -> str:
    """A timing row's band between rounds (the half-width of its interval, as a factor)."""
    if is_missing(band):
        return "-"
    return "none" if math.isinf(band) else f"+-x{band:.2f}"


COMPARE_HEADERS = ["machine", "bench", "what", "metric", "base version", "base", "new", "change", "band", "note"]


def compare_rows(df: pd.DataFrame, machines: dict[str, str] | None = None) -> list[list[str]]:
    """Rows of a comparison frame (:data:`bench.report.regressions.COMPARE_COLUMNS`) as text,
    in :data:`COMPARE_HEADERS` order."""
    machines = machines or {}
    out = []
    for r in df.itertuples(index=False):
        out.append([machines.get(r.machine, r.machine), r.bench, r.label, r.metric, r.base_version,
                    _value(r.rule, r.metric, r.base), _value(r.rule, r.metric, r.new),
                    _change(r.rule, r.change, r.base), _band(r.band),
                    r.note or ""])
    return out


GROUP_HEADERS = ["machine", "bench", "configuration", "metric", "rows", "change (min / median / max)"]


def group_rows(df: pd.DataFrame, machines: dict[str, str] | None = None) -> list[list[str]]:
    """Rows of :func:`bench.report.regressions.group_summary` as text (:data:`GROUP_HEADERS`)."""
    machines = machines or {}
    out = []
    for r in df.itertuples(index=False):
        if is_missing(r.median):
            change = "-"
        else:
            change = " / ".join(_change(r.rule, v, None) for v in (r.min, r.median, r.max))
        out.append([machines.get(r.machine, r.machine), r.bench, r.family, r.metric, str(r.rows), change])
    return out


def short_machine_names(machines: dict[str, str]) -> dict[str, str]:
    """Machine id -> its hostname (the first part of the label), or the id where two machines
    share a hostname."""
    host = {m: label.split(" · ")[0] for m, label in machines.items()}
    counts = pd.Series(list(host.values())).value_counts()
    return {m: h if counts[h] == 1 else m for m, h in host.items()}


# ----------------------------------------------------------------------------- environment


def _fmt(v: Any) -> str:
    if is_missing(v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) or "none"
    return str(v)


def _pick(d: Any, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not isinstance(d, dict):
        return []
    return [(label, _fmt(d[k])) for k, label in keys if k in d]


def _rails(rails: Any) -> str:
    if not isinstance(rails, dict):
        return _fmt(rails)
    parts = []
    for name, r in rails.items():
        power = r.get("power_w") if isinstance(r, dict) else None
        parts.append(f"{name} {power:.2f} W" if isinstance(power, (int, float)) else f"{name} {_fmt(power)}")
    return ", ".join(parts)


def env_card(env: dict[str, Any], energy_source: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The facts of an environment record worth showing, as (section, [(label, text)])."""
    pk = env.get("packages") or {}
    identity = [("hostname", _fmt(env.get("hostname"))), ("platform", _fmt(env.get("platform"))),
                ("python", _fmt(env.get("python")))]
    identity += [(p, _fmt(v)) for p, v in pk.items()]
    identity += [("torch CUDA build", _fmt(env.get("torch_cuda"))), ("GPU (torch)", _fmt(env.get("gpu")))]
    probes: dict[str, Any] = env["probes"] if isinstance(env.get("probes"), dict) else {}
    cpu = probes.get("cpu") if isinstance(probes.get("cpu"), dict) else env.get("cpu") or {}
    sections = [("Software", identity)]
    peaks = env.get("peaks")
    if isinstance(peaks, dict):  # measured by bench.timing.floor at the start of a timing run
        def rate(key: str, unit: str, scale: float) -> str:
            v = peaks.get(key)
            return f"{v / scale:,.1f} {unit}" if isinstance(v, (int, float)) else _fmt(v)
        sections.append(("Measured peaks (floor)", [
            ("memory bandwidth", rate("bandwidth_Bps", "GB/s", 1e9)),
            ("fp32 GEMM", rate("fp32_macs_per_s", "GMAC/s", 1e9)),
            ("int8 GEMM", rate("int8_macs_per_s", "GMAC/s", 1e9)),
            *([("fp16 GEMM", rate("fp16_macs_per_s", "GMAC/s", 1e9))] if "fp16_macs_per_s" in peaks else []),
            ("method", _fmt(peaks.get("method")))]))
    sections += [("CPU", _pick(cpu, [
        ("model", "model"), ("machine", "arch"), ("logical_cpus", "logical CPUs"), ("affinity_cpus", "affinity"),
        ("torch_threads", "torch threads"), ("torch_interop_threads", "interop threads"),
        ("parallel_backend", "parallel backend"), ("mkldnn", "oneDNN"), ("governor", "governor"),
        ("max_freq_mhz", "max MHz"), ("cur_freq_mhz", "current MHz"), ("load_avg_1m", "load (1 min)")]))]
    if not probes:
        sections.append(("Device probes", [("status", "not recorded (accuracy records carry no device probes)")]))
        return sections
    nvml = probes.get("nvml")
    if isinstance(nvml, dict):
        gpu = _pick(nvml, [("name", "name"), ("driver_version", "driver"), ("cuda_driver_version", "CUDA driver"),
                           ("clocks_mhz", "clocks MHz"), ("max_clocks_mhz", "max clocks MHz"),
                           ("power_limit_w", "power limit W"), ("enforced_power_limit_w", "enforced limit W"),
                           ("power_draw_w", "power draw W"), ("temperature_c", "temperature C"),
                           ("pstate", "P-state"), ("throttle_reasons", "throttle reasons")])
        if isinstance(nvml.get("memory_total_bytes"), (int, float)):
            gpu.append(("memory", f"{nvml['memory_total_bytes'] / 2**30:.1f} GiB"))
    else:
        gpu = [("status", _fmt(nvml))]
    sections.append(("GPU (NVML)", gpu))
    cuda = probes.get("cuda_device")
    if isinstance(cuda, dict):
        sections.append(("CUDA device", _pick(cuda, [("name", "name"), ("capability", "capability"),
                                                     ("multiprocessors", "SMs"), ("torch_cuda", "torch CUDA")])))
    jetson = probes.get("jetson")
    if isinstance(jetson, dict):
        items = _pick(jetson, [("model", "model"), ("release", "L4T"), ("nvpmodel", "nvpmodel"),
                               ("rails_source", "rails from")])
        items.append(("power rails", _rails(jetson.get("rails"))))
        sections.append(("Jetson", items))
    else:
        sections.append(("Jetson", [("status", _fmt(jetson))]))
    if energy_source:
        sections.append(("Energy", [("source", energy_source)]))
    return sections
