"""SynthStreets scene renderer: procedural street scenes with exact labels and metric depth.

Geometry: a pinhole camera (focal ``f`` px, principal point ``(cx, cy)``, ``cy`` = horizon row)
at height ``h`` metres above a flat ground plane, looking along the road (+Z), X to the right,
Y up. A pixel centre ``(u, v)`` below the horizon sees the ground at depth
``Z = f * h / (v - cy)``; a world point ``(X, Y, Z)`` projects to
``u = cx + f * X / Z``, ``v = cy + f * (h - Y) / Z``. Depth is z-depth (along the optical axis),
which is what KITTI's projected ground truth stores.

Everything is drawn with three primitives, each evaluated only inside its own bounding box
(numpy, no per-pixel Python loops) and composited through a z-buffer:

- :func:`_side_plane`: a vertical rectangle parallel to the road (facades, fences, car sides);
- :func:`_front_plane`: a vertical rectangle facing the camera (car rears, poles, signs, people);
- :func:`_ellipsoid`: a blob facing the camera (tree crowns, heads, wheels, lamps).

Per-instance colours, per-class texture noise, windows, markings and lighting changes make the
segmentation task learnable but not trivial. Every random draw comes from the ``rng`` passed
in, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from PIL import Image

# Cityscapes labelIds (cityscapesscripts.helpers.labels); the generator writes labelIds.
EGO, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 1, 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER = 19, 20, 21, 22, 23, 24, 25
CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE = 26, 27, 28, 32, 33

#: labelIds the renderer can produce (all but EGO are evaluated classes).
PRODUCED_LABEL_IDS = (EGO, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION,
                      TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE)

#: Ground truth depth beyond this range is written as 0 ("no ground truth"), like a lidar's range.
MAX_GT_DEPTH = 100.0
_NEAR = 0.5

# Per-class amplitude of the per-pixel texture noise (relative), indexed by labelId.
_NOISE_AMP = np.zeros(256, dtype=np.float32)
for _lid, _amp in ((ROAD, .07), (SIDEWALK, .06), (BUILDING, .06), (WALL, .07), (FENCE, .05), (POLE, .04),
                   (LIGHT, .03), (SIGN, .03), (VEGETATION, .16), (TERRAIN, .16), (SKY, .015),
                   (PERSON, .05), (RIDER, .05), (CAR, .04), (TRUCK, .04), (BUS, .04),
                   (MOTORCYCLE, .04), (BICYCLE, .04), (EGO, .02)):
    _NOISE_AMP[_lid] = _amp
# Classes that also get a coarse, leafy texture.
_BLOTCHY = np.zeros(256, dtype=np.float32)
_BLOTCHY[[VEGETATION, TERRAIN]] = (0.25, 0.18)
# Standard-normal quantiles at (k + 0.5) / 256: maps uniform random bytes to normal noise.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], dtype=np.float32)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over the ground plane (pixels and metres)."""

    f: float
    cx: float
    cy: float
    height: float


@dataclass
class _Patch:
    """A primitive's footprint: rows/cols slices, coverage mask, depth and texture coordinates.

    ``z``, ``y`` and ``a`` broadcast to the mask: ``y`` is the height above ground, ``a`` the
    coordinate along the surface (Z for side planes, X for front planes).
    """

    rows: slice
    cols: slice
    mask: np.ndarray | None  # None: the whole box
    z: np.ndarray
    y: np.ndarray
    a: np.ndarray


class _Canvas:
    """RGB, z-buffer and labelId image, composited nearest-wins."""

    def __init__(self, height: int, width: int, cam: Camera) -> None:
        self.h, self.w, self.cam = height, width, cam
        self.rgb = np.empty((height, width, 3), dtype=np.float32)
        self.z = np.full((height, width), np.inf, dtype=np.float32)
        self.label = np.zeros((height, width), dtype=np.uint8)

    def paint(self, p: _Patch | None, label: int, color, mask: np.ndarray | None = None,
              z: np.ndarray | float | None = None) -> None:
        """Draw where ``p.mask`` (and ``mask``) holds and the patch is nearer than the buffer.

        ``color`` is an RGB triple or an array broadcasting to ``(h, w, 3)``.
        """
        if p is None:
            return
        depth = p.z if z is None else z
        zbuf = self.z[p.rows, p.cols]
        m = depth < zbuf
        if p.mask is not None:
            m &= p.mask
        if mask is not None:
            m &= mask
        if not m.any():
            return
        # copyto(where=) broadcasts scalars/rows and makes one pass per buffer, no index arrays.
        np.copyto(zbuf, depth, where=m)
        np.copyto(self.label[p.rows, p.cols], np.uint8(label), where=m)
        np.copyto(self.rgb[p.rows, p.cols], np.asarray(color, dtype=np.float32), where=m[..., None])


