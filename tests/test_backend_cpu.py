"""The compiled ``cpu`` backend against the reference backend (the specification).

The kernels are built on first use (once per cache folder, about a minute on two cores). If
they cannot be built here, every test is *skipped with the build error* -- never passed.

The backend reproduces the reference's coefficients, quantized values and inverse transform
bit for bit; only the GEMM's and the channel-energy sum's rounding order differ. So results
must agree to float rounding: 1e-5 relative to the largest magnitude (float32), 1e-10 (float64).
Inputs are checked to be tie-free (the k-th and (k+1)-th energies clearly apart), where the
kept set is unique and must be the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from wcc import WCCConfig, WCCConv2d
from wcc.backends import ENV_VAR, cpu_build, get_backend, select_backend
from wcc.backends.cpu import unsigned_act_quant_inference, unsigned_act_quant_scratch
from wcc.haar import haar2d, pad_to_multiple
from wcc.layers import QuantConv2d
from wcc.quant import WeightCodes, unsigned_act_quant, weight_quant, weight_quant_codes
from wcc.rules import keep_count

CPU = get_backend("cpu")
REFERENCE = get_backend("reference")

_REASON = CPU.unavailable_reason()  # builds the kernels (once per cache folder)
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"cpu backend unavailable: {_REASON}")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= tol, f"{what}: max |cpu - reference| / max |reference| = {err:.3g} > {tol}"


def _tie_free_input(shape, config: WCCConfig, dtype, seed: int, margin: float = 1e-4) -> torch.Tensor:
    """A random input whose k-th and (k+1)-th channel energies are > margin apart (relative)."""
    gen = torch.Generator().manual_seed(seed)
    k = keep_count(shape[-2], shape[-1], config)
    for _ in range(100):
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        score = haar2d(pad_to_multiple(x, config.levels), config.levels).square().sum(1).flatten(1)
        if k >= score.shape[1]:
            return x.to(dtype)
        top = score.sort(dim=1, descending=True).values
        gap = (top[:, k - 1] - top[:, k]) / top[:, k - 1]
        if bool((gap > margin).all()):
            return x.to(dtype)
    raise AssertionError("could not draw a tie-free input")  # pragma: no cover


def _run(backend, x, weight, bias, alpha, config, grad):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, alpha)]
    b = bias.detach().clone().requires_grad_() if bias is not None else None
    y = backend.wcc_conv(leaves[0], leaves[1], b, leaves[2], config)
    y.backward(grad)
    grads = {"x": leaves[0].grad, "weight": leaves[1].grad, "act_alpha": leaves[2].grad,
             "bias": b.grad if b is not None else None}
    return y.detach(), grads


CASES = [
    # (shape, c_out, levels, keep_ratio, act_bits)
    ((1, 16, 45, 150), 8, 3, 0.25, 8),
    ((2, 8, 13, 21), 5, 1, 0.5, 8),
    ((2, 8, 13, 21), 5, 2, 0.25, 4),
    ((3, 5, 17, 9), 7, 3, 0.1, 12),  # int16 codes
    ((1, 12, 32, 40), 6, 3, 1.0, None),  # every position kept, no quantization
    ((2, 6, 24, 31), 9, 2, 0.3, None),
    ((1, 3, 8, 8), 4, 3, 0.02, 8),  # a single kept position
    ((1, 8, 16, 24), 300, 3, 0.25, 8),  # two bands, many output channels: split into chunks
    ((2, 4, 1, 3), 3, 2, 0.25, 8),  # smaller than one 2^J block
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, c_out, levels, keep, bits", CASES)
def test_forward_backward_match_reference(shape, c_out, levels, keep, bits, dtype):
    config = WCCConfig(levels=levels, keep_ratio=keep, act_bits=bits)
    x = _tie_free_input(shape, config, dtype, seed=sum(shape) + levels)
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(c_out, shape[1], generator=gen, dtype=dtype)
    bias = torch.randn(c_out, generator=gen, dtype=dtype)
    alpha = torch.tensor(1.5, dtype=dtype)  # clips some coefficients: both gradient branches occur
    grad = torch.randn(shape[0], c_out, *shape[2:], generator=gen, dtype=dtype)

    assert torch.equal(CPU.keep_indices(x, config), REFERENCE.keep_indices(x, config))
    y_ref, g_ref = _run(REFERENCE, x, weight, bias, alpha, config, grad)
    y_cpu, g_cpu = _run(CPU, x, weight, bias, alpha, config, grad)
    tol = TOL[dtype]
    _assert_rel(y_cpu, y_ref, tol, "output")
    for name in ("x", "weight", "bias"):
        _assert_rel(g_cpu[name], g_ref[name], tol, f"grad {name}")
    if bits is None:
        assert g_ref["act_alpha"] is None and g_cpu["act_alpha"] is None
    else:
        _assert_rel(g_cpu["act_alpha"], g_ref["act_alpha"], tol, "grad act_alpha")
    with torch.inference_mode():  # the no-grad path stores integer codes instead of floats
        _assert_rel(CPU.wcc_conv(x, weight, bias, alpha, config), y_ref, tol, "inference output")


def _quantized_weight(c_out: int, c_in: int, bits: int, dtype, seed: int) -> tuple[torch.Tensor, WeightCodes]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, c_in, generator=gen, dtype=dtype)
    alpha = torch.tensor(2.5, dtype=dtype)  # clips the largest weights: codes reach +-levels
    codes = weight_quant_codes(w, alpha, bits)
    assert codes is not None
    return weight_quant(w, alpha, bits), codes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_bits", [8, 4, 2])
@pytest.mark.parametrize("shape, c_out, levels, keep, bits", [c for c in CASES if c[-1] is not None and c[-1] <= 8])
def test_integer_gemm_matches_reference(shape, c_out, levels, keep, bits, weight_bits, dtype):
    # Inference with <= 8-bit activations and weight codes runs the GEMM on int8 codes.
    config = WCCConfig(levels=levels, keep_ratio=keep, act_bits=bits, weight_bits=weight_bits)
    x = _tie_free_input(shape, config, dtype, seed=sum(shape) + levels)
    weight, codes = _quantized_weight(c_out, shape[1], weight_bits, dtype, seed=2)
    bias = torch.randn(c_out, dtype=dtype)
    alpha = torch.tensor(1.5, dtype=dtype)
    with torch.inference_mode():
        expected = REFERENCE.wcc_conv(x, weight, bias, alpha, config)
        actual = CPU.wcc_conv(x, weight, bias, alpha, config, codes)
        without = CPU.wcc_conv(x, weight, bias, alpha, config)
    _assert_rel(actual, expected, TOL[dtype], "integer GEMM output")
    # The integer sum is exact, the float one is not: the two differ, if at all, by rounding.
    _assert_rel(actual, without, TOL[dtype], "integer vs float GEMM")


def test_integer_gemm_nan_band_falls_back_to_float():
    config = WCCConfig(levels=2, keep_ratio=0.25)
    x = _tie_free_input((1, 4, 16, 16), config, torch.float32, seed=7)
    x[0, 1, 5, 6] = float("nan")
    weight, codes = _quantized_weight(3, 4, 8, torch.float32, seed=3)
    alpha = torch.tensor(2.0)
    with torch.inference_mode():
        expected = REFERENCE.wcc_conv(x, weight, None, alpha, config)
        actual = CPU.wcc_conv(x, weight, None, alpha, config, codes)
    assert torch.equal(actual.isnan(), expected.isnan()) and bool(expected.isnan().any())
    finite = ~expected.isnan()
    _assert_rel(actual[finite], expected[finite], 1e-5, "finite part")


def test_bad_weight_codes_are_rejected():
    x = torch.randn(1, 4, 8, 8)
    weight, codes = _quantized_weight(3, 4, 8, torch.float32, seed=4)
    wrong = WeightCodes(codes.codes[:2], codes.alpha, codes.levels)
    with torch.inference_mode(), pytest.raises(ValueError, match="weight_codes must be int8 shaped like"):
        CPU.wcc_conv(x, weight, None, torch.tensor(2.0), WCCConfig(), wrong)


def test_large_output_is_an_ordinary_tensor():
    # Outputs of >= 4 MiB come from the huge-page allocator: they must behave like any tensor.
    x = torch.randn(1, 8, 256, 512)
    with torch.no_grad():
        y = CPU.wcc_conv(x, torch.randn(8, 8), None, torch.tensor(2.0), WCCConfig())
    assert y.numel() * y.element_size() >= 4 << 20 and y.is_contiguous() and y.device.type == "cpu"
    head = y[0, 0, 0, :4].clone()
    y.resize_(2, 8, 256, 512)  # growing reallocates through the same allocator
    assert torch.equal(y[0, 0, 0, :4], head)
    y[1].fill_(1.0)
    assert float(y[1].sum()) == 8 * 256 * 512


def test_huge_pages_can_be_turned_off(tmp_path):
    # The environment switch is read by the compiled code: check it in a fresh process.
    script = (
        "import torch; from wcc import WCCConfig; from wcc.backends import get_backend\n"
        "x = torch.arange(8 * 256 * 512, dtype=torch.float32).reshape(1, 8, 256, 512).sin()\n"
        "w = torch.linspace(-1, 1, 64).reshape(8, 8)\n"
        "with torch.no_grad():\n"
        "    y = get_backend('cpu').wcc_conv(x, w, None, torch.tensor(2.0), WCCConfig())\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
    )
    env = {**os.environ, "WCC_CPU_HUGE_PAGES": "0"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=_REPO, timeout=600)
    x = torch.arange(8 * 256 * 512, dtype=torch.float32).reshape(1, 8, 256, 512).sin()
    w = torch.linspace(-1, 1, 64).reshape(8, 8)
    with torch.no_grad():
        expected = CPU.wcc_conv(x, w, None, torch.tensor(2.0), WCCConfig())
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_no_bias_and_partial_gradients():
    config = WCCConfig(levels=2, keep_ratio=0.25)
    x = _tie_free_input((2, 6, 20, 28), config, torch.float32, seed=3)
    weight, alpha = torch.randn(4, 6), torch.tensor(2.0)
    w_ref = weight.clone().requires_grad_()
    w_cpu = weight.clone().requires_grad_()
    REFERENCE.wcc_conv(x, w_ref, None, alpha, config).square().sum().backward()
    CPU.wcc_conv(x, w_cpu, None, alpha, config).square().sum().backward()
    _assert_rel(w_cpu.grad, w_ref.grad, 1e-5, "grad weight (only leaf)")


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_inputs(layout):
    config = WCCConfig(levels=3, keep_ratio=0.25)
    base = _tie_free_input((2, 8, 19, 27), config, torch.float32, seed=5)
    if layout == "channels_last":
        x = base.to(memory_format=torch.channels_last)
    else:
        x = torch.cat([base, base], dim=3)[..., ::2]  # every other column of a wider tensor
        x.copy_(base)
    assert not x.is_contiguous()
    weight, bias, alpha = torch.randn(5, 8), torch.randn(5), torch.tensor(2.0)
    with torch.no_grad():
        expected = REFERENCE.wcc_conv(base, weight, bias, alpha, config)
        _assert_rel(CPU.wcc_conv(x, weight, bias, alpha, config), expected, 1e-5, layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("integer_gemm", [False, True])
@pytest.mark.parametrize("shape, c_out, levels, keep, bits", [
    pytest.param((2, 37, 19, 27), 21, 3, 0.25, 8, id="odd-C-J3-q8"),  # channel groups of 16 with a remainder
    pytest.param((1, 16, 8, 40), 35, 1, 0.5, 6, id="C16-J1-q6"),
    pytest.param((1, 5, 13, 9), 3, 2, 0.75, None, id="C5-J2-float"),
])
def test_channels_last_inference_is_bit_identical(shape, c_out, levels, keep, bits, integer_gemm, dtype):
    """A channels-last input is read in place (no transposing copy) and gives a channels-last
    output with exactly the NCHW path's values: the same arithmetic in the same order."""
    if integer_gemm and bits is None:
        pytest.skip("the integer GEMM needs quantized activations")
    config = WCCConfig(levels=levels, keep_ratio=keep, act_bits=bits, weight_bits=8)
    x = _tie_free_input(shape, config, dtype, seed=sum(shape))
    weight, codes = _quantized_weight(c_out, shape[1], 8, dtype, seed=6)
    bias, alpha = torch.randn(c_out, dtype=dtype), torch.tensor(1.5, dtype=dtype)
    xl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = CPU.wcc_conv(x, weight, bias, alpha, config, codes if integer_gemm else None)
        yl = CPU.wcc_conv(xl, weight, bias, alpha, config, codes if integer_gemm else None)
    assert yl.is_contiguous(memory_format=torch.channels_last) and not yl.is_contiguous()
    torch.testing.assert_close(yl, y, rtol=0, atol=0)


