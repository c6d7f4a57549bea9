"""bench.timing: probes on recorded fixtures, the timer's statistics, a tiny schema-valid run.

No timing is asserted: only counts, structure and the arithmetic of medians and ratios.
"""

from __future__ import annotations

import argparse
import builtins
import json
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from bench.store import ResultStore, SchemaError, validate
from bench.timing import probes
from bench.timing.energy import EnergyMeter
from bench.timing.harness import Timing, median_iqr, time_callable
from bench.timing.layer import LayerCase, LayerGrid, add_ratios, run_layer_benchmarks
from bench.timing.shapes import EXTRA_SHAPES, ConvShape, model_pointwise_shapes, parse_shape

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared machine, every op of a multi-threaded forward can stall at
    an OpenMP barrier while another process holds a core (seconds per tiny model forward)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------- tegrastats


def _line(name: str, i: int = 0) -> str:
    return (FIXTURES / "tegrastats" / f"{name}.txt").read_text().splitlines()[i]


@pytest.mark.parametrize("board, expected", [
    ("nano_jp4", {"POM_5V_IN": (4.386, 4.102), "POM_5V_GPU": (1.204, 1.057), "POM_5V_CPU": (0.842, 0.790)}),
    ("xavier_nx_jp4", {"VDD_IN": (5.327, 5.110), "VDD_CPU_GPU_CV": (1.184, 1.020), "VDD_SOC": (1.474, 1.451)}),
    ("agx_xavier_jp4", {"GPU": (3.566, 3.410), "CPU": (0.620, 0.601), "SOC": (1.395, 1.380), "CV": (0.0, 0.0),
                        "VDDRQ": (0.465, 0.452), "SYS5V": (1.981, 1.960)}),
    ("agx_orin_jp5", {"VDD_GPU_SOC": (6.380, 6.012), "VDD_CPU_CV": (1.190, 1.101), "VIN_SYS_5V0": (3.827, 3.790),
                      "VDDQ_VDD2_1V8AO": (0.605, 0.590)}),
    ("orin_nano_jp6", {"VDD_IN": (7.405, 7.190), "VDD_CPU_GPU_CV": (2.143, 2.021), "VDD_SOC": (2.270, 2.233)}),
])
def test_tegrastats_rails(board: str, expected: dict[str, tuple[float, float]]) -> None:
    rails = probes.parse_tegrastats_line(_line(board))
    # Exactly the rails: RAM/SWAP/IRAM ("MB", "kB"), temperatures and frequencies must not match.
    assert set(rails) == set(expected)
    for name, (cur, avg) in expected.items():
        assert rails[name]["power_w"] == pytest.approx(cur)
        assert rails[name]["avg_power_w"] == pytest.approx(avg)


def test_tegrastats_second_sample_differs() -> None:
    assert probes.parse_tegrastats_line(_line("nano_jp4", 1))["POM_5V_GPU"]["power_w"] == pytest.approx(0.240)


def test_tegrastats_non_rail_lines() -> None:
    assert probes.parse_tegrastats_line("") == {}
    assert probes.parse_tegrastats_line("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB IRAM 0/252kB(lfb 252kB)") == {}


# ------------------------------------------------------------------------------------ sysfs


def test_ina3221x_iio_layout() -> None:
    rails = probes.read_ina3221_rails(FIXTURES / "jetson/nano_jp4")
    assert list(rails) == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert rails["POM_5V_IN"]["power_w"] == pytest.approx(4.112)
    assert rails["POM_5V_IN"]["voltage_v"] == pytest.approx(5.064)
    assert rails["POM_5V_IN"]["current_a"] == pytest.approx(0.812)
    assert rails["POM_5V_CPU"]["source"].endswith("iio:device0")


