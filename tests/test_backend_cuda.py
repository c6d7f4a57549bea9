"""The ``cuda`` backend without a GPU: registration, dispatch, reasons, the compile-only build, and
the kernels' tile code run on the host.

Its numerics are checked by the conformance battery (tests/test_conformance.py) on a GPU:
``pytest --device cuda --dtype float16``. Here: the kernels must compile with nvcc alone for
sm_80 (A100), sm_87 (Jetson Orin) and sm_90 (H100), and each object must hold device code for its
architecture; and the kernels' per-tile code (Mallat mapping, transform, inverse, quantizer), built
for the host with ``-DWCC_HOST_SELFTEST``, must equal the reference bit for bit. Without nvcc
these tests are skipped with the reason -- except in CI (``CI`` set),
where the nox ``tests`` session installs nvcc from PyPI when the machine has none, so a missing
nvcc is a failure there.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wcc import WCCConfig, WCCConv2d
from wcc.backends import (
    BackendUnavailableError,
    cuda_build,
    get_backend,
    list_backends,
    select_backend,
)

CUDA = get_backend("cuda")
_REPO = Path(__file__).resolve().parents[1]
KERNEL_NAMES = ("haar_energy_kernel", "haar_gather_kernel", "topk_kernel", "gemm_wmma_kernel", "gemm_simt_kernel",
                "gemm_int8_kernel", "gemm_imma_kernel", "scatter_ihaar_kernel", "quantize_kernel",
                "quant_backward_kernel")


def _fake_cuda(*shape: int, dtype=torch.float16) -> torch.Tensor:
    """A CUDA tensor's metadata without a GPU (what the dispatch looks at)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(shape, dtype=dtype, device="cuda")


def test_registered_first_and_import_is_lazy():
    names = list_backends()
    assert names.index("cuda") < names.index("triton") < names.index("reference")
    code = ("import sys, wcc, wcc.backends as b; assert 'cuda' in b.list_backends(); "
            "assert 'wcc.backends.cuda_build' not in sys.modules, 'import wcc loaded the build machinery'; "
            "assert 'torch.utils.cpp_extension' not in sys.modules, 'import wcc loaded cpp_extension'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_REPO)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA: the reason differs")
def test_unavailable_reason_on_a_cpu_only_torch():
    reason = CUDA.unavailable_reason()
    assert reason is not None and "CPU-only build" in reason and "CUDA build of torch" in reason


def test_build_can_be_disabled(monkeypatch):
    monkeypatch.setattr(cuda_build, "_state", {})
    monkeypatch.setenv("WCC_CUDA_BUILD", "0")
    assert CUDA.unavailable_reason() == "disabled by WCC_CUDA_BUILD=0"


@pytest.mark.parametrize("dtype,levels,expected", [
    (torch.float64, 2, "dtype torch.float64 is not supported"),
    (torch.float16, 4, "levels=4 is not supported by the cuda backend"),
])
def test_unsupported_reasons(dtype, levels, expected):
    assert expected in CUDA.unsupported_reason(_fake_cuda(1, 4, 16, 16, dtype=dtype), WCCConfig(levels=levels))
    assert CUDA.unsupported_reason(_fake_cuda(1, 4, 16, 16), WCCConfig(levels=3)) is None
    assert "CUDA tensors only" in CUDA.unsupported_reason(torch.zeros(1, 4, 16, 16), WCCConfig())


def test_auto_order_on_cuda_tensors(monkeypatch):
    """cuda, then triton, then reference; the cpu backend refuses CUDA tensors."""
    x = _fake_cuda(1, 4, 16, 16)
    triton = get_backend("triton")
    monkeypatch.setattr(CUDA, "unavailable_reason", lambda: None)
    monkeypatch.setattr(triton, "unavailable_reason", lambda: None)
    monkeypatch.delenv("WCC_BACKEND", raising=False)
    assert select_backend(x, WCCConfig()).name == "cuda"
    monkeypatch.setattr(CUDA, "unavailable_reason", lambda: "no GPU (test)")
    assert select_backend(x, WCCConfig()).name == "triton"
    monkeypatch.setattr(triton, "unavailable_reason", lambda: "no triton (test)")
    assert select_backend(x, WCCConfig()).name == "reference"
    monkeypatch.setattr(CUDA, "unavailable_reason", lambda: None)
    assert select_backend(x, WCCConfig(levels=4)).name == "reference"  # cuda refuses J > 3


