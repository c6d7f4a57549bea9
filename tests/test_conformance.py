"""Backend conformance battery: every registered backend against the float64 reference.

One set of cases and one tolerance table for all backends, parametrized by backend x device x
dtype (test ids such as ``[backend:cpu-device:cpu-dtype:float32-...]``, so ``-k backend:cpu``
selects one backend). ``--device`` and
``--dtype`` (tests/conftest.py) select the device and dtypes: by default ``cpu`` with float32 and
float64, so CI runs ``reference``, ``cpu`` and ``triton`` (in the Triton interpreter, float32;
it refuses float64). ``pytest --device cuda --dtype float16`` runs every CUDA-capable backend
(``cuda``, ``triton``, ``reference``) on the GPU. A backend that cannot run a combination, or a
case, is *skipped with its own refusal reason*, never passed.

The contract (the reference backend is the specification, docs/design.md §3.4):

* inputs are tie-free (the k-th and (k+1)-th float64 channel energies clearly apart), and then
  the kept positions equal the reference's exactly in float32/float64; in float16/bfloat16 the
  support may differ only at near-ties, and outputs are compared with the float64 reference
  evaluated on the backend's own support;
* outputs and the gradients of x, weight, bias and the activation clip match the float64
  reference to the dtype's tolerance, relative to the largest magnitude (the clip's gradient
  relative to the sum of its terms' magnitudes, since they cancel);
* the same in inference mode (some backends take a different, gradient-free path there);
* the shared rules beyond floats (``tests/_conformance_rules.py``): ``levels`` beyond the input's
  size is a ``ValueError`` (and the limit itself runs); a non-finite channel energy ranks as +inf
  and ties go to the lowest Mallat index, so the kept positions (exactly) and the output's NaN/Inf
  masks equal the reference's in every dtype, even when NaNs outnumber the kept coefficients.

Inputs are dyadic (small integers / 256) and the clip is a power of two, so coefficients and
quantizer arguments are exact in float32: no coefficient can land on another quantization level
than in float64, and float32 must agree to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from _conformance_rules import (
    TOO_MANY_LEVELS,
    alpha_grad_scale,
    check_levels_at_the_limit,
    check_levels_rejected,
    check_nonfinite_rule,
    check_ties_lowest_position,
)
from conftest import selected_device, selected_dtypes

import wcc.backends.reference as reference_module
from wcc import WCCConfig
from wcc.backends import ENV_VAR, get_backend, list_backends
from wcc.backends.reference import select_positions
from wcc.haar import haar2d, pad_to_multiple
from wcc.quant import weight_quant, weight_quant_codes
from wcc.rules import keep_count

REFERENCE = get_backend("reference")
ALPHA = 8.0

# The one tolerance table: max |backend - reference64| / max |reference64|. Half precision rounds
# every coefficient; with quantization one rounding may move a coefficient to the neighbouring
# level, hence the factor for quantized half-precision outputs (and their gradients are skipped:
# the straight-through mask itself may flip there).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
QUANTIZED_HALF_FACTOR = 3.0
HALF = (torch.float16, torch.bfloat16)

CASES = [
    # (N, C_in, H, W), C_out, levels, keep_ratio, act_bits, bias
    pytest.param((2, 8, 13, 21), 12, 1, 0.25, 8, True, id="J1-odd-batch2-q8"),
    pytest.param((2, 8, 13, 21), 12, 2, 0.5, None, True, id="J2-odd-batch2-float"),
    pytest.param((1, 16, 9, 30), 12, 3, 0.25, 8, False, id="J3-odd-nobias-q8"),
    pytest.param((3, 8, 16, 16), 12, 3, 0.125, 4, True, id="J3-batch3-q4"),
    pytest.param((2, 8, 5, 7), 12, 3, 0.3, 8, True, id="J3-smaller-than-a-tile"),
    pytest.param((1, 4, 20, 36), 6, 4, 0.25, 8, True, id="J4-q8"),
]


def _combo_id(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    return f"backend:{backend}-device:{device}-dtype:{str(dtype).replace('torch.', '')}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "combo" not in metafunc.fixturenames:
        return
    device = selected_device(metafunc.config)
    combos = [(name, device, dtype) for name in list_backends() for dtype in selected_dtypes(metafunc.config)]
    metafunc.parametrize("combo", combos, ids=[_combo_id(*c) for c in combos])


@pytest.fixture
def backend_on(combo, monkeypatch):
    """(backend, device, dtype) of this test, skipped with the backend's reason where it cannot run."""
    name, device, dtype = combo
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {device} given but torch.cuda.is_available() is False here")
    monkeypatch.delenv(ENV_VAR, raising=False)
    if name == "triton" and device.type == "cpu":
        # The Triton kernels run on CPU tensors only in Triton's interpreter, asked for by name.
        pytest.importorskip("triton", reason="triton is not installed")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setenv(ENV_VAR, "triton")
    backend = get_backend(name)
    reason = backend.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    return backend, device, dtype


