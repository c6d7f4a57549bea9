"""Faults and bad inputs, one test per case of issue 18 (kept up to date as new cases are found).

Each test builds its own damaged files. The cases:

1. an untrusted checkpoint must not run code;
2. two runs started at the same moment must not lose each other's records;
3. damaged data must be found before any training (and by ``--dry-run``);
4. bad records (non-finite, wrong types, corrupt) must never become answers;
5. the layer must reject impossible ``levels`` and agree across backends on NaN/Inf inputs;
6. arguments must be checked before any work;
7. smaller things: umask, non-tty progress, smoke headlines, worker counts, per-table pre-flight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SMOKE_SYNTH = {"num": 10, "size": (64, 128)}  # the smoke profile's SynthStreets (bench/tables/profiles.py)


def _bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ 1. untrusted checkpoints


class _Payload:
    """Unpickling this calls Path.touch(marker): a stand-in for any code a planted file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_case1_planted_checkpoint_runs_no_code(tmp_path):
    from wcc.train.checkpoint import FORMAT, load_checkpoint

    marker = tmp_path / "payload-ran"
    planted = tmp_path / "work" / "kitti" / "fp32" / "final.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"format": FORMAT, "model": {}, "metrics": _Payload(marker)}, planted, pickle_protocol=2)
    with pytest.raises(ValueError) as err:
        load_checkpoint(planted)
    assert str(planted) in str(err.value)
    assert not marker.exists(), "loading the planted checkpoint executed its payload"


def test_case1_plain_checkpoint_still_loads(tmp_path):
    from wcc.train.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Conv2d(3, 4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 2, 2)).sum().backward()
    opt.step()
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3, "done": False,
                           "conversions": [{"config": {"kind": "WCCConfig", "levels": 3}, "keep_fp": ["a.b"]}],
                           "metrics": {"miou": 0.5, "iou": {"road": 0.9}}})
    ck = load_checkpoint(path)
    assert ck["step"] == 3 and torch.equal(ck["model"]["weight"], model.state_dict()["weight"])


# ------------------------------------------------------------------ 2. concurrent runs


def test_case2_runs_started_in_the_same_second_get_distinct_ids(tmp_path, monkeypatch):
    import bench.tables.run as tables

    class _Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(tables, "datetime", _Frozen)
    # No data work: this test is about identity only.
    monkeypatch.setattr("wcc.data.synthetic.ensure_synthstreets", lambda *a, **k: {})
    monkeypatch.setattr(tables, "_datasets", lambda *a, **k: (None, None, None, None))
    monkeypatch.setattr(tables, "preflight", lambda *a, **k: None, raising=False)
    a = tables.prepare_run("smoke", tmp_path / "a", tmp_path / "results", None, "cpu", progress=False)
    b = tables.prepare_run("smoke", tmp_path / "b", tmp_path / "results", None, "cpu", progress=False)
    assert a.run_id != b.run_id


def test_case2_store_never_replaces_another_runs_record(tmp_path):
    import bench.store as store_module
    from tests._results_history import table_records

    store = store_module.ResultStore(tmp_path)
    name, rec = table_records("cpu", 0, datetime(2026, 1, 1, tzinfo=timezone.utc), seed=0)[0]
    store.write("tables", name, {**rec, "run_id": "run-A"})
    store.write("tables", name, {**rec, "run_id": "run-A", "wall_time_s": 61.0})  # the same run may rewrite it
    with pytest.raises(Exception) as err:
        store.write("tables", name, {**rec, "run_id": "run-B"})
    assert type(err.value).__name__ == "StoreConflictError"
    assert "run-A" in str(err.value) and "run-B" in str(err.value)
    assert json.loads(store.path("tables", name).read_text())["run_id"] == "run-A"


# ------------------------------------------------------------------ 3. damaged data


def _damaged_smoke_tree(out: Path) -> dict[str, Path]:
    """The smoke profile's SynthStreets under ``out`` with three damaged Cityscapes files."""
    import numpy as np
    from PIL import Image

    from bench.tables.profiles import get_profile
    from wcc.data.synthetic import ensure_synthstreets

    prof = get_profile("smoke")
    root = out / "data" / "synthstreets"
    ensure_synthstreets(root, num=prof.synth_num, size=prof.synth_size, val_fraction=prof.synth_val_fraction)
    images = sorted((root / "cityscapes" / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))
    labels = sorted((root / "cityscapes" / "gtFine").glob("*/*/*_gtFine_labelIds.png"))
    truncated, bad_ids, resized = images[0], labels[1], labels[2]
    truncated.write_bytes(truncated.read_bytes()[:200])
    ids = np.array(Image.open(bad_ids))
    ids[0, :5] = 200  # no Cityscapes label id is 200
    Image.fromarray(ids).save(bad_ids)
    Image.open(resized).resize((17, 9), Image.NEAREST).save(resized)
    return {"truncated": truncated, "bad label ids": bad_ids, "size mismatch": resized}


