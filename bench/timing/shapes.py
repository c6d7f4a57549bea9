"""Named shape sets for layer timing: the 1x1 convolutions of real models, plus a few extras.

A shape is ``(batch, C_in, C_out, H x W)`` of a 1x1 stride-1 convolution, the layers WCC
replaces. Model sets are *derived*, not typed in: the model is built, run once on the meta
device at the stated resolution (:func:`wcc.accounting.layer_costs`, no compute), and the input
shapes of its WCC candidates (:func:`wcc.convert.is_wcc_candidate`) are collected and
deduplicated, in model order. So a change to a model changes its benchmark shapes with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch loads with the functions that need it
    import torch

__all__ = ["ConvShape", "EXTRA_SHAPES", "SHAPE_SETS", "shape_set", "model_pointwise_shapes", "parse_shape"]


@dataclass(frozen=True)
class ConvShape:
    """One 1x1 conv case: input ``(batch, c_in, height, width)``, ``c_out`` output channels."""

    batch: int
    c_in: int
    c_out: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ConvShape.{name} must be a positive int, got {v!r}")

    @property
    def label(self) -> str:
        """``"1x256x256@128x256"``: batch x C_in x C_out @ H x W."""
        return f"{self.batch}x{self.c_in}x{self.c_out}@{self.height}x{self.width}"

    @property
    def macs(self) -> int:
        return self.batch * self.c_in * self.c_out * self.height * self.width

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_shape(text: str) -> ConvShape:
    """Inverse of :attr:`ConvShape.label` (``"1x256x256@128x256"``)."""
    try:
        left, right = text.split("@")
        batch, c_in, c_out = (int(v) for v in left.split("x"))
        height, width = (int(v) for v in right.split("x"))
    except ValueError:
        raise ValueError(f"bad shape {text!r}; expected BATCHxC_INxC_OUT@HxW, e.g. 1x256x256@128x256") from None
    return ConvShape(batch, c_in, c_out, height, width)


#: The extra shapes (docs/design.md §7): a square-ish mid layer, a wide expansion at low
#: resolution (compute bound) and a narrow projection at high resolution (memory bound).
EXTRA_SHAPES: tuple[ConvShape, ...] = (
    ConvShape(1, 256, 256, 128, 256),
    ConvShape(1, 320, 1280, 64, 128),
    ConvShape(1, 144, 24, 256, 512),
)


def model_pointwise_shapes(model: torch.nn.Module, input_shape: tuple[int, int, int, int]) -> list[ConvShape]:
    """Distinct input shapes of ``model``'s WCC candidates (1x1, stride 1, groups 1) at
    ``input_shape``, in the order the model runs them."""
    from wcc.accounting import layer_costs
    from wcc.convert import is_wcc_candidate

    modules = dict(model.named_modules())
    out: list[ConvShape] = []
    seen: set[ConvShape] = set()
    for cost in layer_costs(model, input_shape):
        if not is_wcc_candidate(modules[cost.name]):
            continue
        n, c_in, h, w = cost.in_shape
        shape = ConvShape(n, c_in, cost.out_shape[1], h, w)
        if shape not in seen:
            seen.add(shape)
            out.append(shape)
    return out


def _deeplab_1024x2048() -> list[ConvShape]:
    from wcc.models import deeplabv3plus_mobilenetv2

    return model_pointwise_shapes(deeplabv3plus_mobilenetv2(), (1, 3, 1024, 2048))


def _depth_192x640() -> list[ConvShape]:
    from wcc.models import depth_mobilenetv2

    return model_pointwise_shapes(depth_mobilenetv2(), (1, 3, 192, 640))


#: name -> builder. Model sets are named after where they come from (docs/design.md §7).
SHAPE_SETS: dict[str, Callable[[], list[ConvShape]]] = {
    "deeplabv3plus-mobilenetv2@1024x2048": _deeplab_1024x2048,
    "depth-mobilenetv2@192x640": _depth_192x640,
    "extra": lambda: list(EXTRA_SHAPES),
}


def shape_set(name: str) -> list[ConvShape]:
    """The shapes of the set ``name`` (see :data:`SHAPE_SETS`)."""
    try:
        builder = SHAPE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown shape set {name!r}; known: {', '.join(SHAPE_SETS)}") from None
    return builder()