def _side_plane(c: _Canvas, x: float, z0: float, z1: float, y0: float, y1: float) -> _Patch | None:
    """Vertical rectangle in the plane X = ``x`` for Z in [z0, z1] and height Y in [y0, y1]."""
    cam = c.cam
    z0 = max(z0, _NEAR)
    if z1 <= z0 or x == 0:
        return None
    ua, ub = cam.cx + cam.f * x / z0, cam.cx + cam.f * x / z1
    c0, c1 = max(0, math.floor(min(ua, ub))), min(c.w, math.ceil(max(ua, ub)))
    if c0 >= c1:
        return None
    du = np.arange(c0, c1, dtype=np.float32) + (0.5 - cam.cx)
    with np.errstate(divide="ignore"):
        zc = (cam.f * x) / du
    ok = (zc >= z0) & (zc <= z1)
    if not ok.any():
        return None
    zc = np.where(ok, zc, z1)
    vt = cam.cy + cam.f * (cam.height - y1) / zc
    vb = cam.cy + cam.f * (cam.height - y0) / zc
    r0, r1 = max(0, math.floor(vt[ok].min())), min(c.h, math.ceil(vb[ok].max()))
    if r0 >= r1:
        return None
    v = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    mask = ok[None, :] & (v >= vt[None, :]) & (v < vb[None, :])
    y = cam.height - (v - cam.cy) * zc[None, :] / cam.f
    return _Patch(slice(r0, r1), slice(c0, c1), mask, zc[None, :], y, zc[None, :])


def _front_plane(c: _Canvas, z: float, x0: float, x1: float, y0: float, y1: float) -> _Patch | None:
    """Camera-facing rectangle at depth ``z``, X in [x0, x1], height Y in [y0, y1]."""
    cam = c.cam
    if z < _NEAR:
        return None
    s = cam.f / z
    c0, c1 = max(0, math.ceil(cam.cx + s * x0 - 0.5)), min(c.w, math.ceil(cam.cx + s * x1 - 0.5))
    r0 = max(0, math.ceil(cam.cy + s * (cam.height - y1) - 0.5))
    r1 = min(c.h, math.ceil(cam.cy + s * (cam.height - y0) - 0.5))
    if c0 >= c1 or r0 >= r1:
        return None
    xs = (np.arange(c0, c1, dtype=np.float32) + (0.5 - cam.cx)) / s
    ys = cam.height - (np.arange(r0, r1, dtype=np.float32) + (0.5 - cam.cy)) / s
    return _Patch(slice(r0, r1), slice(c0, c1), None, np.float32(z), ys[:, None], xs[None, :])


def _ellipsoid(c: _Canvas, x: float, y: float, z: float, rx: float, ry: float, rz: float = 0.0,
               ring: float = 0.0) -> _Patch | None:
    """Camera-facing ellipse centred at (x, y, z) with radii rx, ry; depth bulges by ``rz``
    toward the camera. ``ring`` > 0 keeps only the outer band (inner radius = 1 - ring)."""
    cam = c.cam
    if z - rz < _NEAR:
        return None
    s = cam.f / z
    uc, vc = cam.cx + s * x, cam.cy + s * (cam.height - y)
    ru, rv = s * rx, s * ry
    c0, c1 = max(0, math.floor(uc - ru)), min(c.w, math.ceil(uc + ru))
    r0, r1 = max(0, math.floor(vc - rv)), min(c.h, math.ceil(vc + rv))
    if c0 >= c1 or r0 >= r1 or ru <= 0 or rv <= 0:
        return None
    du = (np.arange(c0, c1, dtype=np.float32) + 0.5 - uc) / ru
    dv = (np.arange(r0, r1, dtype=np.float32) + 0.5 - vc) / rv
    d2 = dv[:, None] ** 2 + du[None, :] ** 2
    mask = d2 <= 1.0
    if ring:
        mask &= d2 >= (1.0 - ring) ** 2
    zz = z - rz * np.sqrt(np.maximum(0.0, 1.0 - d2)) if rz else np.float32(z)
    ys = cam.height - (np.arange(r0, r1, dtype=np.float32) + (0.5 - cam.cy)) / s
    xs = (np.arange(c0, c1, dtype=np.float32) + (0.5 - cam.cx)) / s
    return _Patch(slice(r0, r1), slice(c0, c1), mask, zz, ys[:, None], xs[None, :])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _grey(v: float) -> np.ndarray:
    return np.full(3, v, dtype=np.float32)


