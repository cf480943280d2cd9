"""PNG snapshots of a case: image with its label map overlaid, in three orthogonal planes.

The planes pass through the centre of the labelled region and are drawn at their physical aspect
ratio (pixels resized by the voxel spacing), axial, coronal and sagittal side by side, anterior and
superior up whatever the file's axis order (volumes are turned to RAS first), with
the grey levels windowed to the 0.5th-99.5th intensity percentiles (real scans, z-scored or not,
and phantoms alike).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from cascade.labels import CLASS_COLOURS

__all__ = ["overlay_planes", "save_overlay_png"]

PIXEL_MM = 0.5  # output resolution of the snapshot


def _plane_rgb(image: np.ndarray, label: np.ndarray, spacing: tuple[float, float], low: float, high: float) -> Image.Image:
    grey = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in CLASS_COLOURS.items():
        where = label == value
        rgb[where] = (0.45 * rgb[where] + 0.55 * np.asarray(colour)).astype(np.uint8)
    # arrays are (X, Y) or (X, Z) etc.; show rows = second axis, flipped so superior/anterior is up
    picture = Image.fromarray(np.ascontiguousarray(np.flipud(rgb.transpose(1, 0, 2))))
    size = (max(1, round(image.shape[0] * spacing[0] / PIXEL_MM)), max(1, round(image.shape[1] * spacing[1] / PIXEL_MM)))
    return picture.resize(size, Image.NEAREST)


def overlay_planes(image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float]) -> Image.Image:
    """Axial, coronal and sagittal planes of (X, Y, Z) arrays, side by side.

    Args:
        image: intensities (X, Y, Z).
        label: label map of the same shape (0 background, 1-3 coloured).
        spacing: voxel size (X, Y, Z) in mm.
    """
    labelled = np.argwhere(label > 0)
    cx, cy, cz = labelled.mean(0).round().astype(int) if len(labelled) else np.asarray(image.shape) // 2
    low, high = np.percentile(image, [0.5, 99.5])
    sx, sy, sz = spacing
    planes = [
        _plane_rgb(image[:, :, cz], label[:, :, cz], (sx, sy), low, high),
        _plane_rgb(image[:, cy, :], label[:, cy, :], (sx, sz), low, high),
        _plane_rgb(image[cx, :, :], label[cx, :, :], (sy, sz), low, high),
    ]
    canvas = Image.new("RGB", (sum(p.width for p in planes) + 20 * (len(planes) - 1), max(p.height for p in planes)))
    left = 0
    for plane in planes:
        canvas.paste(plane, (left, 0))
        left += plane.width + 20
    return canvas


def save_overlay_png(image_path: str | os.PathLike, label_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Write the three-plane overlay of a NIfTI image and label map to ``png_path``."""
    image = nib.as_closest_canonical(nib.load(str(image_path)))
    label = nib.as_closest_canonical(nib.load(str(label_path)))
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    picture = overlay_planes(np.asanyarray(image.dataobj, dtype=np.float32), np.asanyarray(label.dataobj), spacing)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(png_path)
    return png_path
