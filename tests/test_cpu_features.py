"""The one answer to "does this CPU have int8 dot products?", and the two places that follow it."""

from __future__ import annotations

import pytest
import torch

from wcc import cpu_features


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch):
    def set_cpu(*, vnni: bool, amx: bool, x86: bool = True) -> None:
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(cpu_features, "is_x86", lambda: x86)
        cpu_features.int8_dot_product_isa.cache_clear()

    yield set_cpu
    cpu_features.int8_dot_product_isa.cache_clear()


@pytest.mark.parametrize(("vnni", "amx", "want"), [(False, False, None), (True, False, "VNNI"), (True, True, "AMX")])
def test_isa_follows_torchs_probes(fake_cpu, vnni: bool, amx: bool, want: str | None) -> None:
    fake_cpu(vnni=vnni, amx=amx)
    assert cpu_features.int8_dot_product_isa() == want


@pytest.mark.parametrize(("vnni", "x86", "saturates"),
                         [(False, True, True), (True, True, False), (False, False, False)])
def test_ort_reduce_range_exactly_on_x86_without_vnni(fake_cpu, vnni: bool, x86: bool, saturates: bool) -> None:
    from bench.timing.runtimes import _u8s8_saturates

    fake_cpu(vnni=vnni, amx=False, x86=x86)
    assert _u8s8_saturates() is saturates


@pytest.mark.parametrize(("vnni", "off"), [(False, True), (True, False)])
def test_cpu_backend_int8_gemm_only_with_dot_products(fake_cpu, vnni: bool, off: bool) -> None:
    from wcc.backends.cpu import _int8_gemm_off

    fake_cpu(vnni=vnni, amx=False)
    reason = _int8_gemm_off.__wrapped__()  # uncached: the real answer stays cached for other tests
    if not hasattr(torch, "_int_mm"):
        pytest.skip("this torch build has no torch._int_mm")
    assert (reason is not None) is off
    if off:
        assert "neither VNNI nor AMX" in reason