def _refusal(backend, device, dtype, config: WCCConfig, shape) -> str | None:
    x = torch.zeros(shape, dtype=dtype, device=device)
    return backend.unsupported_reason(x, WCCConfig(levels=config.levels, keep_ratio=config.keep_ratio,
                                                   act_bits=config.act_bits, backend=backend.name))


def _dyadic(*shape: int, gen: torch.Generator, half_range: int = 1024, denom: int = 256) -> torch.Tensor:
    return torch.randint(-half_range, half_range + 1, shape, generator=gen).double() / denom


def _score64(x: torch.Tensor, levels: int) -> torch.Tensor:
    return haar2d(pad_to_multiple(x, levels), levels).square().sum(dim=1).flatten(1)


def _problem(shape, c_out: int, config: WCCConfig, seed: int, margin: float = 1e-4):
    """float64 x (tie-free at the selection boundary), weight, bias and upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    n, c_in, h, w = shape
    k = keep_count(h, w, config)
    for _ in range(200):
        x = _dyadic(*shape, gen=gen)
        top = _score64(x, config.levels).sort(dim=1, descending=True).values
        if k >= top.shape[1] or bool(((top[:, k - 1] - top[:, k]) / top[:, k - 1] > margin).all()):
            break
    else:  # pragma: no cover - the precondition of the battery, not a backend failure
        raise AssertionError("could not draw a tie-free input")
    weight = _dyadic(c_out, c_in, gen=gen, half_range=64, denom=64)
    bias = _dyadic(c_out, gen=gen)
    grad = _dyadic(n, c_out, h, w, gen=gen, half_range=64, denom=64)
    return x, weight, bias, grad


def _run(backend, x, weight, bias, grad, config, device, dtype, with_bias: bool):
    """Forward + backward of ``backend`` in ``dtype`` on ``device``; results as CPU float64."""
    xd, wd, bd = (t.detach().to(device=device, dtype=dtype).clone().requires_grad_() for t in (x, weight, bias))
    alpha = torch.tensor(ALPHA, dtype=dtype, device=device, requires_grad=True)
    y = backend.wcc_conv(xd, wd, bd if with_bias else None, alpha, config)
    assert y.dtype == dtype and y.device.type == device.type, "output dtype/device must follow the input"
    assert tuple(y.shape) == (x.shape[0], weight.shape[0], *x.shape[2:])
    y.backward(grad.to(device=device, dtype=dtype))
    grads = {"x": xd.grad, "weight": wd.grad, "bias": bd.grad if with_bias else None, "alpha": alpha.grad}
    with torch.inference_mode():
        y_inf = backend.wcc_conv(xd.detach(), wd.detach(), bd.detach() if with_bias else None, alpha.detach(), config)
    as64 = {k: (v.detach().cpu().double() if v is not None else None) for k, v in grads.items()}
    return y.detach().cpu().double(), y_inf.cpu().double(), as64


def _reference64(x, weight, bias, grad, config, with_bias, support=None, monkeypatch=None):
    """The specification in float64 on CPU, optionally on a given support (selection replaced)."""
    if support is None:
        return _run(REFERENCE, x, weight, bias, grad, config, torch.device("cpu"), torch.float64, with_bias)
    with monkeypatch.context() as m:
        m.setattr(reference_module, "select_positions", lambda coeffs, k: support)
        return _run(REFERENCE, x, weight, bias, grad, config, torch.device("cpu"), torch.float64, with_bias)


def _case(backend_on, shape, c_out: int, levels: int, keep: float, act_bits, seed: int):
    """The battery's config and float64 problem for one case, or a skip with the backend's own reason
    when it refuses the case (``backend_on`` is the (backend, device, dtype) of the test)."""
    backend, device, dtype = backend_on
    config = WCCConfig(levels=levels, keep_ratio=keep, act_bits=act_bits, backend=backend.name)
    refusal = _refusal(backend, device, dtype, config, shape)
    if refusal is not None:
        pytest.skip(f"{backend.name} refuses this case: {refusal}")
    return config, _problem(shape, c_out, config, seed=seed)


def _assert_rel(actual, expected, tol: float, what: str, scale: float | None = None) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = float(expected.abs().max()) if scale is None else scale
    err = float((actual - expected).abs().max()) / max(scale, 1e-30)
    assert err <= tol, f"{what}: max |backend - reference64| / scale = {err:.3g} > {tol}"


@pytest.mark.parametrize("shape,c_out,levels,keep,act_bits,with_bias", CASES)
def test_backend_matches_reference(backend_on, monkeypatch, shape, c_out, levels, keep, act_bits, with_bias):
    backend, device, dtype = backend_on
    config, (x, weight, bias, grad) = _case(backend_on, shape, c_out, levels, keep, act_bits,
                                            seed=sum(shape) + levels)
    tol = TOLERANCE[dtype]

    got_idx = backend.keep_indices(x.to(device=device, dtype=dtype), config).cpu()
    ref_idx = select_positions(haar2d(pad_to_multiple(x, levels), levels).flatten(2), keep_count(*shape[2:], config))
    assert got_idx.dtype == torch.int64 and got_idx.shape == ref_idx.shape
    assert bool((got_idx[:, 1:] > got_idx[:, :-1]).all()), "kept positions must be ascending and distinct"
    support = None
    if dtype in HALF:
        # Half-precision energies may swap near-ties: every position that differs must score
        # within the dtype's tolerance of the k-th float64 energy.
        score = _score64(x, levels)
        kth = score.sort(dim=1, descending=True).values[:, ref_idx.shape[1] - 1 : ref_idx.shape[1]]
        for i in range(x.shape[0]):
            for pos in set(got_idx[i].tolist()) ^ set(ref_idx[i].tolist()):
                assert abs(float(score[i, pos] - kth[i, 0])) <= 8 * tol * float(kth[i, 0]), "not a near-tie"
        support = got_idx
    else:
        torch.testing.assert_close(got_idx, ref_idx, rtol=0, atol=0, msg="kept positions differ on tie-free input")

    y, y_inf, grads = _run(backend, x, weight, bias, grad, config, device, dtype, with_bias)
    y64, _, grads64 = _reference64(x, weight, bias, grad, config, with_bias, support, monkeypatch)
    quantized_half = dtype in HALF and act_bits is not None
    out_tol = tol * (QUANTIZED_HALF_FACTOR if quantized_half else 1.0)
    _assert_rel(y, y64, out_tol, "output")
    _assert_rel(y_inf, y64, out_tol, "inference-mode output")
    if quantized_half:
        return  # gradients: the straight-through mask itself may flip (see TOLERANCE)
    for name in ("x", "weight", "bias"):
        if grads64[name] is None:
            assert grads[name] is None, f"grad {name} must be None"
        else:
            _assert_rel(grads[name], grads64[name], tol, f"grad {name}")
    if act_bits is None:
        assert grads["alpha"] is None or float(grads["alpha"].abs().max()) == 0.0
    else:
        scale = alpha_grad_scale(x, weight, grad, config, ALPHA, support if support is not None else ref_idx)
        _assert_rel(grads["alpha"].reshape(()), grads64["alpha"].reshape(()), tol, "grad act_alpha", scale=scale)



@pytest.mark.parametrize("weight_bits", [8, 4])
@pytest.mark.parametrize("shape,c_out,levels,keep,act_bits", [
    pytest.param((2, 8, 13, 21), 12, 2, 0.25, 8, id="J2-odd-q8"),
    pytest.param((1, 16, 9, 30), 20, 3, 0.5, 6, id="J3-odd-q6"),
    pytest.param((1, 7, 11, 37), 5, 1, 0.75, 8, id="J1-odd-cin-q8"),  # an unpaired channel, odd row and column counts
])
def test_integer_weight_codes_match_reference(backend_on, monkeypatch, shape, c_out, levels, keep, act_bits,
                                              weight_bits):
    """Inference with the weight's integer codes (the int8 GEMMs of the cpu and cuda backends;
    other backends ignore the hint) equals the float64 reference on the fake-quant weight."""
    backend, device, dtype = backend_on
    config, (x, weight, bias, grad) = _case(backend_on, shape, c_out, levels, keep, act_bits,
                                            seed=sum(shape) + weight_bits)
    w_alpha = torch.tensor(2.5, dtype=dtype, device=device)  # clips the largest weights: codes reach +-levels
    wq = weight_quant(weight.to(device=device, dtype=dtype), w_alpha, weight_bits)
    codes = weight_quant_codes(weight.to(device=device, dtype=dtype), w_alpha, weight_bits)
    assert codes is not None and codes.codes.dtype == torch.int8
    alpha = torch.tensor(ALPHA, dtype=dtype, device=device)
    with torch.inference_mode():
        got = backend.wcc_conv(x.to(device=device, dtype=dtype), wq, bias.to(device=device, dtype=dtype), alpha,
                               config, codes)
    support = backend.keep_indices(x.to(device=device, dtype=dtype), config).cpu() if dtype in HALF else None
    y64, _, _ = _reference64(x, wq.cpu().double(), bias, grad, config, True, support, monkeypatch)
    tol = TOLERANCE[dtype] * (QUANTIZED_HALF_FACTOR if dtype in HALF else 1.0)
    _assert_rel(got.cpu().double(), y64, tol, "output with integer weight codes")


def _skip_if_refused(backend, device, dtype) -> None:
    """Skip with the backend's own reason when it does not take this device/dtype at all."""
    refusal = _refusal(backend, device, dtype, WCCConfig(levels=1), (1, 2, 8, 8))
    if refusal is not None:
        pytest.skip(f"{backend.name} refuses this combination: {refusal}")


@pytest.mark.parametrize("levels", TOO_MANY_LEVELS, ids=lambda j: f"levels{j}-on-2x2")
def test_levels_beyond_the_input_are_a_value_error(backend_on, levels):
    backend, device, dtype = backend_on
    _skip_if_refused(backend, device, dtype)
    check_levels_rejected(backend, levels, device, dtype)


def test_levels_at_the_limit_run(backend_on):
    backend, device, dtype = backend_on
    _skip_if_refused(backend, device, dtype)
    check_levels_at_the_limit(backend, device, dtype)


def test_nonfinite_inputs_follow_the_shared_rule(backend_on):
    backend, device, dtype = backend_on
    _skip_if_refused(backend, device, dtype)
    check_nonfinite_rule(backend, device, dtype, TOLERANCE[dtype] * (QUANTIZED_HALF_FACTOR if dtype in HALF else 1.0))


def test_ties_go_to_the_lowest_position(backend_on):
    backend, device, dtype = backend_on
    _skip_if_refused(backend, device, dtype)
    check_ties_lowest_position(backend, device, dtype)
