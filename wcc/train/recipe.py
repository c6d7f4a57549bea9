"""Training recipes: the paper's hyper-parameters and small CPU ones, as frozen data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from wcc.layers import check_clip_handover

__all__ = ["Recipe", "CLASS_WEIGHTS", "paper_segmentation", "paper_depth", "cpu_segmentation", "cpu_depth"]

#: The class weighting schemes of the segmentation loss (``Recipe.class_weights``).
CLASS_WEIGHTS = ("none", "sqrt-median-frequency")


@dataclass(frozen=True)
class Recipe:
    """Everything a training stage needs besides the model and the data.

    ``steps``/``lr`` apply to the first (FP32) stage; ``finetune_steps``/``finetune_lr`` to every
    later stage of the staged recipe (each starts from the previous stage's checkpoint).
    ``crop`` is (H, W) of training crops; ``scale_range`` the random rescale before cropping.
    ``class_weights`` (segmentation): ``"none"`` is plain cross-entropy; ``"sqrt-median-frequency"``
    weighs class ``c`` by ``sqrt(median_f / f_c)``, ``f`` the classes' pixel frequencies in the
    training set (:func:`wcc.train.losses.class_weights`).
    ``finetune_clip_handover``: how each fine-tuned stage's converted layers start their activation
    clips from the parent stage's (:data:`wcc.layers.CLIP_HANDOVERS`): ``"carry"`` as in the paper's
    code (docs/design.md §3.5), ``"transform-gain"`` scaled by the Haar gain 2^J when a layer starts
    quantizing wavelet coefficients; what a fine-tune too short to learn the clip again needs (§4.2).
    """

    task: Literal["segmentation", "depth"]
    optimizer: Literal["sgd", "adam"]
    lr: float
    steps: int
    batch_size: int
    crop: tuple[int, int]
    finetune_lr: float
    finetune_steps: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_policy: Literal["poly", "constant"] = "poly"
    poly_power: float = 0.9
    backbone_lr_mult: float = 1.0  # VainF: the backbone learns at 0.1x the head's rate
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: bool = True
    amp: bool = True  # used on CUDA only
    checkpoint_every: int = 200
    num_workers: int = 0
    seed: int = 0
    class_weights: Literal["none", "sqrt-median-frequency"] = "none"
    finetune_clip_handover: Literal["carry", "transform-gain"] = "carry"

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "depth"):
            raise ValueError(f"task must be 'segmentation' or 'depth', got {self.task!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, got {self.class_weights!r}")
        if self.class_weights != "none" and self.task != "segmentation":
            raise ValueError(f"class_weights apply to segmentation only, got {self.class_weights!r} for {self.task}")
        check_clip_handover(self.finetune_clip_handover, "finetune_clip_handover")
        for name in ("lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("steps", "finetune_steps", "batch_size", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "scale_range", tuple(self.scale_range))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown Recipe field(s) {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)


def paper_segmentation() -> Recipe:
    """VainF DeepLabV3+ defaults for Cityscapes (docs/design.md §4): SGD 0.9, wd 1e-4, poly 0.9, 30k
    iterations, batch 16, lr 0.1, 768x768 crops, backbone at 0.1x. Fine-tuning stages: 1/10 of
    the schedule at 1/10 of the rate (the paper does not publish its fine-tuning schedule)."""
    return Recipe(task="segmentation", optimizer="sgd", lr=0.1, steps=30_000, batch_size=16, crop=(768, 768),
                  finetune_lr=0.01, finetune_steps=3_000, weight_decay=1e-4, backbone_lr_mult=0.1,
                  num_workers=8, checkpoint_every=1000)


def paper_depth() -> Recipe:
    """monodepth2 defaults (640x192, batch 12, Adam 1e-4, 20 epochs of the Eigen-Zhou split,
    about 40k steps). Trained supervised on annotated depth here (see wcc.train.losses)."""
    return Recipe(task="depth", optimizer="adam", lr=1e-4, steps=40_000, batch_size=12, crop=(192, 640),
                  finetune_lr=1e-5, finetune_steps=4_000, weight_decay=0.0, lr_policy="constant",
                  scale_range=(1.0, 1.0), color_jitter=True, num_workers=8, checkpoint_every=1000)


def cpu_segmentation(steps: int = 300, finetune_steps: int = 60, crop: tuple[int, int] = (128, 256),
                     batch_size: int = 8) -> Recipe:
    """A small recipe that trains DeepLabV3+ from scratch on SynthStreets on a CPU in minutes. Its
    fine-tunes are too short to learn a clip again, so WCC clips start at the Haar gain (§4.2)."""
    return Recipe(task="segmentation", optimizer="adam", lr=2e-3, steps=steps, batch_size=batch_size, crop=crop,
                  finetune_lr=3e-4, finetune_steps=finetune_steps, weight_decay=0.0, lr_policy="poly",
                  scale_range=(0.75, 1.5), checkpoint_every=50, finetune_clip_handover="transform-gain")


def cpu_depth(steps: int = 300, finetune_steps: int = 60, crop: tuple[int, int] = (96, 320),
              batch_size: int = 8) -> Recipe:
    """A small recipe that trains the depth network on SynthStreets on a CPU in minutes (clips as
    in :func:`cpu_segmentation`)."""
    return Recipe(task="depth", optimizer="adam", lr=2e-3, steps=steps, batch_size=batch_size, crop=crop,
                  finetune_lr=3e-4, finetune_steps=finetune_steps, weight_decay=0.0, lr_policy="poly",
                  scale_range=(1.0, 1.0), checkpoint_every=50, finetune_clip_handover="transform-gain")
