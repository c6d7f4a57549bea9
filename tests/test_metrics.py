"""Tests for wcc.metrics: segmentation against the official Cityscapes evaluation, depth against
hand-computed values and an independent numpy implementation of the Eigen protocol."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from wcc.data import CityscapesSegmentation, label_ids_to_train_ids
from wcc.data._io import write_png_atomic
from wcc.metrics import DepthMetric, SegmentationMetric, depth_metrics, garg_crop_bounds

cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels")


# --------------------------------------------------------------------------- segmentation

def _write_cityscapes_pairs(root, gts, preds):
    """Write gt labelIds (Cityscapes layout, with dummy RGB) and predicted labelIds PNGs."""
    gt_files, pred_files = [], []
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        city = ("aachen", "bochum")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        img = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        gtp = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
        prp = root / "results" / f"{stem}_pred_labelIds.png"
        write_png_atomic(img, np.zeros(gt.shape + (3,), dtype=np.uint8))
        write_png_atomic(gtp, gt)
        write_png_atomic(prp, pred)
        gt_files.append(str(gtp))
        pred_files.append(str(prp))
    return gt_files, pred_files


def _official_scores(pred_files, gt_files, tmp_path):
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    args = copy.copy(ev.args)
    args.evalInstLevelScore = False  # needs *_instanceIds.png; not part of IoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.exportFile = str(tmp_path / "unused.json")
    args.predictionPath = args.predictionWalk = None
    return ev.evaluateImgLists(pred_files, gt_files, args)


def test_segmentation_metric_matches_official_cityscapes_evaluation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    all_ids = [lab.id for lab in cs_labels.labels if lab.id >= 0]
    # Leave out some evaluated classes entirely: 'train' (31) never appears anywhere (NaN in
    # both), 'motorcycle' (32) only in predictions (IoU 0), 'bus' (28) only in ground truth.
    gt_ids = [i for i in all_ids if i not in (31, 32)]
    pred_ids = [i for i in all_ids if i not in (31, 28)]
    gts, preds = [], []
    for shape in [(24, 40), (30, 36), (20, 50)]:
        gt = rng.choice(gt_ids, size=shape).astype(np.uint8)
        pred = gt.copy()
        wrong = rng.random(shape) < 0.4
        pred[wrong] = rng.choice(pred_ids, size=int(wrong.sum()))
        pred[pred == 28] = 26  # bus is never predicted
        gts.append(gt)
        preds.append(pred)
    root = tmp_path / "cs"
    gt_files, pred_files = _write_cityscapes_pairs(root, gts, preds)

    # Ours: ground truth through the real reader, predictions mapped labelId -> trainId
    # (ignored labelIds such as 0 'unlabeled' become 255: a miss for the ground-truth class).
    ds = CityscapesSegmentation(root, "val")
    assert len(ds) == 3
    metric = SegmentationMetric()
    for i in range(len(ds)):
        _, target = ds[i]
        # Samples are sorted by path; find the matching prediction by name.
        pred_path = next(p for p in pred_files if ds.name(i) in p)
        pred = preds[pred_files.index(pred_path)]
        metric.update(torch.from_numpy(label_ids_to_train_ids(pred).astype(np.int64)), target)
    ours = metric.compute()

    official = _official_scores(pred_files, gt_files, tmp_path)
    capsys.readouterr()
    assert set(ours["iou"]) == {lab.name for lab in cs_labels.labels if 0 <= lab.trainId < 19}
    for name, value in ours["iou"].items():
        ref = official["classScores"][name]
        if math.isnan(ref):
            assert math.isnan(value), name
        else:
            assert value == pytest.approx(ref, rel=1e-12, abs=1e-12), name
    assert math.isnan(ours["iou"]["train"])
    assert ours["iou"]["motorcycle"] == 0.0 and ours["iou"]["bus"] == 0.0
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], rel=1e-12)


def test_segmentation_metric_hand_computed():
    # 3 classes, ignore 255. Rows: gt, pred.
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 255, 1, 0]])
    m = SegmentationMetric(num_classes=3, ignore_index=255)
    m.update(pred, target)
    r = m.compute()
    # class 0: TP 1, FN 1 (pred 1), FP 0 (the pred-0 pixel has ignored gt) -> 1/2
    # class 1: TP 1, FN 1 (pred 255 counts as a miss), FP 2 (gt 0 and gt 2) -> 1/4
    # class 2: TP 0, FN 1 -> 0
    assert r["iou"] == {"0": 0.5, "1": 0.25, "2": 0.0}
    assert r["miou"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert r["num_pixels"] == 5
    assert r["pixel_accuracy"] == pytest.approx(2 / 5)


def test_segmentation_metric_accumulates_and_accepts_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 19, 8, 10, generator=g)
    target = torch.randint(0, 19, (4, 8, 10), generator=g)
    target[:, 0] = 255
    whole = SegmentationMetric()
    whole.update(logits.argmax(1), target)
    split = SegmentationMetric()
    split.update(logits[:2], target[:2])  # scores: argmax over dim 1
    split.update(logits[2:].argmax(1), target[2:])
    assert torch.equal(whole.confusion, split.confusion)
    assert whole.compute()["miou"] == split.compute()["miou"]
    split.reset()
    assert split.confusion.sum() == 0


def test_segmentation_metric_rejects_bad_input():
    m = SegmentationMetric(num_classes=3)
    with pytest.raises(ValueError, match=r"target values \[7\]"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="collides"):
        SegmentationMetric(num_classes=3, ignore_index=2)


# --------------------------------------------------------------------------- depth

def test_depth_metrics_hand_computed_masking_and_thresholds():
    gt = torch.tensor([[[2.0, 4.0], [0.0, 100.0]]])  # 0: no gt; 100 m: beyond max_depth
    pred = torch.tensor([[[1.0, 5.0], [3.0, 3.0]]])
    r = depth_metrics(pred, gt)
    assert r["abs_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert r["sq_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert r["rmse"] == pytest.approx(1.0)
    assert r["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(4 / 5) ** 2) / 2))
    # ratios are 2 and exactly 1.25: thresholds are strict (<)
    assert (r["a1"], r["a2"], r["a3"]) == (0.0, 0.5, 0.5)
    assert r["num_images"] == 1


def test_depth_metrics_clip_predictions():
    gt = torch.tensor([[50.0, 10.0]])
    pred = torch.tensor([[200.0, -3.0]])  # clipped to 80 and to 1e-3
    r = depth_metrics(pred, gt)
    assert r["abs_rel"] == pytest.approx((30 / 50 + (10 - 1e-3) / 10) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt((30 ** 2 + (10 - 1e-3) ** 2) / 2))
    r = depth_metrics(pred, gt, max_depth=300.0)  # the clip follows max_depth
    assert r["abs_rel"] == pytest.approx((150 / 50 + (10 - 1e-3) / 10) / 2)


def test_depth_metrics_median_scaling():
    gt = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
    pred = torch.tensor([[1.0, 1.0, 1.0, 5.0]])
    # even count: median(gt) = 2.5, median(pred) = 1 (numpy.median semantics) -> scale 2.5
    r = depth_metrics(pred, gt, median_scaling=True)
    assert r["abs_rel"] == pytest.approx((1.5 / 1 + 0.5 / 2 + 0.5 / 3 + 2.5 / 10) / 4)
    assert depth_metrics(gt * 7.0, gt, median_scaling=True)["abs_rel"] == pytest.approx(0.0, abs=1e-15)
    # scaling happens before clipping: 30 * (40/2) = 600 -> 80
    r = depth_metrics(torch.tensor([[2.0, 30.0, 1.0]]), torch.tensor([[40.0, 79.0, 30.0]]), median_scaling=True)
    s = 40.0 / 2.0
    p = [min(2 * s, 80), min(30 * s, 80), min(1 * s, 80)]
    g = [40.0, 79.0, 30.0]
    assert r["abs_rel"] == pytest.approx(sum(abs(a - b) / a for a, b in zip(g, p)) / 3)


def test_garg_crop_bounds_and_crop():
    assert garg_crop_bounds(375, 1242) == (153, 371, 44, 1197)  # the familiar KITTI crop
    top, bottom, left, right = garg_crop_bounds(10, 30)
    assert (top, bottom, left, right) == (4, 9, 1, 28)
    gt = torch.full((1, 10, 30), 10.0)
    pred = gt.clone()
    pred[0, :top] = 20.0  # errors only outside the crop
    pred[0, bottom:] = 20.0
    pred[0, :, :left] = 20.0
    pred[0, :, right:] = 20.0
    assert depth_metrics(pred, gt, crop="garg")["abs_rel"] == 0.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0.0
    pred[0, top, left] = 20.0  # first pixel inside the crop
    inside = (bottom - top) * (right - left)
    assert depth_metrics(pred, gt, crop="garg")["abs_rel"] == pytest.approx(1.0 / inside)


def test_depth_metrics_average_images_and_skip_empty():
    gt = torch.zeros(3, 2, 2)
    pred = torch.ones(3, 2, 2)
    gt[0] = torch.tensor([[2.0, 2.0], [2.0, 2.0]])  # 4 valid pixels, abs_rel 0.5
    gt[1, 0, 0] = 4.0  # 1 valid pixel, abs_rel 0.75; image 2 has none
    r = depth_metrics(pred, gt)
    assert r["abs_rel"] == pytest.approx((0.5 + 0.75) / 2)  # per image, not per pixel
    assert r["num_images"] == 2
    with pytest.raises(ValueError, match="no valid ground-truth"):
        depth_metrics(pred[2:], gt[2:])
    with pytest.raises(ValueError, match="upsample"):
        depth_metrics(torch.ones(1, 4, 4), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        depth_metrics(torch.full((1, 2, 2), float("nan")), torch.ones(1, 2, 2))


def _numpy_reference(pred, gt, crop, median_scaling, min_depth=1e-3, max_depth=80.0):
    """Straightforward numpy version of the protocol (as in monodepth2's evaluation)."""
    rows = []
    for p_img, g_img in zip(pred, gt):
        h, w = g_img.shape
        mask = (g_img > min_depth) & (g_img < max_depth)
        if crop:
            c = np.zeros_like(mask)
            c[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
            mask &= c
        if not mask.any():
            continue
        p, g = p_img[mask], g_img[mask]
        if median_scaling:
            p = p * np.median(g) / np.median(p)
        p = np.clip(p, min_depth, max_depth)
        thresh = np.maximum(g / p, p / g)
        rows.append([np.mean(np.abs(g - p) / g), np.mean((g - p) ** 2 / g), np.sqrt(np.mean((g - p) ** 2)),
                     np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)), (thresh < 1.25).mean(),
                     (thresh < 1.25 ** 2).mean(), (thresh < 1.25 ** 3).mean()])
    return np.mean(rows, axis=0)


