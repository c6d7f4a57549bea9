"""Checkpoints: written atomically, self-describing enough to rebuild the model.

A checkpoint holds the architecture (a builder path and its kwargs), the list of conversions
applied so far (the staged recipe's history: each a config dict plus keep_fp), the model state
and, for an unfinished stage, the optimizer/scaler state and the step to resume from.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wcc.config import QuantConfig, WCCConfig
from wcc.convert import convert

__all__ = ["save_checkpoint", "load_checkpoint", "build_model", "apply_conversions", "config_from_dict", "FORMAT",
           "umask_mode", "file_sha256", "load_weights"]

FORMAT = "wcc-bench/checkpoint/v1"


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied: the mode ``open()`` would give a new file.

    ``tempfile.mkstemp`` always creates 0600 files; an atomic write that renames such a file
    into place would hide results and checkpoints from everyone else on a shared machine.
    """
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
        # Saved through a file object: torch then names the archive "archive" instead of after
        # the random temporary file, so equal states give byte-identical files (equal sha256).
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; nothing in the file runs.

    ``weights_only=True``: the unpickler rebuilds only tensors and plain containers (all a
    checkpoint holds), so a planted file in a shared run folder cannot execute code. A file that
    needs more (a foreign or malicious pickle), or is damaged, raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or code-carrying file
        raise ValueError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            f"(only plain wcc-bench checkpoints load; move the file aside and rerun to recompute that stage)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a wcc-bench checkpoint (expected format {FORMAT!r})")
    return ckpt


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build ``{"builder": "module:function", "kwargs": {...}}``, e.g. a wcc.models builder."""
    module_name, _, fn_name = arch["builder"].partition(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(**arch.get("kwargs", {}))


def config_from_dict(d: dict[str, Any]) -> WCCConfig | QuantConfig:
    kind = d.get("kind")
    if kind == "WCCConfig":
        return WCCConfig.from_dict(d)
    if kind == "QuantConfig":
        return QuantConfig.from_dict(d)
    raise ValueError(f"unknown config kind {kind!r}")


def apply_conversions(model: nn.Module, conversions: list[dict[str, Any]]) -> None:
    """Replay a checkpoint's conversion history so its state dict fits the model."""
    for step in conversions:
        convert(model, config_from_dict(step["config"]), keep_fp=step.get("keep_fp", []))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes: what records name a checkpoint or weights file by."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a full-precision whole-model file into ``model``, strictly, with ``weights_only``.

    Takes what :func:`wcc.models.load_state_dict_file` reads (VainF's ``{"model_state": ...}``,
    a bare state dict) and a wcc-bench checkpoint of an unconverted stage (its ``model``).
    A wcc-bench checkpoint of a converted stage is refused: its state fits a converted model
    only (rebuild it with :func:`apply_conversions` instead). Errors name the file.
    """
    from wcc.models.mobilenetv2 import load_into, load_state_dict_file

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True) if Path(path).is_file() else None
    except Exception:  # unreadable: load_state_dict_file below says so with the file's name
        raw = None
    if isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("conversions"):
        steps = [c["config"].get("kind") for c in raw["conversions"]]
        raise ValueError(f"{path} is a wcc-bench checkpoint of a converted stage ({steps}), not a full-precision "
                         f"model; give the FP32 stage's checkpoint (work/<table>/fp32/final.pt)")
    load_into(model, load_state_dict_file(path), strict=True, source=str(path))
