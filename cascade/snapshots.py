"""PNG snapshots of a case: image with its label map overlaid, in three orthogonal planes.

The planes pass through the centre of the labelled region and are drawn at their physical aspect
ratio (pixels resized by the voxel spacing), axial, coronal and sagittal side by side, in the
radiological convention whatever the file's axis order (volumes are turned to RAS first): the
patient's right on the image's left in the axial and coronal planes (seen from the feet and from
the front), anterior on the left in the sagittal plane, anterior and superior up. Orientation
letters stand at the edges of each plane, its name above it, and a legend of the classes below.
The grey levels are windowed to the 0.5th-99.5th intensity percentiles (real scans, z-scored or
not, and phantoms alike).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cascade.labels import CLASS_COLOURS, CLASS_NAMES

__all__ = ["PLANE_LETTERS", "overlay_planes", "save_overlay_png"]

PIXEL_MM = 0.5  # output resolution of the snapshot
BORDER = 22  # pixels around each plane, holding its orientation letters
TITLE = 22  # pixels above the planes, holding their names
LEGEND = 30  # pixels below the planes, holding the legend
GAP = 12  # pixels between planes
FONT_SIZE = 15
LETTER_COLOUR = (255, 255, 255)

# plane -> letters at its (left, right, top, bottom) edges; RAS arrays are drawn with both display
# axes reversed (see _display), which puts these anatomical directions there.
PLANE_LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def _display(plane: np.ndarray) -> np.ndarray:
    """A RAS plane (first axis, second axis) as display rows and columns: the second axis runs up,
    the first runs leftwards (R or A at the left edge; A or S at the top)."""
    return np.ascontiguousarray(plane.swapaxes(0, 1)[::-1, ::-1])


def _plane_rgb(
    image: np.ndarray, label: np.ndarray, spacing: tuple[float, float], low: float, high: float
) -> Image.Image:
    """A (first, second) RAS plane coloured by label, as a picture at :data:`PIXEL_MM` per pixel."""
    grey = (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in CLASS_COLOURS.items():
        where = label == value
        rgb[where] = (0.45 * rgb[where] + 0.55 * np.asarray(colour)).astype(np.uint8)
    picture = Image.fromarray(_display(rgb))
    size = tuple(max(1, round(n * mm / PIXEL_MM)) for n, mm in zip(image.shape, spacing))
    return picture.resize(size, Image.NEAREST)


def _letters(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], letters: tuple[str, ...], font) -> None:
    """Write (left, right, top, bottom) letters centred on the edges of ``box`` (x0, y0, x1, y1), in its border."""
    x0, y0, x1, y1 = box
    middle_x, middle_y, half = (x0 + x1) / 2, (y0 + y1) / 2, BORDER / 2
    places = [(x0 - half, middle_y), (x1 + half, middle_y), (middle_x, y0 - half), (middle_x, y1 + half)]
    for letter, (x, y) in zip(letters, places):
        draw.text((x, y), letter, fill=LETTER_COLOUR, font=font, anchor="mm")


def overlay_planes(image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float]) -> Image.Image:
    """Axial, coronal and sagittal planes of RAS-ordered (X, Y, Z) arrays, side by side, with
    orientation letters, plane names and a legend of the classes.

    Args:
        image: intensities (X, Y, Z), axes towards the patient's right, anterior and superior.
        label: label map of the same shape (0 background, 1-3 coloured).
        spacing: voxel size (X, Y, Z) in mm.

    Returns:
        The picture; each plane of :data:`PLANE_LETTERS` has its letters at its edges.
    """
    labelled = np.argwhere(label > 0)
    cx, cy, cz = labelled.mean(0).round().astype(int) if len(labelled) else np.asarray(image.shape) // 2
    low, high = np.percentile(image, [0.5, 99.5])
    sx, sy, sz = spacing
    planes = {
        "axial": _plane_rgb(image[:, :, cz], label[:, :, cz], (sx, sy), low, high),
        "coronal": _plane_rgb(image[:, cy, :], label[:, cy, :], (sx, sz), low, high),
        "sagittal": _plane_rgb(image[cx, :, :], label[cx, :, :], (sy, sz), low, high),
    }
    width = sum(p.width + 2 * BORDER for p in planes.values()) + GAP * (len(planes) - 1)
    height = TITLE + max(p.height for p in planes.values()) + 2 * BORDER + LEGEND
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    left = 0
    for name, plane in planes.items():
        x0, y0 = left + BORDER, TITLE + BORDER
        canvas.paste(plane, (x0, y0))
        draw.text((x0 + plane.width / 2, TITLE / 2), name, fill=LETTER_COLOUR, font=font, anchor="mm")
        _letters(draw, (x0, y0, x0 + plane.width, y0 + plane.height), PLANE_LETTERS[name], font)
        left += plane.width + 2 * BORDER + GAP
    x, y = BORDER, height - LEGEND / 2
    for value, colour in CLASS_COLOURS.items():
        draw.rectangle((x, y - 7, x + 14, y + 7), fill=colour)
        text = CLASS_NAMES[value].replace("_", " ")
        draw.text((x + 20, y), text, fill=LETTER_COLOUR, font=font, anchor="lm")
        x += 20 + draw.textlength(text, font=font) + 24
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
