"""WCCConv2d and QuantConv2d against independent float64 oracles (tests/_oracle.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wcc
from tests._oracle import oracle_wcc
from wcc import QuantConv2d, WCCConfig, WCCConv2d

SHAPES = [(2, 6, 13, 21), (1, 5, 8, 8), (3, 4, 17, 9), (1, 3, 1, 30)]


def _tie_free(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _layer(c_in, c_out, config, bias=True):
    conv = nn.Conv2d(c_in, c_out, 1, bias=bias).double()
    with torch.no_grad():
        if bias:
            conv.bias.uniform_(-1, 1)  # non-trivial bias: tests that it is added in the spatial domain
    return WCCConv2d.from_conv2d(conv, config), conv


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("keep_ratio", [1.0, 0.5, 0.25, 0.125])
@pytest.mark.parametrize("shape", SHAPES)
def test_wcc_matches_oracle_forward_and_grads(levels, keep_ratio, shape):
    cfg = WCCConfig(levels=levels, keep_ratio=keep_ratio, weight_bits=None, act_bits=None, backend="reference")
    layer, _ = _layer(shape[1], 7, cfg)
    x = _tie_free(shape).requires_grad_(True)
    y = layer(x)

    x2 = x.detach().clone().requires_grad_(True)
    w2 = layer.weight.detach().clone().requires_grad_(True)
    y2, _ = oracle_wcc(x2, w2, layer.bias.detach(), levels, keep_ratio)
    torch.testing.assert_close(y, y2, rtol=1e-6, atol=1e-10)

    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, layer.weight), g)
    gx2, gw2 = torch.autograd.grad(y2, (x2, w2), g)
    torch.testing.assert_close(gx, gx2, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(gw, gw2, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("bits", [(8, 8), (4, 8), (8, 4)])
@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_wcc_quantized_forward_matches_oracle(bits, levels, shape):
    wb, ab = bits
    cfg = WCCConfig(levels=levels, keep_ratio=0.25, weight_bits=wb, act_bits=ab, backend="reference")
    layer, _ = _layer(shape[1], 5, cfg)
    with torch.no_grad():
        layer.act_alpha.fill_(2.5)  # a clip that actually clips some coefficients
    x = _tie_free(shape, seed=1) * 2
    y2, _ = oracle_wcc(x, layer.weight.detach(), layer.bias.detach(), levels, 0.25, wb, ab, act_alpha=2.5)
    torch.testing.assert_close(layer(x), y2, rtol=1e-6, atol=1e-9)


def test_keep_all_unquantized_equals_conv_float32():
    conv = nn.Conv2d(16, 8, 1)
    layer = WCCConv2d.from_conv2d(conv, WCCConfig(keep_ratio=1.0, weight_bits=None, act_bits=None))
    x = torch.randn(2, 16, 19, 33)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_bias_is_spatial():
    # Zero input: every coefficient is 0, so the output must be exactly the constant bias.
    conv = nn.Conv2d(4, 3, 1)
    layer = WCCConv2d.from_conv2d(conv, WCCConfig())
    y = layer(torch.zeros(1, 4, 10, 12))
    torch.testing.assert_close(y, conv.bias.view(1, 3, 1, 1).expand_as(y))


def test_kept_positions_and_gradient_support():
    cfg = WCCConfig(levels=2, keep_ratio=0.25, weight_bits=None, act_bits=None, backend="reference")
    x = _tie_free((2, 3, 8, 12))
    idx = wcc.backends.get_backend("reference").keep_indices(x, cfg)
    _, mask = oracle_wcc(x, torch.randn(2, 3, 1, 1, dtype=torch.float64), None, 2, 0.25)
    assert idx.shape == (2, 24)
    for i in range(2):
        assert set(idx[i].tolist()) == set(torch.nonzero(mask[i]).flatten().tolist())


@pytest.mark.parametrize("shape", [(1, 16, 45, 150), (1, 8, 192 // 4, 640 // 4)])
def test_kitti_like_shapes(shape):
    layer, conv = _layer(shape[1], 4, WCCConfig(levels=3, keep_ratio=1.0, weight_bits=None, act_bits=None))
    x = _tie_free(shape)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-6, atol=1e-9)


def test_float64_and_layouts():
    layer, _ = _layer(6, 5, WCCConfig())
    x = _tie_free((2, 6, 13, 21))
    ref = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), ref)
    x_nc = _tie_free((2, 13, 6, 21)).transpose(1, 2)  # non-contiguous (2, 6, 13, 21)
    assert not x_nc.is_contiguous()
    torch.testing.assert_close(layer(x_nc), layer(x_nc.contiguous()))


def test_cpu_autocast_bfloat16():
    conv = nn.Conv2d(8, 4, 1)
    wl = WCCConv2d.from_conv2d(conv, WCCConfig(keep_ratio=0.5))
    ql = QuantConv2d.from_conv2d(nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(2, 8, 11, 14, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = wl(x) + ql(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4, 11, 14)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(wl.act_alpha.grad)


def test_state_dict_compatible_weight_shape():
    conv = nn.Conv2d(8, 4, 1)
    layer = WCCConv2d.from_conv2d(conv, WCCConfig())
    assert layer.weight.shape == (4, 8, 1, 1)
    sd = layer.state_dict()
    assert set(sd) == {"weight", "bias", "act_alpha", "weight_alpha"}
    conv.load_state_dict({"weight": sd["weight"], "bias": sd["bias"]})


# ---------------------------------------------------------------- QuantConv2d


def _plain_quant_conv(x, conv: nn.Conv2d, wb, ab, a_alpha=8.0, w_alpha=3.0):
    n_a = 2**ab - 1
    xq = a_alpha * torch.round(torch.clamp(x / a_alpha, max=1.0) * n_a) / n_a
    w = conv.weight
    w_hat = (w - w.mean()) / w.std()
    n_w = 2 ** (wb - 1) - 1
    u = torch.clamp(w_hat / w_alpha, -1, 1)
    wq = w_alpha * torch.sign(u) * torch.round(u.abs() * n_w) / n_w
    return F.conv2d(xq, wq, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


@pytest.mark.parametrize("act_bits", [8, 6, 4, 2])
@pytest.mark.parametrize("kind", ["dense", "depthwise", "strided_dilated"])
def test_quantconv_matches_plain(act_bits, kind):
    if kind == "dense":
        conv = nn.Conv2d(6, 5, 3, padding=1)
    elif kind == "depthwise":
        conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    else:
        conv = nn.Conv2d(6, 4, 3, stride=2, padding=2, dilation=2)
    conv = conv.double()
    q = QuantConv2d.from_conv2d(conv, weight_bits=8, act_bits=act_bits)
    x = _tie_free((2, 6, 11, 13)) * 4
    with torch.no_grad():
        torch.testing.assert_close(q(x), _plain_quant_conv(x, conv, 8, act_bits), rtol=1e-6, atol=1e-9)


def test_quantconv_none_bits_is_plain_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    q = QuantConv2d.from_conv2d(conv, weight_bits=None, act_bits=None)
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(q(x), conv(x))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "conv, attr",
    [
        (nn.Conv2d(4, 4, 3), "kernel_size"),
        (nn.Conv2d(4, 4, 1, stride=2), "stride"),
        (nn.Conv2d(4, 4, 1, groups=2), "groups"),
        (nn.Conv2d(4, 4, 1, padding=1), "padding"),
    ],
)
def test_wcc_rejects_non_pointwise(conv, attr):
    with pytest.raises(ValueError, match=attr):
        WCCConv2d.from_conv2d(conv, WCCConfig())


def test_bad_layer_inputs():
    layer = WCCConv2d.from_conv2d(nn.Conv2d(4, 2, 1), WCCConfig())
    with pytest.raises(ValueError, match="4-D input"):
        layer(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="expects 4 input channels, got 3"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(1, 4, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="differs from weight dtype"):
        layer(torch.randn(1, 4, 8, 8, dtype=torch.float64))
    q = QuantConv2d.from_conv2d(nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match="expects 4 input channels"):
        q(torch.randn(1, 5, 8, 8))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        WCCConv2d.from_conv2d(nn.Linear(3, 3), WCCConfig())
