"""The grids behind each published table, as data: rows, their stage graph, how BOPs count.

Stage graph (each arrow: load the checkpoint, convert with the next config, fine-tune)::

    Cityscapes: FP32 -> 8/8 -> 8/6 -> 8/4          KITTI: FP32 -> 8/8 -> 8/4 -> 8/2
                        8/8 -> WCC 50% -> 25% -> 12.5%      8/8 -> WCC 50% -> 25% -> 12.5%
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wcc.config import QuantConfig, WCCConfig
from wcc.train.staged import Stage

__all__ = ["SweepRow", "TableSweep", "CITYSCAPES_SWEEP", "KITTI_SWEEP", "SWEEPS"]


@dataclass(frozen=True)
class SweepRow:
    """A table row: its labels as printed in the paper and the stage that produces it."""

    precision: str
    shrinkage: str
    stage: Stage

    @property
    def id(self) -> str:
        return self.stage.name


@dataclass(frozen=True)
class TableSweep:
    table: Literal["cityscapes", "kitti"]
    rows: tuple[SweepRow, ...]
    arch: dict  # builder + kwargs (see wcc.train.checkpoint.build_model)
    bops_input: tuple[int, int, int, int]  # the paper's resolution
    # "paper": the published Cityscapes convention (docs/design.md §3.7). The published KITTI rows do
    # not follow it (their 8/8 row is 133.6 B, not FP32/16 = 72.7 B); they fit FP first/last
    # layers counted at 32x32 bits, which is wcc.accounting's "actual" convention.
    bops_convention: Literal["paper", "actual"]

    def row(self, row_id: str) -> SweepRow:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(f"{self.table} has no row {row_id!r}; rows: {[r.id for r in self.rows]}")

    def ordered(self) -> list[SweepRow]:
        """The rows as declared, checked to list every parent before its children."""
        seen: set[str] = set()
        for r in self.rows:
            if r.stage.parent is not None and r.stage.parent not in seen:
                raise ValueError(f"{self.table}: row {r.id!r} comes before its parent {r.stage.parent!r}")
            seen.add(r.id)
        return list(self.rows)


def _quant(name: str, parent: str, w: int, a: int) -> SweepRow:
    return SweepRow(f"{w}/{a}", "---", Stage(name, parent, QuantConfig(w, a)))


def _wcc(name: str, parent: str, keep: float, label: str) -> SweepRow:
    return SweepRow("8/8", label, Stage(name, parent, WCCConfig(levels=3, keep_ratio=keep, weight_bits=8, act_bits=8)))


_FP32 = SweepRow("FP32", "---", Stage("fp32", None, None))
_WCC_CHAIN = (
    _wcc("wcc50", "q8_8", 0.5, "50%"),
    _wcc("wcc25", "wcc50", 0.25, "25%"),
    _wcc("wcc12", "wcc25", 0.125, "12.5%"),
)

CITYSCAPES_SWEEP = TableSweep(
    table="cityscapes",
    rows=(_FP32, _quant("q8_8", "fp32", 8, 8), _quant("q8_6", "q8_8", 8, 6), _quant("q8_4", "q8_6", 8, 4),
          *_WCC_CHAIN),
    arch={"builder": "wcc.models:deeplabv3plus_mobilenetv2",
          "kwargs": {"num_classes": 19, "output_stride": 16, "separable": True}},
    bops_input=(1, 3, 1024, 2048),
    bops_convention="paper",
)

KITTI_SWEEP = TableSweep(
    table="kitti",
    rows=(_FP32, _quant("q8_8", "fp32", 8, 8), _quant("q8_4", "q8_8", 8, 4), _quant("q8_2", "q8_4", 8, 2),
          *_WCC_CHAIN),
    arch={"builder": "wcc.models:depth_mobilenetv2", "kwargs": {}},
    bops_input=(1, 3, 192, 640),
    bops_convention="actual",
)

SWEEPS = {"cityscapes": CITYSCAPES_SWEEP, "kitti": KITTI_SWEEP}
