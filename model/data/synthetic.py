"""Deterministic synthetic local-motion-blur pairs: moving objects over a still scene.

A sample is a static background (a crop of a natural image scikit-image ships) with 1..N
foreground objects (textured shapes or natural-image cut-outs under an alpha mask),
each moving along a quadratic Bezier path during the exposure. The exposure is T
discrete steps; ``blurred`` is their mean, ``sharp`` the scene at the middle of the
exposure. Both are quantised to 8-bit levels, and ``mask`` is exactly the set of pixels
where they differ, so every sharp pixel is bit-identical in the pair.

Source split (fixed; no image is in both): held-out = coffee, chelsea, rocket
(``skimage.data.cat`` is chelsea again, so it is never used). Train = every other
image below, plus any picture files of ``SyntheticConfig.pictures``. Backgrounds and
natural-image objects only come from the sample's split (or, with
``SyntheticConfig.procedural``, a background is a procedural dead-leaves scene).

Trajectory convention: ``trajectory[2t]`` and ``trajectory[2t + 1]`` are the x and y
offsets, in pixels, at exposure step t, such that inside the moving objects
``blurred(p) ~ mean_t sharp(p + trajectory_t(p))`` (what a reblur operator that
grid-samples the sharp image at ``p + offset`` computes). At pixel p and step t the
offset is minus the displacement (relative to the sharp frame) of the topmost object
covering p at that step (alpha >= 0.5), and 0 where no object covers p.

Two generators share all of the above. ``"standard"`` (training, validation, ``m2ae eval
--data synthetic``) draws ellipses and star-shaped polygons moving 1..``max_displacement``
px along gently bent Bezier paths. ``"shifted"`` (``m2ae eval --data synthetic-shifted``)
checks that a model generalises rather than fits that generator: it draws shapes the
standard one never does (tilted rounded rectangles, thin bars, curved strokes, rings),
moving along straight (no bend) or strongly bent paths at a constant or a changing speed,
over a motion length drawn uniformly from :data:`SHIFTED_DISPLACEMENT` px whatever
``max_displacement`` says.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter
from skimage import data as skdata

from m2ae.errors import UserError
from m2ae.imageio import read_image

HELDOUT_SOURCES: tuple[str, ...] = ("coffee", "chelsea", "rocket")
TRAIN_SOURCES: tuple[str, ...] = (
    "astronaut",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "stereo_motorcycle",
    "camera",
    "moon",
    "coins",
    "clock",
    "grass",
    "gravel",
    "brick",
    "cell",
)
SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_SOURCES, "heldout": HELDOUT_SOURCES}

#: what :attr:`Sample.sources` names a procedural (dead-leaves) background
PROCEDURAL_SOURCE = "dead_leaves"

#: base seed of :func:`heldout_set`, far from the small seeds training tends to use
HELDOUT_BASE_SEED = 1_000_000_007

GENERATORS: tuple[str, ...] = ("standard", "shifted")
#: motion length range, in pixels, of the ``"shifted"`` generator (any max_displacement)
SHIFTED_DISPLACEMENT: tuple[float, float] = (4.0, 14.0)

# A mask can come out empty only if every moving object matches the scene behind it to
# 8 bits; the generator redraws (deterministically) up to this many times.
_MAX_ATTEMPTS = 16


@dataclass(frozen=True)
class SyntheticConfig:
    """How samples look. ``size`` is an int (square) or ``(H, W)``; displacements are
    in pixels: ``max_displacement`` bounds the distance between any two positions of an
    object during the exposure (every object moves at least 1 px). ``generator`` is
    ``"standard"`` or ``"shifted"`` (other shapes and paths, motion lengths from
    :data:`SHIFTED_DISPLACEMENT` instead of 1..``max_displacement``; see the module
    docstring)."""

    size: int | tuple[int, int] = 128
    num_steps: int = 9
    max_objects: int = 3
    max_displacement: float = 12.0
    split: str = "train"
    #: object side length as a fraction of min(H, W)
    object_scale: tuple[float, float] = (0.2, 0.5)
    #: probability that an object is a natural-image cut-out rather than a textured shape
    natural_object_prob: float = 0.5
    #: probability that an object's alpha has a soft (fractional) edge
    soft_edge_prob: float = 0.5
    #: background crop side / output side: < 1 zooms in, > 1 zooms out
    zoom_range: tuple[float, float] = (0.6, 1.5)
    #: "standard" (training) or "shifted" (a differently made evaluation set)
    generator: str = "standard"
    #: up to this many still objects (drawn like the moving ones, but sharp) pasted into the
    #: scene behind them: without them every pasted shape moves, and a mask head learns
    #: "shape" instead of "blur" (it then marks a cat's eyes). 0 keeps every sample as it was.
    still_objects: int = 0
    #: give the background a random colour transform (a random 3x3 colour matrix and
    #: offset): 8 of the 14 training pictures are grey, so without it "colourful" means
    #: "a moving object" to a mask head. False keeps every sample as it was.
    recolour: bool = False
    #: chance that the still scene (background and still objects) is out of focus: a
    #: Gaussian blur of 0.5-3 px, over the whole frame or faded in through a smooth random
    #: depth map, so softness alone is no sign of motion. Such pixels are identical in the
    #: pair, so the mask stays exact. At 0.5 the conv mask head trained alone did worse on
    #: the held-out set (IoU 0.28 against 0.33; docs/training.md). 0 keeps every sample as it was.
    defocus: float = 0.0
    #: chance that the background is a procedural dead-leaves scene (overlapping shapes at
    #: every scale, see :func:`_dead_leaves`) instead of a crop of a bundled picture: the 14
    #: training pictures are too few, and mostly not photographs, for a mask head to learn
    #: that a sharp edge is not blur. 0 keeps every sample as it was.
    procedural: float = 0.0
    #: picture files (any format ``m2ae.imageio`` reads) added to the training pictures,
    #: for backgrounds and cut-out objects alike: a user's own sharp photos, so the scenes
    #: look like theirs. Training split only. Empty keeps every sample as it was.
    pictures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        height, width = self.hw
        if height < 8 or width < 8:
            raise UserError(f"synthetic size: expected at least 8x8 pixels, got {self.size!r}")
        if self.num_steps < 2:
            raise UserError(f"synthetic num_steps: expected >= 2, got {self.num_steps}")
        if self.max_objects < 1:
            raise UserError(f"synthetic max_objects: expected >= 1, got {self.max_objects}")
        if not math.isfinite(self.max_displacement) or self.max_displacement < 1.0:
            raise UserError(
                f"synthetic max_displacement: expected >= 1 pixel, got {self.max_displacement}"
            )
        if self.split not in SPLITS:
            raise UserError(f"synthetic split: expected one of {sorted(SPLITS)}, got {self.split!r}")
        low, high = self.object_scale
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"synthetic object_scale: expected 0 < low <= high <= 1, got {self.object_scale}")
        low, high = self.zoom_range
        if not 0.0 < low <= high:
            raise UserError(f"synthetic zoom_range: expected 0 < low <= high, got {self.zoom_range}")
        if self.still_objects < 0:
            raise UserError(f"synthetic still_objects: expected >= 0, got {self.still_objects}")
        if not 0.0 <= self.defocus <= 1.0:
            raise UserError(f"synthetic defocus: expected a probability in [0, 1], got {self.defocus}")
        if not 0.0 <= self.procedural <= 1.0:
            raise UserError(f"synthetic procedural: expected a probability in [0, 1], got {self.procedural}")
        if self.pictures and self.split != "train":
            raise UserError(f"synthetic pictures: only the train split takes extra pictures, not {self.split!r}")
        if self.generator not in GENERATORS:
            raise UserError(f"synthetic generator: expected one of {list(GENERATORS)}, got {self.generator!r}")

    @property
    def hw(self) -> tuple[int, int]:
        if isinstance(self.size, int):
            return self.size, self.size
        height, width = self.size
        return int(height), int(width)

    @property
    def displacement_range(self) -> tuple[float, float]:
        """The (min, max) motion length of an object, in pixels."""
        if self.generator == "shifted":
            return SHIFTED_DISPLACEMENT
        return 1.0, self.max_displacement


@dataclass
class Sample:
    """One pair. Arrays are float32, channel-first; ``mask`` is 0/1."""

    blurred: np.ndarray  # [3, H, W]
    sharp: np.ndarray  # [3, H, W]
    mask: np.ndarray  # [1, H, W]
    trajectory: np.ndarray  # [2T, H, W]
    seed: int
    #: the pictures used (skimage names or file paths), or PROCEDURAL_SOURCE for a procedural background
    sources: tuple[str, ...] = field(default_factory=tuple)


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "stereo_motorcycle": lambda: skdata.stereo_motorcycle()[0],
}


#: decoded pictures kept per process: every bundled one (17) and up to 47 of a user's
#: (``SyntheticConfig.pictures``); a larger folder is decoded again as samples need it
_PICTURE_CACHE = 64


@functools.lru_cache(maxsize=_PICTURE_CACHE)
def load_source(name: str) -> np.ndarray:
    """A bundled scikit-image picture (by name) or a picture file (by path) as read-only
    uint8 RGB [H, W, 3] (cached per process)."""
    if name in SPLITS["train"] or name in SPLITS["heldout"]:
        loader = _LOADERS.get(name) or getattr(skdata, name)
        image = np.asarray(loader())
    else:
        image = np.round(read_image(name) * 255.0)
    image = np.ascontiguousarray(_rgb_uint8(image), dtype=np.uint8)
    image.flags.writeable = False
    return image


def _random_crop(rng: np.random.Generator, name: str, height: int, width: int,
                 zoom_range: tuple[float, float]) -> np.ndarray:
    """A random, randomly zoomed and flipped crop of source ``name``: float32 [h, w, 3]."""
    source = load_source(name)
    src_h, src_w = source.shape[:2]
    zoom = min(rng.uniform(*zoom_range), src_h / height, src_w / width)
    crop_h = min(src_h, max(1, round(height * zoom)))
    crop_w = min(src_w, max(1, round(width * zoom)))
    y0 = int(rng.integers(0, src_h - crop_h + 1))
    x0 = int(rng.integers(0, src_w - crop_w + 1))
    crop = source[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if (crop_h, crop_w) != (height, width):
        crop = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop.astype(np.float32) / 255.0


def _recolour(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` [h, w, 3] through a random colour matrix (per-channel gains of 0.5-1.2 plus
    cross-talk) and offset, clipped and back on 8-bit levels: a grey picture becomes a
    ramp between two random colours."""
    matrix = np.diag(rng.uniform(0.5, 1.2, 3)) + rng.normal(0.0, 0.25, (3, 3))
    offset = rng.uniform(-0.1, 0.2, 3)
    return _quantise(image @ matrix.astype(np.float32).T + offset.astype(np.float32))


