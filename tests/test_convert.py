import pytest
import torch
from torch import nn

from wcc import QuantConfig, QuantConv2d, WCCConfig, WCCConv2d, convert


def _toy():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 0: first conv (kept FP in the paper setting)
        nn.Conv2d(8, 16, 1),  # 1: pointwise -> WCC
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # 2: depthwise -> QuantConv2d
        nn.Conv2d(16, 16, 1, stride=2),  # 3: strided 1x1 -> QuantConv2d (WCC would be wrong)
        nn.Sequential(nn.Conv2d(16, 4, 1)),  # 4.0: classifier -> kept FP
    )


def test_paper_setting_census_and_report():
    m = _toy()
    rep = convert(m, WCCConfig(keep_ratio=0.5), keep_fp=["0", "4.0"])
    assert rep.counts() == {"Conv2d": 2, "WCCConv2d": 1, "QuantConv2d": 2}
    assert isinstance(m[1], WCCConv2d) and isinstance(m[2], QuantConv2d) and isinstance(m[3], QuantConv2d)
    assert type(m[0]) is nn.Conv2d and type(m[4][0]) is nn.Conv2d
    assert rep.names("WCCConv2d") == ["1"]
    assert "total:" in str(rep) and rep.to_dict()["counts"]["WCCConv2d"] == 1
    assert m(torch.randn(1, 3, 17, 23)).shape == (1, 4, 5, 6)


def test_patterns_and_filter_hook():
    m = _toy()
    rep = convert(m, WCCConfig(), keep_fp=["4.*"], layer_filter=lambda name, mod: name != "2")
    assert type(m[2]) is nn.Conv2d and type(m[4][0]) is nn.Conv2d
    assert {e.name: e.reason for e in rep.entries}["2"] == "layer_filter"


def test_quant_config_quantizes_everything():
    m = _toy()
    rep = convert(m, QuantConfig(8, 6), keep_fp=["0"])
    assert rep.counts() == {"Conv2d": 1, "QuantConv2d": 4}
    assert m[1].act_bits == 6


def test_staged_recipe_carries_clips_and_weights():
    m = _toy()
    convert(m, QuantConfig(8, 8), keep_fp=["0", "4.0"])
    with torch.no_grad():
        m[1].act_alpha.fill_(5.5)
        m[1].weight_alpha.fill_(2.25)
        m[2].act_alpha.fill_(4.0)
    w1 = m[1].weight.detach().clone()
    convert(m, QuantConfig(8, 6), keep_fp=["0", "4.0"])  # 8/8 -> 8/6
    assert m[1].act_alpha.item() == 5.5 and m[1].act_bits == 6
    convert(m, WCCConfig(keep_ratio=0.5), keep_fp=["0", "4.0"])  # -> WCC 50%
    assert isinstance(m[1], WCCConv2d)
    assert m[1].act_alpha.item() == 5.5 and m[1].weight_alpha.item() == 2.25
    assert m[2].act_alpha.item() == 4.0
    torch.testing.assert_close(m[1].weight.detach(), w1)
    convert(m, WCCConfig(keep_ratio=0.25), keep_fp=["0", "4.0"])  # WCC 50% -> 25%
    assert m[1].config.keep_ratio == 0.25 and m[1].act_alpha.item() == 5.5
    convert(m, QuantConfig(8, 8), keep_fp=["0", "4.0"])  # and back to plain quantization
    assert isinstance(m[1], QuantConv2d) and m[1].act_alpha.item() == 5.5


def test_keep_fp_typo_is_an_error():
    with pytest.raises(ValueError, match="match no convolution"):
        convert(_toy(), WCCConfig(), keep_fp=["features.0"])


def test_bad_config():
    with pytest.raises(TypeError, match="WCCConfig or QuantConfig"):
        convert(_toy(), {"keep_ratio": 0.5})  # type: ignore[arg-type]


def test_training_mode_preserved():
    m = _toy().eval()
    convert(m, WCCConfig())
    assert not any(mod.training for mod in m.modules())


def test_transform_gain_handover_scales_activation_clips_by_the_haar_gain():
    m = _toy()
    keep = ["0", "4.0"]
    convert(m, QuantConfig(8, 8), keep_fp=keep)
    with torch.no_grad():
        m[1].act_alpha.fill_(5.5)
        m[1].weight_alpha.fill_(2.25)
        m[2].act_alpha.fill_(4.0)
    convert(m, WCCConfig(levels=3, keep_ratio=0.5), keep_fp=keep, clip_handover="transform-gain")
    assert m[1].act_alpha.item() == 5.5 * 8 and m[1].weight_alpha.item() == 2.25
    assert m[2].act_alpha.item() == 4.0  # QuantConv2d -> QuantConv2d: the quantizer stays on pixels
    convert(m, WCCConfig(levels=3, keep_ratio=0.25), keep_fp=keep, clip_handover="transform-gain")
    assert m[1].act_alpha.item() == 44.0  # WCC -> WCC at the same levels: same coefficients
    convert(m, WCCConfig(levels=2, keep_ratio=0.25), keep_fp=keep, clip_handover="transform-gain")
    assert m[1].act_alpha.item() == 22.0
    convert(m, QuantConfig(8, 8), keep_fp=keep, clip_handover="transform-gain")  # back on pixels
    assert isinstance(m[1], QuantConv2d) and m[1].act_alpha.item() == 5.5
    fresh = _toy()  # layers with no learned clip start from the initial values either way
    convert(fresh, WCCConfig(), keep_fp=keep, clip_handover="transform-gain")
    assert fresh[1].act_alpha.item() == 8.0
    with pytest.raises(ValueError, match="clip_handover must be one of"):
        convert(_toy(), WCCConfig(), clip_handover="scaled")


def test_transform_gain_handover_keeps_a_smooth_map_inside_the_clip():
    # A constant map of 4.0 (a ReLU6 output on a flat region) under a pixel clip of 6: its 3-level
    # Haar LL coefficient is 4 * 2^3 = 32, which the carried clip cuts to 6 and the scaled one keeps.
    torch.manual_seed(0)
    q = QuantConv2d.from_conv2d(nn.Conv2d(8, 4, 1), weight_bits=8, act_bits=8).eval()
    with torch.no_grad():
        q.act_alpha.fill_(6.0)
    x = torch.full((1, 8, 16, 16), 4.0)
    with torch.no_grad():
        ref = q(x)
        config = WCCConfig(levels=3, keep_ratio=1.0)
        carried = WCCConv2d.from_conv2d(q, config).eval()(x)
        scaled = WCCConv2d.from_conv2d(q, config, clip_handover="transform-gain").eval()(x)
    scale = ref.abs().max()
    assert (scaled - ref).abs().max() < 0.02 * scale
    assert (carried - ref).abs().max() > 0.3 * scale


def test_tables_record_schema_knows_every_clip_handover():
    from bench.rows import TableRecord, row_schema
    from wcc.layers import CLIP_HANDOVERS

    # bench.rows stays free of torch, so it spells the choices out; this keeps the two in step.
    assert row_schema(TableRecord)["properties"]["clip_handover"]["enum"] == [*CLIP_HANDOVERS, None]
