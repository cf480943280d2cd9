"""How close `cascade measure` comes to the truth of the analytic phantoms of tests/test_measure.py.

A left atrium of radius 12 mm inside a 3 mm wall (a spherical shell to 15 mm), with enhancement
planted on a known share of the wall, on a 1 mm isotropic grid and the MBAS grid (0.625 x 0.625 x
2.5 mm), stored with rotated affines whose voxel axes run to RAS, LPS, or one axis reversed.
Printed per grid: wall thickness (mean, median, p90; truth 3 mm), enhanced shares against the
planted ones, the left atrium's sphericity (1 for the sphere; also of marching cubes' surface without
the Taubin smoothing), the blood-pool intensity (truth 100)
and, per surface, its enclosed volume against the label's and the distance of its centroid from
the label's world centroid (LPS).

    python bench/measure_accuracy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cascade.surfaces import class_surface  # noqa: E402
from tests.test_measure import (  # noqa: E402
    ISOTROPIC,
    LEFT_ATRIUM,
    MBAS_GRID,
    WALL,
    label_centroid_lps,
    make_affine,
    measure_case,
    shell_phantom,
)


def main() -> None:
    for spacing in (ISOTROPIC, MBAS_GRID):
        for axes in ("ras", "lps", "flipped"):
            labels, image, truth = shell_phantom(spacing)
            affine = make_affine(spacing, axes)
            measures = measure_case(labels, affine, image, wall_surface=True)
            values, wall_count = measures.values, (labels == WALL).sum()
            unsmoothed = class_surface(labels == LEFT_ATRIUM, affine, smoothing_passes=0)
            surfaces = []
            for name, value in (("left_atrium", LEFT_ATRIUM), ("wall", WALL)):
                surface, mask = measures.surfaces[name], labels == value
                volume_error = 100 * (surface.volume_mm3() / (mask.sum() * np.prod(spacing)) - 1)
                offset = np.linalg.norm(surface.centroid_mm() - label_centroid_lps(mask, affine))
                surfaces.append(f"{name} surface volume {volume_error:+.2f}%, centroid {offset:.2f} mm")
            grid = " x ".join(f"{s:g}" for s in spacing)
            planted = {t: 100 * truth[f"above_{t}"].sum() / wall_count for t in ("1.2", "1.32")}
            print(
                f"{grid} mm, {axes}: thickness mean {values['wall_thickness_mean_mm']:.2f} "
                f"median {values['wall_thickness_median_mm']:.2f} p90 {values['wall_thickness_p90_mm']:.2f} mm; "
                f"IIR > 1.2 {values['wall_enhanced_pct_iir_1.2']:.2f}% (planted {planted['1.2']:.2f}%), "
                f"> 1.32 {values['wall_enhanced_pct_iir_1.32']:.2f}% (planted {planted['1.32']:.2f}%); "
                f"sphericity {values['left_atrium_sphericity']:.3f} ({unsmoothed.sphericity():.3f} unsmoothed); "
                f"blood pool {values['blood_pool_intensity']:.2f}; " + "; ".join(surfaces)
            )


if __name__ == "__main__":
    main()
