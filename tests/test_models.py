"""Tests of wcc.models: torchvision-compatible MobileNetV2, DeepLabV3+ (census, MACs, BOPs), depth net."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import wcc
from wcc.accounting import bops, layer_costs, total_macs
from wcc.models import (
    DeepLabV3Plus,
    deeplabv3plus_mobilenetv2,
    depth_mobilenetv2,
    disp_to_depth,
    mobilenet_v2,
    paper_keep_fp,
)

CITYSCAPES = (1, 3, 1024, 2048)
KITTI = (1, 3, 192, 640)
# Published Cityscapes BOPs (billions), docs/design.md §4.
PAPER_BOPS = {"FP32": 36377, "8/8": 2273, "8/6": 1705, "8/4": 1136, 0.5: 1213, 0.25: 673, 0.125: 403}
PAPER_MACS = 35.52e9  # = 36,377 B / (32 x 32)


# --------------------------------------------------------------------------------------------
# MobileNetV2: torchvision layout, written out here from the architecture table independently.


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _torchvision_layout(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``mobilenet_v2()`` state dict (width 1.0)."""
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1)]
    out = {"features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32)}
    idx, cin = 1, 32
    for t, c, n, _ in table:
        for _ in range(n):
            hid, p, j = cin * t, f"features.{idx}.conv", 0
            if t != 1:
                out[f"{p}.0.0.weight"] = (hid, cin, 1, 1)
                out.update(_bn(f"{p}.0.1", hid))
                j = 1
            out[f"{p}.{j}.0.weight"] = (hid, 1, 3, 3)
            out.update(_bn(f"{p}.{j}.1", hid))
            out[f"{p}.{j + 1}.weight"] = (c, hid, 1, 1)
            out.update(_bn(f"{p}.{j + 2}", c))
            idx, cin = idx + 1, c
    out["features.18.0.weight"] = (1280, 320, 1, 1)
    out.update(_bn("features.18.1", 1280))
    out["classifier.1.weight"] = (num_classes, 1280)
    out["classifier.1.bias"] = (num_classes,)
    return out


@pytest.mark.parametrize("padding", ["torchvision", "vainf"])
def test_mobilenet_v2_has_torchvision_state_dict_layout(padding: str) -> None:
    expected = _torchvision_layout()
    assert len(expected) == 314  # torchvision's mobilenet_v2 state dict has 314 entries
    got = {k: tuple(v.shape) for k, v in mobilenet_v2(padding=padding).state_dict().items()}
    assert got.keys() == expected.keys()
    assert got == expected


@pytest.mark.parametrize("expand_ratio,dilation", [(1, 1), (6, 2)])
def test_vainf_padding_pads_the_block_input(expand_ratio: int, dilation: int) -> None:
    from wcc.models.mobilenetv2 import InvertedResidual

    tv = InvertedResidual(16, 16, 1, expand_ratio, dilation, padding="torchvision").eval()
    vf = InvertedResidual(16, 16, 1, expand_ratio, dilation, padding="vainf").eval()
    vf.load_state_dict(tv.state_dict())
    x = torch.randn(1, 16, 9, 11)
    # Same result while the expansion maps zero padding to zero (fresh BatchNorm in eval mode).
    torch.testing.assert_close(vf(x), tv(x))
    if expand_ratio != 1:
        # VainF pads *before* the 1x1 expansion: with a BatchNorm shift the border differs.
        for m in (tv, vf):
            nn.init.constant_(m.conv[0][1].bias, 0.5)
        with torch.no_grad():
            diff = (vf(x) - tv(x)).abs()[0].sum(0)
        assert float(diff[3:-3, 3:-3].abs().max()) < 1e-5 and float(diff.max()) > 1e-3


def test_mobilenet_v2_classifies_and_round_trips_a_state_dict_file(tmp_path) -> None:
    src = mobilenet_v2(num_classes=10).eval()
    path = tmp_path / "mnv2.pth"
    torch.save(src.state_dict(), path)
    dst = mobilenet_v2(num_classes=10).load_pretrained(path).eval()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = torch.randn(2, 3, 64, 64)
    y = dst(x)
    assert y.shape == (2, 10)
    torch.testing.assert_close(y, src(x))
    # the builder takes the path too
    assert torch.equal(mobilenet_v2(num_classes=10, pretrained=path).features[5].conv[2].weight,
                       src.features[5].conv[2].weight)


def test_load_pretrained_accepts_files_without_num_batches_tracked(tmp_path) -> None:
    # torchvision's ImageNet file predates num_batches_tracked.
    state = {k: v for k, v in mobilenet_v2().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state}, tmp_path / "old.pth")
    model = mobilenet_v2().load_pretrained(tmp_path / "old.pth")
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])