#: defocus blur radius (Gaussian sigma) range, in pixels
DEFOCUS_SIGMA: tuple[float, float] = (0.5, 3.0)


def _defocus(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` [h, w, 3] out of focus: a Gaussian blur of :data:`DEFOCUS_SIGMA` px over
    the whole frame (half the time) or blended in through a smooth random depth map, back
    on 8-bit levels."""
    height, width = image.shape[:2]
    sigma = rng.uniform(*DEFOCUS_SIGMA)
    soft = gaussian_filter(image, sigma=(sigma, sigma, 0.0), mode="reflect")
    if rng.random() < 0.5:
        return _quantise(soft)
    coarse = rng.uniform(-1.0, 2.0, (3, 3)).astype(np.float32)
    depth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    weight = np.clip(depth, 0.0, 1.0)[:, :, None]
    return _quantise(image * (1.0 - weight) + soft * weight)


#: supersampling of :func:`_dead_leaves`, for anti-aliased edges
_LEAF_SUPERSAMPLE = 2
#: smallest leaf radius, in output pixels, and how many times the leaves cover the frame
_LEAF_MIN_RADIUS = 4.0
_LEAF_COVERAGE = 4.0
#: chance that a leaf is flat, or filled with smooth shading, fine grain, stripes or a ramp
_LEAF_FILLS = (0.35, 0.2, 0.2, 0.1, 0.15)


def _leaf_radii(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """Radii with density proportional to r^-3 on [low, high] (inverse CDF): the size law
    under which a dead-leaves image looks the same at every scale, as natural images do."""
    u = rng.random(count)
    return (low**-2 - u * (low**-2 - high**-2)) ** -0.5


def _leaf_fills(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The fill patterns leaves choose from, [len(_LEAF_FILLS), h, w] in [0, 1]: flat, smooth
    shading, fine grain (fur, foliage, sensor texture), stripes and a ramp."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def along() -> np.ndarray:
        angle = rng.uniform(0.0, math.pi)
        return xx * math.cos(angle) + yy * math.sin(angle)

    smooth = np.asarray(Image.fromarray(rng.random((6, 6)).astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
    grain = gaussian_filter(rng.random((height, width)).astype(np.float32), sigma=(rng.uniform(0.7, 2.0), rng.uniform(0.7, 4.0)))
    grain = (grain - grain.min()) / max(float(np.ptp(grain)), 1e-6)
    stripes = 0.5 + 0.5 * np.sin(along() * (2.0 * math.pi / rng.uniform(6.0, 30.0)))
    ramp = along()
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    return np.clip(np.stack([np.zeros_like(ramp), smooth, grain, stripes, ramp]), 0.0, 1.0)


def _dead_leaves(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A procedural scene, float32 [h, w, 3] on 8-bit levels: opaque ellipses, rectangles
    and triangles of every size (radii ~ r^-3) painted over each other, each coloured from
    a small random palette and filled flat or with one of :func:`_leaf_fills`, under a
    smooth shading field and faint sensor-like noise. It has sharp occluding edges and
    texture at every scale and orientation, and nothing that moves."""
    scale = _LEAF_SUPERSAMPLE
    big_h, big_w = height * scale, width * scale
    low, high = _LEAF_MIN_RADIUS * scale, 0.5 * max(big_h, big_w)
    mean_area = math.pi * 2.0 * math.log(high / low) / (low**-2 - high**-2)
    count = max(8, int(_LEAF_COVERAGE * big_h * big_w / mean_area))
    radii = _leaf_radii(rng, count, low, high)
    aspect = rng.uniform(0.3, 1.0, count)
    centres = rng.uniform(0.0, 1.0, (count, 2)) * (big_w, big_h)
    kinds = rng.random(count)
    tilts = rng.uniform(0.0, math.pi, count)
    # Leaf i is painted as label i + 1 (0 never shows: the first leaf covers the frame).
    labels = Image.new("I", (big_w, big_h), 1)
    draw = ImageDraw.Draw(labels)
    for label, ((cx, cy), r, a, kind, tilt) in enumerate(
            zip(centres.tolist(), radii.tolist(), aspect.tolist(), kinds.tolist(), tilts.tolist()), start=1):
        if kind < 0.6:
            draw.ellipse((cx - r, cy - r * a, cx + r, cy + r * a), fill=label)
            continue
        corners = 4 if kind < 0.85 else 3
        angles = (np.arange(corners) + 0.5) * (2.0 * math.pi / corners)
        xs, ys = _rotated(r * np.cos(angles), r * a * np.sin(angles), tilt)
        draw.polygon(list(zip((cx + xs).tolist(), (cy + ys).tolist())), fill=label)
    leaf = np.asarray(labels, dtype=np.int64)
    palette = rng.uniform(0.0, 1.0, (int(rng.integers(2, 7)), 3)).astype(np.float32)
    if rng.random() < 0.2:
        palette = np.repeat(palette[:, :1], 3, axis=1)
    base = palette[rng.integers(0, len(palette), count + 1)] + rng.normal(0.0, 0.08, (count + 1, 3)).astype(np.float32)
    other = base + rng.normal(0.0, 0.2, (count + 1, 3)).astype(np.float32)
    fill = rng.choice(len(_LEAF_FILLS), size=count + 1, p=_LEAF_FILLS)
    weight = _leaf_fills(rng, big_h, big_w)[fill[leaf], np.arange(big_h)[:, None], np.arange(big_w)]
    image = base[leaf] + weight[:, :, None] * (other[leaf] - base[leaf])
    image = image.reshape(height, scale, width, scale, 3).mean(axis=(1, 3))
    coarse = rng.uniform(0.7, 1.15, (3, 3)).astype(np.float32)
    shading = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0.0, rng.uniform(0.0, 2.0 / 255.0), image.shape).astype(np.float32)
    return _quantise(image * shading[:, :, None] + noise)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A synthetic object fill: flat, gradient, stripes, checker or smooth noise."""
    colour_a = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    colour_b = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0.0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        weight = np.zeros((height, width), np.float32)
    elif kind == 1:
        weight = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == 2:
        period = rng.uniform(3.0, 12.0)
        weight = 0.5 + 0.5 * np.sin(along * (2.0 * math.pi / period))
    elif kind == 3:
        cell = int(rng.integers(2, 9))
        weight = ((yy // cell + xx // cell) % 2).astype(np.float32)
    else:
        coarse = rng.uniform(0.0, 1.0, (max(2, height // 6), max(2, width // 6))).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    weight = np.clip(weight, 0.0, 1.0)[:, :, None]
    return colour_a * (1.0 - weight) + colour_b * weight


def _alpha(rng: np.random.Generator, height: int, width: int, soft: bool) -> np.ndarray:
    """An object silhouette in [0, 1]: a rotated ellipse or a star-shaped polygon, with
    a hard (0/1) edge or one softened by a Gaussian of 0.5-1.5 px. Its peak is 1, so
    every object has an opaque core however small."""
    sigma = min(rng.uniform(0.5, 1.5), min(height, width) / 12.0) if soft else 0.0
    # Keep 3.5 sigma of soft edge inside the box: a silhouette cut by the box is a hard line.
    half_h = max(1.0, height / 2.0 - 2.0 - 3.5 * sigma)
    half_w = max(1.0, width / 2.0 - 2.0 - 3.5 * sigma)
    if rng.random() < 0.5:
        r_a, r_b = rng.uniform(0.45, 1.0, 2) * min(half_h, half_w)
        tilt = rng.uniform(0.0, math.pi)
        theta = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        xs = r_a * np.cos(theta) * math.cos(tilt) - r_b * np.sin(theta) * math.sin(tilt)
        ys = r_a * np.cos(theta) * math.sin(tilt) + r_b * np.sin(theta) * math.cos(tilt)
    else:
        count = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, count))
        radii = rng.uniform(0.4, 1.0, count)
        xs, ys = radii * half_w * np.cos(angles), radii * half_h * np.sin(angles)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon(list(zip((cx + xs).tolist(), (cy + ys).tolist())), fill=255)
    # Both shapes contain their centre; a sub-pixel shape may not cover a pixel centre.
    draw.point((round(cx), round(cy)), fill=255)
    if soft:
        canvas = canvas.filter(ImageFilter.GaussianBlur(sigma))
    alpha = np.asarray(canvas, dtype=np.float32)
    return alpha / alpha.max()


def _rotated(xs: np.ndarray, ys: np.ndarray, tilt: float) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = math.cos(tilt), math.sin(tilt)
    return xs * cos - ys * sin, xs * sin + ys * cos


def _shifted_alpha(rng: np.random.Generator, height: int, width: int, soft: bool) -> np.ndarray:
    """A silhouette of the ``"shifted"`` generator, shapes :func:`_alpha` never draws: a
    tilted rounded rectangle, a thin straight bar, a thin curved stroke or an elliptical
    ring; edges and peak as in :func:`_alpha`."""
    sigma = min(rng.uniform(0.5, 1.5), min(height, width) / 12.0) if soft else 0.0
    half_h = max(1.0, height / 2.0 - 2.0 - 3.5 * sigma)
    half_w = max(1.0, width / 2.0 - 2.0 - 3.5 * sigma)
    radius = min(half_h, half_w)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)

    def polygon(xs: np.ndarray, ys: np.ndarray, fill: int) -> None:
        draw.polygon(list(zip((cx + xs).tolist(), (cy + ys).tolist())), fill=fill)

    kind = int(rng.integers(0, 4))
    tilt = rng.uniform(0.0, math.pi)
    if kind == 0:  # rounded rectangle; it fits the box whatever the tilt
        a, b = rng.uniform(0.5, 1.0, 2) * radius / math.sqrt(2.0)
        corner = rng.uniform(0.1, 0.6) * min(a, b)
        theta = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        cos, sin = np.cos(theta), np.sin(theta)
        xs = np.sign(cos) * (a - corner) + corner * cos
        ys = np.sign(sin) * (b - corner) + corner * sin
        polygon(*_rotated(xs, ys, tilt), 255)
    elif kind == 1:  # thin bar through the centre, about as long as the box allows
        thickness = rng.uniform(1.0, 3.0)  # half-thickness: bars 2-6 px wide
        reach = min(half_w / max(abs(math.cos(tilt)), 1e-6), half_h / max(abs(math.sin(tilt)), 1e-6))
        length = max(1.0, rng.uniform(0.7, 1.0) * reach - thickness)
        xs = np.array([-length, length, length, -length])
        ys = np.array([-thickness, -thickness, thickness, thickness])
        polygon(*_rotated(xs, ys, tilt), 255)
    elif kind == 2:  # thin stroke along a parabola, inside the disc that fits the box
        width_px = int(rng.integers(2, 7))
        reach = max(1.0, radius - width_px / 2.0)
        t = np.linspace(-1.0, 1.0, 33)
        xs = t * reach * rng.uniform(0.6, 0.8)
        ys = rng.uniform(0.2, 0.4) * rng.choice([-1.0, 1.0]) * reach * (2.0 * t**2 - 1.0)
        xs, ys = _rotated(xs, ys, tilt)
        points = list(zip((cx + xs).tolist(), (cy + ys).tolist()))
        draw.line(points, fill=255, width=width_px, joint="curve")
    else:  # elliptical ring: the background shows through its hole
        r_a, r_b = rng.uniform(0.6, 1.0, 2) * radius
        thickness = rng.uniform(0.25, 0.5)
        theta = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        xs, ys = r_a * np.cos(theta), r_b * np.sin(theta)
        polygon(*_rotated(xs, ys, tilt), 255)
        polygon(*_rotated(xs * (1.0 - thickness), ys * (1.0 - thickness), tilt), 0)
    # A sub-pixel shape may not cover a pixel centre; the centre is then its core.
    if not np.asarray(canvas).any():
        draw.point((round(cx), round(cy)), fill=255)
    if soft:
        canvas = canvas.filter(ImageFilter.GaussianBlur(sigma))
    alpha = np.asarray(canvas, dtype=np.float32)
    return alpha / alpha.max()


def _path(rng: np.random.Generator, num_steps: int, length: float) -> np.ndarray:
    """Object displacement [T, 2] (x, y) per step relative to mid-exposure.

    A quadratic Bezier with a random bend and an uneven speed; scaled so the largest
    distance between any two of its positions (mid-exposure included) is ``length``.
    """
    angle = rng.uniform(0.0, 2.0 * math.pi)
    end = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-end[1], end[0]])
    control = end * rng.uniform(0.2, 0.8) + normal * rng.uniform(-0.6, 0.6)
    times = np.append(np.linspace(0.0, 1.0, num_steps), 0.5)[:, None]
    points = 2.0 * times * (1.0 - times) * control + times**2 * end
    extent = np.max(np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2))
    points = points * (length / extent)
    return (points[:-1] - points[-1]).astype(np.float64)


def _shifted_path(rng: np.random.Generator, num_steps: int, length: float) -> np.ndarray:
    """:func:`_path` for the ``"shifted"`` generator: a straight segment or a quadratic
    Bezier bent far more than :func:`_path` bends (normal offset 0.8-1.5 of the chord),
    travelled at a constant speed or at one that grows or shrinks through the exposure;
    scaled the same way."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    end = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-end[1], end[0]])
    bend = 0.0 if rng.random() < 0.5 else rng.uniform(0.8, 1.5) * rng.choice([-1.0, 1.0])
    control = end * rng.uniform(0.3, 0.7) + normal * bend
    # Position as a function of the fraction of arc length travelled, on a fine polyline.
    u = np.linspace(0.0, 1.0, 513)[:, None]
    curve = 2.0 * u * (1.0 - u) * control + u**2 * end
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    arc /= arc[-1]
    # Constant speed, or the arc fraction a power of time (accelerating or braking).
    speed = int(rng.integers(0, 3))
    exponent = 1.0 if speed == 0 else rng.uniform(1.5, 2.5) if speed == 1 else rng.uniform(0.4, 0.67)
    times = np.append(np.linspace(0.0, 1.0, num_steps), 0.5) ** exponent
    points = np.stack([np.interp(times, arc, curve[:, 0]), np.interp(times, arc, curve[:, 1])], axis=1)
    extent = np.max(np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2))
    points = points * (length / extent)
    return (points[:-1] - points[-1]).astype(np.float64)


@dataclass
class _Object:
    layer: np.ndarray  # [h, w, 4]: premultiplied RGB, alpha; margin of zeros all round
    top: int  # frame row of layer[0]
    left: int  # frame column of layer[:, 0]
    displacement: np.ndarray  # [T, 2] (x, y), relative to the sharp (mid-exposure) frame


def _shift(layer: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``out(y, x) = layer(y - dy, x - dx)``, bilinear; the zero margin of ``layer`` is
    wider than the shift, so rolling never wraps content around."""
    ix, iy = math.floor(dx), math.floor(dy)
    fx, fy = np.float32(dx - ix), np.float32(dy - iy)
    out = np.roll(layer, (iy, ix), axis=(0, 1)) if (ix or iy) else layer
    if fx:
        out = (1.0 - fx) * out + fx * np.roll(out, 1, axis=1)
    if fy:
        out = (1.0 - fy) * out + fy * np.roll(out, 1, axis=0)
    return out


def _pictures(config: SyntheticConfig) -> tuple[str, ...]:
    """The pictures a sample of ``config`` draws from: its split's, then its own."""
    return SPLITS[config.split] + config.pictures


def _make_object(rng: np.random.Generator, config: SyntheticConfig, sources: list[str],
                 margin: int) -> _Object:
    height, width = config.hw
    side = min(height, width)
    obj_h = max(8, round(side * rng.uniform(*config.object_scale)))
    obj_w = max(8, round(side * rng.uniform(*config.object_scale)))
    if rng.random() < config.natural_object_prob:
        name = str(rng.choice(_pictures(config)))
        sources.append(name)
        colour = _random_crop(rng, name, obj_h, obj_w, config.zoom_range)
    else:
        colour = _texture(rng, obj_h, obj_w)
    shifted = config.generator == "shifted"
    alpha = (_shifted_alpha if shifted else _alpha)(rng, obj_h, obj_w, soft=rng.random() < config.soft_edge_prob)
    layer = np.zeros((obj_h + 2 * margin, obj_w + 2 * margin, 4), np.float32)
    layer[margin : margin + obj_h, margin : margin + obj_w, :3] = colour * alpha[:, :, None]
    layer[margin : margin + obj_h, margin : margin + obj_w, 3] = alpha
    centre_y = rng.uniform(0.0, height)
    centre_x = rng.uniform(0.0, width)
    length = rng.uniform(*config.displacement_range)
    return _Object(
        layer=layer,
        top=int(round(centre_y - obj_h / 2.0)) - margin,
        left=int(round(centre_x - obj_w / 2.0)) - margin,
        displacement=(_shifted_path if shifted else _path)(rng, config.num_steps, length),
    )


def _quantise(values: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(values, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


Box = tuple[int, int, int, int]  # top, left, bottom, right (exclusive), frame rows/columns


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _clusters(objects: list[_Object], height: int, width: int) -> list[tuple[Box, list[_Object]]]:
    """Objects grouped so that the boxes of different groups never overlap, each box
    clipped to the frame and each group in z-order. Rendering group by group touches
    only pixels some object can reach, not the whole frame."""
    groups: list[tuple[Box, list[int]]] = []
    for index, obj in enumerate(objects):
        box = (max(0, obj.top), max(0, obj.left),
               min(height, obj.top + obj.layer.shape[0]), min(width, obj.left + obj.layer.shape[1]))
        if box[2] > box[0] and box[3] > box[1]:
            groups.append((box, [index]))
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(range(len(groups)), 2):
            if _overlap(groups[a][0], groups[b][0]):
                groups[a] = (_union(groups[a][0], groups[b][0]), groups[a][1] + groups[b][1])
                del groups[b]
                merged = True
                break
    return [(box, [objects[i] for i in sorted(members)]) for box, members in groups]


def _composite(background: np.ndarray, objects: list[_Object], box: Box,
               offsets: list[np.ndarray], flow: np.ndarray | None) -> np.ndarray:
    """The scene inside ``box`` with each object shifted by its (dx, dy) offset,
    composited in z-order; ``flow`` ([2, h, w] over the box), if given, receives minus
    the offset of the topmost object covering each pixel (alpha >= 0.5)."""
    top, left, bottom, right = box
    frame = background[top:bottom, left:right].copy()
    for obj, (dx, dy) in zip(objects, offsets):
        moved = _shift(obj.layer, dx, dy)
        y0, x0 = max(obj.top, top), max(obj.left, left)
        y1 = min(obj.top + moved.shape[0], bottom)
        x1 = min(obj.left + moved.shape[1], right)
        if y1 <= y0 or x1 <= x0:
            continue
        src = moved[y0 - obj.top : y1 - obj.top, x0 - obj.left : x1 - obj.left]
        dst = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        alpha = src[:, :, 3:]
        frame[dst] = src[:, :, :3] + (1.0 - alpha) * frame[dst]
        if flow is not None:
            covered = alpha[:, :, 0] >= 0.5
            flow[0][dst][covered] = -dx
            flow[1][dst][covered] = -dy
    return frame


def _render(background: np.ndarray, objects: list[_Object], num_steps: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blurred and sharp HWC frames quantised to 8-bit levels, and the [T, 2, H, W]
    trajectory. Outside the objects' reach both frames are the background, already on
    8-bit levels."""
    height, width = background.shape[:2]
    trajectory = np.zeros((num_steps, 2, height, width), np.float32)
    blurred = background.copy()
    sharp = background.copy()
    for box, group in _clusters(objects, height, width):
        top, left, bottom, right = box
        total = np.zeros((bottom - top, right - left, 3), np.float32)
        for step in range(num_steps):
            flow = trajectory[step, :, top:bottom, left:right]
            total += _composite(background, group, box, [o.displacement[step] for o in group], flow)
        blurred[top:bottom, left:right] = _quantise(total / np.float32(num_steps))
        sharp[top:bottom, left:right] = _quantise(
            _composite(background, group, box, [np.zeros(2) for _ in group], None)
        )
    return blurred, sharp, trajectory


def _attempt(config: SyntheticConfig, seed: int, attempt: int) -> Sample:
    rng = np.random.default_rng(np.random.SeedSequence([seed, attempt]))
    height, width = config.hw
    background_name = str(rng.choice(_pictures(config)))
    sources = [background_name]
    background = _random_crop(rng, background_name, height, width, config.zoom_range)
    margin = math.ceil(config.displacement_range[1]) + 2
    count = int(rng.integers(1, config.max_objects + 1))
    objects = [_make_object(rng, config, sources, margin) for _ in range(count)]
    if config.procedural and rng.random() < config.procedural:
        background = _dead_leaves(rng, height, width)
        sources[0] = PROCEDURAL_SOURCE
    # These are drawn after the moving objects, so they leave the rest of the sample as it was.
    if config.recolour:
        background = _recolour(rng, background)
    if config.still_objects:
        still = [_make_object(rng, config, sources, margin) for _ in range(int(rng.integers(0, config.still_objects + 1)))]
        if still:
            whole = (0, 0, height, width)
            background = _quantise(_composite(background, still, whole, [np.zeros(2) for _ in still], None))
    if config.defocus and rng.random() < config.defocus:
        background = _defocus(rng, background)
    blurred, sharp, trajectory = _render(background, objects, config.num_steps)
    mask = np.any(blurred != sharp, axis=2)
    return Sample(
        blurred=np.ascontiguousarray(blurred.transpose(2, 0, 1)),
        sharp=np.ascontiguousarray(sharp.transpose(2, 0, 1)),
        mask=mask[None].astype(np.float32),
        trajectory=trajectory.reshape(2 * config.num_steps, height, width),
        seed=seed,
        sources=tuple(dict.fromkeys(sources)),
    )


def make_sample(config: SyntheticConfig, seed: int) -> Sample:
    """The sample for ``(config, seed)``: the same pair, bit for bit, on every call."""
    sample = _attempt(config, seed, 0)
    for attempt in range(1, _MAX_ATTEMPTS):
        if sample.mask.any():
            break
        sample = _attempt(config, seed, attempt)
    return sample


def _tensors(sample: Sample) -> dict[str, torch.Tensor]:
    return {
        "blurred": torch.from_numpy(sample.blurred),
        "sharp": torch.from_numpy(sample.sharp),
        "mask": torch.from_numpy(sample.mask),
        "trajectory": torch.from_numpy(sample.trajectory),
    }


def make_batch(config: SyntheticConfig, seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """Samples for ``seeds`` stacked into tensors keyed blurred [N,3,H,W], sharp
    [N,3,H,W], mask [N,1,H,W] and trajectory [N,2T,H,W]."""
    if len(seeds) == 0:
        raise ValueError("make_batch: seeds is empty")
    samples = [_tensors(make_sample(config, int(seed))) for seed in seeds]
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class SyntheticDataset(torch.utils.data.Dataset):
    """``length`` samples; item i is ``make_sample(config, base_seed + i)`` as a dict of
    tensors (blurred, sharp, mask, trajectory; unbatched) plus its ``name``."""

    def __init__(self, config: SyntheticConfig, length: int, base_seed: int = 0) -> None:
        if length < 0:
            raise ValueError(f"SyntheticDataset: length must be >= 0, got {length}")
        self.config = config
        self.length = length
        self.base_seed = base_seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        seed = self.base_seed + (index % self.length)
        item: dict[str, torch.Tensor | str] = dict(_tensors(make_sample(self.config, seed)))
        generator = "" if self.config.generator == "standard" else f"{self.config.generator}_"
        item["name"] = f"synthetic_{self.config.split}_{generator}{seed}"
        return item


def heldout_set(num_images: int = 64, size: int | tuple[int, int] = 128,
                **overrides: object) -> SyntheticDataset:
    """The fixed evaluation set: ``num_images`` held-out samples at ``size`` (other
    :class:`SyntheticConfig` fields through ``overrides``), seeds from
    :data:`HELDOUT_BASE_SEED`, so every run evaluates on the same pairs."""
    config = SyntheticConfig(size=size, split="heldout", **overrides)  # type: ignore[arg-type]
    return SyntheticDataset(config, num_images, base_seed=HELDOUT_BASE_SEED)