def test_forced_cuda_backend_explains_itself(monkeypatch):
    monkeypatch.setenv("WCC_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="WCC backend 'cuda' .* cannot run this call"):
        select_backend(torch.zeros(1, 4, 8, 8), WCCConfig())


def test_direct_call_without_kernels_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(CUDA, "unavailable_reason", lambda: "no GPU (test)")
    with pytest.raises(BackendUnavailableError, match="'cuda' is unavailable: no GPU"):
        CUDA.wcc_conv(torch.zeros(1, 4, 8, 8), torch.zeros(2, 4), None, torch.tensor(8.0), WCCConfig())


def test_info_shows_cuda_state_and_auto_chain(capsys):
    from wcc.info import main

    assert main() == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("cuda ") and "priority" in ln)
    reason = CUDA.unavailable_reason()
    assert ("available" in line) if reason is None else (reason in line)
    chain = out.split("auto on a cuda float16 input")[1].split("auto on a cpu")[0]
    assert "cuda" in chain and "triton" in chain and "-> " in chain
    if reason is not None:
        assert f"cuda       refuses: {reason}" in chain


def test_kernel_source_needs_no_torch():
    text = cuda_build.KERNELS.read_text()
    includes = [ln for ln in text.splitlines() if ln.startswith("#include")]
    assert includes and not any("torch" in ln or "ATen" in ln or "c10" in ln for ln in includes), includes


