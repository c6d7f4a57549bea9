"""Training: recipes, resumable loops, atomic checkpoints, the staged compression recipe."""

from wcc.train.checkpoint import (
    apply_conversions,
    build_model,
    file_sha256,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from wcc.train.loops import StepBatches, TrainingDiverged, evaluate_depth, evaluate_segmentation, train_steps
from wcc.train.recipe import Recipe, cpu_depth, cpu_segmentation, paper_depth, paper_segmentation
from wcc.train.staged import FirstStageInit, Stage, StageResult, run_stage, stage_paths

__all__ = [
    "Recipe", "paper_segmentation", "paper_depth", "cpu_segmentation", "cpu_depth",
    "StepBatches", "train_steps", "evaluate_segmentation", "evaluate_depth", "TrainingDiverged",
    "save_checkpoint", "load_checkpoint", "build_model", "apply_conversions", "file_sha256", "load_weights",
    "Stage", "StageResult", "FirstStageInit", "run_stage", "stage_paths",
]