def test_nan_input_propagates_like_reference():
    config = WCCConfig(levels=2, keep_ratio=0.25)
    x = _tie_free_input((1, 4, 16, 16), config, torch.float32, seed=7)
    x[0, 1, 5, 6] = float("nan")
    weight, alpha = torch.randn(3, 4), torch.tensor(2.0)
    with torch.no_grad():
        expected = REFERENCE.wcc_conv(x, weight, None, alpha, config)
        actual = CPU.wcc_conv(x, weight, None, alpha, config)
    assert torch.equal(actual.isnan(), expected.isnan()) and bool(expected.isnan().any())
    finite = ~expected.isnan()
    _assert_rel(actual[finite], expected[finite], 1e-5, "finite part")


def test_auto_selects_cpu_for_cpu_float_and_refuses_the_rest():
    assert select_backend(torch.randn(1, 2, 8, 8), WCCConfig()).name == "cpu"
    assert select_backend(torch.randn(1, 2, 8, 8, dtype=torch.float64), WCCConfig()).name == "cpu"
    assert "bfloat16" in CPU.unsupported_reason(torch.randn(1, 2, 8, 8).bfloat16(), WCCConfig())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in CPU.unsupported_reason(torch.randn(1, 2, 8, 8), WCCConfig())
        assert select_backend(torch.randn(1, 2, 8, 8), WCCConfig()).name != "cpu"


