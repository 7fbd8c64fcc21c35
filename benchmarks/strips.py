"""Parity image strips: input | mask | reference | candidate | abs-diff heat map, one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m2ae.imageio import rgb_panel, write_image

#: white gap between panels, in pixels
GAP = 2


def heat_map(diff: np.ndarray, scale: float) -> np.ndarray:
    """``diff`` [H,W] (>= 0) as an RGB inferno heat map [H,W,3]; ``scale`` maps to the top colour."""
    from matplotlib import colormaps

    normalised = np.clip(diff / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(diff)
    return colormaps["inferno"](normalised)[..., :3].astype(np.float32)


def compose_strip(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, candidate: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Panels side by side as [H, 5W + 4*GAP, 3]; also returns the heat map's full-scale value.

    Inputs are one image's CHW arrays (image/reference/candidate [3,H,W], mask [1,H,W]).
    The heat map is scaled to the largest difference so that the error's layout shows
    even when it is tiny; the scale is returned so reports can state it.
    """
    diff = np.abs(candidate.astype(np.float32) - reference.astype(np.float32)).max(axis=0)
    scale = float(diff.max())
    panels = [rgb_panel(image), rgb_panel(mask), rgb_panel(reference), rgb_panel(candidate), heat_map(diff, scale)]
    height = panels[0].shape[0]
    gap = np.ones((height, GAP, 3), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for panel in panels:
        pieces.extend([panel, gap])
    return np.concatenate(pieces[:-1], axis=1), scale


def write_strip(path: str | Path, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                candidate: np.ndarray) -> tuple[Path, float]:
    """Write the strip PNG (atomically); returns its path and the heat map's full-scale value."""
    strip, scale = compose_strip(image, mask, reference, candidate)
    return write_image(path, strip), scale
