"""Model surgery (docs/design.md §3.5): swap convolutions for WCC / quantized layers.

With a :class:`WCCConfig`, every 1x1 stride-1 groups-1 conv becomes a :class:`WCCConv2d` and
every other conv a :class:`QuantConv2d` at the config's bits. With a :class:`QuantConfig`,
every conv becomes a QuantConv2d. Layers named in ``keep_fp`` (qualified names or fnmatch
patterns) and layers the ``layer_filter`` hook rejects stay untouched.

Already-quantized layers are accepted as sources and their learned clip values start the new
layers' (``clip_handover``: carried as they are, or scaled by the Haar transform's gain), which is
what the staged recipe (FP32 -> 8/8 -> 8/6 ... and 8/8 -> WCC 50% -> 25% ...) needs.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from torch import nn

from wcc.config import QuantConfig, WCCConfig
from wcc.layers import QuantConv2d, WCCConv2d, check_clip_handover
from wcc.rules import wcc_incompatibility

__all__ = ["convert", "ConversionReport", "ConversionEntry", "is_wcc_candidate"]

LayerFilter = Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class ConversionEntry:
    name: str
    source: str  # class name before
    target: str  # class name after ("Conv2d" when kept)
    shape: str  # "C_in->C_out kxk s<stride> g<groups>"
    reason: str  # why it became what it became


@dataclass
class ConversionReport:
    """What became what; ``counts()`` gives e.g. ``{"WCCConv2d": 41, "QuantConv2d": 21, "Conv2d": 2}``."""

    entries: list[ConversionEntry] = field(default_factory=list)
    config: dict | None = None

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.target for e in self.entries))

    def names(self, target: str) -> list[str]:
        return [e.name for e in self.entries if e.target == target]

    def to_dict(self) -> dict:
        return {"config": self.config, "counts": self.counts(), "layers": [e.__dict__ for e in self.entries]}

    def __str__(self) -> str:
        lines = [f"{e.name:<50} {e.source:>12} -> {e.target:<12} {e.shape:<24} {e.reason}" for e in self.entries]
        summary = ", ".join(f"{v} {k}" for k, v in sorted(self.counts().items()))
        return "\n".join(lines + [f"total: {summary}"])


def _describe(m: nn.Conv2d | WCCConv2d) -> str:
    if isinstance(m, WCCConv2d):
        return f"{m.in_channels}->{m.out_channels} 1x1 s1 g1"
    k = "x".join(map(str, m.kernel_size))
    return f"{m.in_channels}->{m.out_channels} {k} s{m.stride[0]} g{m.groups}"


def is_wcc_candidate(m: nn.Module) -> bool:
    """True for modules WCC replaces exactly: a WCC layer, or a conv that
    :func:`wcc.rules.wcc_incompatibility` accepts (1x1, stride 1, groups 1, no padding)."""
    return isinstance(m, WCCConv2d) or (isinstance(m, nn.Conv2d) and wcc_incompatibility(m) is None)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def convert(
    model: nn.Module,
    config: WCCConfig | QuantConfig,
    keep_fp: Iterable[str] = (),
    layer_filter: LayerFilter | None = None,
    clip_handover: str = "carry",
) -> ConversionReport:
    """Convert ``model`` in place and report what became what.

    Args:
        model: any module tree.
        config: WCCConfig (1x1 -> WCC, rest quantized) or QuantConfig (every conv quantized).
        keep_fp: qualified module names or fnmatch patterns (``"classifier.*"``) left untouched.
        layer_filter: ``f(name, module) -> bool``; layers for which it returns False are left
            untouched too.
        clip_handover: how an already-quantized layer's activation clip starts its replacement's,
            one of :data:`wcc.layers.CLIP_HANDOVERS`: ``"carry"`` (docs/design.md §3.5, the
            official procedure) or ``"transform-gain"`` (scaled by 2^J when the quantizer moves
            from pixels to J-level Haar coefficients, and back).
    """
    if not isinstance(config, (WCCConfig, QuantConfig)):
        raise TypeError(f"config must be a WCCConfig or QuantConfig, got {type(config).__name__}")
    check_clip_handover(clip_handover)  # before any layer is replaced
    keep_fp = [keep_fp] if isinstance(keep_fp, str) else list(keep_fp)
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, WCCConv2d))]
    unknown = [p for p in keep_fp if not any(_matches(n, [p]) for n, _ in named)]
    if unknown:
        raise ValueError(f"keep_fp entries match no convolution: {unknown}; conv names look like {named[0][0]!r}"
                         if named else f"keep_fp entries {unknown} given, but the model has no convolutions")
    report = ConversionReport(config=config.to_dict())
    for name, module in named:
        source = type(module).__name__
        if _matches(name, keep_fp):
            report.entries.append(ConversionEntry(name, source, source, _describe(module), "keep_fp"))
            continue
        if layer_filter is not None and not layer_filter(name, module):
            report.entries.append(ConversionEntry(name, source, source, _describe(module), "layer_filter"))
            continue
        if isinstance(config, WCCConfig) and is_wcc_candidate(module):
            new: nn.Module = WCCConv2d.from_conv2d(module, config, clip_handover)
            reason = "1x1 stride 1 groups 1"
        else:
            new = QuantConv2d.from_conv2d(module, weight_bits=config.weight_bits, act_bits=config.act_bits,
                                          clip_handover=clip_handover)
            reason = "plain quantization" if isinstance(config, QuantConfig) else "not a pointwise conv"
        new.train(module.training)
        _set_submodule(model, name, new)
        report.entries.append(ConversionEntry(name, source, type(new).__name__, _describe(module), reason))
    return report


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