def test_case3_damaged_data_fails_before_training_and_in_dry_run(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    damaged = _damaged_smoke_tree(out)
    common = ("tables", "--profile", "smoke", "--tables", "cityscapes", "--no-progress", "--out", str(out),
              "--results", str(results))
    dry = _bench(*common, "--dry-run")
    assert dry.returncode == 2, dry.stdout + dry.stderr
    for path in damaged.values():
        assert path.name in dry.stderr, (path.name, dry.stderr)
    run = _bench(*common)
    assert run.returncode == 2, run.stderr
    for path in damaged.values():
        assert path.name in run.stderr
    assert "Traceback" not in run.stderr and "nothing was trained" in run.stderr
    assert not (out / "work").exists() and not (results / "tables").exists()


# ------------------------------------------------------------------ 4. bad records


def _two_sides(tmp_path: Path) -> tuple[Path, Path, Path]:
    """BASE and NEW results folders holding the same rows of two versions; one NEW record's path."""
    from bench.store import ResultStore
    from tests._results_history import table_records

    base, new = tmp_path / "base", tmp_path / "new"
    for root, version in ((base, 0), (new, 1)):
        store = ResultStore(root)
        for name, rec in table_records("cpu", version, datetime(2026, 1, 1 + version, tzinfo=timezone.utc),
                                       seed=version)[:3]:
            store.write("tables", name, rec)
    victim = sorted((new / "tables").glob("*-cityscapes-*.json"))[0]
    return base, new, victim


def test_case4_non_finite_record_is_rejected_by_compare(tmp_path):
    base, new, victim = _two_sides(tmp_path)
    rec = json.loads(victim.read_text())
    text = json.dumps(rec).replace(json.dumps(rec["metrics"]["miou"]), "1e999")
    assert "1e999" in text
    victim.write_text(text)
    res = _bench("compare", str(base), str(new))
    assert res.returncode == 2, res.stdout + res.stderr
    assert victim.name in res.stderr and "improved" not in res.stdout.lower()


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:1]):  # the first item stands for the rest (one item schema)
            yield from _leaves(v, (*path, i))
    if path:
        yield path


def _with(obj, path, value):
    import copy

    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("kind", ["tables", "timing"])
def test_case4_fast_record_check_is_as_strict_as_jsonschema(kind):
    """Every reader validates every record; the compiled check that makes that cheap
    (fastjsonschema) must reject exactly what jsonschema rejects: every field of a real record
    replaced by a wrong-typed or out-of-range value gets the same verdict from both."""
    from bench import store
    from tests._results_history import table_records, timing_record

    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rec = (table_records("cpu", 0, created, seed=0)[0][1] if kind == "tables"
           else timing_record("cpu", 0, created, full=False, seed=0, n_samples=3))
    fast, slow = store._fast_validator(kind), store._validator(kind)
    assert fast is not None, "fastjsonschema is a dependency of the bench extra"
    fast(rec)
    checked = 0
    for path in _leaves(rec):
        for bad in ("x", [1], True, None, -1.5, {}):
            mutated = _with(rec, path, bad)
            try:
                fast(mutated)
                fast_ok = True
            except Exception:  # noqa: BLE001 - fastjsonschema.JsonSchemaValueException
                fast_ok = False
            assert fast_ok == slow.is_valid(mutated), (path, bad)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("field,value", [("bops", "lots"), ("environment", [1, 2]), ("metrics", {"miou": "high"})])
def test_case4_wrong_typed_record_names_file_and_field(tmp_path, field, value):
    base, new, victim = _two_sides(tmp_path)
    rec = json.loads(victim.read_text())
    rec[field] = value
    victim.write_text(json.dumps(rec))
    res = _bench("compare", str(base), str(new))
    assert res.returncode == 2, res.stdout + res.stderr
    assert victim.name in res.stderr and field in res.stderr and "Traceback" not in res.stderr
    if field != "bops":
        return  # the report's handling is the same for every field; checked once
    # report: skipped with a warning on the page; --validate makes it an error
    rep = _bench("report", "--results", str(new), "--out", str(tmp_path / "reports"), "--quiet")
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "invalid record" in page and victim.name in page
    rep = _bench("report", "--results", str(new), "--out", str(tmp_path / "reports2"), "--validate")
    assert rep.returncode == 2 and victim.name in rep.stderr and "Traceback" not in rep.stderr


