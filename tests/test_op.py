"""The WCC operators (``torch.ops.wcc.*``, wcc/ops.py) as real PyTorch operators.

* ``torch.library.opcheck`` (schema, fake tensors, autograd registration, AOT dispatch) on the
  reference and cpu backends, with and without bias, quantization, integer weight codes;
* the conformance battery (tests/test_conformance.py) run *through the operator*: outputs and
  gradients within the dtype's tolerance of the float64 reference, the same kept positions;
* a converted model compiles with ``fullgraph=True`` (no graph break) and equals eager, and an
  exported program holds the operators and equals eager;
* ``wcc.layers`` imports no backend module.
"""

from __future__ import annotations

import ast
import inspect

import pytest
import test_conformance as battery
import torch
from torch import nn

import wcc.layers
import wcc.ops  # noqa: F401  (registers torch.ops.wcc.*)
from wcc import WCCConfig
from wcc.backends import get_backend
from wcc.convert import convert
from wcc.quant import weight_code_tensor, weight_quant


def _available(name: str) -> None:
    reason = get_backend(name).unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias,levels,keep,bits", [
    pytest.param(True, 2, 0.25, 8, id="bias-J2-q8"),
    pytest.param(False, 3, 0.5, None, id="nobias-J3-float"),
])
def test_opcheck_conv(backend, dtype, with_bias, levels, keep, bits):
    _available(backend)
    gen = torch.Generator().manual_seed(0)
    x = _leaf(torch.randn(2, 5, 11, 13, generator=gen, dtype=dtype))
    w = _leaf(torch.randn(7, 5, generator=gen, dtype=dtype))
    b = _leaf(torch.randn(7, generator=gen, dtype=dtype)) if with_bias else None
    a = _leaf(torch.tensor(3.0, dtype=dtype))
    torch.library.opcheck(torch.ops.wcc.conv.default, (x, w, b, a, None, None, levels, keep, 8, bits, backend))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_opcheck_conv_with_integer_weight_codes(backend):
    _available(backend)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 16, 12, generator=gen)
    w_raw, w_alpha = torch.randn(4, 6, generator=gen), torch.tensor(2.5)
    wq, codes = weight_quant(w_raw, w_alpha, 8), weight_code_tensor(w_raw, w_alpha, 8)
    args = (x, wq, torch.randn(4, generator=gen), torch.tensor(4.0), codes, w_alpha, 3, 0.25, 8, 8, backend)
    torch.library.opcheck(torch.ops.wcc.conv.default, args)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_channels_last_input_gives_channels_last_output(backend):
    """A channels-last input (a channels-last graph) gets a channels-last output with the same
    values, and the fake says so: opcheck compares the fake's strides with the kernel's."""
    _available(backend)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 13, 10, generator=gen)
    w, b, a = torch.randn(5, 6, generator=gen), torch.randn(5, generator=gen), torch.tensor(2.0)
    xl = x.contiguous(memory_format=torch.channels_last)
    args = (w, b, a, None, None, 2, 0.5, 8, 8, backend)
    with torch.no_grad():
        y, yl = torch.ops.wcc.conv(x, *args), torch.ops.wcc.conv(xl, *args)
    assert y.is_contiguous() and not yl.is_contiguous() and yl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yl, y, rtol=0, atol=0)
    torch.library.opcheck(torch.ops.wcc.conv.default, (_leaf(xl), _leaf(w), _leaf(b), _leaf(a), *args[3:]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_unsigned_act_quant(channels_last):
    x = torch.randn(2, 3, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for bits in (8, 4):
        torch.library.opcheck(torch.ops.wcc.unsigned_act_quant.default, (_leaf(x), _leaf(torch.tensor(1.5)), bits))


def test_unsigned_act_quant_op_equals_the_reference_quantizer():
    from wcc.quant import unsigned_act_quant

    x, a = _leaf(torch.randn(2, 3, 7, 9) * 3), _leaf(torch.tensor(1.5))
    x2, a2 = _leaf(x), _leaf(a)
    y, y_ref = wcc.ops.unsigned_act_quant(x, a, 8), unsigned_act_quant(x2, a2, 8)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(a.grad, a2.grad)


class _ViaOperator:
    """A backend as the conformance battery sees one, whose op goes through ``torch.ops.wcc.conv``
    with the wrapped backend's name (kept positions: the backend's own)."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name

    def unsupported_reason(self, x, config):
        return self._backend.unsupported_reason(x, config)

    def keep_indices(self, x, config):
        return self._backend.keep_indices(x, config)

    def wcc_conv(self, x, weight, bias, act_alpha, config, weight_codes=None):
        # The operator itself (wcc.ops.wcc_conv sends eager training to the backend directly).
        return torch.ops.wcc.conv(x, weight, bias, act_alpha, None, None, config.levels, config.keep_ratio,
                                  config.weight_bits, config.act_bits, self.name)


@pytest.mark.parametrize("name", ["reference", "cpu"])
@pytest.mark.parametrize("shape,c_out,levels,keep,act_bits,with_bias", battery.CASES)
def test_operator_matches_reference(name, monkeypatch, shape, c_out, levels, keep, act_bits, with_bias):
    """The battery's contract (same kept positions on tie-free input, outputs and the gradients
    of x, weight, bias and the clip within 1e-5 relative of float64, also in inference mode),
    every call through the operator: forward ``wcc.conv``, backward ``wcc.conv_backward``."""
    _available(name)
    backend_on = (_ViaOperator(get_backend(name)), torch.device("cpu"), torch.float32)
    battery.test_backend_matches_reference(backend_on, monkeypatch, shape, c_out, levels, keep, act_bits, with_bias)


def _converted_model() -> nn.Module:
    """A small MobileNet-like block, converted with the paper's setting (WCC 25%, 8/8): 1x1
    convs become WCC, the 3x3 and depthwise convs QuantConv2d."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),
        nn.Conv2d(16, 8, 1),
    )
    report = convert(model, WCCConfig(levels=3, keep_ratio=0.25, weight_bits=8, act_bits=8))
    assert report.counts() == {"WCCConv2d": 2, "QuantConv2d": 2}, report
    return model.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_converted_model_compiles_fullgraph_and_equals_eager(channels_last):
    """Also channels-last (how bench compiles models): the op keeps that layout, so the graph
    needs no transposes around it, and the values stay eager's."""
    model = _converted_model()
    x = torch.randn(2, 3, 19, 22)
    with torch.no_grad():
        expected = model(x)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        assert torch._dynamo.explain(model)(x).graph_break_count == 0
        torch._dynamo.reset()
        got = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_exported_converted_model_runs_and_equals_eager():
    model = _converted_model()
    x = torch.randn(1, 3, 24, 17)
    with torch.no_grad():
        expected = model(x)
        program = torch.export.export(model, (x,))
        got = program.module()(x)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"wcc.conv.default", "wcc.unsigned_act_quant.default"} <= targets, targets
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_compiled_training_step_matches_eager_gradients():
    """Forward and backward of a WCC layer under torch.compile (the backward is the operator
    ``wcc.conv_backward``) give eager's gradients."""
    torch.manual_seed(0)
    layer = wcc.layers.WCCConv2d(6, 5, config=WCCConfig(levels=2, keep_ratio=0.5))
    x = torch.randn(1, 6, 12, 10)
    grads = []
    for fn in (layer, torch.compile(layer, fullgraph=True)):
        layer.zero_grad()
        xi = _leaf(x)
        fn(xi).square().sum().backward()
        grads.append([xi.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for g_eager, g_compiled in zip(*grads):
        # The clips' gradients are sums of terms that cancel (and inductor sums in another
        # order): relative to their size they carry more rounding than the tensors' gradients.
        tol = 1e-5 if g_eager.dim() else 1e-3
        torch.testing.assert_close(g_compiled, g_eager, rtol=tol, atol=tol * float(g_eager.abs().max()))


def test_layers_import_no_backend_module():
    tree = ast.parse(inspect.getsource(wcc.layers))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not any(m and m.startswith("wcc.backends") for m in imported), imported
