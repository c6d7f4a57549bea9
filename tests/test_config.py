import pytest

from wcc import QuantConfig, WCCConfig


def test_defaults_and_roundtrip():
    c = WCCConfig()
    assert (c.levels, c.keep_ratio, c.weight_bits, c.act_bits, c.backend) == (3, 0.25, 8, 8, "auto")
    d = c.to_dict()
    assert d["kind"] == "WCCConfig"
    assert WCCConfig.from_dict(d) == c
    q = QuantConfig(8, 4)
    assert QuantConfig.from_dict(q.to_dict()) == q and q.label == "8/4"
    assert QuantConfig(None, None).label == "FP32"


def test_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError, match="levels"):
        WCCConfig().levels = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keep_ratio": 0.0}, "keep_ratio=0.0 is outside \\(0, 1\\]"),
        ({"keep_ratio": 1.5}, "outside \\(0, 1\\]"),
        ({"keep_ratio": float("nan")}, "outside"),
        ({"levels": 0}, "levels=0 must be >= 1"),
        ({"weight_bits": 17}, "weight_bits=17 is outside 1..16"),
        ({"act_bits": 0}, "act_bits=0 is outside 1..16"),
        ({"act_bits": 1}, "signed and needs at least 2 bits"),
    ],
)
def test_validation_messages(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WCCConfig(**kwargs)


def test_type_errors():
    with pytest.raises(TypeError, match="levels must be an int"):
        WCCConfig(levels=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weight_bits"):
        WCCConfig(weight_bits="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend"):
        WCCConfig(backend="")


def test_from_dict_rejects_unknown_and_wrong_kind():
    with pytest.raises(ValueError, match="unknown WCCConfig field"):
        WCCConfig.from_dict({"levels": 3, "keep": 0.5})
    with pytest.raises(ValueError, match="kind 'QuantConfig'"):
        WCCConfig.from_dict(QuantConfig().to_dict())