def test_ina3221_hwmon_layout_skips_nc_and_sum_channels() -> None:
    rails = probes.read_ina3221_rails(FIXTURES / "jetson/agx_orin_jp5")
    assert set(rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert rails["VDD_GPU_SOC"]["power_w"] == pytest.approx(4.992 * 1.210)
    assert rails["VDDQ_VDD2_1V8AO"]["power_w"] == pytest.approx(4.984 * 0.121)


def test_class_hwmon_filters_by_name_and_dedupes_links(tmp_path: Path) -> None:
    rails = probes.read_ina3221_rails(FIXTURES / "jetson/orin_nano_jp6")
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # not the pwmfan hwmon
    assert rails["VDD_IN"]["power_w"] == pytest.approx(5.080 * 1.420)
    # On a real board /sys/class/hwmon/hwmonN links to the driver's folder: count it once.
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "jetson/agx_orin_jp5", root)
    (root / "sys/class/hwmon").mkdir(parents=True)
    (root / "sys/class/hwmon/hwmon3").symlink_to(root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3")
    assert len(probes.read_ina3221_rails(root)) == 4


def _no_tegrastats() -> None:
    return None


def test_jetson_probe_orin_with_nvpmodel_query() -> None:
    def run(cmd, **kwargs):
        assert cmd == ["nvpmodel", "-q"]
        return subprocess.CompletedProcess(cmd, 0, stdout="NV Power Mode: MAXN\n0\n", stderr="")

    out = probes.jetson_probe(FIXTURES / "jetson/agx_orin_jp5", run=run, tegrastats_line=_no_tegrastats)
    assert out["model"] == "Jetson AGX Orin Developer Kit"
    assert out["release"]["l4t"] == "35.4.1" and out["release"]["board"] == "t186ref"
    assert out["nvpmodel"] == {"name": "MAXN", "id": 0, "source": "nvpmodel -q"}
    assert out["rails_source"] == "sysfs" and "VIN_SYS_5V0" in out["rails"]
    json.dumps(out)


def test_jetson_probe_nano_status_file_fallback() -> None:
    def run(cmd, **kwargs):
        raise FileNotFoundError("nvpmodel")

    out = probes.jetson_probe(FIXTURES / "jetson/nano_jp4", run=run, tegrastats_line=_no_tegrastats)
    assert out["model"] == "NVIDIA Jetson Nano Developer Kit"  # NUL terminator stripped
    assert out["release"]["l4t"] == "32.7.1"
    assert out["nvpmodel"]["id"] == 1 and out["nvpmodel"]["source"].endswith("var/lib/nvpmodel/status")


def test_jetson_probe_rails_from_tegrastats_when_sysfs_has_none(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy(FIXTURES / "jetson/orin_nano_jp6/etc/nv_tegra_release", tmp_path / "etc")
    def run(cmd, **kwargs):
        raise OSError("no nvpmodel")

    out = probes.jetson_probe(tmp_path, run=run, tegrastats_line=lambda: _line("orin_nano_jp6"))
    assert out["release"]["l4t"] == "36.3.0"
    assert out["rails_source"] == "tegrastats" and out["rails"]["VDD_IN"]["power_w"] == pytest.approx(7.405)
    assert probes.is_unavailable(out["model"]) and probes.is_unavailable(out["nvpmodel"])


def test_no_jetson_no_nvml_on_an_empty_machine(tmp_path: Path) -> None:
    out = probes.jetson_probe(tmp_path, tegrastats_line=_no_tegrastats)
    assert probes.is_unavailable(out) and "not a Jetson" in out
    assert probes.read_ina3221_rails(tmp_path) == {}
    cpu = probes.cpu_probe(tmp_path)  # no cpufreq in the fake root: recorded, not raised
    assert probes.is_unavailable(cpu["governor"]) and cpu["logical_cpus"] >= 1
    meter = EnergyMeter("cpu", root=tmp_path)
    assert not meter.available and probes.is_unavailable(meter.describe())
    with meter.window() as w:
        pass
    assert w.to_dict().keys() == {"window_s"}


# ------------------------------------------------------------------------------------- NVML


def test_nvml_absent_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    out = probes.nvml_probe()
    assert out == "unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py)"


def test_nvml_init_failure_is_recorded() -> None:
    class Failing:
        class NVMLError(Exception):
            pass

        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    out = probes.nvml_probe(Failing())
    assert probes.is_unavailable(out) and "Driver Not Loaded" in out


class FakeNVML(types.SimpleNamespace):
    """The subset of pynvml the probe uses, with a test double's values."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
    NVML_TEMPERATURE_GPU = 0
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwThermalSlowdown = 0x40
    nvmlClocksThrottleReasonSwPowerCap = 0x4  # the pre-v12 alias of the same bit
    nvmlClocksEventReasonAll = 0xFF
    nvmlClocksEventReasonNone = 0

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__(inits=0, shutdowns=0, energy_mj=1_000_000)

    def nvmlInit(self): self.inits += 1
    def nvmlShutdown(self): self.shutdowns += 1
    def nvmlDeviceGetCount(self): return 2
    def nvmlDeviceGetHandleByIndex(self, i): return f"h{i}"
    def nvmlDeviceGetUUID(self, h): return {"h0": "GPU-aaaa", "h1": "GPU-bbbb"}[h]
    def nvmlDeviceGetName(self, h): return b"NVIDIA H100 80GB HBM3" if h == "h1" else "other"
    def nvmlSystemGetDriverVersion(self): return "550.54.15"
    def nvmlSystemGetCudaDriverVersion(self): return 12040
    def nvmlDeviceGetClockInfo(self, h, c): return {0: 1755, 1: 1755, 2: 2619}[c]
    def nvmlDeviceGetMaxClockInfo(self, h, c): return {0: 1980, 1: 1980, 2: 2619}[c]
    def nvmlDeviceGetPowerManagementLimit(self, h): return 700_000
    def nvmlDeviceGetEnforcedPowerLimit(self, h): return 650_000
    def nvmlDeviceGetPowerUsage(self, h): return 123_456
    def nvmlDeviceGetTemperature(self, h, sensor): return 41
    def nvmlDeviceGetPerformanceState(self, h): return 0
    def nvmlDeviceGetMemoryInfo(self, h): return types.SimpleNamespace(total=85_520_809_984)
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): return 0x4 | 0x40

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy_mj += 2500  # each read: 2.5 J more
        return self.energy_mj


def test_nvml_fields_from_a_fake_module() -> None:
    nvml = FakeNVML()
    out = probes.nvml_probe(nvml, uuid="bbbb")  # matched by UUID, not index 0
    assert out["name"] == "NVIDIA H100 80GB HBM3" and out["uuid"] == "GPU-bbbb"
    assert out["driver_version"] == "550.54.15" and out["cuda_driver_version"] == "12.4"
    assert out["clocks_mhz"] == {"sm": 1755, "mem": 2619, "graphics": 1755}
    assert out["max_clocks_mhz"]["sm"] == 1980
    assert out["power_limit_w"] == 700.0 and out["enforced_power_limit_w"] == 650.0
    assert out["power_draw_w"] == pytest.approx(123.456)
    assert out["temperature_c"] == 41 and out["pstate"] == 0
    assert out["throttle_reasons"] == ["hw_thermal_slowdown", "sw_power_cap"]
    assert out["energy_counter_j"] == pytest.approx(1002.5)
    assert nvml.inits == nvml.shutdowns == 1
    json.dumps(out)


class OldNVML(FakeNVML):
    """nvidia-ml-py before v12: throttle reasons under their old name; no energy counter."""

    nvmlDeviceGetCurrentClocksEventReasons = None

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return 0x1

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        raise self.NVMLError("Not Supported")


class BrokenNVML(OldNVML):
    nvmlDeviceGetCurrentClocksThrottleReasons = None


def test_nvml_old_names_and_unreadable_fields() -> None:
    out = probes.nvml_probe(OldNVML())
    assert out["throttle_reasons"] == ["gpu_idle"]
    assert out["energy_counter_j"] == "unavailable: NVMLError: Not Supported"
    assert out["name"] == "other"  # index 0 without a UUID
    out = probes.nvml_probe(BrokenNVML())
    assert probes.is_unavailable(out["throttle_reasons"]) and out["driver_version"] == "550.54.15"
    assert not EnergyMeter("cuda", nvml=OldNVML(), root="/nonexistent").available


def test_nvml_probe_on_this_machine_never_raises() -> None:
    # Either the GPU's identity or a recorded reason; never an exception, never a bare value.
    out = probes.nvml_probe()
    if isinstance(out, dict):
        assert {"name", "driver_version"} <= set(out)
    else:
        assert probes.is_unavailable(out) and len(out) > len("unavailable: ")


def test_energy_meter_nvml_window() -> None:
    nvml = FakeNVML()
    with EnergyMeter("cuda", nvml=nvml, root="/nonexistent") as meter:
        assert meter.available and meter.describe() == "nvml energy counter"
        with meter.window() as w:
            pass
    d = w.to_dict()
    assert d["nvml_energy_j"] == pytest.approx(2.5)  # one read before, one after
    assert d["nvml_avg_power_w"] == pytest.approx(2.5 / d["window_s"])
    assert nvml.shutdowns == 1


def test_energy_meter_jetson_rails_window() -> None:
    meter = EnergyMeter("cpu", root=FIXTURES / "jetson/nano_jp4", interval_s=0.005)
    assert meter.available and "INA3221" in meter.describe()
    with meter.window() as w:
        time.sleep(0.05)
    rails = w.to_dict()["rails"]
    assert rails["POM_5V_IN"]["avg_power_w"] == pytest.approx(4.112)
    assert rails["POM_5V_IN"]["energy_j"] == pytest.approx(4.112 * w.window_s)
    assert rails["POM_5V_IN"]["n_samples"] >= 1


def test_bench_info_prints_the_device_probes(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends (auto tries them in this order):" in out and "device probes (cpu):" in out
    cpu = re.search(r"^  cpu\s+(\{.*\})$", out, re.M)
    assert cpu and json.loads(cpu.group(1))["logical_cpus"] >= 1
    for name in ("nvml", "jetson", "cuda_device"):
        assert re.search(rf"^  {name}\s+\S", out, re.M), name


def test_probe_all_is_json() -> None:
    out = probes.probe_all("cpu")
    assert set(out) >= {"cpu", "nvml", "jetson", "cuda_device"}
    json.dumps(out)


# ------------------------------------------------------------------------------------ timer


def test_timing_to_dict() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        median_iqr([])
    assert median_iqr([3.0]) == (3.0, 0.0)
    t = Timing((0.3, 0.1, 0.2, 0.4), number=2, warmup=3)
    d = t.to_dict()
    assert d["median_s"] == pytest.approx(0.25) and d["n_samples"] == 4 and d["samples"] == [0.3, 0.1, 0.2, 0.4]
    assert d["iqr_s"] == pytest.approx(0.15) and d["number"] == 2 and d["warmup"] == 3


class _Window:
    def __init__(self) -> None:
        self.entered = self.exited = 0

    def __enter__(self) -> "_Window":
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited += 1


def test_time_callable_counts_calls_and_wraps_only_the_samples() -> None:
    calls = []
    window = _Window()

    def fn() -> None:
        calls.append(window.entered)
        time.sleep(0.002)  # longer than min_sample_s: one call per sample

    t = time_callable(fn, "cpu", warmup=3, min_samples=4, max_samples=4, budget_s=0.0, min_sample_s=1e-3,
                      window=window)
    assert t.n_samples == 4 and t.number == 1 and t.warmup == 3
    assert len(calls) == 3 + 4
    assert calls[:3] == [0, 0, 0] and calls[3:] == [1, 1, 1, 1]  # warm-up outside the window
    assert window.entered == window.exited == 1
    assert all(s > 0 for s in t.samples)


def test_time_callable_repeats_short_calls_and_respects_bounds() -> None:
    t = time_callable(lambda: None, "cpu", warmup=1, min_samples=3, max_samples=5, budget_s=0.0, min_sample_s=1e-3)
    assert t.number > 1 and t.n_samples == 3
    t = time_callable(lambda: None, "cpu", min_samples=2, max_samples=6, budget_s=10.0, min_sample_s=1e-4)
    assert t.n_samples == 6  # the budget is not spent: stops at max_samples
    with pytest.raises(ValueError):
        time_callable(lambda: None, "cpu", min_samples=3, max_samples=2)
    with pytest.raises(ValueError):
        time_callable(lambda: None, "meta")


@pytest.mark.gpu
def test_time_callable_cuda_events() -> None:
    x = torch.randn(1024, 1024, device="cuda")
    t = time_callable(lambda: x @ x, "cuda", warmup=2, min_samples=3, max_samples=3, budget_s=0.0)
    assert t.n_samples == 3 and all(s > 0 for s in t.samples)


# ----------------------------------------------------------------------------------- shapes


def test_shapes_parse_and_extra_set() -> None:
    for shape in EXTRA_SHAPES:
        assert parse_shape(shape.label) == shape
    assert EXTRA_SHAPES[0].label == "1x256x256@128x256"
    with pytest.raises(ValueError, match="BATCHxC_INxC_OUT@HxW"):
        parse_shape("256x256")
    with pytest.raises(ValueError):
        ConvShape(1, 0, 4, 8, 8)


def test_model_pointwise_shapes_are_distinct_1x1_inputs() -> None:
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1),
                          nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 1, stride=2))
    shapes = model_pointwise_shapes(model, (1, 3, 20, 30))
    # The stride-2 1x1 conv is not a WCC candidate; the repeated 16->8 shape appears once.
    assert [s.label for s in shapes] == ["1x8x16@20x30", "1x16x8@20x30"]


# ------------------------------------------------------------------------- layer/model runs


def test_add_ratios_uses_the_fastest_dense_op() -> None:
    base = {"shape_set": "s", "shape_label": "1x1x1@1x1", "direction": "fwd", "dtype": "float32"}
    rows = [dict(base, op="dense_nchw", median_s=4.0), dict(base, op="dense_cl", median_s=2.0),
            dict(base, op="matmul", median_s=None), dict(base, op="wcc", median_s=1.0),
            dict(base, op="quantconv", median_s=3.0), dict(base, direction="fwdbwd", op="wcc", median_s=1.0)]
    add_ratios(rows)
    assert [r["ratio_to_dense"] for r in rows] == [2.0, 1.0, None, 0.5, 1.5, None]
    assert rows[3]["dense_op"] == "dense_cl" and rows[5]["dense_op"] is None


_FAST = {"warmup": 1, "min_samples": 2, "max_samples": 2, "budget_s": 0.0}


def test_layer_rows_record_backend_refusals() -> None:
    shape = ConvShape(1, 4, 6, 8, 8)
    grid = LayerGrid(shape_sets=("micro",), keep_ratios=(0.5,), levels=(1,), directions=("fwd", "fwdbwd"),
                     shapes={"micro": (shape,)})
    cases = grid.cases(["reference", "no-such-backend"])
    assert len(cases) == 2 * (4 + 2)
    rows = run_layer_benchmarks(cases, "cpu", _FAST, progress=False)
    ok = [r for r in rows if r["error"] is None]
    bad = [r for r in rows if r["error"] is not None]
    assert {r["backend"] for r in bad} == {"no-such-backend"} and "unknown WCC backend" in bad[0]["error"]
    assert len(ok) == 10 and all(r["n_samples"] == len(r["samples"]) == 2 for r in ok)
    assert all(r["ratio_to_dense"] > 0 for r in ok)
    assert min(r["ratio_to_dense"] for r in ok if r["op"] in ("dense_nchw", "dense_cl", "matmul")) == 1.0


def test_forced_backend_mislabel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WCC_BACKEND", "reference")
    case = LayerCase("micro", ConvShape(1, 4, 4, 8, 8), "wcc", backend="cpu", keep_ratio=0.5, levels=1)
    row = run_layer_benchmarks([case], "cpu", _FAST, progress=False)[0]
    assert "WCC_BACKEND=reference forces" in row["error"]


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    from bench.cli import build_parser

    return build_parser().parse_args(["timing", "--shapes", "1x4x4@8x8", "--keep-ratios", "0.5", "--levels", "1",
                                      "--directions", "fwd", "--min-samples", "2", "--max-samples", "2",
                                      "--budget", "0", "--warmup", "1", "--out", str(tmp_path), "--no-progress",
                                      "--threads", "1",
                                      *extra])


def test_tiny_timing_run_is_schema_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.timing.cli import run

    # One round in this process (rounds as fresh processes: test_timing_rounds_run_as_fresh_processes).
    args = _args(tmp_path, "--quick", "--one-round", "--name", "tiny", "--backends", "reference,triton",
                 "--model-resolution", "32x64", "--no-memory", "--runtimes", "ort_fp32,tensorrt_int8")
    assert run(args) == 0
    record = ResultStore(tmp_path).read("timing", "tiny")  # validates
    assert record["environment"]["probes"]["jetson"].startswith("unavailable: ")
    peaks = record["environment"]["peaks"]
    assert all(peaks[k] > 0 for k in ("bandwidth_Bps", "fp32_macs_per_s", "int8_macs_per_s"))
    rows = record["layer_rows"]
    assert {r["op"] for r in rows} == {"dense_nchw", "dense_cl", "matmul", "quantconv", "wcc", "ort_fp32",
                                       "tensorrt_int8"}
    assert all(r["floor_s"] > 0 and r["floor_ratio"] > 0 for r in rows if r["median_s"] is not None)
    assert all(r["ratio_to_best_runtime"] > 0 for r in rows if r["median_s"] is not None)
    assert "cuda only" in next(r for r in rows if r["op"] == "tensorrt_int8")["error"]
    triton = [r for r in rows if r["backend"] == "triton"]
    if not torch.cuda.is_available():
        assert triton[0]["error"] and triton[0]["median_s"] is None
    models = record["model_rows"]
    assert [(m["variant"], m["backend"]) for m in models] == [
        ("FP32", None), ("ONNX Runtime FP32", None), ("TensorRT int8", None), ("WCC 25%", "reference")]
    assert models[0]["ratio_to_dense"] == 1.0 and models[0]["input"] == [1, 3, 32, 64]
    assert [m["error"] is None for m in models] == [True, True, False, True]
    assert models[1]["max_rel_err"] < 1e-4 and all(m["floor_s"] > 0 for m in models)
    out = capsys.readouterr().out
    assert "WCC / dense median time ratios" in out and "wcc k=0.5" in out

    broken = json.loads(json.dumps(record))
    broken["layer_rows"][0]["median_s"] = None  # no error, yet no median
    with pytest.raises(SchemaError, match="layer_rows"):
        validate("timing", broken)
    broken = json.loads(json.dumps(record))
    del broken["environment"]["probes"]
    with pytest.raises(SchemaError, match="probes"):
        validate("timing", broken)


def test_model_memory_measurements() -> None:
    from bench.timing.model import ModelCase, run_model_benchmarks

    cases = [ModelCase("deeplabv3plus-mobilenetv2", "dense", 1, 32, 64)]
    row = run_model_benchmarks(cases, "cpu", _FAST, memory=True, progress=False)[0]
    assert row["error"] is None and row["memory_error"] is None, row
    assert row["peak_mem_bytes"] > 0 and row["train_peak_bytes"] > 0
    # The activations a training step keeps include at least the logits (19 x 32 x 64 floats).
    assert row["train_saved_bytes"] >= 19 * 32 * 64 * 4


def test_cli_help_and_cuda_refusal(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "timing", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--device" in proc.stdout
    if not torch.cuda.is_available():
        from bench.timing.cli import run

        assert run(_args(tmp_path, "--device", "cuda")) == 2


def test_stable_probes_drop_volatile_readings() -> None:
    full = {"cpu": {"model": "x", "load_avg_1m": 3.2, "cur_freq_mhz": 2000.0},
            "nvml": {"name": "H100", "temperature_c": 40, "energy_counter_j": 1.0},
            "jetson": "unavailable: not a Jetson"}
    assert probes.stable_probes(full) == {"cpu": {"model": "x"}, "nvml": {"name": "H100"},
                                          "jetson": "unavailable: not a Jetson"}


def test_quick_times_the_preferred_backend_only(tmp_path: Path) -> None:
    from bench.timing.cli import build_record
    from bench.timing.layer import available_backends

    record = build_record(_args(tmp_path, "--quick", "--no-model", "--no-runtimes", "--no-peaks"))
    preferred = available_backends("cpu")[0][0]
    assert {r["backend"] for r in record["layer_rows"] if r["op"] == "wcc"} == {preferred}
    assert record["environment"]["peaks"].startswith("unavailable: ")
    assert all(r["floor_s"] is None for r in record["layer_rows"])


def test_model_grid_has_a_compiled_row_per_wcc_variant_when_inductor_is_timed() -> None:
    from bench.timing.model import ModelCase, model_cases

    cases = model_cases("cpu", quick=True, backends=["cpu"], runtimes=("ort_int8", "inductor_fp32"))
    compiled = [c for c in cases if c.compiled]
    assert [(c.variant, c.backend) for c in compiled] == [("WCC 25%", "cpu")]
    assert compiled[0].label == "WCC 25% (torch.compile)"
    assert compiled[0].to_row()["runtime"].endswith("(inductor)")
    assert not any(c.compiled for c in model_cases("cpu", quick=True, backends=["cpu"], runtimes=("ort_int8",)))
    with pytest.raises(ValueError, match="compiled"):
        ModelCase("deeplabv3plus-mobilenetv2", "dense", 1, 32, 64, compiled=True)


def test_timing_rounds_run_as_fresh_processes(tmp_path: Path) -> None:
    """`python -m bench timing --rounds 2` runs two child processes and merges them: every timed row
    keeps one summary per round, the record names its session and validates."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "bench", "timing", "--shapes", "1x4x4@8x8", "--keep-ratios", "0.5", "--levels", "1",
           "--directions", "fwd", "--min-samples", "2", "--max-samples", "2", "--budget", "0", "--warmup", "1",
           "--threads", "1", "--no-progress", "--no-model", "--no-peaks", "--no-memory", "--backends", "reference",
           "--no-runtimes", "--rounds", "2", "--name", "r2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("(a fresh process)") == 2
    record = ResultStore(tmp_path).read("timing", "r2")  # validates
    assert record["rounds"] == 2 and record["session"]
    timed = [r for r in record["layer_rows"] if r["median_s"] is not None]
    assert timed and all(len(r["rounds"]) == 2 for r in timed)