def test_case4_corrupt_record_on_resume_names_file_and_fix(tmp_path):
    from bench.store import ResultStore
    from bench.tables.run import RowJob, RunSpec, run_row

    spec = RunSpec("smoke", str(tmp_path / "out"), str(tmp_path / "results"), None, "cpu", "smoke-x", False)
    job = RowJob(spec, "kitti", "fp32")
    path = ResultStore(spec.results).path("tables", job.record_name)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": "wcc-bench/tables/v1", "table": "kitti", "row": ')  # cut off mid-write
    with pytest.raises(ValueError) as err:
        run_row(job)
    msg = str(err.value)
    assert str(path) in msg and "mv " in msg and "rerun" in msg


# ------------------------------------------------------------------ 5. the layer


def test_case5_impossible_levels_and_nan_inputs():
    """Two findings of the robustness review: the reference backend on levels far above a 2x2 map (12: the old
    code allocated 16M per channel; 14 exhausted 24 GB, too costly to replay; 64: a TypeError), and
    the cpu backend against the reference when NaNs outnumber the kept coefficients. The same rules
    run for every backend x device x dtype in the conformance battery (tests/test_conformance.py)."""
    from _conformance_rules import TOO_MANY_LEVELS, check_levels_rejected, check_nonfinite_rule

    from wcc.backends import get_backend

    cpu = torch.device("cpu")
    for levels in TOO_MANY_LEVELS:
        check_levels_rejected(get_backend("reference"), levels, cpu, torch.float32)
    backend = get_backend("cpu")
    if backend.unavailable_reason() is not None:
        pytest.skip(f"cpu backend unavailable here: {backend.unavailable_reason()}")
    check_nonfinite_rule(backend, cpu, torch.float32, tol=1e-5)


# ------------------------------------------------------------------ 6. late argument checks


def test_case6_bad_timing_name_rejected_before_any_benchmark(monkeypatch, capsys):
    import bench.timing.cli as timing_cli
    from bench.cli import main

    def _no_benchmarks(args):
        raise AssertionError("benchmarks ran before --name was checked")

    monkeypatch.setattr(timing_cli, "build_record", _no_benchmarks)
    assert main(["timing", "--device", "cpu", "--quick", "--name", "../evil", "--out", "unused"]) == 2
    assert "../evil" in capsys.readouterr().err


def test_case6_tables_executor_arguments_checked_before_any_data_work(tmp_path):
    out = tmp_path / "out"
    res = _bench("tables", "--profile", "smoke", "--executor", "slurm", "--no-progress", "--out", str(out),
                 "--results", str(tmp_path / "results"))
    assert res.returncode == 2 and "--partition" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()  # no SynthStreets generated, no run folder


def _no_record_reads(monkeypatch):
    """Make reading any record fail the test: the arguments must be rejected before that work."""
    import bench.report.load as load

    def _read(*a, **k):
        raise AssertionError("records were read before the arguments were checked")

    # _read: the per-file reader, looked up in load's globals (patching load_results would leak into
    # modules that import it by name while the patch is in place)
    monkeypatch.setattr(load, "_read", _read)