def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


class _Scene:
    """Draws one scene; every method takes its randomness from ``self.rng``."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        cam = Camera(
            f=width * rng.uniform(0.55, 0.85),
            cx=width * rng.uniform(0.47, 0.53),
            cy=height * rng.uniform(0.36, 0.48),
            height=rng.uniform(1.3, 1.8),
        )
        self.cam = cam
        self.c = _Canvas(height, width, cam)
        road_w = rng.uniform(6.0, 14.0)
        offset = rng.uniform(1.5, road_w - 1.5)
        self.road = (-offset, road_w - offset)
        self.walk = (rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0))
        self.grass = tuple(0.0 if rng.random() < 0.5 else rng.uniform(0.5, 4.0) for _ in range(2))
        self.facade = (self.road[0] - self.walk[0] - self.grass[0], self.road[1] + self.walk[1] + self.grass[1])
        self.far = rng.uniform(150.0, 250.0)
        self.sun = rng.uniform(0.75, 1.0)  # shading of left facades relative to right ones

    # ----------------------------------------------------------------- background
    def sky_and_ground(self) -> None:
        c, cam, rng = self.c, self.cam, self.rng
        overcast = rng.random() < 0.3
        top = _hsv(rng.uniform(0.55, 0.62), 0.05 if overcast else rng.uniform(0.35, 0.6), rng.uniform(0.6, 0.9))
        bottom = _hsv(rng.uniform(0.55, 0.6), 0.05 if overcast else rng.uniform(0.1, 0.25), rng.uniform(0.8, 0.97))
        t = np.clip(np.arange(c.h, dtype=np.float32) / max(cam.cy, 1.0), 0, 1)[:, None]
        c.rgb[:] = (top * (1 - t) + bottom * t)[:, None, :]
        c.label[:] = SKY
        v0 = min(c.h, max(0, math.floor(cam.cy + 1)))  # first row that sees the ground
        if not overcast and v0 > 0:  # clouds: thresholded smooth noise blended toward white
            clouds = _smooth_noise(rng, v0, c.w, 12)
            clouds *= 1.5
            clouds -= 0.4
            np.clip(clouds, 0, 1, out=clouds)
            sky = c.rgb[:v0]
            sky += (0.95 - sky) * clouds[..., None]
        if v0 >= c.h:
            return

        # Ground: a material index per pixel from the lateral position X and the depth Z.
        v = np.arange(v0, c.h, dtype=np.float32)[:, None] + 0.5
        z = (cam.f * cam.height / (v - cam.cy)).astype(np.float32)
        x = (np.arange(c.w, dtype=np.float32)[None, :] + (0.5 - cam.cx)) * z / cam.f
        rl, rr = self.road
        wl, wr = rl - self.walk[0], rr + self.walk[1]
        road, walk, grass, line, seam, kerb = range(6)
        mat = np.full(x.shape, grass, dtype=np.uint8)
        mat[(x >= wl) & (x < wr)] = walk
        mat[(x >= rl) & (x < rr)] = road
        # Lane markings (still "road" in Cityscapes): dashed centre line, solid edge lines.
        centre = rl + (rr - rl) * rng.choice([0.5, 1 / 3, 2 / 3])
        dash = rng.uniform(3.0, 9.0)
        mat[(np.abs(x - centre) < 0.08) & (_frac(z / (2 * dash)) < 0.5)] = line
        mat[(np.abs(x - (rl + 0.3)) < 0.07) | (np.abs(x - (rr - 0.3)) < 0.07)] = line
        # Sidewalk tile seams and a light kerb next to the road.
        tile = rng.uniform(0.4, 1.0)
        is_walk = mat == walk
        mat[is_walk & ((_frac(x / tile) < 0.06) | (_frac(z / tile) < 0.06))] = seam
        mat[is_walk & (x > rl - 0.2) & (x < rr + 0.2)] = kerb

        road_col = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.0, 0.12), rng.uniform(0.25, 0.45))
        walk_col = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.2), rng.uniform(0.5, 0.75))
        grass_col = _hsv(rng.uniform(0.12, 0.28), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6))
        line_col = _hsv(0.14, 0.6, 0.85) if rng.random() < 0.2 else np.array([0.85, 0.85, 0.85], dtype=np.float32)
        palette = np.stack([road_col, walk_col, grass_col, line_col,
                            walk_col * 0.8, np.minimum(walk_col * 1.2, 1)])
        labels = np.array([ROAD, SIDEWALK, TERRAIN, ROAD, SIDEWALK, SIDEWALK], dtype=np.uint8)
        c.rgb[v0:] = palette[mat]
        c.label[v0:] = labels[mat]
        c.z[v0:] = z

    def skyline(self) -> None:
        """Distant buildings closing the street (beyond the ground-truth range)."""
        c, rng = self.c, self.rng
        z = self.far
        x, x_end = -z * self.cam.cx / self.cam.f - 20.0, z * (c.w - self.cam.cx) / self.cam.f
        while x < x_end:
            w = rng.uniform(10, 40)
            col = _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.65))
            c.paint(_front_plane(c, z, x, x + w, 0.0, rng.uniform(8, 45)), BUILDING, col)
            x += w

    # ----------------------------------------------------------------- street sides
    def street_side(self, side: int) -> None:
        """Buildings, gaps with walls/fences/trees, hedges, along one side (0 left, 1 right)."""
        rng = self.rng
        xf = self.facade[side]
        shade = self.sun if side == 0 else 1.0
        if rng.random() < 0.15:  # an open side: a row of trees on the grass
            for z in np.arange(rng.uniform(2, 10), self.far * 0.6, rng.uniform(6, 14)):
                self.tree(xf + (-1 if side == 0 else 1) * rng.uniform(0, 3), z)
            return
        if self.grass[side] > 1.0 and rng.random() < 0.5:
            self.hedge(xf + (0.3 if side == 0 else -0.3), rng.uniform(0.7, 1.4))
        z = rng.uniform(-5.0, 5.0)
        while z < self.far:
            length = rng.uniform(6.0, 30.0)
            self.building(xf, z, z + length, shade)
            z += length
            if rng.random() < 0.45:
                gap = rng.uniform(3.0, 12.0)
                kind = rng.random()
                if kind < 0.3:
                    self.wall_or_fence(xf, z, z + gap, WALL, shade)
                elif kind < 0.6:
                    self.wall_or_fence(xf, z, z + gap, FENCE, shade)
                if rng.random() < 0.6:
                    self.tree(xf + (-1 if side == 0 else 1) * rng.uniform(0.5, 3), z + gap / 2)
                z += gap

    def building(self, x: float, z0: float, z1: float, shade: float) -> None:
        c, rng = self.c, self.rng
        height = rng.uniform(5.0, 28.0)
        p = _side_plane(c, x, z0, z1, 0.0, height)
        if p is None:
            return
        base = _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.85)) * shade
        glass = _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.35)) * shade
        floor_h, win_w = rng.uniform(2.8, 3.6), rng.uniform(1.5, 3.5)
        fy, fa = _frac(p.y / floor_h), _frac((p.a - z0) / win_w)
        windows = (fy > 0.3) & (fy < 0.8) & (fa > 0.2) & (fa < 0.75) & (p.y > 2.5) & (p.y < height - 0.5)
        shop = (p.y > 0.3) & (p.y < 2.4) & (fa > 0.1) & (fa < 0.9) & (rng.random() < 0.5)
        win = windows | shop
        color = np.where(win[..., None], glass, base)
        c.paint(p, BUILDING, color)

    def wall_or_fence(self, x: float, z0: float, z1: float, label: int, shade: float) -> None:
        c, rng = self.c, self.rng
        height = rng.uniform(0.8, 2.5)
        p = _side_plane(c, x, z0, z1, 0.0, height)
        if p is None:
            return
        if label == WALL:
            col = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.8)) * shade
            c.paint(p, WALL, np.where((_frac(p.y / 0.6) < 0.08)[..., None], col * 0.8, col))
        else:  # slatted fence: the gaps between slats show what is behind
            col = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.6)) * shade
            pitch = rng.uniform(0.1, 0.3)
            solid = (_frac(p.a / pitch) < 0.55) | (np.abs(p.y - height * 0.8) < 0.06) | (np.abs(p.y - 0.3) < 0.06)
            c.paint(p, FENCE, col, mask=solid)

    def hedge(self, x: float, height: float) -> None:
        col = _hsv(self.rng.uniform(0.22, 0.35), self.rng.uniform(0.4, 0.7), self.rng.uniform(0.2, 0.45))
        self.c.paint(_side_plane(self.c, x, 1.0, self.far * 0.5, 0.0, height), VEGETATION, col)

    def tree(self, x: float, z: float) -> None:
        c, rng = self.c, self.rng
        trunk_h = rng.uniform(2.0, 4.0)
        c.paint(_front_plane(c, z, x - 0.15, x + 0.15, 0.0, trunk_h + 0.5), VEGETATION,
                _hsv(0.08, 0.5, rng.uniform(0.2, 0.35)))
        r = rng.uniform(1.2, 3.0)
        col = _hsv(rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.75), rng.uniform(0.2, 0.5))
        c.paint(_ellipsoid(c, x, trunk_h + r * 0.8, z, r, r * rng.uniform(0.8, 1.3), rz=r), VEGETATION, col)

    # ----------------------------------------------------------------- street furniture
    def pole(self, x: float, z: float) -> None:
        c, rng = self.c, self.rng
        kind = rng.random()
        height = rng.uniform(3.0, 8.0)
        w = rng.uniform(0.08, 0.14)
        metal = _hsv(0.6, 0.05, rng.uniform(0.3, 0.6))
        c.paint(_front_plane(c, z, x - w, x + w, 0.0, height), POLE, metal)
        if kind < 0.35:  # traffic sign: a coloured plate on the pole, slightly in front of it
            size = rng.uniform(0.5, 0.9)
            y = height - size / 2 - rng.uniform(0, 0.5)
            plates = (_hsv(0.0, 0.85, 0.8), _hsv(0.6, 0.8, 0.7), _hsv(0.14, 0.85, 0.9), _grey(0.9))
            col = plates[rng.integers(4)]
            if rng.random() < 0.5:
                p = _ellipsoid(c, x, y, z - 0.05, size / 2, size / 2)
            else:
                p = _front_plane(c, z - 0.05, x - size / 2, x + size / 2, y - size / 2, y + size / 2)
            c.paint(p, SIGN, col)
            if p is not None:  # a white rim/inner symbol so plates are not flat blobs
                c.paint(_ellipsoid(c, x, y, z - 0.06, size / 4, size / 4), SIGN, _grey(0.95))
        elif kind < 0.65:  # traffic light: dark housing with one lit lamp
            hy = height - 0.5
            c.paint(_front_plane(c, z - 0.1, x - 0.18, x + 0.18, hy - 0.9, hy), LIGHT, _grey(0.08))
            lit = rng.integers(3)
            for k, hue in enumerate((0.0, 0.12, 0.36)):
                col = _hsv(hue, 0.9, 0.95 if k == lit else 0.25)
                c.paint(_ellipsoid(c, x, hy - 0.15 - 0.3 * k, z - 0.11, 0.1, 0.1), LIGHT, col)
        elif kind < 0.85:  # street lamp: the arm is part of the pole
            arm = 1.5 if x < 0 else -1.5
            c.paint(_front_plane(c, z, min(x, x + arm), max(x, x + arm), height - 0.12, height), POLE, metal)

    # ----------------------------------------------------------------- traffic
    def vehicle(self, x: float, z: float, label: int) -> None:
        c, rng = self.c, self.rng
        if label == CAR:
            w, h, length = rng.uniform(1.6, 1.9), rng.uniform(1.35, 1.6), rng.uniform(3.8, 4.7)
            col = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.2, 0.9))
        elif label == TRUCK:
            w, h, length = rng.uniform(2.2, 2.5), rng.uniform(2.8, 3.8), rng.uniform(6.0, 10.0)
            col = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.6, 0.95))
        else:
            w, h, length = 2.5, rng.uniform(3.0, 3.3), rng.uniform(10.0, 13.0)
            col = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.9))
        dark = np.array([0.05, 0.05, 0.06], dtype=np.float32)
        glass = _hsv(0.6, 0.2, rng.uniform(0.1, 0.3))
        x0, x1 = x - w / 2, x + w / 2
        body_top = 0.9 if label == CAR else h
        # Side face (the one toward the camera axis), then the rear face and its details.
        xs = x0 if x > 0 else x1
        side = _side_plane(c, xs, z, z + length, 0.3, body_top)
        if side is not None:
            band = (side.y > h * 0.45) & (side.y < h * 0.8) & (label == BUS)
            c.paint(side, label, np.where(band[..., None], glass, col * 0.85))
        if label == CAR:
            cab = _side_plane(c, xs * 0.98 + x * 0.02, z + 0.8, z + length - 1.0, 0.9, h)
            c.paint(cab, label, glass)
        for zw in (z + 0.8, z + length - 0.8):
            c.paint(_side_plane(c, xs, zw - 0.35, zw + 0.35, 0.0, 0.45), label, dark)
        c.paint(_front_plane(c, z, x0, x1, 0.3, body_top), label, col)
        if label == CAR:
            c.paint(_front_plane(c, z + 0.6, x0 + 0.12, x1 - 0.12, 0.9, h), label, col * 0.9)
            c.paint(_front_plane(c, z + 0.59, x0 + 0.25, x1 - 0.25, 0.95, h - 0.08), label, glass)
        else:
            c.paint(_front_plane(c, z - 0.01, x0 + 0.2, x1 - 0.2, h * 0.6, h - 0.15), label,
                    glass if label == BUS else col * 0.8)
        for xl in (x0 + 0.05, x1 - 0.3):
            c.paint(_front_plane(c, z - 0.01, xl, xl + 0.25, 0.65, 0.8), label, _hsv(0.0, 0.9, 0.8))
            c.paint(_front_plane(c, z + 0.1, xl, xl + 0.25, 0.0, 0.3), label, dark)

    def human(self, x: float, z: float, label: int, y0: float = 0.0, legs: bool = True) -> None:
        c, rng = self.c, self.rng
        h = rng.uniform(1.55, 1.95)
        shirt = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9))
        pants = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0, 0.6), rng.uniform(0.1, 0.5))
        skin = _hsv(rng.uniform(0.03, 0.09), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.9))
        leg_top = y0 + h * 0.47
        if legs:
            gap = rng.uniform(0.0, 0.12)
            c.paint(_front_plane(c, z, x - 0.17, x - gap / 2, y0, leg_top), label, pants)
            c.paint(_front_plane(c, z, x + gap / 2, x + 0.17, y0, leg_top), label, pants)
        c.paint(_front_plane(c, z, x - 0.22, x + 0.22, leg_top, y0 + h * 0.85), label, shirt)
        c.paint(_ellipsoid(c, x, y0 + h * 0.92, z - 0.02, 0.11, 0.13), label, skin)

    def two_wheeler(self, x: float, z: float, label: int, rider: bool) -> None:
        """Bicycle or motorcycle seen from the side (a camera-facing plane), with a rider."""
        c, rng = self.c, self.rng
        r = rng.uniform(0.3, 0.36)
        base = rng.uniform(1.0, 1.2)
        col = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
        for xw in (x - base / 2, x + base / 2):
            c.paint(_ellipsoid(c, xw, r, z, r, r, ring=0.2 if label == BICYCLE else 0.45), label,
                    _grey(0.08))
        if label == BICYCLE:
            c.paint(_front_plane(c, z, x - base / 2, x + base / 2, r + 0.15, r + 0.21), label, col)
            c.paint(_front_plane(c, z, x - 0.05, x + 0.05, r, r + 0.5), label, col)
        else:
            c.paint(_front_plane(c, z, x - base / 2 + 0.1, x + base / 2 - 0.1, r * 0.8, r + 0.45), label, col)
        if rider:
            self.human(x, z - 0.3, RIDER, y0=r + 0.35 - 0.75, legs=True)

    # ----------------------------------------------------------------- composition
    def populate(self) -> None:
        rng = self.rng
        rl, rr = self.road
        wl, wr = rl - self.walk[0], rr + self.walk[1]
        # Poles and signs along both kerbs.
        for xk in (rl - 0.4, rr + 0.4):
            z = rng.uniform(3.0, 15.0)
            while z < 80.0:
                self.pole(xk, z)
                z += rng.uniform(10.0, 30.0)
        # Vehicles in lanes (and parked along the kerbs).
        lanes = np.arange(rl + 1.6, rr - 1.0, 3.2)
        for _ in range(rng.integers(1, 7)):
            kind = rng.choice([CAR, CAR, CAR, CAR, TRUCK, BUS])
            x = float(rng.choice(lanes)) + rng.uniform(-0.4, 0.4) if lanes.size else rl + 1.5
            self.vehicle(x, rng.uniform(4.0, 60.0), int(kind))
        for xk in (rl + 1.0, rr - 1.0):
            if rng.random() < 0.5:
                for z in np.arange(rng.uniform(3, 10), 60.0, rng.uniform(5.5, 12.0)):
                    if rng.random() < 0.7:
                        self.vehicle(xk, float(z), CAR)
        # Pedestrians on the sidewalks.
        for _ in range(rng.integers(0, 8)):
            left = rng.random() < 0.5
            x = rng.uniform(wl + 0.3, rl - 0.3) if left else rng.uniform(rr + 0.3, wr - 0.3)
            self.human(x, rng.uniform(2.5, 40.0), PERSON)
        # Cyclists near the kerb, parked bikes on the sidewalk.
        if rng.random() < 0.6:
            label = BICYCLE if rng.random() < 0.7 else MOTORCYCLE
            self.two_wheeler(rng.uniform(rl + 0.6, rr - 0.6), rng.uniform(4.0, 30.0), label, rider=True)
        if rng.random() < 0.4:
            self.two_wheeler(rng.uniform(wl + 0.6, rl - 0.6), rng.uniform(3.0, 25.0), BICYCLE, rider=False)

    def ego_vehicle(self) -> np.ndarray | None:
        """Bonnet at the bottom of the frame (labelId 1 'ego vehicle', ignored, no depth)."""
        c, rng = self.c, self.rng
        if rng.random() >= 0.4:
            return None
        u = (np.arange(c.w, dtype=np.float32) + 0.5) / c.w - 0.5
        top = c.h * (1.0 - rng.uniform(0.04, 0.1) * (1.0 - 2.0 * u ** 2))
        v = np.arange(c.h, dtype=np.float32)[:, None] + 0.5
        mask = v >= top[None, :]
        c.label[mask] = EGO
        c.rgb[mask] = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.05, 0.3))
        return mask

    def finish(self, ego: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, rng = self.c, self.rng
        # Per-pixel texture: gain = 1 + amplitude(class) * noise. The noise is drawn as raw bytes
        # mapped through normal quantiles, several times cheaper than standard_normal.
        noise = _NORMAL_QUANTILES[np.frombuffer(rng.bytes(c.h * c.w), dtype=np.uint8)].reshape(c.h, c.w)
        gain = _NOISE_AMP[c.label]
        gain *= noise
        gain += 1.0
        blotch = _BLOTCHY[c.label]
        if blotch.any():
            blotch *= _smooth_noise(rng, c.h, c.w, 3) - 0.5
            gain += blotch
        shading = _smooth_noise(rng, c.h, c.w, 32)  # soft large-scale light variation
        shading *= 0.2
        shading += 0.9
        gain *= shading
        light = rng.uniform(0.75, 1.15) * _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.12), 1.0)
        # In-place arithmetic: fresh full-size temporaries cost more than the arithmetic here.
        rgb = c.rgb
        rgb *= gain[..., None]
        rgb *= light * 255.0
        rgb += 0.5
        np.clip(rgb, 0.0, 255.0, out=rgb)
        image = rgb.astype(np.uint8)
        depth = c.z.copy()
        depth[~(depth <= MAX_GT_DEPTH)] = 0.0  # sky (inf) and beyond the range: no ground truth
        if ego is not None:
            depth[ego] = 0.0
        return image, c.label, depth


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid (one value per ``cell`` px) upsampled bilinearly."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    img = Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.float32)  # writable copy


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one street scene.

    Returns ``image`` ``(H, W, 3)`` uint8, ``label`` ``(H, W)`` uint8 Cityscapes labelIds and
    ``depth`` ``(H, W)`` float32 metres (0 = no ground truth: sky, the ego vehicle, beyond
    :data:`MAX_GT_DEPTH`).
    """
    s = _Scene(rng, height, width)
    s.sky_and_ground()
    s.skyline()
    s.street_side(0)
    s.street_side(1)
    s.populate()
    ego = s.ego_vehicle()
    return s.finish(ego)
