import pytest
import torch
from torch import nn

from wcc import QuantConfig, WCCConfig, convert
from wcc.accounting import activation_bytes, bops, equivalent_bits, layer_costs, total_macs, transform_macs


def _toy():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # out 8 x 16 x 16: 8*256*27 MACs
        nn.Conv2d(8, 16, 1),  # 16*8*256
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # 16*256*9
    )


def test_dense_macs_by_hand():
    costs = layer_costs(_toy(), (2, 3, 32, 32))
    assert [c.dense_macs for c in costs] == [2 * 8 * 256 * 27, 2 * 16 * 8 * 256, 2 * 16 * 256 * 9]
    assert all(c.kind == "fp" for c in costs)
    assert bops(costs) == pytest.approx(total_macs(costs) * 32 * 32 / 1e9)


def test_wcc_scaling_and_conventions():
    m = _toy()
    convert(m, WCCConfig(levels=2, keep_ratio=0.25), keep_fp=["0"])
    costs = layer_costs(m, (1, 3, 32, 32))
    kinds = [c.kind for c in costs]
    assert kinds == ["fp", "wcc", "quant"]
    w = costs[1]
    assert w.dense_macs == 16 * 8 * 256 and w.macs == 16 * 8 * 64  # k = 256 * 0.25 positions
    assert w.transform_macs == transform_macs(8, 16, 16, 16, 2) == 24 * 4 * (256 + 64)
    paper = bops(costs, "paper")
    expected = ((costs[0].dense_macs + w.dense_macs * 0.25 + costs[2].dense_macs) * 64 + w.transform_macs * 8) / 1e9
    assert paper == pytest.approx(expected)
    actual = bops(costs, "actual")
    expected_actual = (costs[0].macs * 1024 + w.macs * 64 + w.transform_macs * 8 + costs[2].macs * 64) / 1e9
    assert actual == pytest.approx(expected_actual)


def test_paper_convention_scales_kept_fp_pointwise_convs():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1))
    convert(m, WCCConfig(levels=1, keep_ratio=0.5), keep_fp=["0", "2"])
    costs = layer_costs(m, (1, 3, 8, 8))
    assert [c.pointwise for c in costs] == [False, True, True]
    by_hand = ((costs[0].dense_macs + (costs[1].dense_macs + costs[2].dense_macs) * 0.5) * 64
               + costs[1].transform_macs * 8)
    assert bops(costs, "paper") == pytest.approx(by_hand / 1e9)


def test_quant_rows_paper_convention():
    m = _toy()
    fp = bops(layer_costs(m, (1, 3, 32, 32)), "paper")
    convert(m, QuantConfig(8, 4), keep_fp=["0"])
    q = bops(layer_costs(m, (1, 3, 32, 32)), "paper")
    assert q == pytest.approx(fp * 32 / (32 * 32))


def test_layer_costs_do_not_touch_the_model():
    m = _toy()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    layer_costs(m, (1, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert next(m.parameters()).device.type == "cpu"


def test_equivalent_bits_and_bytes():
    assert equivalent_bits(0.25, 8, 32) == pytest.approx(2 + 1 / 32)
    comp, dense = activation_bytes((1, 32, 64, 64), WCCConfig(levels=3, keep_ratio=0.25, act_bits=8))
    assert dense == 32 * 64 * 64
    assert comp == (32 * 1024 * 8 + 4096) / 8
    assert comp / dense == pytest.approx(equivalent_bits(0.25, 8, 32) / 8)
