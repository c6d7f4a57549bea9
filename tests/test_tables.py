"""The tables pipeline end to end on the smoke profile (real training on tiny SynthStreets)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store import ResultStore
from bench.tables.paper import CITYSCAPES, KITTI
from bench.tables.run import CSV_COLUMNS, row_bops

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench", "tables", "--no-progress", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kw)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", ["fp32", "q8_8", "q8_6", "q8_4", "wcc50", "wcc25", "wcc12"])
def test_cityscapes_bops_match_published(row):
    from bench.tables.sweeps import CITYSCAPES_SWEEP

    r = CITYSCAPES_SWEEP.row(row)
    published = next(p.bops for p in CITYSCAPES if (p.precision, p.shrinkage) == (r.precision, r.shrinkage))
    got = row_bops("cityscapes", row)["paper"]
    assert abs(got / published - 1) < (0.03 if row == "fp32" else 0.05), (row, got, published)


def test_smoke_kill_resume_and_csvs(tmp_path):
    """Kill -9 mid-sweep, rerun: finished rows are reused, the killed row resumes, nothing is corrupt."""
    out, results = tmp_path / "out", tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "tables", "--profile", "smoke", "--no-progress",
                             "--out", str(out), "--results", str(results)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    records = results / "tables"
    deadline = time.monotonic() + 300
    killed_in = None
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(records.glob("*.json")) if records.is_dir() else []
        mid = list((out / "work").glob("*/*/last.pt"))
        if done and mid:  # at least one row finished and another is mid-stage
            proc.send_signal(signal.SIGKILL)
            killed_in = mid[0].parent
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_in is not None, "the sweep finished or stalled before it could be killed:\n" + proc.stdout.read()
    before = {p.name: p.read_bytes() for p in records.glob("*.json")}
    for p in records.glob("*.json"):
        json.loads(p.read_bytes())  # every record on disk is whole
    finished_ckpts = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/*/final.pt")}

    res = _cli("--profile", "smoke", "--out", str(out), "--results", str(results), timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{killed_in.name}: resuming from step" in res.stderr
    for name, data in before.items():  # finished rows were not recomputed
        assert (records / name).read_bytes() == data
    for p, mtime in finished_ckpts.items():
        assert p.stat().st_mtime_ns == mtime

    store = ResultStore(results)
    recs = [r for _, r in store.records("tables")]
    assert len(recs) == 14
    for table, published in (("cityscapes", CITYSCAPES), ("kitti", KITTI)):
        rows = _read_csv(out / f"{table}.csv")
        assert list(rows[0].keys()) == CSV_COLUMNS[table]
        assert [(r["precision"], r["shrinkage"]) for r in rows] == [(p.precision, p.shrinkage) for p in published]
        assert [float(r["bops_paper"]) for r in rows] == [pytest.approx(p.bops, abs=0.05) for p in published]
        for r in rows:
            assert "SynthStreets" in r["data"] and "synthetic" in r["data"]
            metric = "miou" if table == "cityscapes" else "abs_rel"
            assert r[metric] != "" and float(r[metric]) >= 0
    assert "SynthStreets" in res.stdout and "| precision" in res.stdout
    # Measured numbers come from real runs: every record has its training wall time and config.
    assert all(r["wall_time_s"] > 0 and r["metrics"] for r in recs)


def test_submitit_local_executor(tmp_path):
    """The submitit path with submitit's own local executor (subprocess jobs), one table."""
    res = _cli("--profile", "smoke", "--tables", "kitti", "--executor", "submitit-local",
               "--out", str(tmp_path / "out"), "--results", str(tmp_path / "res"), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "as job" in res.stderr
    rows = _read_csv(tmp_path / "out" / "kitti.csv")
    assert len(rows) == 7 and all(r["abs_rel"] for r in rows)
    assert any((tmp_path / "out" / "submitit").glob("*_log.out"))


def test_bad_data_root_fails_before_training(tmp_path):
    res = _cli("--profile", "paper", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
               "--results", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "root" / "cityscapes").mkdir(parents=True)
    res = _cli("--profile", "paper", "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "o"),
               "--results", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2
    assert "leftImg8bit" in res.stderr  # names what is missing and the expected layout
    assert not (tmp_path / "o" / "work").exists() and not (tmp_path / "r").exists()
    res = _cli("--profile", "paper", "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2 and "--data-root" in res.stderr


def test_dry_run_and_help():
    res = _cli("--dry-run", "--profile", "synthetic")
    assert res.returncode == 0 and "wcc12" in res.stdout and "(scratch)" in res.stdout
    res = _cli("--help")
    assert res.returncode == 0 and "--data-root" in res.stdout and "Resumable" in res.stdout


def test_init_checkpoint_flag_checks_records_and_evaluate(tmp_path, capsys):
    """--init-checkpoint: checked before any work, the FP32 row is the file (recorded with its hash),
    and bench evaluate reproduces the run's numbers from the same files. In-process (fast)."""
    import torch

    from bench.cli import main
    from wcc.models import deeplabv3plus_mobilenetv2, depth_mobilenetv2
    from wcc.train.checkpoint import file_sha256

    torch.save({"model_state": depth_mobilenetv2().state_dict()}, tmp_path / "depth.pth")
    torch.save(deeplabv3plus_mobilenetv2().state_dict(), tmp_path / "seg.pth")
    common = ["--profile", "smoke", "--no-progress", "--out", str(tmp_path / "o"), "--tables", "kitti"]

    def tables(*args):
        rc = main(["tables", *common, "--results", str(tmp_path / "r"), *args])
        return rc, capsys.readouterr()

    for args, message in [
        (("--init-checkpoint", "kitti"), "expected TABLE=PATH"),
        (("--init-checkpoint", f"coco={tmp_path / 'depth.pth'}"), "not one of the run's tables"),
        (("--init-checkpoint", f"kitti={tmp_path / 'nope.pth'}"), "does not exist"),
        (("--init-checkpoint", f"kitti={tmp_path / 'seg.pth'}"), "first mismatching key"),
        (("--pretrained-backbone", str(tmp_path / "nope.pth")), "--pretrained-backbone"),
    ]:
        rc, cap = tables(*args)
        assert rc == 2 and message in cap.err and args[0] in cap.err, (args, cap.err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()
    init = f"kitti={tmp_path / 'depth.pth'}"
    rc, cap = tables("--init-checkpoint", init, "--dry-run")
    assert rc == 0 and "(evaluated)" in cap.out, cap.err

    # A real smoke run of the KITTI table: the FP32 row is the file, recorded with its hash.
    rc, cap = tables("--init-checkpoint", init)
    assert rc == 0, cap.err[-3000:]
    recs = {r["row"]["id"]: r for _, r in ResultStore(tmp_path / "r").records("tables")}
    ref = {"path": str(tmp_path / "depth.pth"), "sha256": file_sha256(tmp_path / "depth.pth")}
    assert recs["fp32"]["train_time_s"] == 0 and recs["fp32"]["init_checkpoint"] == ref
    assert all(r["init_checkpoint"] == ref and r["procedure"] == "staged" for r in recs.values())
    assert recs["q8_8"]["train_time_s"] > 0
    rc, cap = tables()  # resuming the run with another start is refused
    assert rc == 2 and "init_checkpoints" in cap.err

    # bench evaluate on the same data: a stage checkpoint and the start file give the run's numbers.
    def evaluate(*args):
        rc = main(["evaluate", "--no-progress", "--table", "kitti", "--profile", "smoke", "--out", str(tmp_path / "o"),
                   "--results", str(tmp_path / "e"), *args])
        return rc, capsys.readouterr()

    stage = tmp_path / "o" / "work" / "kitti" / "wcc25" / "final.pt"
    for ckpt in (stage, tmp_path / "depth.pth"):
        rc, cap = evaluate("--checkpoint", str(ckpt))
        assert rc == 0, cap.err[-3000:]
    evaluated = {r["row"]["id"]: r for _, r in ResultStore(tmp_path / "e").records("tables")}
    for row in ("wcc25", "fp32"):
        assert evaluated[row]["procedure"] == "evaluated" and evaluated[row]["profile"] == "evaluate"
        assert evaluated[row]["metrics"] == pytest.approx(recs[row]["metrics"], rel=1e-6, nan_ok=True)
    rc, cap = evaluate("--checkpoint", str(tmp_path / "depth.pth"), "--precision", "8/2")
    assert rc == 0 and "post-training" in cap.out, cap.err[-3000:]
    # A converted stage converted again (8/8 -> WCC 50%, post-training): its clips handed over as asked.
    q8 = tmp_path / "o" / "work" / "kitti" / "q8_8" / "final.pt"
    for handover in ("carry", "transform-gain"):
        rc, cap = evaluate("--checkpoint", str(q8), "--shrinkage", "50%", "--clip-handover", handover,
                           "--results", str(tmp_path / handover))
        assert rc == 0 and "post-training" in cap.out, cap.err[-3000:]
        (rec,) = [r for _, r in ResultStore(tmp_path / handover).records("tables")]
        assert rec["row"]["id"] == "wcc50" and rec["clip_handover"] == handover and rec["procedure"] == "post-training"
    rc, cap = evaluate("--checkpoint", str(q8), "--clip-handover", "carry")
    assert rc == 2 and "only a conversion hands clips over" in cap.err
    rc, cap = evaluate("--checkpoint", str(tmp_path / "seg.pth"))
    assert rc == 2 and "--checkpoint" in cap.err and "first mismatching key" in cap.err


def test_pretrain_is_reproducible_and_loads_as_a_checkpoint(tmp_path, capsys):
    from bench.cli import main
    from wcc.models import depth_mobilenetv2
    from wcc.train.checkpoint import file_sha256

    args = ["pretrain", "--profile", "smoke", "--tables", "kitti", "--steps", "2", "--out", str(tmp_path),
            "--no-progress"]
    assert main(args) == 0
    path = tmp_path / "pretrain" / "smoke-kitti-fp32.pt"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sha256"] == file_sha256(path) and side["seed"] == 0 and side["steps"] == 2
    assert side["recipe"]["steps"] == 2 and "commit" in side and side["dtype"] == "float16"
    assert main(args) == 0 and "exists" in capsys.readouterr().out  # cached
    assert main([*args, "--force"]) == 0  # rebuilt from step 0: the same bytes
    assert file_sha256(path) == side["sha256"]
    model = depth_mobilenetv2(checkpoint=path)  # VainF-style {"model_state": ...}, fp16 weights
    assert model.decoder.pred.weight.dtype.is_floating_point
    assert main([*args[:-1], "--profile", "paper"]) == 2


def test_resolution_ablation_record_and_report_plot(tmp_path, capsys):
    """The ablation on stage checkpoints made here (converted, untrained: fast), then the report plot."""
    from bench.cli import main
    from bench.report.build import build_reports
    from bench.tables.sweeps import SWEEPS
    from wcc import convert
    from wcc.models import paper_keep_fp
    from wcc.train.checkpoint import build_model, save_checkpoint

    sweep = SWEEPS["kitti"]
    model = build_model(sweep.arch)
    conversions = []
    for row_id in ("q8_8", "wcc50", "wcc25", "wcc12"):
        cfg = sweep.row(row_id).stage.config
        convert(model, cfg, keep_fp=paper_keep_fp(model))
        conversions.append({"config": cfg.to_dict(), "keep_fp": paper_keep_fp(model)})
        save_checkpoint(tmp_path / "run" / "work" / "kitti" / row_id / "final.pt",
                        {"stage": row_id, "arch": sweep.arch, "conversions": list(conversions),
                         "model": model.state_dict()})
    args = ["ablation-resolution", "--run", str(tmp_path / "run"), "--table", "kitti", "--sizes", "32x64,64x128",
            "--scenes", "2", "--results", str(tmp_path / "res"), "--no-progress"]
    assert main([*args, "--sizes", "8x8"]) == 2 and "--sizes" in capsys.readouterr().err
    assert main([*args, "--run", str(tmp_path / "nowhere")]) == 2
    assert "no finished kitti rows" in capsys.readouterr().err
    assert main(args) == 0
    records = list((tmp_path / "res" / "ablation").glob("*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert {tuple(r["eval_size"]) for r in rec["rows"]} == {(32, 64), (64, 128)} and len(rec["rows"]) == 8
    for r in rec["rows"]:
        assert r["feature_map"] == [-(-r["eval_size"][0] // 32), -(-r["eval_size"][1] // 32)]
        if r["row_id"] == "q8_8":
            assert r["drop_vs_q8_8"]["abs_rel"] == 0
    build_reports(tmp_path / "res", tmp_path / "reports")
    assert list((tmp_path / "reports").rglob("resolution_ablation_kitti.png"))


def test_pretrain_shipped_checkpoint_is_used_only_when_its_recipe_matches(tmp_path, capsys):
    import shutil

    from bench.tables.pretrain import build_pretrain, ensure_pretrain

    built = build_pretrain("smoke", "kitti", tmp_path / "a", "cpu", progress=False)
    ship = tmp_path / "ship"
    ship.mkdir()
    for f in (built, built.with_suffix(".json")):
        shutil.copy(f, ship / f.name)
    # Nothing in the run's own folder: the shipped file starts the table, nothing is trained.
    assert ensure_pretrain("smoke", "kitti", tmp_path / "b", "cpu", progress=False, shipped=ship) == ship / built.name
    assert not (tmp_path / "b" / "pretrain").exists()
    assert "FP32 starts from" in capsys.readouterr().err
    # The later rows' fine-tune settings do not shape the pretrained weights: still used.
    side = ship / built.with_suffix(".json").name
    meta = json.loads(side.read_text())
    meta["recipe"]["finetune_steps"] += 1
    side.write_text(json.dumps(meta))
    assert ensure_pretrain("smoke", "kitti", tmp_path / "b", "cpu", progress=False, shipped=ship) == ship / built.name
    # A recipe recorded before a field existed had that field's default: still used.
    del meta["recipe"]["class_weights"]
    side.write_text(json.dumps(meta))
    assert ensure_pretrain("smoke", "kitti", tmp_path / "b", "cpu", progress=False, shipped=ship) == ship / built.name
    capsys.readouterr()
    # A shipped file built with another recipe than the profile's is not silently used: it builds,
    # and says which field differs.
    meta["recipe"]["steps"] += 1
    side.write_text(json.dumps(meta))
    got = ensure_pretrain("smoke", "kitti", tmp_path / "b", "cpu", progress=False, shipped=ship)
    assert got == tmp_path / "b" / "pretrain" / built.name and got.is_file()
    err = capsys.readouterr().err
    assert "another recipe" in err and f"steps {meta['recipe']['steps']}, not {meta['recipe']['steps'] - 1}" in err
    # A file that changed since bench pretrain wrote it is an error, never used.
    shutil.copy(built.with_suffix(".json"), side)
    (ship / built.name).write_bytes((ship / built.name).read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256 differs"):
        ensure_pretrain("smoke", "kitti", tmp_path / "c", "cpu", progress=False, shipped=ship)


def test_dry_run_plan_says_which_pretrain_checkpoint_a_run_would_take(tmp_path, monkeypatch):
    import dataclasses

    from bench.tables import profiles
    from bench.tables.cli import _plan
    from bench.tables.pretrain import build_pretrain

    smoke = profiles.get_profile("smoke")  # as a profile whose FP32 rows start from a pretrain
    monkeypatch.setitem(profiles.PROFILES, "smoke", lambda: dataclasses.replace(smoke, pretrain_steps={"kitti": 4}))

    plan = _plan(["kitti"], "smoke", out=str(tmp_path))
    assert "no usable pretrain checkpoint; the run first builds one" in plan
    built = build_pretrain("smoke", "kitti", tmp_path, "cpu", progress=False)
    assert f"kitti: FP32 would start from {built}" in _plan(["kitti"], "smoke", out=str(tmp_path))


def test_default_profile_keeps_wccs_premise_and_the_papers_procedure():
    """docs/design.md §4.2: evaluated at 256x512 or more, FP32 rows from a pretrain checkpoint."""
    from bench.tables.profiles import DEFAULT_PROFILE, get_profile

    profile = get_profile(DEFAULT_PROFILE)
    assert profile.data == "synthetic" and profile.eval_size is None  # evaluated at the scenes' size
    assert profile.synth_size[0] >= 256 and profile.synth_size[1] >= 512
    assert set(profile.pretrain_steps or {}) == {"cityscapes", "kitti"}
    for recipe in profile.recipes.values():
        assert recipe.finetune_steps < recipe.steps  # the compressed rows are short fine-tunes


def test_the_default_profiles_checkpoints_are_shipped_and_fit_its_recipe():
    """A fresh clone starts the default run from results/pretrain (no 1-hour pretrain first); a
    profile change that alters the pretraining recipe without rebuilding them fails here."""
    from bench.tables.pretrain import SHIPPED_DIR, _usable, pretrain_path
    from bench.tables.profiles import DEFAULT_PROFILE

    for table in ("cityscapes", "kitti"):
        path = SHIPPED_DIR / pretrain_path(".", DEFAULT_PROFILE, table).name
        assert _usable(path, DEFAULT_PROFILE, table)[0] is None