def test_case6_report_arguments_checked_before_any_record_is_read(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    _no_record_reads(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    rc = main(["report", "--results", str(tmp_path / "missing"), "--out", str(a_file), "--jobs", "0",
               "--version", "../../etc", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    for flag in ("--results", "--out", "--jobs", "--version"):
        assert flag in err, (flag, err)


def test_case6_compare_arguments_checked_before_any_record_is_read(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    _no_record_reads(monkeypatch)
    assert main(["compare", "--results", str(tmp_path / "missing"), "0.1.0", "0.1.1"]) == 2
    assert "--results" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), str(tmp_path), "--factor", "0.5"]) == 2
    assert "--factor" in capsys.readouterr().err


def test_case6_timing_numbers_and_paths_checked_before_any_benchmark(tmp_path, monkeypatch, capsys):
    import bench.timing.cli as timing_cli
    from bench.cli import main

    def _no_benchmarks(args):
        raise AssertionError("benchmarks ran before the arguments were checked")

    monkeypatch.setattr(timing_cli, "build_record", _no_benchmarks)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    rc = main(["timing", "--device", "cpu", "--quick", "--out", str(a_file), "--keep-ratios", "0,1.5",
               "--min-samples", "0", "--budget", "-1", "--backends", "nope", "--shape-sets", "nope"])
    err = capsys.readouterr().err
    assert rc == 2
    for flag in ("--out", "--keep-ratios", "--min-samples", "--budget", "--backends", "--shape-sets"):
        assert flag in err, (flag, err)


def test_case6_tables_paths_and_device_checked_before_any_data_work(tmp_path):
    out = tmp_path / "out"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    res = _bench("tables", "--profile", "smoke", "--device", "gpu", "--no-progress", "--out", str(out),
                 "--results", str(a_file), "--data-root", str(tmp_path / "missing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    for flag in ("--device gpu", "--results", "--data-root"):
        assert flag in res.stderr, (flag, res.stderr)
    assert not out.exists()  # no SynthStreets generated, no run folder


def test_case6_info_commands_reject_unknown_arguments():
    from wcc.info import main as wcc_info

    with pytest.raises(SystemExit) as exc:  # the old wcc.info ignored its arguments and probed anyway
        wcc_info(["--levels", "3"])
    assert exc.value.code == 2
    res = _bench("info", "--bogus", timeout=120)
    assert res.returncode == 2 and "--bogus" in res.stderr


# ------------------------------------------------------------------ 7. smaller things


def test_case7_records_and_checkpoints_respect_the_umask(tmp_path):
    from bench.store import ResultStore
    from tests._results_history import table_records
    from wcc.train.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        name, rec = table_records("cpu", 0, datetime(2026, 1, 1, tzinfo=timezone.utc), seed=0)[0]
        record = ResultStore(tmp_path).write("tables", name, rec)
        ckpt = tmp_path / "final.pt"
        save_checkpoint(ckpt, {"model": {}})
    finally:
        os.umask(old)
    assert record.stat().st_mode & 0o777 == 0o644
    assert ckpt.stat().st_mode & 0o777 == 0o644


def test_case7_progress_off_a_tty_is_a_few_plain_lines(monkeypatch, capsys):
    import io

    from wcc.train import _progress  # what train_steps and the evaluators draw with

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _progress.progress_bar(1000, "train", enabled=True)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    log = sys.stderr.getvalue()
    assert "\r" not in log
    assert 5 <= len(log.splitlines()) <= 11 and "1000/1000" in log


def test_case7_timing_progress_off_a_tty_is_a_few_plain_lines(monkeypatch):
    """bench timing's layer and model loops draw with the same rule as training (one home)."""
    import io

    from bench.timing import layer, model

    def _fail(*args, **kwargs):
        raise RuntimeError("not measured in this test")  # each case ends at once, as an error row

    monkeypatch.setattr(layer, "CaseGroup", _fail)
    monkeypatch.setattr(model, "build_model", _fail)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cases = layer.default_grid("cpu", quick=False).cases(["reference"])[:200]
    rows = layer.run_layer_benchmarks(cases, "cpu", progress=True)
    mcases = model.model_cases("cpu", True, ["reference"])
    model.run_model_benchmarks(mcases, "cpu", memory=False, progress=True)
    log = sys.stderr.getvalue()
    assert len(rows) == 200 and "\r" not in log
    layer_lines = [ln for ln in log.splitlines() if ln.startswith("layers:")]
    assert 5 <= len(layer_lines) <= 11 and "200/200" in layer_lines[-1]
    assert any(ln.startswith(f"models: {len(mcases)}/{len(mcases)}") for ln in log.splitlines())


def test_case7_smoke_records_never_headline_a_version():
    import pandas as pd

    from bench.report.sections import headline

    def row(profile, miou, created):
        return {"table": "cityscapes", "row_id": "wcc25", "shrinkage": "25%", "precision": "8/8", "profile": profile,
                "metrics": {"miou": miou}, "metrics_paper": {"miou": 0.7}, "synthetic": True, "data": "SynthStreets",
                "created": pd.Timestamp(created, tz="UTC"), "machine": "m", "version": "v", "record": profile,
                "device": "cpu", "run_id": profile}

    tables = pd.DataFrame([row("synthetic", 0.5, "2026-01-01"), row("smoke", 0.01, "2026-01-02")])
    empty = pd.DataFrame(columns=["op", "error", "keep_ratio", "direction", "machine", "levels", "backend",
                                  "device", "dtype", "ratio_to_dense", "created", "variant"])
    head = headline(tables, empty, empty, {})
    assert head["cityscapes"]["value"] == "0.500"


def test_case7_loader_workers_scale_with_the_machine(monkeypatch):
    from wcc.train import loops

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loops.loader_workers(8) <= 1  # a 2-core machine: one core stays with the main process
    assert loops.loader_workers(0) == 0


def test_case7_preflight_checks_only_the_tables_that_run(tmp_path):
    import shutil

    from bench.tables.profiles import get_profile
    from bench.tables.run import prepare_run
    from wcc.data.synthetic import ensure_synthstreets

    prof = get_profile("smoke")
    root = tmp_path / "data"
    ensure_synthstreets(root, num=prof.synth_num, size=prof.synth_size, val_fraction=prof.synth_val_fraction)
    shutil.rmtree(root / "kitti")  # a Cityscapes-only data root: no eigen_test split anywhere
    spec = prepare_run("paper", tmp_path / "out", tmp_path / "results", root, "cpu", progress=False,
                       tables=["cityscapes"])
    assert spec.profile == "paper"
