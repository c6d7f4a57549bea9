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
def test_cpu_backend_int8_gemm_only_with_dot_products(fake_cpu, monkeypatch, vnni: bool, off: bool) -> None:
    """Kernels that rely on torch._int_mm use it only where the CPU has int8 dot products."""
    from wcc.backends import cpu

    fake_cpu(vnni=vnni, amx=False)
    monkeypatch.setattr(cpu, "_int8_gemm_name", lambda: "torch._int_mm")
    reason = cpu._int8_gemm_off.__wrapped__()  # uncached: the real answer stays cached for other tests
    if not hasattr(torch, "_int_mm"):
        pytest.skip("this torch build has no torch._int_mm")
    assert (reason is not None) is off
    if off:
        assert "neither VNNI nor AMX" in reason


@pytest.mark.parametrize("vnni", [False, True])
def test_cpu_backend_own_int8_gemm_needs_no_dot_products(fake_cpu, monkeypatch, vnni: bool) -> None:
    """Kernels built with their own AVX2 integer GEMM use it whatever torch._int_mm does."""
    from wcc.backends import cpu

    fake_cpu(vnni=vnni, amx=False)
    monkeypatch.setattr(cpu, "_int8_gemm_name", lambda: "avx2-quads")
    assert cpu._int8_gemm_off.__wrapped__() is None


def test_compiled_kernels_pick_the_integer_gemm_for_this_cpu() -> None:
    """The build (-march=native) carries its own pair GEMM exactly on AVX2 CPUs without VNNI/AMX."""
    from wcc.backends import cpu

    name = cpu._int8_gemm_name()
    if name is None:
        pytest.skip("the cpu backend's kernels are not built here")
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    if not cpu_features.is_x86() or not flags:
        pytest.skip("needs an x86 Linux host to read the CPU's flags")
    words = set(flags.split())
    dot = bool(words & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert name == ("avx2-quads" if "avx2" in words and not dot else "torch._int_mm")
