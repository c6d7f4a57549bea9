"""Synthetic results histories for the report tests: realistic records, made with numpy.

Records have the exact shape the producers write: layer rows from the real timing grid
(:class:`bench.timing.layer.LayerGrid`, ratios by :func:`bench.timing.layer.add_ratios`), model
rows from :func:`bench.timing.model.model_cases`, table rows from :data:`bench.tables.sweeps.SWEEPS`.
Times follow a simple cost model (MACs / throughput, a per-backend WCC factor) and every sample
carries noise: lognormal per-sample jitter (``noise``, default 3%), occasional outliers (3% of
samples up to 1.5x), a per-run offset per row (``noise / 6``) and a per-run drift per machine
(1%), so two runs of the "same code" differ the way reruns on a quiet machine do.

The per-run offsets are what the within-run samples cannot see: a rank test on them (the gate
before rounds) called a 1.05x run-level shift "significant" and only the 1.1 factor kept it
unflagged; records of separate runs are now judged with a run-to-run calibration instead. With per-row
offsets of 1.5% (``noise / 2``) on top of the drift, ten versions of the full grids (about
10,000 rows each) showed 1 to 4 false regressions per version at the default factor: noisier
machines need a larger ``--factor``.

:class:`Injected` changes the truth of one version (a slowdown of some rows, an accuracy drop);
from that version on, the code stays that way (as a commit would).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.store import ResultStore, atomic_write_text, schema_id

MACHINES = {
    "cpu": {"hostname": "bench-cpu-01", "cpu": "AMD EPYC 7B13 64-Core Processor", "gpu": None, "threads": 8,
            "device": "cpu", "backends": ("cpu", "reference"), "throughput": 6e10, "overhead": 2e-5},
    "gpu": {"hostname": "bench-gpu-01", "cpu": "Intel(R) Xeon(R) Platinum 8480+", "gpu": "NVIDIA H100 80GB HBM3",
            "threads": 16, "device": "cuda", "backends": ("triton", "reference"), "throughput": 4e14,
            "overhead": 8e-6},
}
_WCC_FACTOR = {  # WCC time / dense time = a + b * keep_ratio (+5% per level), per backend
    "cpu": (0.55, 1.3), "reference": (4.0, 9.0), "triton": (0.35, 0.9),
}


@dataclass(frozen=True)
class Injected:
    """From ``version`` (an index) on, rows matching ``layer_match`` are ``slowdown`` x slower and
    the tables row ``table``/``row_id`` loses ``miou_drop`` mIoU (cityscapes) on ``machine``."""

    version: int
    machine: str = "cpu"
    slowdown: float = 1.0
    layer_match: Callable[[dict[str, Any]], bool] = field(default=lambda row: False)
    miou_drop: float = 0.0
    row_id: str = "wcc25"


def _env(machine: str, version: int, probes: bool, package: str = "0.1.0") -> dict[str, Any]:
    m = MACHINES[machine]
    commit = hashlib.sha1(f"commit-{version}".encode()).hexdigest()
    env: dict[str, Any] = {
        "commit": commit, "dirty": False, "python": "3.11.7", "platform": "Linux-6.1-x86_64-with-glibc2.36",
        "hostname": m["hostname"], "argv": ["bench"],
        "packages": {"wcc-bench": package, "torch": "2.13.0", "numpy": "2.4.6", "triton": "3.9.0", "pillow": "13.0.0"},
        "cpu": {"model": m["cpu"], "machine": "x86_64", "logical_cpus": m["threads"], "torch_threads": m["threads"]},
        "torch_cuda": "12.8" if m["gpu"] else None, "gpu": m["gpu"],
    }
    if probes:
        env["probes"] = {
            "cpu": {**env["cpu"], "affinity_cpus": m["threads"], "load_avg_1m": 0.4, "governor": "performance",
                    "max_freq_mhz": 3500.0, "cur_freq_mhz": 3400.0, "parallel_backend": "OpenMP"},
            "nvml": ({"name": m["gpu"], "driver_version": "570.86", "cuda_driver_version": "12.8",
                      "clocks_mhz": {"sm": 1980, "mem": 2619, "graphics": 1980},
                      "max_clocks_mhz": {"sm": 1980, "mem": 2619, "graphics": 1980}, "power_limit_w": 700.0,
                      "enforced_power_limit_w": 700.0, "power_draw_w": 118.0, "temperature_c": 35, "pstate": 0,
                      "memory_total_bytes": 85520809984, "throttle_reasons": []}
                     if m["gpu"] else "unavailable: pynvml: NVML Shared Library Not Found"),
            "jetson": "unavailable: not a Jetson (no /etc/nv_tegra_release, device-tree model None)",
            "cuda_device": ({"name": m["gpu"], "capability": "9.0", "memory_total_bytes": 85520809984,
                             "multiprocessors": 132, "torch_cuda": "12.8"} if m["gpu"]
                            else "unavailable: not timing on CUDA"),
        }
    return env


def _samples(rng: np.random.Generator, truth: float, n: int, noise: float) -> list[float]:
    s = truth * rng.lognormal(0.0, noise, n)
    outliers = rng.random(n) < 0.03
    s[outliers] *= 1.0 + rng.random(outliers.sum()) * 0.5  # an occasional interrupted sample
    return [float(v) for v in s]


def _timed(samples: list[float]) -> dict[str, Any]:
    from bench.timing.harness import median_iqr

    med, iqr = median_iqr(samples)
    return {"median_s": med, "iqr_s": iqr, "n_samples": len(samples), "samples": samples, "number": 1, "warmup": 3,
            "error": None, "energy": None}


def layer_rows(machine: str, full: bool, rng: np.random.Generator, drift: float, noise: float,
               n_samples: int, inject: Injected | None = None) -> list[dict[str, Any]]:
    from bench.timing.layer import add_ratios, default_grid

    m = MACHINES[machine]
    grid = default_grid(m["device"], quick=not full)
    rows = []
    for case in grid.cases(m["backends"]):
        row = case.to_row()
        s = case.shape
        # Stable per-shape "hardware" factors (same every version), then this run's offsets.
        key_rng = np.random.default_rng(int(hashlib.md5(case.label.encode()).hexdigest()[:8], 16))
        dense = s.macs / m["throughput"] * (2 if case.dtype == "float32" else 1) + m["overhead"]
        if case.op.startswith(("openvino", "tensorrt")):  # not installed on these machines
            row.update(median_s=None, iqr_s=None, n_samples=0, samples=[], number=0, warmup=0, energy=None,
                       error=f"{case.op}: not installed (ModuleNotFoundError)")
            rows.append(row)
            continue
        truth = dense * {"dense_nchw": 1.0, "dense_cl": 0.95 + 0.2 * key_rng.random(),
                         "matmul": 1.0 + 0.1 * key_rng.random(), "quantconv": 2.5, "wcc": 1.0,
                         "ort_fp32": 0.8 + 0.2 * key_rng.random(), "ort_int8": 0.35 + 0.2 * key_rng.random(),
                         "inductor_fp32": 0.9 + 0.2 * key_rng.random()}[case.op]
        if case.op == "wcc":
            a, b = _WCC_FACTOR[case.backend]
            truth *= (a + b * case.keep_ratio) * (1 + 0.05 * case.levels)
        if case.direction == "fwdbwd":
            truth *= 2.6
        if case.op == "wcc" and case.backend == "triton" and s.c_in > 900:
            row.update(median_s=None, iqr_s=None, n_samples=0, samples=[], number=0, warmup=0, energy=None,
                       error=f"triton cannot run this case: C_in={s.c_in} exceeds the kernel's 900-channel tile")
            rows.append(row)
            continue
        if inject is not None and inject.layer_match(row):
            truth *= inject.slowdown
        truth *= drift * rng.lognormal(0.0, noise / 6)  # this run's offset for this row (see the module doc)
        row.update(_timed(_samples(rng, truth, n_samples, noise)))
        rows.append(row)
    add_ratios(rows)
    return rows


def model_rows(machine: str, rng: np.random.Generator, drift: float, noise: float,
               n_samples: int) -> list[dict[str, Any]]:
    from bench.timing.model import model_cases

    m = MACHINES[machine]
    rows = []
    for case in model_cases(m["device"], quick=False, backends=list(m["backends"])):
        row = case.to_row()
        base = 35.5e9 * case.height * case.width / (1024 * 2048) / m["throughput"] * 3 + 1e-3
        keep = case.keep_ratio
        factor = 1.0 if case.variant == "dense" else 1.6 if case.variant == "8/8" else \
            (_WCC_FACTOR[case.backend][0] + _WCC_FACTOR[case.backend][1] * keep) * 1.2
        truth = base * factor * drift * rng.lognormal(0.0, noise / 6)
        act = 4 * 3 * case.height * case.width * 40
        row.update(_timed(_samples(rng, truth, n_samples, noise)), peak_mem_method="fixture",
                   peak_mem_bytes=int(act * (1 if keep is None else 0.6 + keep) * rng.lognormal(0, 0.01)),
                   train_saved_bytes=int(act * 3 * (1 if keep is None else 0.5 + keep)),
                   train_peak_bytes=int(act * 4 * (1 if keep is None else 0.6 + keep) * rng.lognormal(0, 0.01)),
                   memory_error=None)
        rows.append(row)
    dense = {(r["model"], tuple(r["input"]), r["dtype"]): r["median_s"] for r in rows if r["keep_ratio"] is None
             and r["variant"] in ("FP32", "FP16", "BF16")}
    for r in rows:
        r["ratio_to_dense"] = r["median_s"] / dense[(r["model"], tuple(r["input"]), r["dtype"])]
    return rows


def timing_record(machine: str, version: int, created: datetime, full: bool, seed: int, noise: float = 0.03,
                  n_samples: int = 20, inject: Injected | None = None, package: str = "0.1.0") -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    drift = float(rng.lognormal(0.0, 0.01))  # the machine's state this run (clocks, neighbours)
    active = inject if inject is not None and version >= inject.version and inject.machine == machine else None
    return {
        "schema": schema_id("timing"), "created": created.isoformat(timespec="seconds"),
        "environment": _env(machine, version, probes=True, package=package), "name": f"{machine}-v{version}-s{seed}",
        "device": MACHINES[machine]["device"], "quick": not full, "grid": {}, "timer": {"warmup": 3},
        "backends": [{"name": b, "available": True, "reason": None} for b in MACHINES[machine]["backends"]],
        "energy_source": "NVML energy counter" if MACHINES[machine]["gpu"] else "none (no NVML, not a Jetson)",
        "layer_rows": layer_rows(machine, full, rng, drift, noise, n_samples, active),
        "model_rows": model_rows(machine, rng, drift, noise, n_samples), "wall_time_s": 1234.5,
    }


_MIOU = {"fp32": 0.62, "q8_8": 0.61, "q8_6": 0.60, "q8_4": 0.35, "wcc50": 0.59, "wcc25": 0.55, "wcc12": 0.49}
_ABSREL = {"fp32": 0.12, "q8_8": 0.121, "q8_4": 0.13, "q8_2": 0.30, "wcc50": 0.13, "wcc25": 0.145, "wcc12": 0.17}


def table_records(machine: str, version: int, created: datetime, seed: int,
                  inject: Injected | None = None, package: str = "0.1.0") -> list[tuple[str, dict[str, Any]]]:
    """The 14 rows of both tables (synthetic profile) as (name, record)."""
    from bench.tables.paper import paper_row
    from bench.tables.sweeps import SWEEPS

    rng = np.random.default_rng(seed + 7)
    env = _env(machine, version, probes=False, package=package)
    run_id = f"synthetic-v{version}"
    out = []
    for table, sweep in SWEEPS.items():
        for row in sweep.rows:
            pub = paper_row(table, row.precision, row.shrinkage)
            if table == "cityscapes":
                miou = _MIOU[row.id] + rng.normal(0, 0.002)
                if inject is not None and version >= inject.version and inject.row_id == row.id:
                    miou -= inject.miou_drop
                metrics = {"miou": miou, "pixel_acc": 0.9 + rng.normal(0, 0.002)}
                metrics.update({f"iou_{c}": float(rng.uniform(0.2, 0.9)) for c in ("road", "sky", "car")})
            else:
                ar = _ABSREL[row.id] * (1 + rng.normal(0, 0.005))
                metrics = {"abs_rel": ar, "rmse": 30 * ar, "sq_rel": ar / 2, "rmse_log": 1.5 * ar,
                           "a1": 0.85 - ar, "a2": 0.95, "a3": 0.98}
            real = "Cityscapes" if table == "cityscapes" else "KITTI"
            rec = {"schema": schema_id("tables"), "created": created.isoformat(timespec="seconds"), "environment": env,
                   "table": table, "row": {"id": row.id, "precision": row.precision, "shrinkage": row.shrinkage,
                                           "parent": row.stage.parent},
                   "data": f"SynthStreets 96x192 (synthetic stand-in, not {real})", "synthetic": True,
                   "profile": "synthetic", "run_id": run_id,
                   "config": row.stage.config.to_dict() if row.stage.config else None,
                   "metrics": {k: float(v) for k, v in metrics.items()}, "metrics_paper": dict(pub.metrics),
                   "bops": pub.bops * 1.02, "bops_convention": sweep.bops_convention, "bops_paper": pub.bops,
                   "bops_input": list(sweep.bops_input), "wall_time_s": 60.0, "device": "cpu"}
            out.append((f"{run_id}-{table}-{row.id}", rec))
    return out


def write_history(root: Path, versions: int = 10, machines: tuple[str, ...] = ("cpu", "gpu"), full: bool = False,
                  inject: Injected | None = None, noise: float = 0.03, n_samples: int = 20,
                  validate: str = "all") -> list[str]:
    """Write a history under ``root`` (a results store); returns the version labels in order.

    ``validate``: "all" writes every record through :meth:`ResultStore.write` (schema checked);
    "first" checks one record of each kind and writes the rest directly (full-size grids make
    jsonschema slow; the records come from the same generator).
    """
    store = ResultStore(root)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    checked: set[str] = set()
    labels = []
    for v in range(versions):
        created = start + timedelta(days=3 * v)
        labels.append(f"0.1.0+{hashlib.sha1(f'commit-{v}'.encode()).hexdigest()[:8]}")
        for mi, machine in enumerate(machines):
            rec = timing_record(machine, v, created + timedelta(hours=mi), full, seed=1000 * v + mi, noise=noise,
                                n_samples=n_samples, inject=inject)
            _write(store, "timing", rec["name"], rec, validate, checked)
        for name, rec in table_records(machines[0], v, created + timedelta(hours=5), seed=v, inject=inject):
            _write(store, "tables", name, rec, validate, checked)
    return labels


def _write(store: ResultStore, kind: str, name: str, rec: dict[str, Any], validate: str, checked: set[str]) -> None:
    if validate == "all" or kind not in checked:
        store.write(kind, name, rec)
        checked.add(kind)
    else:
        atomic_write_text(store.path(kind, name), json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
