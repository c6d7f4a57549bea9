"""Tests for the SynthStreets generator (wcc.data.synthetic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wcc.data import CityscapesSegmentation, KittiDepth, _io, label_ids_to_train_ids
from wcc.data import _synth_render as R
from wcc.data import synthetic as S

pytest.importorskip("cityscapesscripts")

SIZE = (64, 128)
REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ss"
    manifest = S.generate(out, 5, SIZE, seed=3, val_fraction=0.4)
    return out, manifest


def test_generate_writes_both_layouts_read_by_the_real_readers(synth):
    out, manifest = synth
    assert manifest["complete"] is True and (manifest["num_train"], manifest["num_val"]) == (3, 2)
    assert json.loads((out / S.MANIFEST_NAME).read_text()) == manifest
    for split, n, first in (("train", 3, 0), ("val", 2, 3)):
        cs = CityscapesSegmentation(out / "cityscapes", split)
        kd = KittiDepth(out / "kitti", split)  # split name -> kitti/splits/{split}.txt
        assert len(cs) == n and len(kd) == n and kd.skipped == 0
        image, target = cs[0]
        assert image.shape == (3, *SIZE) and target.dtype == torch.int64
        image, depth = kd[0]
        assert image.shape == (3, *SIZE) and depth.dtype == torch.float32
        # Scenes are ordered in the KITTI split; check the first one against a fresh render.
        rgb, label, metres = S.render(first, 3, SIZE)
        assert torch.equal(depth, torch.from_numpy(_io.decode_depth(_io.encode_depth(metres))))
        raw_img, raw_depth = kd.load(0)
        assert np.array_equal(raw_img, rgb)
        assert np.array_equal(_io.encode_depth(raw_depth), _io.encode_depth(metres))  # exact round trip
    # Both layouts hold the same images and the labels are the rendered labelIds.
    cs = CityscapesSegmentation(out / "cityscapes", "val")
    for i in range(len(cs)):
        index = int(cs.name(i).split("_")[1])
        rgb, label, _ = S.render(index, 3, SIZE)
        img, train_ids = cs.load(i)
        assert np.array_equal(img, rgb)
        assert np.array_equal(train_ids, label_ids_to_train_ids(label))
    split_lines = (out / "kitti" / "splits" / "val.txt").read_text().splitlines()
    assert split_lines == ["synth/synth_drive_0002_sync 0000000003 l", "synth/synth_drive_0002_sync 0000000004 l"]


def test_same_seed_gives_byte_identical_files(synth, tmp_path):
    out, _ = synth
    again = tmp_path / "again"
    S.generate(again, 5, SIZE, seed=3, val_fraction=0.4)
    assert _files(again) == _files(out)
    other = S.render(0, 4, SIZE)[0]
    assert not np.array_equal(other, S.render(0, 3, SIZE)[0])


def test_rerun_is_a_noop_and_other_arguments_are_refused(synth, monkeypatch, tmp_path):
    out, manifest = synth
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def no_render(*args, **kwargs):
        raise AssertionError("a complete output must not be regenerated")

    monkeypatch.setattr(S, "render", no_render)
    assert S.generate(out, 5, SIZE, seed=3, val_fraction=0.4) == manifest
    assert S.ensure_synthstreets(out, 5, SIZE, seed=3, val_fraction=0.4) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(FileExistsError, match="generated with"):
        S.generate(out, 6, SIZE, seed=3, val_fraction=0.4)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        S.generate(foreign, 2, SIZE)


def test_interrupted_run_leaves_no_partial_files_and_resumes(monkeypatch, tmp_path):
    out = tmp_path / "ss"
    real_render = S.render
    calls = []

    def flaky(index, seed, size):
        if index == 2:
            raise KeyboardInterrupt
        calls.append(index)
        return real_render(index, seed, size)

    monkeypatch.setattr(S, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.generate(out, 4, SIZE, seed=1)
    manifest = json.loads((out / S.MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))
    assert not (out / "kitti" / "splits").exists()
    monkeypatch.setattr(S, "render", lambda i, s, z: (calls.append(i), real_render(i, s, z))[1])
    calls.clear()
    assert S.generate(out, 4, SIZE, seed=1)["complete"] is True
    assert calls == [2, 3]  # finished scenes are kept, not redone
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    S.generate(fresh, 4, SIZE, seed=1)
    assert _files(fresh) == _files(out)


def test_scenes_cover_many_classes_with_valid_label_ids():
    evaluated = set()
    for i in range(10):
        _, label, depth = S.render(i, 0, (96, 192))
        train = label_ids_to_train_ids(label)  # raises on ids outside the Cityscapes table
        evaluated |= set(np.unique(train).tolist()) - {255}
        assert depth.dtype == np.float32 and depth.min() >= 0 and depth.max() <= R.MAX_GT_DEPTH
        assert (depth[label == R.SKY] == 0).all()
    assert len(evaluated) >= 12, sorted(evaluated)


def test_depth_follows_the_pinhole_ground_plane():
    seed, index, (h, w) = 0, 7, (96, 192)
    cam = R._Scene(np.random.default_rng([seed, index]), h, w).cam  # camera = the scene's first draws
    _, label, depth = S.render(index, seed, (h, w))
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    with np.errstate(divide="ignore"):
        ground = np.broadcast_to(cam.f * cam.height / (v - cam.cy), (h, w))
    flat = np.isin(label, [R.ROAD, R.SIDEWALK]) & (depth > 0)
    assert flat.sum() > 0.2 * h * w
    np.testing.assert_allclose(depth[flat], ground[flat], rtol=1e-5)
    # An upright rectangle of known size at a known distance projects to f * size / Z pixels.
    canvas = R._Canvas(h, w, cam)
    patch = R._front_plane(canvas, 10.0, -1.0, 1.0, 0.0, 1.0)
    rows = patch.rows.stop - patch.rows.start
    cols = patch.cols.stop - patch.cols.start
    assert abs(cols - cam.f * 2.0 / 10.0) <= 1 and abs(rows - cam.f * 1.0 / 10.0) <= 1


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert S.main(["--out", str(out), "--num", "2", "--size", "40x80", "--seed", "2", "--quiet"]) == 0
    assert json.loads((out / S.MANIFEST_NAME).read_text())["params"] == {
        "num": 2, "height": 40, "width": 80, "seed": 2, "val_fraction": 0.2}
    assert S.main(["--out", str(out), "--num", "3", "--size", "40x80", "--seed", "2", "--quiet"]) == 2
    assert "generated with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.main(["--out", str(out), "--num", "2", "--size", "40by80"])
    with pytest.raises(ValueError, match="size"):
        S.generate(tmp_path / "tiny", 1, (8, 8))


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-W", "error", "-m", "wcc.data.synthetic", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--out" in res.stdout and "Cityscapes" in res.stdout and "KITTI" in res.stdout
