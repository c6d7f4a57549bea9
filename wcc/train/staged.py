"""The staged recipe (docs/design.md §3.5): each stage starts from its parent's checkpoint, converts with
its own config (learned clips carry over), fine-tunes and evaluates.

Files of a stage, in ``workdir/<stage name>/``:

* ``last.pt`` - the latest mid-stage checkpoint (model, optimizer, step), for resuming;
* ``final.pt`` - the finished stage: model state, conversion history and its metrics.

A stage whose ``final.pt`` exists is never recomputed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from wcc.config import QuantConfig, WCCConfig
from wcc.convert import convert
from wcc.train.checkpoint import apply_conversions, build_model, load_checkpoint, load_weights, save_checkpoint
from wcc.train.loops import StepBatches, train_steps
from wcc.train.losses import class_frequencies, class_weights
from wcc.train.recipe import Recipe

__all__ = ["Stage", "StageResult", "FirstStageInit", "run_stage", "stage_paths"]


@dataclass(frozen=True)
class Stage:
    """One node of the stage graph. ``config`` None means full precision (no conversion)."""

    name: str
    parent: str | None
    config: WCCConfig | QuantConfig | None


@dataclass(frozen=True)
class FirstStageInit:
    """Where the first (parentless, FP32) stage starts; later stages always start from their parent.

    ``checkpoint``: a full-precision whole-model file (e.g. VainF's Cityscapes checkpoint, as the
    paper did); the stage is then evaluated only, not trained. ``pretrained_backbone``: ImageNet
    MobileNetV2 weights (torchvision layout) for the backbone/encoder; the stage trains from there.
    """

    checkpoint: str | None = None
    pretrained_backbone: str | None = None

    @property
    def trains(self) -> bool:
        return self.checkpoint is None


@dataclass(frozen=True)
class StageResult:
    name: str
    metrics: dict[str, Any]
    checkpoint: Path
    train_time_s: float
    eval_time_s: float
    reused: bool  # True when the stage had already finished before this call


def stage_paths(workdir: Path, name: str) -> tuple[Path, Path]:
    """(last.pt, final.pt) of a stage."""
    d = Path(workdir) / name
    return d / "last.pt", d / "final.pt"


def _model_for_stage(stage: Stage, arch: dict[str, Any], workdir: Path,
                     keep_fp: Callable[[nn.Module], list[str]], init: FirstStageInit,
                     clip_handover: str) -> tuple[nn.Module, list[dict[str, Any]]]:
    model = build_model(arch)
    conversions: list[dict[str, Any]] = []
    if stage.parent is None and init.pretrained_backbone is not None:
        from wcc.models import load_pretrained_backbone

        load_pretrained_backbone(model, init.pretrained_backbone)
    if stage.parent is None and init.checkpoint is not None:
        load_weights(model, init.checkpoint)
    if stage.parent is not None:
        parent = load_checkpoint(stage_paths(workdir, stage.parent)[1])
        conversions = list(parent["conversions"])
        apply_conversions(model, conversions)
        model.load_state_dict(parent["model"])
    if stage.config is not None:
        names = keep_fp(model)
        # A replayed conversion (apply_conversions) needs no hand-over: the state dict sets the clips.
        convert(model, stage.config, keep_fp=names, clip_handover=clip_handover)
        conversions.append({"config": stage.config.to_dict(), "keep_fp": names})
    return model, conversions


def _num_classes(model: nn.Module) -> int:
    """Output channels of the model's last convolution: the number of classes it predicts."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d to read its number of classes from")
    return convs[-1].out_channels


def run_stage(
    stage: Stage,
    *,
    arch: dict[str, Any],
    recipe: Recipe,
    train_set: Any,
    train_transform: Callable,
    evaluate: Callable[[nn.Module], dict[str, Any]],
    workdir: str | Path,
    keep_fp: Callable[[nn.Module], list[str]],
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    init: FirstStageInit = FirstStageInit(),
) -> StageResult:
    """Run (or resume, or reuse) one stage; its parent must have finished.

    ``init`` says where a parentless stage starts (:class:`FirstStageInit`; ignored for the
    others). ``log`` receives one line when the stage is reused or resumed (default: stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    workdir = Path(workdir)
    last, final = stage_paths(workdir, stage.name)
    if final.is_file():
        done = load_checkpoint(final)
        log(f"{stage.name}: finished earlier, reusing {final}")
        return StageResult(stage.name, done["metrics"], final, done["train_time_s"], done["eval_time_s"], True)

    torch.manual_seed(recipe.seed)
    resume = load_checkpoint(last) if last.is_file() else None
    if resume is not None:
        log(f"{stage.name}: resuming from step {resume['step']} of {last}")
        model = build_model(arch)
        conversions = resume["conversions"]
        apply_conversions(model, conversions)
        model.load_state_dict(resume["model"])
    else:
        model, conversions = _model_for_stage(stage, arch, workdir, keep_fp, init,
                                             recipe.finetune_clip_handover)

    first = stage.parent is None
    # A first stage that starts from a given checkpoint is that checkpoint, evaluated as it is.
    steps = (recipe.steps if init.trains else 0) if first else recipe.finetune_steps
    lr = recipe.lr if first else recipe.finetune_lr
    meta = {"stage": stage.name, "parent": stage.parent, "arch": arch, "conversions": conversions,
            "recipe": recipe.to_dict(), "config": stage.config.to_dict() if stage.config else None,
            "init": dataclasses.asdict(init) if first else None}
    train_info: dict[str, Any] = {"final_loss": float("nan"), "train_time_s": 0.0}
    if steps:
        weight = None
        if recipe.class_weights != "none":
            weight = class_weights(class_frequencies(train_set, _num_classes(model)), recipe.class_weights)
            meta["class_weight"] = None if weight is None else [round(float(w), 6) for w in weight]
        batches = StepBatches(train_set, train_transform, recipe.batch_size, recipe.seed)
        train_info = train_steps(model, batches, recipe, total_steps=steps, lr=lr, checkpoint_path=str(last),
                                 checkpoint_meta=meta, resume=resume, device=device, progress=progress,
                                 desc=stage.name, class_weight=weight)
    t0 = time.perf_counter()
    metrics = evaluate(model)
    eval_time = time.perf_counter() - t0
    train_time = train_info["train_time_s"]
    save_checkpoint(final, {**meta, "model": model.state_dict(), "metrics": metrics, "done": True,
                            "steps": steps, "final_loss": train_info["final_loss"],
                            "train_time_s": train_time, "eval_time_s": eval_time})
    last.unlink(missing_ok=True)
    return StageResult(stage.name, metrics, final, train_time, eval_time, False)
