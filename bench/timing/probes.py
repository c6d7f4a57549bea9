"""Device probes recorded with every timing result: CPU, NVIDIA GPUs (NVML), NVIDIA Jetson.

Each probe returns JSON-ready data and never raises. A probe that cannot run at all returns
the string ``"unavailable: <reason>"``; inside a probe that runs, each field that cannot be
read is such a string too, so a result always says what was *not* measured and why.

* :func:`cpu_probe` - model, threads, affinity, frequency governor.
* :func:`nvml_probe` - discrete NVIDIA GPUs through nvidia-ml-py (``pynvml``): name, driver,
  CUDA driver version, clocks, power limit, temperature, throttle reasons, energy counter.
* :func:`jetson_probe` - Jetson boards (no NVML power there): L4T release from
  ``/etc/nv_tegra_release``, the device-tree model, the nvpmodel power mode and the INA3221
  power rails, read from sysfs (:func:`read_ina3221_rails`, both the L4T ``ina3221x`` iio layout
  and the mainline ``ina3221`` hwmon layout) or parsed from a ``tegrastats`` line
  (:func:`parse_tegrastats_line`).

Energy over timed windows (NVML's counter, Jetson rails) is :mod:`bench.timing.energy`.

Filesystem probes take a ``root`` (default ``/``) so tests run them on a recorded fake tree.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "unavailable",
    "is_unavailable",
    "cpu_probe",
    "nvml_probe",
    "open_nvml",
    "nvml_handle",
    "cuda_uuid",
    "jetson_probe",
    "read_tegra_release",
    "device_tree_model",
    "read_ina3221_rails",
    "parse_tegrastats_line",
    "nvpmodel_mode",
    "probe_all",
    "stable_probes",
    "VOLATILE",
]

_PREFIX = "unavailable: "
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def unavailable(reason: str) -> str:
    """The value a probe records instead of failing."""
    return _PREFIX + reason


def is_unavailable(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


def _field(fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``"unavailable: <error>"`` when it raises (one unreadable field never
    takes the whole probe down)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any driver error becomes a recorded reason
        return unavailable(f"{type(exc).__name__}: {exc}".strip())


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()


# ----------------------------------------------------------------------------------------- CPU


def cpu_probe(root: str | os.PathLike[str] = "/") -> dict[str, Any]:
    """CPU model, logical/affine CPUs, torch threads and the frequency governor."""
    from bench.environment import cpu_info

    root = Path(root)
    info: dict[str, Any] = {k: v for k, v in cpu_info().items() if k != "torch_threads"}
    info["affinity_cpus"] = _field(lambda: len(os.sched_getaffinity(0)))
    # Other processes competing for the cores are the first suspect for noisy samples.
    info["load_avg_1m"] = _field(lambda: os.getloadavg()[0])
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        # The parallel backend (OpenMP / native) changes how threads scale.
        lines = torch.__config__.parallel_info().splitlines()
        info["parallel_backend"] = next((ln.split(":", 1)[1].strip() for ln in lines
                                         if ln.startswith("ATen parallel backend")), None)
    except ImportError:
        info["torch_threads"] = unavailable("torch is not installed")
    freq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    info["governor"] = _field(lambda: _read_text(freq / "scaling_governor"))
    info["max_freq_mhz"] = _field(lambda: int(_read_text(freq / "cpuinfo_max_freq")) / 1000)
    info["cur_freq_mhz"] = _field(lambda: int(_read_text(freq / "scaling_cur_freq")) / 1000)
    return info


# ---------------------------------------------------------------------------------------- NVML


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML encodes the CUDA driver version as 1000 * major + 10 * minor (12040 -> "12.4")."""
    return f"{code // 1000}.{(code % 1000) // 10}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _throttle_reasons(nvml: Any, handle: Any) -> list[str]:
    """Names of the active clock-limiting reasons (NVML renamed "throttle" to "event" in v12)."""
    getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    mask = int(getter(handle))
    names = set()
    for attr in dir(nvml):
        m = re.fullmatch(r"nvmlClocks(?:Event|Throttle)Reason(\w+)", attr)
        if not m or m.group(1) in ("All", "None"):
            continue
        bit = getattr(nvml, attr)
        if isinstance(bit, int) and bit and mask & bit == bit:
            names.add(_snake(m.group(1)))
    return sorted(names)


