"""VainF/DeepLabV3Plus-Pytorch checkpoints load into wcc.models, and back (docs/design.md §4.1).

The paper's FP32 Cityscapes row is VainF's ``best_deeplabv3plus_mobilenet_cityscapes_os16.pth``.
This file restates VainF's module layout (``network/backbone/mobilenetv2.py``,
``network/_deeplab.py``, ``network/modeling.py``, ``network/utils.py``) in a few lines, from
its structure - not imported, not copied - builds a VainF-format file from it and checks that
wcc's model loads that file strictly and computes the same outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wcc.models import deeplabv3plus_mobilenetv2, depth_mobilenetv2, mobilenet_v2

# --------------------------------------------------------------------------------------------
# VainF's layout, restated.


class _VConvBNReLU(nn.Sequential):
    # VainF's ConvBNReLU pads nothing itself: the blocks pad their input, the stem not at all.
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, 0, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _VInvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dilation: int, t: int):
        super().__init__()
        hidden = int(round(cin * t))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [_VConvBNReLU(cin, hidden, k=1)] if t != 1 else []
        layers += [_VConvBNReLU(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        effective = 3 + 2 * (dilation - 1)  # "fixed padding" of a 3x3 kernel with this dilation
        self.pad = ((effective - 1) // 2, effective - 1 - (effective - 1) // 2) * 2

    def forward(self, x):
        out = self.conv(F.pad(x, self.pad))
        return x + out if self.use_res else out


class _VMobileNetV2(nn.Module):
    def __init__(self, output_stride: int = 16):
        super().__init__()
        setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                   (6, 320, 1, 1)]
        features: list[nn.Module] = [_VConvBNReLU(3, 32, stride=2)]
        cin, current, dilation = 32, 2, 1
        for t, c, n, s in setting:
            previous = dilation
            if current == output_stride:
                stride, dilation = 1, dilation * s
            else:
                stride, current = s, current * s
            for i in range(n):
                features.append(_VInvertedResidual(cin, c, stride if i == 0 else 1,
                                                   previous if i == 0 else dilation, t))
                cin = c
        features.append(_VConvBNReLU(cin, 1280, k=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))


class _VSeparable(nn.Module):
    # What VainF's convert_to_separable_conv puts in place of every kxk conv of the head.
    def __init__(self, cin: int, cout: int, padding: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, padding, dilation, groups=cin, bias=False),
                                  nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

    def forward(self, x):
        return self.body(x)


class _VPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))

    def forward(self, x):
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class _VASPP(nn.Module):
    def __init__(self, cin: int, rates: tuple[int, int, int]):
        super().__init__()
        convs: list[nn.Module] = [nn.Sequential(nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256),
                                                nn.ReLU(inplace=True))]
        convs += [nn.Sequential(_VSeparable(cin, 256, r, r), nn.BatchNorm2d(256), nn.ReLU(inplace=True))
                  for r in rates]
        convs.append(_VPooling(cin, 256))
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(nn.Conv2d(5 * 256, 256, 1, bias=False), nn.BatchNorm2d(256),
                                     nn.ReLU(inplace=True), nn.Dropout(0.1))

    def forward(self, x):
        return self.project(torch.cat([c(x) for c in self.convs], dim=1))


class _VHead(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(24, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.aspp = _VASPP(320, (6, 12, 18))
        self.classifier = nn.Sequential(_VSeparable(304, 256, 1, 1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
                                        nn.Conv2d(256, num_classes, 1))

    def forward(self, feats):
        low = self.project(feats["low_level"])
        out = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, out], dim=1))


class _VBackbone(nn.Module):
    # VainF renames two slices of features on the MobileNetV2 and reads them through an
    # IntermediateLayerGetter; the slices keep features' child names (4 ... 17).
    def __init__(self, net: _VMobileNetV2):
        super().__init__()
        self.low_level_features = net.features[0:4]
        self.high_level_features = net.features[4:-1]

    def forward(self, x):
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


class _VDeepLab(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = _VBackbone(_VMobileNetV2(16))
        self.classifier = _VHead(num_classes)

    def forward(self, x):
        return F.interpolate(self.classifier(self.backbone(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights and BatchNorm statistics, so that a mis-wired load shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


# --------------------------------------------------------------------------------------------


def test_vainf_checkpoint_loads_strictly_with_equal_outputs(tmp_path) -> None:
    vainf = _randomize(_VDeepLab(num_classes=7))
    state = vainf.state_dict()
    assert "backbone.high_level_features.4.conv.0.0.weight" in state  # VainF's own names
    assert "backbone.high_level_features.17.conv.2.weight" in state
    path = tmp_path / "best_deeplabv3plus_mobilenet_os16.pth"
    # VainF's training script saves this dict (model_state without DataParallel's prefix).
    torch.save({"cur_itrs": 30000, "model_state": state, "optimizer_state": {}, "best_score": 0.717}, path)

    ours = deeplabv3plus_mobilenetv2(num_classes=7, checkpoint=path).eval()
    assert ours.state_dict().keys() == state.keys()  # the same names both ways
    x = torch.randn(1, 3, 67, 131)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), vainf(x), rtol=0, atol=0)

    # ... and back: our state dict, saved bare, loads into VainF's layout strictly.
    torch.save(ours.state_dict(), tmp_path / "bare.pth")
    back = _VDeepLab(num_classes=7).eval()
    back.load_state_dict(torch.load(tmp_path / "bare.pth", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(x), vainf(x), rtol=0, atol=0)
    # load_checkpoint on an existing model reads the bare file too.
    again = deeplabv3plus_mobilenetv2(num_classes=7).load_checkpoint(tmp_path / "bare.pth")
    assert torch.equal(again.classifier.classifier[3].weight, vainf.classifier.classifier[3].weight)


def test_checkpoint_errors_name_the_file_and_the_first_mismatching_key(tmp_path) -> None:
    state = deeplabv3plus_mobilenetv2(num_classes=19).state_dict()
    path = tmp_path / "cityscapes.pth"
    torch.save({"model_state": state}, path)
    with pytest.raises(ValueError, match=r"cityscapes\.pth.*first mismatching key "
                                         r"'classifier\.classifier\.3\.weight'"):
        deeplabv3plus_mobilenetv2(num_classes=21, checkpoint=path)
    # The renumbered names of older wcc-bench versions (.0 ... .13) are no VainF file.
    renumbered = {k.replace("high_level_features.4.", "high_level_features.0."): v for k, v in state.items()}
    torch.save(renumbered, tmp_path / "old.pth")
    with pytest.raises(ValueError, match=r"old\.pth.*first mismatching key 'backbone\.high_level_features\.4"):
        deeplabv3plus_mobilenetv2(num_classes=19).load_checkpoint(tmp_path / "old.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        deeplabv3plus_mobilenetv2(checkpoint=tmp_path / "missing.pth")


def test_imagenet_weights_keep_their_indices_in_the_backbone(tmp_path) -> None:
    src = _randomize(mobilenet_v2(padding="vainf"), seed=1)
    torch.save(src.state_dict(), tmp_path / "imagenet.pth")
    seg = deeplabv3plus_mobilenetv2(pretrained_backbone=tmp_path / "imagenet.pth")
    own = seg.backbone.state_dict()
    for k, v in src.state_dict().items():
        i = int(k.split(".")[1]) if k.startswith("features.") else -1
        if 0 <= i < 18:
            part = "low_level_features" if i < 4 else "high_level_features"
            assert torch.equal(own[f"{part}.{k.split('.', 1)[1]}"], v), k


def test_depth_net_checkpoint_round_trip(tmp_path) -> None:
    src = _randomize(depth_mobilenetv2(), seed=2)
    torch.save({"model_state": src.state_dict()}, tmp_path / "depth.pth")
    dst = depth_mobilenetv2(checkpoint=tmp_path / "depth.pth").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert all(k.startswith(("encoder.features.", "decoder.")) for k in dst.state_dict())
