"""The published numbers (docs/design.md §4), as data.

Source: the paper's results as listed in the official repository's README. BOPs in billions;
precision is weight bits / activation bits; shrinkage is the fraction of wavelet positions kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PaperRow", "CITYSCAPES", "KITTI", "COCO", "paper_row", "TABLE_METRICS"]


@dataclass(frozen=True)
class PaperRow:
    precision: str  # "FP32", "8/8", ...
    shrinkage: str  # "---", "50%", "25%", "12.5%"
    bops: float  # billions
    metrics: dict[str, float] = field(default_factory=dict)


CITYSCAPES: tuple[PaperRow, ...] = (
    PaperRow("FP32", "---", 36_377, {"miou": 0.717}),
    PaperRow("8/8", "---", 2_273, {"miou": 0.701}),
    PaperRow("8/6", "---", 1_705, {"miou": 0.683}),
    PaperRow("8/4", "---", 1_136, {"miou": 0.173}),
    PaperRow("8/8", "50%", 1_213, {"miou": 0.681}),
    PaperRow("8/8", "25%", 673, {"miou": 0.620}),
    PaperRow("8/8", "12.5%", 403, {"miou": 0.552}),
)

KITTI: tuple[PaperRow, ...] = (
    PaperRow("FP32", "---", 1_163.6, {"abs_rel": 0.093, "rmse": 4.022}),
    PaperRow("8/8", "---", 133.6, {"abs_rel": 0.092, "rmse": 4.018}),
    PaperRow("8/4", "---", 99.26, {"abs_rel": 0.097, "rmse": 4.166}),
    PaperRow("8/2", "---", 82.1, {"abs_rel": 0.268, "rmse": 8.223}),
    PaperRow("8/8", "50%", 103.9, {"abs_rel": 0.098, "rmse": 4.217}),
    PaperRow("8/8", "25%", 88.5, {"abs_rel": 0.112, "rmse": 4.663}),
    PaperRow("8/8", "12.5%", 80.8, {"abs_rel": 0.131, "rmse": 5.046}),
)

# For reference only (not a table this suite reproduces): EfficientDet on COCO, precision 4/8.
COCO: tuple[PaperRow, ...] = (
    PaperRow("FP32", "---", 6_144, {"map": 40.08}),
    PaperRow("4/8", "---", 280.4, {"map": 31.44}),
    PaperRow("4/8", "50%", 198.5, {"map": 31.15}),
    PaperRow("4/8", "25%", 155.4, {"map": 27.49}),
)

TABLE_METRICS = {"cityscapes": ("miou",), "kitti": ("abs_rel", "rmse")}
_TABLES = {"cityscapes": CITYSCAPES, "kitti": KITTI}


def paper_row(table: str, precision: str, shrinkage: str) -> PaperRow:
    for row in _TABLES[table]:
        if (row.precision, row.shrinkage) == (precision, shrinkage):
            return row
    raise KeyError(f"no published {table} row {precision} {shrinkage}")
