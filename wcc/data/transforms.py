"""Paired image/target transforms for training and evaluation, in plain torch (no torchvision).

Every transform is called as ``transform(image, target, generator=None) -> (image, target)``:

- ``image``: float tensor ``(3, H, W)``; values in [0, 1] until :class:`Normalize` runs.
- ``target``: ``(H, W)``; int64 Cityscapes trainIds (255 = ignore) or float32 depth in metres
  (0 = no ground truth). Targets are only ever resampled with nearest neighbour, which keeps
  label ids valid and sparse depth honest (no blending of valid depths with the 0 "no data").
- ``generator``: the random source. ``None`` uses torch's global RNG, which is what a
  ``DataLoader`` seeds per worker (deterministic given ``DataLoader(generator=...)``); pass a
  ``torch.Generator`` to make a single call reproducible on its own.

:func:`train_transform` builds the VainF-style recipe (random scale 0.5-2.0, random crop with
ignore padding, horizontal flip, colour jitter, ImageNet normalisation); :func:`eval_transform`
is deterministic (optional resize, then normalisation).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PairTransform",
    "Compose",
    "Normalize",
    "Resize",
    "RandomScale",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ColorJitter",
    "train_transform",
    "eval_transform",
    "resize_image",
    "resize_target",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor]


class PairTransform(Protocol):
    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair: ...


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _check_pair(image: torch.Tensor, target: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if target.dim() != 2 or target.shape != image.shape[1:]:
        raise ValueError(f"target must be (H, W) = {tuple(image.shape[1:])}, got {tuple(target.shape)}")


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    return h, w


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(3, H, W)`` (antialiased when shrinking, like PIL)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def resize_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``(H, W)`` (pixel-centre aligned, like PIL's NEAREST)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    # float32 holds every label id and every depth value exactly, so the round trip is lossless.
    out = F.interpolate(target[None, None].to(torch.float32), size=size, mode="nearest-exact")[0, 0]
    return out.to(target.dtype)


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[PairTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        for t in self.transforms:
            image, target = t(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class Normalize:
    """``(image - mean) / std`` per channel; the target passes through."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean/std need 3 values each and std > 0, got {mean}, {std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
        return (image - mean) / std, target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Resize:
    """Resize to a fixed ``(H, W)``; the target too unless ``resize_target=False``.

    Depth evaluation keeps the ground truth at native resolution (the caller upsamples the
    prediction to it, as monodepth2 does), hence the switch.
    """

    def __init__(self, size: int | Sequence[int], resize_target: bool = True) -> None:
        self.size = _size_pair(size)
        self.resize_target = resize_target

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        image = resize_image(image, self.size)
        if self.resize_target:
            target = resize_target(target, self.size)
        return image, target

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, resize_target={self.resize_target})"


class RandomScale:
    """Resize image and target by one factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        _check_pair(image, target)
        s = _uniform(*self.scale_range, generator)
        h, w = image.shape[1:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return resize_image(image, size), resize_target(target, size)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range})"


class RandomCrop:
    """Random ``(H, W)`` crop; smaller inputs are first padded at the bottom/right.

    Padding is 0 for the image and ``target_fill`` for the target: 255 (ignore) for labels,
    0 (no ground truth) for depth, so padded pixels never count in the loss.
    """

    def __init__(self, size: int | Sequence[int], target_fill: float = 255) -> None:
        self.size = _size_pair(size)
        self.target_fill = target_fill

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        _check_pair(image, target)
        ch, cw = self.size
        h, w = image.shape[1:]
        ph, pw = max(0, ch - h), max(0, cw - w)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            target = F.pad(target, (0, pw, 0, ph), value=self.target_fill)
            h, w = image.shape[1:]
        i = int(torch.randint(0, h - ch + 1, (), generator=generator))
        j = int(torch.randint(0, w - cw + 1, (), generator=generator))
        return image[:, i:i + ch, j:j + cw], target[i:i + ch, j:j + cw]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, target_fill={self.target_fill})"


class RandomHorizontalFlip:
    """Mirror image and target together with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        if float(torch.rand((), generator=generator)) < self.p:
            return image.flip(-1), target.flip(-1)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    # ITU-R 601 luma, the weights torchvision and PIL use for "L".
    r, g, b = image[0], image[1], image[2]
    return 0.299 * r + 0.587 * g + 0.114 * b


class ColorJitter:
    """Random brightness, contrast and saturation (in that order) on a [0, 1] image.

    Each factor is drawn uniformly from ``[max(0, 1 - x), 1 + x]``; ``x = 0`` disables it.
    Brightness scales the image, contrast blends with the mean grey level, saturation blends
    with the per-pixel grey image (the torchvision definitions, without hue).
    """

    def __init__(self, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5) -> None:
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, image: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> Pair:
        # Draw all three factors every call so the random stream does not depend on the values.
        fb = _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, generator)
        fc = _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, generator)
        fs = _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, generator)
        image = (image * fb).clamp(0, 1)
        mean = _grayscale(image).mean()
        image = (mean + (image - mean) * fc).clamp(0, 1)
        gray = _grayscale(image)[None]
        image = (gray + (image - gray) * fs).clamp(0, 1)
        return image, target

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")


def train_transform(
    crop_size: int | Sequence[int],
    *,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    target_fill: float = 255,
    flip: bool = True,
    jitter: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Training recipe: [random scale] -> random crop -> [flip] -> [colour jitter] -> normalise.

    Defaults follow VainF's Cityscapes recipe (768x768 crops of 0.5-2.0 rescaled images,
    jitter 0.5). For depth use ``target_fill=0`` and usually ``scale_range=None`` (rescaling
    would change the apparent focal length without changing the metric depth).
    """
    steps: list[PairTransform] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    steps.append(RandomCrop(crop_size, target_fill=target_fill))
    if flip:
        steps.append(RandomHorizontalFlip())
    if jitter:
        steps.append(ColorJitter(jitter, jitter, jitter))
    steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transform(
    size: int | Sequence[int] | None = None,
    *,
    resize_target: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Deterministic evaluation: optional resize to ``size`` (target too unless
    ``resize_target=False``), then normalisation."""
    steps: list[PairTransform] = []
    if size is not None:
        steps.append(Resize(size, resize_target=resize_target))
    steps.append(Normalize(mean, std))
    return Compose(steps)
