"""The PNG of a measured case: the left-atrial surface coloured by IIR, seen from the front and from
the back, and the histogram of the wall thickness.

The surface is drawn in LPS millimetres with matplotlib's 3D axes (``mpl_toolkits.mplot3d``),
superior up: the anterior view (AP) shows the patient's left on the right of the picture, the
posterior view (PA) on the left, as in the electro-anatomical and LGE maps clinicians compare. Each
triangle takes the class of the IIR of its vertices (mean): below the first threshold (normal wall),
between thresholds (fibrosis at the default 1.2), above the last (dense scar at 1.32). Without an
image (no IIR) the surface is grey. Needs the optional extra ``atria-cascade[measure]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cascade.io import write_atomic
from cascade.labels import CLASS_COLOURS, LEFT_ATRIUM, RIGHT_ATRIUM

__all__ = ["VIEWS", "save_measures_png"]

VIEWS = {"anterior (AP)": -90.0, "posterior (PA)": 90.0}  # matplotlib azimuth; x (patient's left) to the right at -90
NORMAL_COLOUR = "#a9c4de"


def _enhancement_colours(thresholds: Sequence[float]) -> list:
    from matplotlib import colormaps

    ramp = colormaps["autumn_r"]  # yellow -> red
    return [NORMAL_COLOUR] + [ramp(0.35 + 0.65 * i / max(len(thresholds) - 1, 1)) for i in range(len(thresholds))]


def _draw_surface(axes, vertices: np.ndarray, faces: np.ndarray, face_colours, azimuth: float, title: str) -> None:
    from matplotlib.colors import LightSource, to_rgba_array
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    colours = to_rgba_array(face_colours)
    polygons = Poly3DCollection(
        vertices[faces],
        facecolors=colours,
        edgecolors=colours,
        linewidths=0.0,
        shade=True,
        lightsource=LightSource(azdeg=azimuth + 180.0, altdeg=35.0),
    )
    axes.add_collection3d(polygons)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    centre, half = (low + high) / 2, (high - low).max() / 2
    axes.set_xlim(centre[0] - half, centre[0] + half)
    axes.set_ylim(centre[1] - half, centre[1] + half)
    axes.set_zlim(centre[2] - half, centre[2] + half)
    axes.set_box_aspect((1, 1, 1), zoom=1.5)
    axes.view_init(elev=10.0, azim=azimuth)
    axes.set_axis_off()
    axes.set_title(title, fontsize=10)


def save_measures_png(path: str | os.PathLike, case: str, measures, thresholds: Sequence[float]) -> Path | None:
    """Draw a case's PNG (see the module docstring); nothing when it has neither left atrium nor wall thickness.

    Args:
        path: destination ``.png`` (written atomically).
        case: case id, in the title.
        measures: the case's :class:`cascade.measure.CaseMeasures`.
        thresholds: the IIR thresholds, ascending order not required.

    Returns:
        The path written, or ``None``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    surface, wall = measures.surfaces.get("left_atrium"), measures.wall
    if surface is None and wall is None:
        return None
    figure = Figure(figsize=(15, 5), dpi=100)
    figure.suptitle(f"{case}: left atrium coloured by image intensity ratio (IIR), wall thickness", fontsize=12)
    if surface is not None:
        faces = surface.faces
        ordered = sorted(thresholds)
        colours = _enhancement_colours(ordered)
        if "iir" in surface.point_data:
            face_iir = surface.point_data["iir"][faces].mean(axis=1)
            face_colours = [colours[k] for k in np.searchsorted(ordered, face_iir, side="left")]
            bounds = [f"IIR <= {ordered[0]:g}"] + [f"IIR > {t:g}" for t in ordered]
            legend = [Patch(color=c, label=b) for c, b in zip(colours, bounds)]
        else:
            face_colours, legend = "#b0b0b0", [Patch(color="#b0b0b0", label="IIR not measured (no image)")]
        for index, (view, azimuth) in enumerate(VIEWS.items()):
            _draw_surface(
                figure.add_subplot(1, 3, index + 1, projection="3d"),
                surface.vertices,
                faces,
                face_colours,
                azimuth,
                f"left atrium, {view}",
            )
        figure.legend(handles=legend, loc="lower left", fontsize=9, frameon=False)
    histogram = figure.add_subplot(1, 3, 3)
    if wall is not None and len(wall.thickness_mm):
        top = float(np.percentile(wall.thickness_mm, 99.5)) + 0.5
        bins = np.linspace(0.0, top, 40)
        parts = [
            (wall.thickness_mm[wall.sides == side], name, side)
            for side, name in ((LEFT_ATRIUM, "left-atrial wall"), (RIGHT_ATRIUM, "right-atrial wall"))
        ]
        parts = [
            (values, f"{name}: median {np.median(values):.2f} mm", np.asarray(CLASS_COLOURS[side]) / 255)
            for values, name, side in parts
            if values.size
        ]
        histogram.hist(
            [p[0] for p in parts], bins=bins, stacked=True, label=[p[1] for p in parts], color=[p[2] for p in parts]
        )
        histogram.legend(fontsize=9)
    else:
        histogram.text(
            0.5,
            0.5,
            "no wall thickness\n(no wall, or no cavity)",
            ha="center",
            va="center",
            transform=histogram.transAxes,
        )
    histogram.set_xlabel("local wall thickness (mm)")
    histogram.set_ylabel("wall voxels")
    histogram.set_title("wall thickness", fontsize=10)
    return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))
