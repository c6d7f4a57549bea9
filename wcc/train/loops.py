"""Training and evaluation loops (CPU and CUDA; AMP on CUDA), resumable mid-stage.

Determinism: batch ``s`` of a run is a pure function of ``(seed, s)``: which samples (a seeded
permutation per epoch) and how they are augmented (a generator seeded per step). So a run that
resumes from a checkpoint at step ``s`` sees exactly the batches an uninterrupted run would
have seen, and CPU runs are reproducible bit for bit.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wcc.train._progress import progress_bar
from wcc.train.checkpoint import save_checkpoint
from wcc.train.losses import segmentation_loss, silog_loss
from wcc.train.recipe import Recipe

__all__ = ["train_steps", "evaluate_segmentation", "evaluate_depth", "StepBatches", "TrainingDiverged",
           "loader_workers"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which step."""


class StepBatches(Dataset):
    """Item ``s`` is the whole (augmented) batch of training step ``s``.

    ``base`` yields raw ``(image [0,1] (3,H,W), target)`` pairs; ``transform(image, target,
    generator)`` augments and normalises (see :func:`wcc.data.transforms.train_transform`).
    """

    def __init__(self, base: Dataset, transform: Callable, batch_size: int, seed: int) -> None:
        self.base, self.transform, self.batch_size, self.seed = base, transform, batch_size, seed
        self.n = len(base)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("the training set is empty")
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch cached
        return self._perms[epoch]

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler bounds it

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * step + 1)
        images, targets = [], []
        for j in range(self.batch_size):
            epoch, pos = divmod(step * self.batch_size + j, self.n)
            image, target = self.base[int(self._perm(epoch)[pos])]
            image, target = self.transform(image, target, generator=gen)
            images.append(image)
            targets.append(target)
        return torch.stack(images), torch.stack(targets)



_WORKER_BYTES = 2 << 30  # resident memory one DataLoader worker may reach on full-size images


def loader_workers(requested: int) -> int:
    """DataLoader workers for this machine: at most ``requested``, one core left for the main
    process, and no more than the available memory holds (about 2 GiB each). A recipe's 8
    workers on a 2-core laptop would otherwise thrash, and run out of memory."""
    if requested <= 0:
        return 0
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(requested, max(0, cpus - 1))
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        workers = min(workers, max(0, avail // _WORKER_BYTES - 1))
    except (OSError, StopIteration, ValueError):
        pass  # not Linux: the core count alone decides
    return workers


def _param_groups(model: nn.Module, lr: float, backbone_mult: float) -> list[dict[str, Any]]:
    backbone: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": lr, "base_lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_mult, "base_lr": lr * backbone_mult})
    return groups


def _make_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    groups = _param_groups(model, lr, recipe.backbone_lr_mult)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(groups, lr=lr, weight_decay=recipe.weight_decay)


def _set_lr(opt: torch.optim.Optimizer, recipe: Recipe, step: int, total: int) -> None:
    factor = (1 - step / total) ** recipe.poly_power if recipe.lr_policy == "poly" else 1.0
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def train_steps(
    model: nn.Module,
    batches: StepBatches,
    recipe: Recipe,
    *,
    total_steps: int,
    lr: float,
    checkpoint_path: str,
    checkpoint_meta: dict[str, Any],
    resume: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
    class_weight: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``total_steps`` steps, checkpointing every ``recipe.checkpoint_every``.

    ``resume`` is a checkpoint dict from an interrupted run of the same stage (its model state
    must already be loaded); training continues at its ``step`` with its optimizer state.
    ``class_weight`` ``(K,)``: the segmentation loss's per-class weights (``Recipe.class_weights``).
    Returns ``{"steps", "final_loss", "train_time_s"}``; the time includes the training time of
    the interrupted run(s) a resumed stage continues (recorded in its checkpoints).
    """
    device = torch.device(device)
    model.to(device).train()
    opt = _make_optimizer(model, recipe, lr)
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    earlier_time = 0.0  # training time spent before an interruption
    if resume is not None:
        earlier_time = float(resume.get("train_time_s", 0.0))
        opt.load_state_dict(resume["optimizer"])
        if use_amp and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start = int(resume["step"])
    if class_weight is not None and recipe.task != "segmentation":
        raise ValueError("class_weight applies to segmentation only")
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = silog_loss
    if recipe.task == "segmentation":
        loss_fn = functools.partial(segmentation_loss,
                                    weight=None if class_weight is None else class_weight.to(device))
    loader = DataLoader(batches, batch_size=None, sampler=range(start, total_steps),
                        num_workers=loader_workers(recipe.num_workers), pin_memory=device.type == "cuda")

    def _save(step: int) -> None:
        save_checkpoint(checkpoint_path, {**checkpoint_meta, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "scaler": scaler.state_dict() if use_amp else None, "step": step,
                                          "total_steps": total_steps, "done": False,
                                          "train_time_s": earlier_time + time.perf_counter() - t0})

    t0 = time.perf_counter()
    loss_value = float("nan")
    bar = progress_bar(total_steps, desc, enabled=progress, initial=start)
    for step, (images, targets) in zip(range(start, total_steps), loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        _set_lr(opt, recipe, step, total_steps)
        with torch.autocast(device.type, enabled=use_amp):
            loss = loss_fn(model(images), targets)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"{desc}: loss is {loss_value} at step {step}; lower the learning rate "
                                   f"(now {opt.param_groups[0]['lr']:.3g}) or check the data")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if (step + 1) % recipe.checkpoint_every == 0 and step + 1 < total_steps:
            _save(step + 1)
    bar.close()
    return {"steps": total_steps, "final_loss": loss_value,
            "train_time_s": earlier_time + time.perf_counter() - t0}


def _predict(model: nn.Module, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = model(image)
    if out.shape[-2:] != size:
        out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
    return out


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Dataset, *, num_classes: int = 19,
                          device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Any]:
    """mIoU over the whole split (one confusion matrix), full images, batch 1."""
    from wcc.metrics import SegmentationMetric

    device = torch.device(device)
    model.to(device).eval()
    metric = SegmentationMetric(num_classes=num_classes, ignore_index=255)
    bar = progress_bar(len(dataset), "eval", enabled=progress)  # type: ignore[arg-type]
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, target = dataset[i]
        logits = _predict(model, image[None].to(device), tuple(target.shape[-2:]))
        metric.update(logits.argmax(1).cpu(), target[None])
        bar.update(1)
    bar.close()
    return metric.compute()


@torch.no_grad()
def evaluate_depth(model: nn.Module, dataset: Dataset, *, crop: Literal["garg"] | None = "garg",
                   median_scaling: bool = False, device: torch.device | str = "cpu",
                   progress: bool = True) -> dict[str, float]:
    """Eigen metrics averaged over images (those with ground truth); predictions upsampled to
    the ground truth's size."""
    from wcc.metrics import DepthMetric

    device = torch.device(device)
    model.to(device).eval()
    metric = DepthMetric(crop=crop, median_scaling=median_scaling)  # mean over images, skips empty gt
    bar = progress_bar(len(dataset), "eval", enabled=progress)  # type: ignore[arg-type]
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, gt = dataset[i]
        pred = _predict(model, image[None].to(device), tuple(gt.shape[-2:]))[:, 0].cpu()
        metric.update(pred, gt[None])
        bar.update(1)
    bar.close()
    return metric.compute()
