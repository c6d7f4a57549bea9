import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._oracle import oracle_coeffs
from wcc.haar import haar2d, ihaar2d, pad_to_multiple, padded_size


def _padded_haar(x, levels):
    return haar2d(pad_to_multiple(x, levels), levels)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_gradcheck_odd_sizes(levels):
    x = torch.randn(2, 3, 2**levels + 3, 2**levels + 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _padded_haar(t, levels), (x,))
    y = torch.randn(1, 2, padded_size(5, levels), padded_size(7, levels), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ihaar2d(t, levels), (y,))
    assert torch.autograd.gradgradcheck(lambda t: haar2d(t, levels), (y,))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_matches_matrix_oracle(levels):
    x = torch.randn(2, 3, 11, 21, dtype=torch.float64)
    torch.testing.assert_close(_padded_haar(x, levels), oracle_coeffs(x, levels), rtol=1e-12, atol=1e-12)


def test_layout_one_level():
    # [[a, b], [c, d]] -> LL, H, V, D in the Mallat quadrants.
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = haar2d(x, 1)
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    expected = torch.tensor([[(a + b + c + d) / 2, (a - b + c - d) / 2], [(a + b - c - d) / 2, (a - b - c + d) / 2]])
    torch.testing.assert_close(y, expected)


def test_backward_saves_nothing_and_is_inverse():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    y = haar2d(x, 3)
    assert y.grad_fn.saved_tensors == ()  # the adjoint needs no activations
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, ihaar2d(g, 3))


@settings(max_examples=40, deadline=None)
@given(
    levels=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_reconstruction_and_energy(levels, h, w, batch, channels, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, h, w, generator=gen, dtype=dtype)
    xp = pad_to_multiple(x, levels)
    assert xp.shape[-2] % 2**levels == 0 and xp.shape[-1] % 2**levels == 0
    y = haar2d(xp, levels)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    # Perfect reconstruction (after cropping the padding away).
    torch.testing.assert_close(ihaar2d(y, levels)[..., :h, :w], x, rtol=tol, atol=tol)
    # Parseval: orthonormal => energy preserved.
    torch.testing.assert_close(y.square().sum(), x.square().sum(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_preserved(dtype):
    x = torch.randn(1, 2, 8, 16).to(dtype)
    y = haar2d(x, 2)
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(ihaar2d(y, 2).float(), x.float(), rtol=2e-2, atol=2e-2)


def test_non_contiguous_input():
    x = torch.randn(1, 8, 16, 3).permute(0, 3, 1, 2)  # (1, 3, 8, 16), non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(haar2d(x, 2), haar2d(x.contiguous(), 2))


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiples of 2\\*\\*levels"):
        haar2d(torch.randn(1, 1, 6, 8), 2)
    with pytest.raises(ValueError, match="levels must be >= 1"):
        haar2d(torch.randn(1, 1, 8, 8), 0)
    with pytest.raises(TypeError, match="floating dtype"):
        haar2d(torch.ones(1, 1, 8, 8, dtype=torch.int64), 1)


def test_pad_separate_height_and_width():
    x = torch.randn(1, 1, 5, 17)
    assert pad_to_multiple(x, 3).shape[-2:] == (8, 24)