def test_package_data_carries_the_cuda_sources():
    import tomllib

    data = tomllib.loads((_REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wcc"]
    for src in (cuda_build.KERNELS, cuda_build.BINDING, cuda_build.KERNELS.with_suffix(".h")):
        assert any(Path(src.relative_to(_REPO / "wcc")).match(pattern) for pattern in data), src


def test_bad_arch_is_refused_before_compiling(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wcc.backends.cuda_build", "--compile-only", "--arch", "eighty",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=_REPO, check=False)
    assert proc.returncode == 1 and "bad architecture 'eighty'" in proc.stderr


def _device_archs(obj: Path) -> set[int]:
    """SM numbers of the CUDA ELF images (EM_CUDA = 190) embedded in a host object's fatbinary."""
    blob = obj.read_bytes()
    archs = set()
    i = blob.find(b"\x7fELF", 1)
    while i != -1:
        if struct.unpack_from("<H", blob, i + 18)[0] == 190:
            flags = struct.unpack_from("<I", blob, i + 48)[0]
            # The SM sits in bits 8-15 of e_flags in CUDA 13's ELF ABI, in bits 0-7 before.
            archs.add((flags >> 8) & 0xFF if flags & 0xFF in (0x04, 0x05) else flags & 0xFF)
        i = blob.find(b"\x7fELF", i + 1)
    return archs


def test_compile_only_for_sm80_sm87_sm90(tmp_path):
    """The CI acceptance check: the kernels compile with nvcc alone, one object per architecture."""
    _require_nvcc()
    proc = subprocess.run([sys.executable, "-m", "wcc.backends.cuda_build", "--compile-only", "--arch", "80,87,90",
                           "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, cwd=_REPO, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for arch in (80, 87, 90):
        obj = tmp_path / f"wcc_cuda_kernels.sm_{arch}.o"
        assert obj.is_file() and f"sm_{arch}" in proc.stdout
        blob = obj.read_bytes()
        assert blob[:4] == b"\x7fELF"
        missing = [name for name in KERNEL_NAMES if name.encode() not in blob]
        assert not missing, f"sm_{arch}: kernels missing from the object: {missing}"
        assert _device_archs(obj) == {arch}, f"{obj.name} holds device code for {_device_archs(obj)}"



def _require_nvcc() -> str:
    nvcc = cuda_build.find_nvcc()
    if nvcc is None:
        message = "nvcc not found (pip install 'wcc-bench[nvcc]', or set CUDA_HOME)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: in CI the nox tests session installs it")
        pytest.skip(message)
    return nvcc


@pytest.fixture(scope="module")
def host_selftest(tmp_path_factory):
    """The kernels' tile code (Mallat mapping, transform, inverse, quantizer) built for the host:
    ``wcc_cuda_kernels.cu`` with -DWCC_HOST_SELFTEST as a shared library, loaded with ctypes."""
    import ctypes

    nvcc = _require_nvcc()
    lib_path = tmp_path_factory.mktemp("cuda-selftest") / "wcc_cuda_selftest.so"
    cmd = [nvcc, *cuda_build.NVCC_FLAGS, "-DWCC_HOST_SELFTEST", "-shared", "-Xcompiler", "-fPIC",
           "-gencode=arch=compute_80,code=sm_80", "-I", str(cuda_build.KERNELS.parent), str(cuda_build.KERNELS),
           "-o", str(lib_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lib = ctypes.CDLL(str(lib_path))
    fp = ctypes.POINTER(ctypes.c_float)
    lib.wcc_host_selftest.argtypes = [fp, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                      ctypes.c_float, fp, fp, fp, fp]
    lib.wcc_host_selftest.restype = ctypes.c_int
    return lib, fp


@pytest.mark.parametrize("c,h,w,levels", [(3, 13, 21, 1), (4, 16, 16, 2), (2, 9, 30, 3), (2, 5, 7, 3), (1, 37, 50, 3)])
def test_kernel_tile_code_matches_reference_on_the_host(host_selftest, c, h, w, levels):
    """The per-tile transform of the kernels, written to its Mallat positions, is the reference
    transform bit for bit (float32), its inverse is the reference inverse bit for bit, the
    energy is the channel sum of squares and the quantizer is the reference quantizer exactly."""
    import ctypes

    from wcc.haar import haar2d, ihaar2d, pad_to_multiple, padded_size
    from wcc.quant import signed_act_quant

    lib, fp = host_selftest
    gen = torch.Generator().manual_seed(c * 100 + h + w + levels)
    x = torch.randn(c, h, w, generator=gen)
    p = padded_size(h, levels) * padded_size(w, levels)
    coeffs, score, recon, quant = torch.empty(c, p), torch.empty(p), torch.empty(c, h, w), torch.empty(c, p)
    alpha, bits = 1.5, 8  # a clip inside the coefficients' range: both clipped and rounded values
    ptr = [ctypes.cast(t.data_ptr(), fp) for t in (x, coeffs, score, recon, quant)]
    assert lib.wcc_host_selftest(ptr[0], c, h, w, levels, alpha, float(2 ** (bits - 1) - 1), *ptr[1:]) == 0
    ref = haar2d(pad_to_multiple(x, levels), levels)
    assert torch.equal(coeffs, ref.reshape(c, p)), "coefficients or their Mallat positions differ"
    assert torch.equal(recon, ihaar2d(ref, levels)[..., :h, :w]), "inverse transform differs"
    torch.testing.assert_close(score, ref.reshape(c, p).square().sum(0), rtol=1e-6, atol=0)
    assert torch.equal(quant, signed_act_quant(ref.reshape(c, p), torch.tensor(alpha), bits))


# --------------------------------------------------------------------------- on a GPU (--run-gpu)


@pytest.fixture
def built(monkeypatch):
    monkeypatch.delenv("WCC_BACKEND", raising=False)
    reason = CUDA.unavailable_reason()
    if reason is not None:
        pytest.skip(f"cuda backend unavailable: {reason}")


@pytest.mark.gpu
def test_gpu_layer_under_autocast(built, monkeypatch):
    layer = WCCConv2d(32, 48, config=WCCConfig(levels=3)).cuda()
    x = torch.randn(2, 32, 45, 61, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        assert select_backend(x, layer.config).name == "cuda"
        y = layer(x)
        monkeypatch.setenv("WCC_BACKEND", "reference")
        y_ref = layer(x)
    assert y.dtype == y_ref.dtype == torch.float16
    err = float((y.double() - y_ref.double()).abs().max() / y_ref.double().abs().max())
    assert err <= 2e-2, err
    y.float().square().mean().backward()
    assert x.grad is not None and layer.weight.grad is not None and layer.act_alpha.grad is not None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_quantized_inference_takes_the_int8_path(built, monkeypatch, dtype):
    """A quantized layer in inference hands its integer weight to the cuda backend (IMMA GEMM);
    the output equals the reference layer's to the dtype's rounding."""
    layer = WCCConv2d(64, 96, config=WCCConfig(levels=2, keep_ratio=0.25, weight_bits=8, act_bits=8))
    layer = layer.to(device="cuda", dtype=dtype).eval()
    x = torch.randn(2, 64, 37, 50, device="cuda", dtype=dtype)
    calls = []
    original = torch.ops.wcc_cuda.forward
    monkeypatch.setattr(torch.ops.wcc_cuda, "forward", lambda *a: calls.append(a[8] is not None) or original(*a),
                        raising=False)
    with torch.inference_mode():
        y = layer(x)
        monkeypatch.setenv("WCC_BACKEND", "reference")
        y_ref = layer(x)
    assert calls == [True], "the integer weight codes did not reach the cuda backend"
    err = float((y.double() - y_ref.double()).abs().max() / y_ref.double().abs().max())
    assert err <= (1e-5 if dtype == torch.float32 else 1.2e-2), err
