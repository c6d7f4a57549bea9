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
