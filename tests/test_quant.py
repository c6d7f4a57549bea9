"""Quantizers: values and straight-through / learned-clip gradients as written in docs/design.md §3.3."""

import pytest
import torch

from wcc.quant import (
    signed_act_quant,
    unsigned_act_quant,
    weight_quant,
    weight_quant_codes,
)


def _x():
    # Values inside and outside the clip range, none exactly on a rounding tie.
    return torch.tensor([-20.0, -7.3, -1.1, -0.3, 0.0, 0.21, 2.6, 7.9, 8.4, 15.0], dtype=torch.float64)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_signed_values_and_grads(bits):
    x = _x().requires_grad_(True)
    alpha = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    y = signed_act_quant(x, alpha, bits)
    n = 2 ** (bits - 1) - 1
    u = x.detach() / 8.0
    q = torch.round(u.clamp(-1, 1) * n) / n
    torch.testing.assert_close(y, 8.0 * q)
    g = torch.linspace(-1, 1, x.numel(), dtype=torch.float64)
    gx, ga = torch.autograd.grad(y, (x, alpha), g)
    outside = u.abs() > 1
    torch.testing.assert_close(gx, torch.where(outside, 0.0, g))
    torch.testing.assert_close(ga, (g * torch.where(outside, u.sign(), q - u)).sum())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_unsigned_values_and_grads(bits):
    x = _x().requires_grad_(True)
    alpha = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    y = unsigned_act_quant(x, alpha, bits)
    n = 2**bits - 1
    u = x.detach() / 8.0
    q = torch.round(u.clamp(max=1) * n) / n  # no lower clip, as in the official code
    torch.testing.assert_close(y, 8.0 * q)
    g = torch.linspace(-1, 1, x.numel(), dtype=torch.float64)
    gx, ga = torch.autograd.grad(y, (x, alpha), g)
    outside = u > 1
    torch.testing.assert_close(gx, torch.where(outside, 0.0, g))
    torch.testing.assert_close(ga, (g * torch.where(outside, torch.ones_like(u), q - u)).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_weight_codes_reproduce_the_quantized_weight(bits, dtype):
    torch.manual_seed(bits)
    w = torch.randn(7, 5, 1, 1, dtype=dtype) * 0.1 + 0.02
    alpha = torch.tensor(1.5)  # float32 clip on a float64 weight: cast like the quantizer
    codes = weight_quant_codes(w, alpha, bits)
    assert codes.codes.dtype == torch.int8 and codes.codes.shape == w.shape
    assert codes.levels == 2 ** (bits - 1) - 1 and int(codes.codes.abs().max()) == codes.levels  # clipped ones
    assert torch.equal((codes.codes.to(dtype) / codes.levels) * codes.alpha, weight_quant(w, alpha, bits))
    assert codes.step == codes.alpha / codes.levels


def test_weight_codes_only_where_an_int8_form_exists():
    w, alpha = torch.randn(3, 4), torch.tensor(3.0)
    assert weight_quant_codes(w, alpha, None) is None
    assert weight_quant_codes(w, alpha, 9) is None and weight_quant_codes(w, alpha, 1) is None
    assert weight_quant_codes(w, torch.tensor(0.0), 8) is None
    w[0, 0] = float("inf")
    assert weight_quant_codes(w, alpha, 8) is None


def test_weight_quant_values_and_grads():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    y = weight_quant(w, alpha, 4)
    mean, std = w.detach().mean(), w.detach().std()
    u = ((w.detach() - mean) / std) / 3.0
    n = 7
    qv = torch.sign(u.clamp(-1, 1)) * torch.round(u.clamp(-1, 1).abs() * n) / n
    torch.testing.assert_close(y, 3.0 * qv)  # not de-standardised
    g = torch.randn_like(y)
    gw, ga = torch.autograd.grad(y, (w, alpha), g)
    # Straight-through for w (no clip mask), through the standardisation with constant stats.
    torch.testing.assert_close(gw, g / std)
    outside = u.abs() > 1
    torch.testing.assert_close(ga, (g * torch.where(outside, u.sign(), qv - u)).sum())


def test_none_bits_is_identity():
    x = torch.randn(5)
    a = torch.tensor(8.0)
    assert signed_act_quant(x, a, None) is x
    assert unsigned_act_quant(x, a, None) is x
    assert weight_quant(x, a, None) is x


def test_grid_size():
    x = torch.linspace(-10, 10, 10001)
    assert signed_act_quant(x, torch.tensor(8.0), 8).unique().numel() == 2 * 127 + 1
    assert unsigned_act_quant(x.clamp(min=0), torch.tensor(8.0), 4).unique().numel() == 16


def test_layers_initial_clips():
    # The published initial clips: activations 8.0, standardised weights 3.0.
    from torch import nn

    from wcc.config import WCCConfig
    from wcc.layers import QuantConv2d, WCCConv2d

    layers = (QuantConv2d(4, 4, 3, weight_bits=8, act_bits=8), WCCConv2d.from_conv2d(nn.Conv2d(4, 4, 1), WCCConfig()))
    for layer in layers:
        assert (layer.act_alpha.item(), layer.weight_alpha.item()) == (8.0, 3.0)


def test_signed_needs_two_bits():
    with pytest.raises(ValueError, match="at least 2 bits"):
        signed_act_quant(torch.randn(3), torch.tensor(8.0), 1)