def test_layer_on_cpu_backend_matches_reference_layer():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 12, 1)
    config = WCCConfig(keep_ratio=0.25)
    ref = WCCConv2d.from_conv2d(conv, config.replace(backend="reference"))
    fast = WCCConv2d.from_conv2d(conv, config.replace(backend="cpu"))
    x = _tie_free_input((2, 16, 30, 44), config, torch.float32, seed=11)
    with torch.inference_mode():
        _assert_rel(fast(x), ref(x), 1e-5, "layer output")


def test_build_can_be_disabled(monkeypatch):
    monkeypatch.setenv("WCC_CPU_BUILD", "0")
    assert cpu_build._precheck() == "disabled by WCC_CPU_BUILD=0"


# ---- the fused quantizer and cached weights of QuantConv2d's inference path -------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [1, 4, 8, 16])
def test_fused_unsigned_quant_is_bit_identical(bits, dtype):
    x = torch.randn(2, 5, 9, 13, dtype=dtype) * 6
    x[0, 0, 0, :4] = torch.tensor([float("nan"), -0.0, 1e30, -1e30], dtype=dtype)
    alpha = torch.tensor(2.5, dtype=dtype)
    expected = unsigned_act_quant(x, alpha, bits)
    for inp in (x, x.to(memory_format=torch.channels_last)):
        out = unsigned_act_quant_inference(inp, alpha, bits)
        assert torch.equal(out.nan_to_num(7.0), expected.nan_to_num(7.0))
        with unsigned_act_quant_scratch(inp, alpha, bits) as scratch:
            assert scratch is not None and scratch.stride() == inp.stride()
            assert torch.equal(scratch.nan_to_num(7.0), expected.nan_to_num(7.0))


