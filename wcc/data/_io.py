"""PNG and JSON input/output shared by the readers and the SynthStreets generator.

Two rules live here so that every reader and writer follows them:

- A file that cannot be decoded is reported *by path* (``ValueError("cannot read PATH: ...")``),
  never as a bare PIL traceback: with thousands of files, the name is what the user needs.
- Writes are atomic: data goes to a temporary name in the destination folder and is then
  ``os.replace``-d over the final name, so an interrupted run never leaves a half-written PNG
  or JSON behind (a rename within one folder is atomic on POSIX and Windows).

KITTI depth encoding: uint16 PNG, metres = value / 256, value 0 = no ground truth.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DatasetLayoutError",
    "DEPTH_SCALE",
    "read_rgb",
    "read_label_png",
    "read_depth_png",
    "encode_depth",
    "decode_depth",
    "png_bytes",
    "write_bytes_atomic",
    "write_png_atomic",
    "write_json_atomic",
]

#: KITTI stores depth as uint16 ``round(metres * 256)``.
DEPTH_SCALE = 256.0
_UINT16_MAX = 65535


class DatasetLayoutError(FileNotFoundError):
    """A dataset root does not have the expected folder layout (the message names both)."""


def _open_png(path: str | os.PathLike[str]) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        img = Image.open(path)
        img.load()  # decode now, so truncated/corrupt data fails here and not later
    except Exception as exc:  # PIL raises several unrelated types for bad data
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return img


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8-bit colour image as a ``(H, W, 3)`` uint8 array (alpha/palette converted)."""
    img = _open_png(path)
    if img.mode not in ("RGB", "RGBA", "P", "L"):
        raise ValueError(f"cannot read {path}: expected an 8-bit RGB image, got PIL mode {img.mode!r}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel label image (Cityscapes ``*_labelIds.png``) as a ``(H, W)`` array.

    The dtype is whatever integer type the file holds (uint8 for Cityscapes); range checks are
    the caller's job because only it knows the label table.
    """
    img = _open_png(path)
    if img.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(
            f"cannot read {path}: a label image must be single-channel (PIL mode L, P or I), "
            f"got mode {img.mode!r}; colour label images (*_color.png) are not label ids"
        )
    return np.array(img)


def read_depth_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a KITTI-style uint16 depth PNG as ``(H, W)`` float32 metres (0 = no ground truth)."""
    img = _open_png(path)
    if img.mode not in ("I;16", "I"):
        raise ValueError(
            f"cannot read {path}: expected a 16-bit single-channel depth PNG "
            f"(metres = value / 256), got PIL mode {img.mode!r}"
        )
    raw = np.asarray(img)
    if raw.ndim != 2:
        raise ValueError(f"cannot read {path}: depth PNG has shape {raw.shape}, expected (H, W)")
    if raw.dtype != np.uint16:
        # Some PIL versions open 16-bit PNGs as 32-bit mode "I"; the values still fit uint16.
        if raw.min() < 0 or raw.max() > _UINT16_MAX:
            raise ValueError(f"cannot read {path}: depth values outside 0..65535")
        raw = raw.astype(np.uint16)
    return decode_depth(raw)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 KITTI encoding ``round(depth * 256)``, clipped to 0..65535.

    NaN and non-positive depths become 0 (no ground truth); +inf and anything beyond
    255.99 m saturate at 65535.
    """
    depth = np.asarray(depth)
    if not np.issubdtype(depth.dtype, np.floating):
        depth = depth.astype(np.float64)
    # Scaling by 256 is exact in any float type, so float32 input needs no float64 detour.
    scaled = depth * DEPTH_SCALE
    scaled[~(scaled > 0)] = 0.0  # NaN and non-positive depths: no ground truth
    np.rint(scaled, out=scaled)
    np.minimum(scaled, _UINT16_MAX, out=scaled)  # also maps +inf to the maximum
    return scaled.astype(np.uint16)


def decode_depth(raw: np.ndarray) -> np.ndarray:
    """uint16 KITTI encoding -> float32 metres. Exact: every uint16 / 256 is a float32."""
    return raw.astype(np.float32) / np.float32(DEPTH_SCALE)


def png_bytes(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode ``(H, W)`` uint8/uint16 or ``(H, W, 3)`` uint8 as a standard PNG (deterministic).

    A minimal encoder rather than PIL's: every row uses the PNG "Sub" filter (computed in one
    numpy subtraction) and zlib does the rest. PIL tries several filters per row, which makes
    it about twice as slow at low compression levels, and SynthStreets' speed target is mostly
    PNG encoding. The files are ordinary PNGs (greyscale 8/16-bit or RGB 8-bit, no interlace).
    """
    arr = np.asarray(array)
    if arr.dtype == np.uint8 and arr.ndim == 2:
        color_type, bit_depth, bpp = 0, 8, 1
    elif arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        color_type, bit_depth, bpp = 2, 8, 3
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        color_type, bit_depth, bpp = 0, 16, 2
        arr = arr.astype(">u2")  # PNG samples are big-endian
    else:
        raise TypeError(f"PNG arrays must be (H, W) uint8/uint16 or (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot encode an empty image of shape {arr.shape}")
    rows = np.ascontiguousarray(arr).view(np.uint8).reshape(height, width * bpp)
    raw = np.empty((height, width * bpp + 1), dtype=np.uint8)
    raw[:, 0] = 1  # filter type 1 (Sub): each byte minus the byte one pixel to the left, mod 256
    raw[:, 1:1 + bpp] = rows[:, :bpp]
    np.subtract(rows[:, bpp:], rows[:, :-bpp], out=raw[:, 1 + bpp:])
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", header),
        _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)),
        _png_chunk(b"IEND", b""),
    ))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp creates 0600 files; dataset files should be as readable as ordinary ones.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        # Includes KeyboardInterrupt: never leave the temporary behind.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_png_atomic(path: str | os.PathLike[str], array: np.ndarray, compress_level: int = 1) -> None:
    """Encode ``array`` as PNG (see :func:`png_bytes`) and write it atomically."""
    write_bytes_atomic(path, png_bytes(array, compress_level))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write strict JSON (no NaN/Infinity), sorted keys, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def check_same_size(image_path: str | os.PathLike[str], image: np.ndarray,
                    target_path: str | os.PathLike[str], target: np.ndarray) -> None:
    """Raise ``ValueError`` naming both files when an image and its ground truth differ in size."""
    if target.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"size mismatch: {image_path} is {image.shape[1]}x{image.shape[0]} but "
            f"{target_path} is {target.shape[1]}x{target.shape[0]} (W x H)"
        )
