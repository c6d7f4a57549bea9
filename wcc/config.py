"""Frozen, validated configuration objects.

Every result file embeds the exact config that produced it, so configs are plain data:
frozen dataclasses with ``to_dict``/``from_dict`` and validation on construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

_T = TypeVar("_T", bound="_ConfigBase")

MAX_BITS = 16


def _check_bits(name: str, value: int | None, low: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in 1..{MAX_BITS} or None (no quantization), got {value!r}")
    if not 1 <= value <= MAX_BITS:
        raise ValueError(
            f"{name}={value} is outside 1..{MAX_BITS}; use None for full precision"
        )
    if value < low:
        # Signed quantizers spend one bit on the sign: 1 bit would leave no magnitude levels.
        raise ValueError(f"{name}={value}: this quantizer is signed and needs at least {low} bits")


class _ConfigBase:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field, with a ``kind`` tag."""
        out = {"kind": type(self).__name__}
        out.update(dataclasses.asdict(self))  # type: ignore[call-overload]
        return out

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any]) -> _T:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be silently lost)."""
        data = dict(data)
        kind = data.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"cannot build {cls.__name__} from a dict of kind {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class QuantConfig(_ConfigBase):
    """Plain quantization (no wavelet step): every converted conv becomes a QuantConv2d.

    ``weight_bits``/``act_bits``: 1..16, or None for float.
    """

    weight_bits: int | None = 8
    act_bits: int | None = 8

    def __post_init__(self) -> None:
        _check_bits("weight_bits", self.weight_bits, low=2)
        _check_bits("act_bits", self.act_bits)

    @property
    def label(self) -> str:
        """Precision label as in the paper's tables, weight/activation bits (``"8/8"``)."""
        return _precision_label(self.weight_bits, self.act_bits)


@dataclass(frozen=True)
class WCCConfig(_ConfigBase):
    """Wavelet Compressed Convolution settings.

    Args:
        levels: number of Haar levels J (>= 1). Inputs are zero-padded to multiples of 2**J.
        keep_ratio: fraction of wavelet positions kept per image, in (0, 1].
        weight_bits: weight quantization bits (1..16) or None for float.
        act_bits: bits of the kept wavelet coefficients (1..16) or None for float.
        backend: ``"auto"`` or the name of a registered backend (see ``wcc.backends``).
    """

    levels: int = 3
    keep_ratio: float = 0.25
    weight_bits: int | None = 8
    act_bits: int | None = 8
    backend: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int):
            raise TypeError(f"levels must be an int >= 1, got {self.levels!r}")
        if self.levels < 1:
            raise ValueError(f"levels={self.levels} must be >= 1 (J=0 would be no wavelet transform)")
        if isinstance(self.keep_ratio, bool) or not isinstance(self.keep_ratio, (int, float)):
            raise TypeError(f"keep_ratio must be a number in (0, 1], got {self.keep_ratio!r}")
        if not (math.isfinite(self.keep_ratio) and 0.0 < self.keep_ratio <= 1.0):
            raise ValueError(f"keep_ratio={self.keep_ratio} is outside (0, 1]; e.g. 0.25 keeps 25% of positions")
        object.__setattr__(self, "keep_ratio", float(self.keep_ratio))
        _check_bits("weight_bits", self.weight_bits, low=2)
        _check_bits("act_bits", self.act_bits, low=2)
        if not isinstance(self.backend, str) or not self.backend:
            raise TypeError(f"backend must be 'auto' or a backend name, got {self.backend!r}")

    @property
    def label(self) -> str:
        return _precision_label(self.weight_bits, self.act_bits)

    def replace(self, **changes: Any) -> "WCCConfig":
        return dataclasses.replace(self, **changes)


def _precision_label(weight_bits: int | None, act_bits: int | None) -> str:
    if weight_bits is None and act_bits is None:
        return "FP32"
    w = "FP" if weight_bits is None else str(weight_bits)
    a = "FP" if act_bits is None else str(act_bits)
    return f"{w}/{a}"
