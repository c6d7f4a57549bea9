"""Tests for the data readers, PNG I/O and transforms (wcc.data)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from wcc.data import (
    CityscapesSegmentation,
    DatasetLayoutError,
    KittiDepth,
    KittiItem,
    _io,
    class_names,
    label_ids_to_train_ids,
    read_split_file,
    train_ids_to_label_ids,
)
from wcc.data import transforms as T
from wcc.data.kitti import parse_split_lines, write_split_file

pytest.importorskip("cityscapesscripts")

MEAN = torch.tensor(T.IMAGENET_MEAN)[:, None, None]
_GT_REL = os.path.join("proj_depth", "groundtruth", "image_02")
STD = torch.tensor(T.IMAGENET_STD)[:, None, None]


# --------------------------------------------------------------------------- fixtures

def _make_cityscapes(root, split="val", n=3, shape=(16, 24), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        city = ("aachen", "bremen")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        lab = rng.choice([0, 1, 4, 7, 8, 11, 21, 23, 24, 26, 33], size=shape).astype(np.uint8)
        _io.write_png_atomic(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
        _io.write_png_atomic(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
        out.append((stem, img, lab))
    return sorted(out, key=lambda t: (t[0].split("_")[0], t[0]))


def _make_kitti(root, frames=(5, 9), shape=(12, 40), gt_root=None, seed=0):
    rng = np.random.default_rng(seed)
    folder = "2011_09_26/2011_09_26_drive_0002_sync"
    data = {}
    for f in frames:
        img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        depth = rng.integers(0, 65536, shape, dtype=np.uint16)
        depth[rng.random(shape) < 0.7] = 0
        _io.write_png_atomic(root / folder / "image_02" / "data" / f"{f:010d}.png", img)
        if gt_root is None:
            gt = root / folder / "proj_depth" / "groundtruth" / "image_02" / f"{f:010d}.png"
        else:
            gt = gt_root / "val" / "2011_09_26_drive_0002_sync" / _GT_REL / f"{f:010d}.png"
        _io.write_png_atomic(gt, depth)
        data[f] = (img, depth)
    return folder, data


# --------------------------------------------------------------------------- label table

def test_label_table_comes_from_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    names = class_names()
    assert len(names) == 19 and names[0] == "road" and names[18] == "bicycle"
    ids = np.arange(34, dtype=np.uint8)
    train = label_ids_to_train_ids(ids)
    for lab in labels:
        if lab.id >= 0:
            assert train[lab.id] == (lab.trainId if 0 <= lab.trainId < 19 else 255), lab.name
    # trainId -> labelId is the inverse on the 19 classes; ignore goes to 0 ("unlabeled")
    back = train_ids_to_label_ids(np.array([*range(19), 255]))
    assert list(label_ids_to_train_ids(back)) == [*range(19), 255]
    assert back[-1] == 0


def test_label_ids_outside_table_are_reported():
    with pytest.raises(ValueError, match=r"some/file\.png: label ids 34, 200 .*accepted ids are 0\.\.33"):
        label_ids_to_train_ids(np.array([[7, 34], [200, 8]], dtype=np.uint8), "some/file.png")
    with pytest.raises(ValueError, match="-1"):
        label_ids_to_train_ids(np.array([-1, 7]), "x")


# --------------------------------------------------------------------------- cityscapes

def test_cityscapes_reader_items(tmp_path):
    made = _make_cityscapes(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "val")
    assert len(ds) == 3
    for i, (stem, img, lab) in enumerate(made):
        assert ds.name(i) == stem
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 16, 24)
        assert target.dtype == torch.int64 and target.shape == (16, 24)
        expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, (expected - MEAN) / STD)
        assert torch.equal(target, torch.from_numpy(label_ids_to_train_ids(lab).astype(np.int64)))
        assert set(target.unique().tolist()) <= {0, 1, 2, 8, 10, 11, 13, 18, 255}
    assert len(CityscapesSegmentation(tmp_path, "val", max_items=2)) == 2


def test_cityscapes_eval_resize_is_nearest_for_labels(tmp_path):
    _make_cityscapes(tmp_path, n=1)
    ds = CityscapesSegmentation(tmp_path, "val", size=(8, 12))
    image, target = ds[0]
    assert image.shape == (3, 8, 12) and target.shape == (8, 12)
    _, full = CityscapesSegmentation(tmp_path, "val")[0]
    assert torch.equal(target, full[1::2, 1::2])  # exact 2x: pixel-centre nearest picks odd pixels


def test_cityscapes_wrong_layout_names_missing_path_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="root folder"):
        CityscapesSegmentation(tmp_path / "nope", "val")
    _make_cityscapes(tmp_path, split="train")
    with pytest.raises(DatasetLayoutError) as err:
        CityscapesSegmentation(tmp_path, "val")
    msg = str(err.value)
    assert str(tmp_path / "leftImg8bit" / "val") in msg
    assert "Expected layout" in msg and "gtFine_labelIds.png" in msg
    with pytest.raises(ValueError, match="split"):
        CityscapesSegmentation(tmp_path, "test")


def test_cityscapes_missing_ground_truth_file(tmp_path):
    made = _make_cityscapes(tmp_path)
    stem = made[1][0]
    gt = tmp_path / "gtFine" / "val" / stem.split("_")[0] / f"{stem}_gtFine_labelIds.png"
    gt.unlink()
    with pytest.raises(DatasetLayoutError, match=f"1 of 3 .*{gt.name}"):
        CityscapesSegmentation(tmp_path, "val")


def test_cityscapes_corrupt_png_and_bad_labels_name_the_file(tmp_path):
    made = _make_cityscapes(tmp_path, n=2)
    stem0, stem1 = made[0][0], made[1][0]
    img = tmp_path / "leftImg8bit" / "val" / stem0.split("_")[0] / f"{stem0}_leftImg8bit.png"
    img.write_bytes(img.read_bytes()[:60])  # truncated PNG
    gt = tmp_path / "gtFine" / "val" / stem1.split("_")[0] / f"{stem1}_gtFine_labelIds.png"
    _io.write_png_atomic(gt, np.full((16, 24), 40, dtype=np.uint8))
    ds = CityscapesSegmentation(tmp_path, "val")
    with pytest.raises(ValueError, match=f"cannot read {img}"):
        ds[0]
    with pytest.raises(ValueError, match=f"{gt}: label ids 40"):
        ds[1]
    _io.write_png_atomic(gt, np.zeros((16, 24, 3), dtype=np.uint8))  # a colour image
    with pytest.raises(ValueError, match="single-channel"):
        ds[1]
    _io.write_png_atomic(gt, np.zeros((8, 24), dtype=np.uint8))
    with pytest.raises(ValueError, match="size mismatch"):
        ds[1]


# --------------------------------------------------------------------------- kitti

def test_split_file_format(tmp_path):
    path = tmp_path / "test_files.txt"
    path.write_text("2011_09_26/2011_09_26_drive_0002_sync 0000000069 l\n\n"
                    "2011_09_26/2011_09_26_drive_0002_sync 0000000070 r\n")
    items = read_split_file(path)
    assert items == [KittiItem("2011_09_26/2011_09_26_drive_0002_sync", 69, "l"),
                     KittiItem("2011_09_26/2011_09_26_drive_0002_sync", 70, "r")]
    assert items[1].camera == "image_03"
    out = tmp_path / "copy.txt"
    write_split_file(out, items)
    assert read_split_file(out) == items
    assert out.read_text().splitlines()[0] == "2011_09_26/2011_09_26_drive_0002_sync 0000000069 l"
    path.write_text("2011_09_26/x_sync 0000000069 l\n2011_09_26/x_sync notaframe l\n")
    with pytest.raises(ValueError, match=r"test_files\.txt:2: malformed"):
        read_split_file(path)
    with pytest.raises(ValueError, match="malformed"):
        parse_split_lines(["a 1 x"])


def test_kitti_reader_depth_is_exact(tmp_path):
    folder, data = _make_kitti(tmp_path)
    ds = KittiDepth(tmp_path, [f"{folder} {f} l" for f in (5, 9)])
    assert len(ds) == 2 and ds.skipped == 0
    for i, f in enumerate((5, 9)):
        image, depth = ds[i]
        img, raw = data[f]
        assert image.shape == (3, 12, 40) and depth.dtype == torch.float32
        assert torch.equal(depth, torch.from_numpy(raw.astype(np.float32) / 256))
        torch.testing.assert_close(image, (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - MEAN) / STD)
    # size resizes the image only: the ground truth stays at native resolution
    image, depth = KittiDepth(tmp_path, [KittiItem(folder, 5)], size=(6, 20))[0]
    assert image.shape == (3, 6, 20) and depth.shape == (12, 40)


def test_kitti_split_by_name_gt_root_and_missing_gt(tmp_path):
    root, gt_root = tmp_path / "raw", tmp_path / "annotated"
    folder, _ = _make_kitti(root, frames=(1, 2), gt_root=gt_root)
    (root / "splits").mkdir()
    write_split_file(root / "splits" / "eigen_test.txt", [KittiItem(folder, 1), KittiItem(folder, 2)])
    assert len(KittiDepth(root, "eigen_test", gt_root=gt_root)) == 2
    # without gt_root the depth is looked for next to the RGB: none there -> clear error
    with pytest.raises(DatasetLayoutError, match="proj_depth/groundtruth/image_02/0000000001.png"):
        KittiDepth(root, "eigen_test")
    # one frame without ground truth: skipped (like the 45 Eigen frames) or an error
    (gt_root / "val" / "2011_09_26_drive_0002_sync" / _GT_REL / "0000000002.png").unlink()
    ds = KittiDepth(root, "eigen_test", gt_root=gt_root)
    assert len(ds) == 1 and ds.skipped == 1
    with pytest.raises(DatasetLayoutError, match="no depth ground truth"):
        KittiDepth(root, "eigen_test", gt_root=gt_root, missing_gt="error")
    with pytest.raises(FileNotFoundError, match="neither a split file nor a name"):
        KittiDepth(root, "nosuchsplit")


def test_kitti_wrong_layout_names_missing_path(tmp_path):
    folder, _ = _make_kitti(tmp_path)
    with pytest.raises(DatasetLayoutError) as err:
        KittiDepth(tmp_path, [KittiItem(folder, 77)])
    msg = str(err.value)
    assert str(tmp_path / folder / "image_02" / "data" / "0000000077.png") in msg
    assert "Expected layout" in msg
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        KittiDepth(tmp_path / "missing", [KittiItem(folder, 5)])
    with pytest.raises(DatasetLayoutError, match="neither train/ nor val/"):
        KittiDepth(tmp_path, [KittiItem(folder, 5)], gt_root=tmp_path)


def test_kitti_corrupt_and_8bit_depth_png(tmp_path):
    folder, _ = _make_kitti(tmp_path)
    gt = tmp_path / folder / "proj_depth" / "groundtruth" / "image_02" / f"{5:010d}.png"
    ds = KittiDepth(tmp_path, [KittiItem(folder, 5)])
    gt.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=f"cannot read {gt}"):
        ds[0]
    _io.write_png_atomic(gt, np.zeros((12, 40), dtype=np.uint8))
    with pytest.raises(ValueError, match="16-bit"):
        ds[0]


# --------------------------------------------------------------------------- png / depth i/o

def test_depth_encoding_round_trips_exactly(tmp_path):
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(_io.encode_depth(_io.decode_depth(every)), every)
    path = tmp_path / "d.png"
    _io.write_png_atomic(path, every)
    assert np.array_equal(_io.read_depth_png(path), _io.decode_depth(every))
    depth = np.array([0.0, 1e-4, 1.0, 12.3456, 255.99, 300.0, np.nan, -2.0], dtype=np.float32)
    assert _io.encode_depth(depth).tolist() == [0, 0, 256, 3160, 65533, 65535, 0, 0]


def test_png_writer_round_trips_and_is_atomic(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (7, 9), dtype=np.uint8), rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)):
        path = tmp_path / f"a{arr.ndim}.png"
        _io.write_png_atomic(path, arr)
        read = _io.read_rgb(path) if arr.ndim == 3 else _io.read_label_png(path)
        assert np.array_equal(read, arr)
    with pytest.raises(TypeError):
        _io.png_bytes(np.zeros((2, 2), dtype=np.float32))
    # A failure between writing and renaming leaves neither a partial file nor a temporary.
    target = tmp_path / "b.png"
    _io.write_png_atomic(target, np.zeros((2, 2), dtype=np.uint8))
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        _io.write_png_atomic(target, np.ones((5, 5), dtype=np.uint8))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a2.png", "a3.png", "b.png"]


# --------------------------------------------------------------------------- transforms

def _pair(h=20, w=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g), torch.randint(0, 19, (h, w), generator=g)


def test_train_transform_is_deterministic_given_a_generator():
    image, target = _pair()
    tf = T.train_transform((16, 16))
    a = tf(image, target, torch.Generator().manual_seed(5))
    b = tf(image, target, torch.Generator().manual_seed(5))
    c = tf(image, target, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 16, 16) and a[1].shape == (16, 16) and a[1].dtype == torch.int64


def test_random_scale_and_crop_keep_labels_valid_and_pad_with_ignore():
    image, target = _pair(10, 12)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        im, tg = T.RandomScale((0.5, 2.0))(image, target, g)
        assert im.shape[1:] == tg.shape and set(tg.unique().tolist()) <= set(target.unique().tolist())
    im, tg = T.RandomCrop((14, 16), target_fill=255)(image, target, g)
    assert im.shape == (3, 14, 16)
    assert (tg[10:] == 255).all() and (tg[:, 12:] == 255).all() and (im[:, 10:] == 0).all()
    assert torch.equal(tg[:10, :12], target)
    depth = target.float()
    _, dt = T.RandomCrop((14, 16), target_fill=0)(image, depth, g)
    assert (dt[10:] == 0).all() and dt.dtype == torch.float32


def test_flip_moves_image_and_target_together():
    image, target = _pair()
    im, tg = T.RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(im, image.flip(-1)) and torch.equal(tg, target.flip(-1))
    im, tg = T.RandomHorizontalFlip(p=0.0)(image, target)
    assert torch.equal(im, image) and torch.equal(tg, target)


def test_color_jitter_changes_image_only_and_stays_in_range():
    image, target = _pair()
    g = torch.Generator().manual_seed(0)
    im, tg = T.ColorJitter(0.5, 0.5, 0.5)(image, target, g)
    assert tg is target and im.min() >= 0 and im.max() <= 1 and not torch.equal(im, image)
    im, _ = T.ColorJitter(0.0, 0.0, 0.0)(image, target, g)
    torch.testing.assert_close(im, image)
    # The definitions, with the factors drawn from an identically seeded generator.
    im, _ = T.ColorJitter(0.4, 0.3, 0.2)(image, target, torch.Generator().manual_seed(9))
    u = torch.rand(3, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    fb, fc, fs = (0.6 + 0.8 * float(u[0])), (0.7 + 0.6 * float(u[1])), (0.8 + 0.4 * float(u[2]))
    x = (image * fb).clamp(0, 1)
    luma = lambda t: 0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]  # noqa: E731
    x = (luma(x).mean() + (x - luma(x).mean()) * fc).clamp(0, 1)
    x = (luma(x)[None] + (x - luma(x)[None]) * fs).clamp(0, 1)
    torch.testing.assert_close(im, x)


def test_eval_transform_is_deterministic_normalisation():
    image, target = _pair()
    im, tg = T.eval_transform()(image, target)
    torch.testing.assert_close(im, (image - MEAN) / STD)
    assert tg is target
    im2, tg2 = T.eval_transform((10, 15))(image, target)
    assert im2.shape == (3, 10, 15) and torch.equal(tg2, target[1::2, 1::2])
    _, tg3 = T.eval_transform((10, 15), resize_target=False)(image, target)
    assert tg3 is target