def nvml_handle(nvml: Any, index: int, uuid: str | None) -> Any:
    """The NVML handle of a torch CUDA device: matched by UUID when known, because
    ``CUDA_VISIBLE_DEVICES`` can reorder devices relative to NVML's numbering."""
    if uuid:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            if uuid.lower().removeprefix("gpu-") in _text(nvml.nvmlDeviceGetUUID(handle)).lower():
                return handle
    return nvml.nvmlDeviceGetHandleByIndex(index)


def open_nvml(nvml: Any = None) -> tuple[Any, str | None]:
    """Import ``pynvml`` (unless given) and initialise it: ``(module, None)``, or ``(None, why)``.
    The caller shuts it down (``nvmlShutdown``) when done."""
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return None, (f"NVML did not initialise ({type(exc).__name__}: {exc}); no NVIDIA driver on this "
                      "machine, or a Jetson, which has no NVML")
    return nvml, None


def nvml_probe(nvml: Any = None, index: int = 0, uuid: str | None = None) -> dict[str, Any] | str:
    """Identity, clocks and power settings of one NVIDIA GPU, through NVML.

    Args:
        nvml: the ``pynvml`` module (injected by tests); imported when None.
        index: NVML device index, used when ``uuid`` is not given or not found.
        uuid: the device UUID (``torch.cuda.get_device_properties(i).uuid``).
    """
    nvml, reason = open_nvml(nvml)
    if reason is not None:
        return unavailable(reason)
    try:
        try:
            handle = nvml_handle(nvml, index, uuid)
        except Exception as exc:  # noqa: BLE001
            return unavailable(f"no NVML device {index} ({type(exc).__name__}: {exc})")

        def clocks(getter: Callable[[Any, int], int]) -> dict[str, Any]:
            return {name: _field(lambda c=const: getter(handle, getattr(nvml, c)))  # type: ignore[misc]
                    for name, const in (("sm", "NVML_CLOCK_SM"), ("mem", "NVML_CLOCK_MEM"),
                                        ("graphics", "NVML_CLOCK_GRAPHICS"))}

        return {
            "name": _field(lambda: _text(nvml.nvmlDeviceGetName(handle))),
            "uuid": _field(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
            "driver_version": _field(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            "cuda_driver_version": _field(lambda: _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))),
            "clocks_mhz": clocks(nvml.nvmlDeviceGetClockInfo),
            "max_clocks_mhz": clocks(nvml.nvmlDeviceGetMaxClockInfo),
            "power_limit_w": _field(lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0),
            "enforced_power_limit_w": _field(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0),
            "power_draw_w": _field(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            "temperature_c": _field(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "pstate": _field(lambda: int(nvml.nvmlDeviceGetPerformanceState(handle))),
            "memory_total_bytes": _field(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total)),
            "throttle_reasons": _field(lambda: _throttle_reasons(nvml, handle)),
            "energy_counter_j": _field(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0),
        }
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


# -------------------------------------------------------------------------------------- Jetson


def read_tegra_release(root: str | os.PathLike[str] = "/") -> dict[str, Any] | str:
    """Parse ``/etc/nv_tegra_release`` (``# R35 (release), REVISION: 4.1, ..., BOARD: t186ref``)."""
    path = Path(root) / "etc/nv_tegra_release"
    try:
        first = _read_text(path).splitlines()[0]
    except (OSError, IndexError):
        return unavailable(f"no {path}")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    out: dict[str, Any] = {"raw": first.lstrip("# ").strip()}
    out["l4t"] = f"{m.group(1)}.{m.group(2)}" if m else unavailable(f"unrecognised format: {first!r}")
    for key in ("BOARD", "EABI"):
        km = re.search(rf"{key}:\s*([^,]+)", first)
        if km:
            out[key.lower()] = km.group(1).strip()
    return out


def device_tree_model(root: str | os.PathLike[str] = "/") -> str | None:
    """The board model from the device tree (NUL-terminated in sysfs), or None."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        path = Path(root) / rel
        with contextlib.suppress(OSError):
            return _read_text(path) or None
    return None


def _read_number(path: Path) -> float:
    return float(_read_text(path))


def _add_rail(rails: dict[str, dict[str, Any]], name: str, value: dict[str, Any]) -> None:
    key, n = name, 2
    while key in rails:  # two monitors may reuse a label; keep both
        key, n = f"{name}#{n}", n + 1
    rails[key] = value


def _iio_rails(root: Path, rails: dict[str, dict[str, Any]]) -> None:
    """L4T <= 32 (JetPack 4) ``ina3221x`` driver: iio devices with rail_name_K and mW/mV/mA."""
    for dev in sorted(root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
        for name_file in sorted(dev.glob("rail_name_*")):
            k = name_file.name.rsplit("_", 1)[1]
            name = _read_text(name_file)
            power = dev / f"in_power{k}_input"
            if not name or not power.is_file():
                continue
            # _field calls each reader at once, inside this iteration (so B023 does not apply).
            _add_rail(rails, name, {
                "power_w": _field(lambda: _read_number(power) / 1000.0),  # noqa: B023
                "voltage_v": _field(lambda: _read_number(dev / f"in_voltage{k}_input") / 1000.0),  # noqa: B023
                "current_a": _field(lambda: _read_number(dev / f"in_current{k}_input") / 1000.0),  # noqa: B023
                "source": f"sysfs:{dev.relative_to(root)}",
            })


def _hwmon_dirs(root: Path) -> list[Path]:
    seen: set[Path] = set()
    out = []
    candidates = list(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")) + \
        list(root.glob("sys/class/hwmon/hwmon*"))
    for d in sorted(candidates):
        real = d.resolve()
        if real in seen:  # /sys/class/hwmon/hwmonN links to the device's own hwmon folder
            continue
        seen.add(real)
        with contextlib.suppress(OSError):
            if _read_text(d / "name") == "ina3221":
                out.append(d)
    return out


def _hwmon_rails(root: Path, rails: dict[str, dict[str, Any]]) -> None:
    """L4T >= 34 (JetPack 5+) mainline ``ina3221`` hwmon driver: inN_label, inN_input (mV),
    currN_input (mA); power = voltage x current. Unconnected channels are labelled "NC"."""
    for dev in _hwmon_dirs(root):
        for label_file in sorted(dev.glob("in*_label")):
            m = re.fullmatch(r"in(\d+)_label", label_file.name)
            if not m:
                continue
            i = m.group(1)
            label = _read_text(label_file)
            volt, curr = dev / f"in{i}_input", dev / f"curr{i}_input"
            # The "sum of shunt voltages" channel has no bus voltage/current pair: skip it.
            if not label or label.upper() == "NC" or not (volt.is_file() and curr.is_file()):
                continue
            v = _field(lambda: _read_number(volt) / 1000.0)  # noqa: B023 - called at once
            a = _field(lambda: _read_number(curr) / 1000.0)  # noqa: B023 - called at once
            p = v * a if isinstance(v, float) and isinstance(a, float) else unavailable("voltage or current unreadable")
            _add_rail(rails, label, {"power_w": p, "voltage_v": v, "current_a": a,
                                     "source": f"sysfs:{dev.relative_to(root)}"})


def read_ina3221_rails(root: str | os.PathLike[str] = "/") -> dict[str, dict[str, Any]]:
    """Instantaneous power of every INA3221 rail in sysfs: ``{rail: {power_w, voltage_v,
    current_a, source}}``; empty when the board has none (or it is not a Jetson)."""
    root = Path(root)
    rails: dict[str, dict[str, Any]] = {}
    _iio_rails(root, rails)
    _hwmon_rails(root, rails)
    return rails


# A rail in a tegrastats line: an upper-case name, then current/average (JetPack 5+ appends "mW";
# JetPack 4 prints bare milliwatts; some releases add a third value). The look-behind keeps
# "cpu@45C"-style temperatures out; the look-ahead rejects "RAM 1923/3964MB" and "0/252kB(".
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")


def parse_tegrastats_line(line: str) -> dict[str, dict[str, float]]:
    """Power rails of one ``tegrastats`` line: ``{rail: {"power_w": current, "avg_power_w": ...}}``.

    Handles the JetPack 4 form (``POM_5V_IN 1750/1628``, ``VDD_IN 5182/5182``, AGX Xavier's
    ``GPU 0/0 CPU 311/311``) and the JetPack 5/6 form (``VDD_GPU_SOC 2388mW/2388mW``).
    """
    rails: dict[str, dict[str, float]] = {}
    for m in _RAIL.finditer(line):
        rails[m.group(1)] = {"power_w": int(m.group(2)) / 1000.0, "avg_power_w": int(m.group(3)) / 1000.0}
    return rails


def _tegrastats_line(timeout_s: float = 3.0) -> str | None:
    """One line of ``tegrastats`` output (it streams until killed), or None."""
    exe = shutil.which("tegrastats")
    if exe is None:
        return None
    proc = subprocess.Popen([exe, "--interval", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    try:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return result[0].strip() if result and result[0].strip() else None
    finally:
        proc.kill()
        proc.wait(timeout=5)


def nvpmodel_mode(root: str | os.PathLike[str] = "/", run: Runner | None = None) -> dict[str, Any] | str:
    """The nvpmodel power mode: ``nvpmodel -q`` (``NV Power Mode: MAXN`` then the mode id), else
    the status file ``/var/lib/nvpmodel/status`` (``pmode:0000 ...``)."""
    run = run or subprocess.run
    why = "nvpmodel is not on PATH"
    if run is not subprocess.run or shutil.which("nvpmodel"):
        try:
            out = run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
            name = re.search(r"NV Power Mode:\s*(.+)", out)
            ident = re.search(r"^\s*(\d+)\s*$", out, re.M)
            if name:
                return {"name": name.group(1).strip(), "id": int(ident.group(1)) if ident else None,
                        "source": "nvpmodel -q"}
            why = f"unrecognised nvpmodel -q output {out.strip()[:80]!r}"
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"nvpmodel -q failed: {exc}"
    status = Path(root) / "var/lib/nvpmodel/status"
    with contextlib.suppress(OSError):
        m = re.search(r"pmode:(\d+)", _read_text(status))
        if m:
            return {"name": None, "id": int(m.group(1)), "source": str(status)}
    return unavailable(why)


def jetson_probe(root: str | os.PathLike[str] = "/", run: Runner | None = None,
                 tegrastats_line: Callable[[], str | None] | None = None) -> dict[str, Any] | str:
    """L4T release, board model, nvpmodel mode and a snapshot of the INA3221 power rails.

    Rails come from sysfs when readable, else from one ``tegrastats`` line.
    """
    release = read_tegra_release(root)
    model = device_tree_model(root)
    if is_unavailable(release) and not (model and "jetson" in model.lower()):
        return unavailable(f"not a Jetson (no {Path(root) / 'etc/nv_tegra_release'}, device-tree model {model!r})")
    rails: dict[str, Any] = read_ina3221_rails(root)
    source = "sysfs" if rails else None
    if not rails:
        line = (tegrastats_line or _tegrastats_line)()
        rails = parse_tegrastats_line(line) if line else {}
        source = "tegrastats" if rails else None
    return {
        "model": model if model else unavailable("no device-tree model"),
        "release": release,
        "nvpmodel": nvpmodel_mode(root, run),
        "rails": rails if rails else unavailable("no INA3221 rails in sysfs and no tegrastats output"),
        "rails_source": source,
    }


# ------------------------------------------------------------------------------------ all probes


def cuda_uuid(index: int) -> str | None:
    """torch's UUID of CUDA device ``index``, or None (no CUDA)."""
    with contextlib.suppress(Exception):
        import torch

        return str(torch.cuda.get_device_properties(index).uuid)
    return None


def probe_all(device: str = "cpu", root: str | os.PathLike[str] = "/") -> dict[str, Any]:
    """Every probe, for the environment of a timing result. ``device`` is "cpu" or "cuda[:i]"."""
    index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
    out: dict[str, Any] = {"cpu": cpu_probe(root)}
    out["nvml"] = nvml_probe(index=index, uuid=cuda_uuid(index) if device.startswith("cuda") else None)
    out["jetson"] = jetson_probe(root)
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(index)
            out["cuda_device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                                  "memory_total_bytes": int(props.total_memory),
                                  "multiprocessors": props.multi_processor_count,
                                  "torch_cuda": torch.version.cuda}
        else:
            out["cuda_device"] = unavailable("not timing on CUDA" if not device.startswith("cuda")
                                             else "torch.cuda.is_available() is False")
    except ImportError:
        out["cuda_device"] = unavailable("torch is not installed")
    return out


#: Readings that change from one moment to the next (load, clocks, power, temperature). They
#: belong to a result, but not to a machine's identity (pytest-benchmark compares machine_info).
VOLATILE = {
    "cpu": ("load_avg_1m", "cur_freq_mhz"),
    "nvml": ("clocks_mhz", "power_draw_w", "temperature_c", "pstate", "throttle_reasons", "energy_counter_j"),
    "jetson": ("rails", "rails_source"),
}


def stable_probes(probes: dict[str, Any]) -> dict[str, Any]:
    """``probes`` without the :data:`VOLATILE` readings: what identifies the machine."""
    out = {}
    for name, value in probes.items():
        drop = VOLATILE.get(name, ())
        out[name] = {k: v for k, v in value.items() if k not in drop} if isinstance(value, dict) else value
    return out