def test_quantconv_inference_path_equals_autograd_path():
    torch.manual_seed(0)
    layer = QuantConv2d.from_conv2d(nn.Conv2d(6, 6, 3, padding=1, groups=6), weight_bits=4, act_bits=4)
    x = torch.randn(2, 6, 17, 23) * 4
    x_cl = x.to(memory_format=torch.channels_last)  # its conv sums in another order: own reference
    expected, expected_cl = layer(x), layer(x_cl)  # grad enabled: reference quantizers, nothing cached
    assert expected.requires_grad
    with torch.inference_mode():
        assert torch.equal(layer(x), expected)
        assert torch.equal(layer(x_cl), expected_cl)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)
        layer.weight.mul_(-1.0)  # an in-place update invalidates the cached quantized weight
        changed = layer(x)
    assert not torch.equal(changed, expected)
    assert torch.equal(changed, layer(x).detach())  # == a fresh computation with gradients on


def test_wcc_layer_weight_cache_follows_updates():
    torch.manual_seed(0)
    layer = WCCConv2d.from_conv2d(nn.Conv2d(8, 4, 1), WCCConfig())
    with torch.no_grad():
        first = layer.quantized_weight()
        assert layer.quantized_weight() is first  # cached
        layer.weight_alpha.fill_(1.0)
        second = layer.quantized_weight()
    assert second is not first and not torch.equal(second, first)
    fresh = layer.quantized_weight()  # grad enabled: recomputed, cache dropped
    assert fresh.requires_grad and torch.equal(fresh.detach(), second)


def test_wcc_layer_weight_codes_follow_the_quantized_weight():
    torch.manual_seed(0)
    layer = WCCConv2d.from_conv2d(nn.Conv2d(8, 4, 1), WCCConfig(weight_bits=4))
    assert layer.weight_codes() is None  # gradients wanted: the float path only
    with torch.no_grad():
        codes = layer.weight_codes()
        assert layer.weight_codes() is codes and codes.codes.shape == (4, 8)  # cached
        assert torch.equal((codes.codes.float() / codes.levels) * codes.alpha, layer.quantized_weight())
        layer.weight[0].mul_(-1.0)  # an in-place update invalidates the cached codes
        changed = layer.weight_codes()
        assert not torch.equal(changed.codes, codes.codes)
        assert torch.equal((changed.codes.float() / changed.levels) * changed.alpha, layer.quantized_weight())
    float_layer = WCCConv2d.from_conv2d(nn.Conv2d(8, 4, 1), WCCConfig(weight_bits=None))
    with torch.no_grad():
        assert float_layer.weight_codes() is None