def test_load_pretrained_errors_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        mobilenet_v2().load_pretrained(tmp_path / "nope.pth")
    torch.save(mobilenet_v2(width_mult=0.5).state_dict(), tmp_path / "half.pth")
    with pytest.raises(ValueError, match=r"shape mismatch.*features\.0\.0\.weight"):
        mobilenet_v2().load_pretrained(tmp_path / "half.pth")
    state = mobilenet_v2().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.1.bias"]
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"missing key.*classifier\.1\.bias.*unexpected key.*extra\.weight"):
        mobilenet_v2().load_pretrained(tmp_path / "odd.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        mobilenet_v2().load_pretrained(tmp_path / "junk.pth")


def test_pretrained_backbone_and_encoder_load_mapped_names(tmp_path) -> None:
    src = mobilenet_v2()
    path = tmp_path / "imagenet.pth"
    torch.save(src.state_dict(), path)
    seg = deeplabv3plus_mobilenetv2(pretrained_backbone=path)
    assert torch.equal(seg.backbone.low_level_features[0][0].weight, src.features[0][0].weight)
    assert torch.equal(seg.backbone.low_level_features[3].conv[2].weight, src.features[3].conv[2].weight)
    assert torch.equal(seg.backbone.high_level_features[13].conv[2].weight, src.features[17].conv[2].weight)
    assert torch.equal(seg.backbone.high_level_features[0].conv[1][1].running_var,
                       src.features[4].conv[1][1].running_var)
    depth = depth_mobilenetv2(pretrained_encoder=path)
    assert torch.equal(depth.encoder.features[17].conv[0][0].weight, src.features[17].conv[0][0].weight)
    with pytest.raises(FileNotFoundError):
        deeplabv3plus_mobilenetv2(pretrained_backbone=tmp_path / "missing.pth")


# --------------------------------------------------------------------------------------------
# DeepLabV3+: census and cost against the paper.


def test_deeplab_paper_census() -> None:
    model = deeplabv3plus_mobilenetv2(num_classes=19, output_stride=16, separable=True)
    report = wcc.convert(model, wcc.WCCConfig(keep_ratio=0.25), keep_fp=paper_keep_fp(model))
    assert report.counts() == {"WCCConv2d": 41, "QuantConv2d": 21, "Conv2d": 2}
    assert sorted(report.names("Conv2d")) == sorted(DeepLabV3Plus.PAPER_KEEP_FP)
    assert model.backbone.low_level_features[0][0].kernel_size == (3, 3)
    assert model.classifier.classifier[3].out_channels == 19
    # The image-pooling 1x1 conv (it runs on a 1x1 map) is one of the 41.
    assert isinstance(model.classifier.aspp.convs[4][1], wcc.WCCConv2d)


def test_deeplab_dense_head_census() -> None:
    # Without the separable head, the four 3x3 head convs stay dense (quantized, not WCC).
    model = deeplabv3plus_mobilenetv2(separable=False)
    report = wcc.convert(model, wcc.WCCConfig(), keep_fp=paper_keep_fp(model))
    assert report.counts() == {"WCCConv2d": 37, "QuantConv2d": 21, "Conv2d": 2}


def test_deeplab_architecture_shapes() -> None:
    model = deeplabv3plus_mobilenetv2()
    costs = {c.name: c for c in layer_costs(model, CITYSCAPES)}
    assert costs["classifier.project.0"].out_shape == (1, 48, 256, 512)  # low level, stride 4
    assert costs["classifier.aspp.convs.0.0"].in_shape == (1, 320, 64, 128)  # output stride 16
    for i, rate in zip((1, 2, 3), (6, 12, 18)):
        conv = model.classifier.aspp.convs[i][0].body[0]
        assert conv.dilation == (rate, rate) and conv.groups == 320
    assert costs["classifier.aspp.convs.4.1"].in_shape == (1, 320, 1, 1)
    assert costs["classifier.aspp.project.0"].in_shape == (1, 1280, 64, 128)
    assert costs["classifier.classifier.0.body.1"].in_shape == (1, 304, 256, 512)
    assert model.classifier.aspp.project[3].p == 0.1
    # Last two stages dilated instead of strided at output stride 16.
    dw = [m for n, m in model.backbone.high_level_features.named_modules()
          if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.dilation[0] for m in dw][-4:] == [1, 2, 2, 2]
    assert all(m.stride == (1, 1) for m in dw[-7:])


def test_deeplab_macs_match_paper() -> None:
    macs = total_macs(layer_costs(deeplabv3plus_mobilenetv2(), CITYSCAPES))
    assert abs(macs / PAPER_MACS - 1) < 0.03, macs
    # torchvision padding (stem padded, no input padding of the blocks) is within 3% too.
    macs_tv = total_macs(layer_costs(deeplabv3plus_mobilenetv2(padding="torchvision"), CITYSCAPES))
    assert abs(macs_tv / PAPER_MACS - 1) < 0.03, macs_tv


def _converted(model: nn.Module, config) -> nn.Module:
    model = copy.deepcopy(model)
    wcc.convert(model, config, keep_fp=paper_keep_fp(model))
    return model


@pytest.fixture(scope="module")
def deeplab() -> DeepLabV3Plus:
    return deeplabv3plus_mobilenetv2()


def test_deeplab_bops_fp32_and_quantized_match_paper(deeplab: DeepLabV3Plus) -> None:
    fp32 = bops(layer_costs(deeplab, CITYSCAPES), convention="paper", precision=(None, None))
    assert abs(fp32 / PAPER_BOPS["FP32"] - 1) < 0.03, fp32
    for act_bits in (8, 6, 4):
        costs = layer_costs(_converted(deeplab, wcc.QuantConfig(8, act_bits)), CITYSCAPES)
        got = bops(costs, convention="paper")
        assert abs(got / PAPER_BOPS[f"8/{act_bits}"] - 1) < 0.05, (act_bits, got)


@pytest.mark.parametrize("keep_ratio", [0.5, 0.25, 0.125])
def test_deeplab_wcc_bops_match_paper(deeplab: DeepLabV3Plus, keep_ratio: float) -> None:
    costs = layer_costs(_converted(deeplab, wcc.WCCConfig(keep_ratio=keep_ratio)), CITYSCAPES)
    got = bops(costs, convention="paper")
    assert abs(got / PAPER_BOPS[keep_ratio] - 1) < 0.05, got


# --------------------------------------------------------------------------------------------
# Depth network.


def test_depth_macs_as_documented() -> None:
    model = depth_mobilenetv2()
    macs = total_macs(layer_costs(model, KITTI))
    # The module docstring quotes these; the published BOPs imply ~1.14 G.
    assert macs / 1e9 == pytest.approx(1.132, abs=5e-4)
    assert abs(macs / 1.14e9 - 1) < 0.05
    assert total_macs(layer_costs(model, (1, 3, 352, 1216))) / 1e9 == pytest.approx(3.942, abs=5e-4)


def test_depth_census_is_1x1_heavy() -> None:
    model = depth_mobilenetv2()
    report = wcc.convert(model, wcc.WCCConfig(), keep_fp=paper_keep_fp(model))
    assert report.counts() == {"WCCConv2d": 48, "QuantConv2d": 22, "Conv2d": 2}
    costs = layer_costs(model, KITTI)
    assert sum(c.dense_macs for c in costs if c.kind == "wcc") / total_macs(costs) > 0.85


def test_depth_output_is_positive_and_bounded() -> None:
    model = depth_mobilenetv2(min_depth=0.1, max_depth=100.0).eval()
    with torch.no_grad():
        depth = model(torch.randn(2, 3, 64, 96) * 3)
    assert depth.shape == (2, 1, 64, 96)
    assert bool((depth >= 0.1 - 1e-6).all()) and bool((depth <= 100.0 + 1e-3).all())
    ends = disp_to_depth(torch.tensor([0.0, 1.0]), 0.1, 100.0)
    torch.testing.assert_close(ends, torch.tensor([100.0, 0.1]))
    with pytest.raises(ValueError, match="min_depth"):
        depth_mobilenetv2(min_depth=5.0, max_depth=1.0)


# --------------------------------------------------------------------------------------------
# Converted models run and train, at even and odd sizes.


@pytest.mark.parametrize("build,channels", [(deeplabv3plus_mobilenetv2, 19), (depth_mobilenetv2, 1)])
@pytest.mark.parametrize("size", [(64, 128), (37, 75)])
def test_converted_models_forward_and_backward(build, channels: int, size: tuple[int, int]) -> None:
    model = build()
    wcc.convert(model, wcc.WCCConfig(keep_ratio=0.25), keep_fp=paper_keep_fp(model))
    x = torch.randn(2, 3, *size)  # batch 2: the image-pooling BatchNorm needs >1 value in training
    y = model(x)
    assert y.shape == (2, channels, *size)
    assert bool(torch.isfinite(y).all())
    y.square().mean().backward()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    wcc_layers = [m for m in model.modules() if isinstance(m, wcc.WCCConv2d)]
    for p in (stem.weight, wcc_layers[0].weight, wcc_layers[-1].weight, wcc_layers[-1].act_alpha):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0


def test_paper_keep_fp_rejects_unknown_models() -> None:
    assert paper_keep_fp(mobilenet_v2()) == ["features.0.0"]
    with pytest.raises(TypeError, match="keep_fp"):
        paper_keep_fp(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="output_stride"):
        deeplabv3plus_mobilenetv2(output_stride=32)
