import pytest
import torch
from torch import nn

import wcc
from wcc import WCCConfig, WCCConv2d
from wcc.backends import (
    Backend,
    BackendUnavailableError,
    _registry,
    backend_status,
    get_backend,
    list_backends,
    register_backend,
    select_backend,
)


class _Refusing(Backend):
    name = "_refusing_test_backend"

    def unsupported_reason(self, x, config):
        return "refuses everything (test backend)"

    def wcc_conv(self, x, weight, bias, act_alpha, config):  # pragma: no cover - never chosen
        raise AssertionError("must not be called")

    def keep_indices(self, x, config):  # pragma: no cover
        raise AssertionError


@pytest.fixture
def refusing_backend():
    b = register_backend(_Refusing(), priority=1000)
    yield b
    _registry._REGISTRY.pop(b.name)


def test_reference_registered_and_last():
    assert "reference" in list_backends()
    assert list_backends()[-1] == "reference"
    st = {s.name: s for s in backend_status()}
    assert st["reference"].available


def test_auto_skips_refusing_backend(refusing_backend):
    x = torch.randn(1, 2, 8, 8)
    assert select_backend(x, WCCConfig()).name != refusing_backend.name


def test_error_lists_every_reason(refusing_backend, monkeypatch):
    for name in list_backends():
        if name != refusing_backend.name:
            monkeypatch.setattr(get_backend(name), "unsupported_reason",
                                lambda x, c, n=name: f"{n} disabled for this test")
    with pytest.raises(BackendUnavailableError) as exc:
        select_backend(torch.randn(1, 2, 8, 8), WCCConfig())
    msg = str(exc.value)
    assert "refuses everything" in msg and "reference: reference disabled for this test" in msg
    assert all(f"  {name}: " in msg for name in list_backends())


def test_env_override(monkeypatch, refusing_backend):
    monkeypatch.setenv("WCC_BACKEND", "reference")
    assert select_backend(torch.randn(1, 2, 8, 8), WCCConfig(backend="auto")).name == "reference"
    monkeypatch.setenv("WCC_BACKEND", refusing_backend.name)
    with pytest.raises(BackendUnavailableError, match="WCC_BACKEND=_refusing_test_backend"):
        select_backend(torch.randn(1, 2, 8, 8), WCCConfig())
    monkeypatch.setenv("WCC_BACKEND", "nope")
    with pytest.raises(BackendUnavailableError, match="unknown WCC backend 'nope'; registered backends"):
        select_backend(torch.randn(1, 2, 8, 8), WCCConfig())


def test_layer_uses_configured_backend(monkeypatch):
    calls = []
    ref = get_backend("reference")
    orig = ref.wcc_conv
    monkeypatch.setattr(ref, "wcc_conv", lambda *a: calls.append(1) or orig(*a))
    layer = WCCConv2d.from_conv2d(nn.Conv2d(3, 2, 1), WCCConfig(backend="reference"))
    layer(torch.randn(1, 3, 8, 8))
    assert calls == [1]


def test_info_runs(capsys):
    from wcc.info import main

    assert main() == 0
    out = capsys.readouterr().out
    assert "reference" in out and "torch" in out and wcc.__version__ in out
    cpu = get_backend("cpu")
    if cpu.unavailable_reason() is None:  # an available backend says how it will run
        assert cpu.details() in out and "GEMM:" in cpu.details()