@pytest.mark.parametrize("crop,median_scaling", [(None, False), ("garg", False), ("garg", True)])
def test_depth_metrics_match_numpy_reference(crop, median_scaling):
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 100.0, (3, 37, 121))
    gt[rng.random(gt.shape) < 0.5] = 0.0
    pred = gt * rng.uniform(0.7, 1.4, gt.shape) + rng.normal(0, 2, gt.shape)
    ref = _numpy_reference(pred, gt, crop, median_scaling)
    r = depth_metrics(torch.from_numpy(pred), torch.from_numpy(gt), crop=crop, median_scaling=median_scaling)
    got = [r[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_depth_metric_accumulator_matches_one_batch():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(5, 12, 20, generator=g) * 90
    pred = gt + torch.randn(5, 12, 20, generator=g)
    gt[3] = 0.0  # no valid pixel: skipped
    acc = DepthMetric(crop="garg")
    acc.update(pred[:2], gt[:2])
    acc.update(pred[2:], gt[2:])
    whole = depth_metrics(pred, gt, crop="garg")
    got = acc.compute()
    assert got["num_images"] == whole["num_images"] == 4 and acc.skipped == 1
    for k in ("abs_rel", "rmse", "a1"):
        assert got[k] == pytest.approx(whole[k], rel=1e-12)
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()
