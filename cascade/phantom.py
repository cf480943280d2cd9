"""Synthetic LGE-MRI atrial phantoms in the MBAS layout, for tests, the demo and CI.

Everything is modelled in mm and rasterised at the voxel centres of the requested grid, so a
reduced grid shows the same anatomy at its physical size (the atria, labels included, fit in a
60 x 200 x 200 mm field of view around the volume centre; the default grid covers
110 x 360 x 360 mm). Two frames are used: the patient frame (x to the patient's left, y
posterior, z superior, origin at the volume centre) holds the body, lungs, liver and spine; the
heart frame, placed in it by a random pose (rotation mainly about z, a small tilt, translation and
a scale of 0.85-1.15), holds the heart:

- labelled atria: left and right cavities (bumpy superellipsoids) that share a curved septum;
  four or five pulmonary-vein stubs and an appendage on the left atrium, caval stubs on the
  right; a 2-3 mm wall (the voxels within that distance of a cavity, and at least the cavity's
  6-neighbours, so thin slices keep it closed); labels 1-3 form one 6-connected component. The
  veins go on, bright but unlabelled, beyond the labelled stubs.
- confounders: ventricles, aorta and pulmonary arteries with blood as bright as atrial blood;
  nulled (dark) ventricular myocardium; patchy bright epicardial fat; dark lungs; bright
  subcutaneous fat; body outline in air.
- appearance: patchy enhancement of the atrial wall (fibrosis-like), tissue texture, slight
  partial-volume blur, a smooth multiplicative bias field and Rician noise. Levels, noise and
  gain are drawn per case.

Random fields are drawn on fixed physical lattices, so a case's image is also the same physical
object on every grid (only the voxel noise differs). Images are written as float32 (arbitrary
units, like scanner magnitudes after rescaling), labels as uint8; both carry the MBAS affine
``diag(-sx, -sy, sz)`` plus an origin, with arrays stored (X, Y, Z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter, generate_binary_structure
from scipy.ndimage import label as label_components

from cascade.io import save_nifti_atomic
from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "case_seed", "make_phantom", "phantom_affine", "write_phantoms"]

DEFAULT_SHAPE = (44, 576, 576)  # (Z, Y, X) voxels
DEFAULT_SPACING = (2.5, 0.625, 0.625)  # (Z, Y, X) mm
FIELD_HALF_EXTENT = (240.0, 240.0, 120.0)  # mm; random fields are defined on this patient-frame box
ATRIA_HALF_EXTENT = (120.0, 120.0, 60.0)  # mm; a box that always holds the atria
SIX_NEIGHBOURS = generate_binary_structure(3, 1)


def phantom_affine(shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """MBAS-like 4x4 affine of an (X, Y, Z) array: ``diag(-sx, -sy, sz)``, origin near the volume centre.

    Args:
        shape_zyx: grid size (Z, Y, X) in voxels.
        spacing_zyx: voxel size (Z, Y, X) in mm.

    Returns:
        float64 (4, 4) voxel-to-world matrix (mm, RAS world); axis codes ("L", "P", "S").
    """
    sz, sy, sx = spacing_zyx
    nz, ny, nx = shape_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * nx / 2 - 12.0, sy * ny / 2 + 30.0, -sz * nz / 2 - 40.0]  # scanner-like table offset
    return affine


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` (1-based) of a phantom set: independent of how many cases are made."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class _Grid:
    """Voxel centres of an (X, Y, Z) array in patient-frame mm, origin at the volume centre."""

    def __init__(self, shape_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> None:
        self.shape = shape_xyz
        self.spacing = np.asarray(spacing_xyz, np.float64)
        self.axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape_xyz, spacing_xyz)]

    def box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> tuple[slice, ...]:
        """Voxel box of the patient-frame box ``[low_mm, high_mm]`` (possibly empty)."""
        return tuple(
            slice(int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi, side="right")))
            for a, lo, hi in zip(self.axes, low_mm, high_mm)
        )

    def mesh(self, box: tuple[slice, ...] | None = None) -> list[np.ndarray]:
        """Broadcastable x, y, z coordinates (mm) of the voxels of ``box`` (the whole grid if None)."""
        box = box or (slice(None),) * 3
        x, y, z = (a[s] for a, s in zip(self.axes, box))
        return [x[:, None, None], y[None, :, None], z[None, None, :]]


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation about z (±20°) after a small tilt about x (±5°) and y (±3°)."""
    az, ax, ay = np.deg2rad([rng.uniform(-20, 20), rng.uniform(-5, 5), rng.uniform(-3, 3)])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return rz @ rx @ ry


class _Pose:
    """Placement of the heart frame in the patient frame: ``p = scale * R q + shift`` (mm)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rotation = _rotation(rng)
        self.scale = rng.uniform(0.85, 1.15)
        self.shift = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-1.5, 1.5)])

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) heart-frame points to (N, 3) patient-frame points (mm)."""
        return self.scale * np.atleast_2d(points) @ self.rotation.T + self.shift

    def to_heart(self, xyz: list[np.ndarray]) -> list[np.ndarray]:
        """Broadcastable patient-frame coordinates to three heart-frame coordinate arrays (mm)."""
        rel = [c - t for c, t in zip(xyz, self.shift.astype(np.float32))]
        r = (self.rotation / self.scale).astype(np.float32)
        return [r[0, k] * rel[0] + r[1, k] * rel[1] + r[2, k] * rel[2] for k in range(3)]


def _bumps(rng: np.random.Generator, amplitude: float) -> tuple[tuple[np.ndarray, float, float, float], ...]:
    """Three low-frequency radial perturbation terms: (direction, frequency, phase, amplitude)."""
    terms = []
    for _ in range(3):
        direction = rng.normal(size=3)
        terms.append(
            (direction / np.linalg.norm(direction), float(np.pi * rng.integers(1, 3)), rng.uniform(0, 2 * np.pi),
             rng.uniform(0.5, 1.0) * amplitude / 2)
        )
    return tuple(terms)


@dataclass(frozen=True)
class _Blob:
    """Superellipsoid in the heart frame (mm) with a radial perturbation; ``axes`` rows are its unit axes."""

    centre: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    exponent: float = 2.0
    bumps: tuple = ()

    def extent(self) -> tuple[np.ndarray, float]:
        """Heart-frame points and a padding (mm) whose padded bounding box holds the blob."""
        corner = 3 ** max(0.5 - 1 / self.exponent, 0.0)  # farthest point of a unit p-ball, p >= 2
        return self.centre[None], max(self.radii) * corner * (1 + sum(b[3] for b in self.bumps))

    def grown(self, mm: float) -> _Blob:
        """The blob with every radius longer by ``mm`` (an approximate offset surface)."""
        return replace(self, radii=self.radii + mm)

    def inside(self, q: list[np.ndarray]) -> np.ndarray:
        # python floats keep the float32 coordinates float32
        rel = [qk - c for qk, c in zip(q, self.centre.tolist())]
        d = [
            sum(a * r for a, r in zip(axis, rel)) / radius
            for axis, radius in zip(self.axes.tolist(), self.radii.tolist())
        ]
        norm2 = d[0] ** 2 + d[1] ** 2 + d[2] ** 2
        if self.exponent == 2.0:
            norm = np.sqrt(norm2)
        else:
            norm = (np.abs(d[0]) ** self.exponent + np.abs(d[1]) ** self.exponent + np.abs(d[2]) ** self.exponent) ** (
                1 / self.exponent
            )
        radius = 1.0
        if self.bumps:
            inverse = 1 / np.sqrt(np.maximum(norm2, 1e-6))
            for direction, frequency, phase, amplitude in self.bumps:
                ux, uy, uz = direction.tolist()
                cosine = (d[0] * ux + d[1] * uy + d[2] * uz) * inverse
                radius = radius + amplitude * np.cos(frequency * cosine + phase)
        return norm < radius


@dataclass(frozen=True)
class _Tube:
    """Vessel segment in the heart frame (mm): radius tapering linearly from ``start`` to ``end``.

    ``rounded`` tubes end in half-balls (a capsule), others are cut flat at both ends.
    """

    start: np.ndarray
    end: np.ndarray
    radius_start: float
    radius_end: float
    rounded: bool = False

    def extent(self) -> tuple[np.ndarray, float]:
        return np.stack([self.start, self.end]), max(self.radius_start, self.radius_end)

    def grown(self, mm: float) -> _Tube:
        return replace(self, radius_start=self.radius_start + mm, radius_end=self.radius_end + mm)

    def inside(self, q: list[np.ndarray]) -> np.ndarray:
        axis = (self.end - self.start).tolist()
        length2 = sum(a * a for a in axis)
        rel = [qk - s for qk, s in zip(q, self.start.tolist())]
        t = (rel[0] * axis[0] + rel[1] * axis[1] + rel[2] * axis[2]) / length2
        clamped = np.clip(t, 0, 1)
        distance2 = sum((r - clamped * a) ** 2 for r, a in zip(rel, axis))
        radius = self.radius_start + (self.radius_end - self.radius_start) * clamped
        inside = distance2 < radius**2
        return inside if self.rounded else inside & (t >= 0) & (t <= 1)


class _HeartScene:
    """Rasterises heart-frame shapes onto a grid, each within the voxel box that holds it."""

    def __init__(self, grid: _Grid, pose: _Pose) -> None:
        self.grid, self.pose = grid, pose

    def box(self, points: np.ndarray, pad_mm: float) -> tuple[slice, ...]:
        """Voxel box holding heart-frame ``points`` padded by ``pad_mm`` (heart-frame mm)."""
        patient = self.pose.to_patient(points)
        pad = pad_mm * self.pose.scale + self.grid.spacing.max()
        return self.grid.box(patient.min(0) - pad, patient.max(0) + pad)

    def coordinates(self, box: tuple[slice, ...]) -> list[np.ndarray]:
        """Heart-frame coordinates (three arrays of the box's shape, mm) of the voxels of ``box``."""
        q = self.pose.to_heart(self.grid.mesh(box))
        shape = tuple(s.stop - s.start for s in box)
        return [np.broadcast_to(qk, shape) for qk in q]

    def paint(self, *shapes: _Blob | _Tube) -> np.ndarray:
        """Full-grid mask of the union of ``shapes``."""
        mask = np.zeros(self.grid.shape, bool)
        for shape in shapes:
            box = self.box(*shape.extent())
            if all(s.stop > s.start for s in box):
                mask[box] |= shape.inside(self.coordinates(box))
        return mask


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, np.float64)
    return vector / np.linalg.norm(vector)


def _bounding_box(mask: np.ndarray, margin: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask, widened by ``margin`` voxels per axis and clipped to it."""
    coords = np.nonzero(mask.any(axis=(1, 2))), np.nonzero(mask.any(axis=(0, 2))), np.nonzero(mask.any(axis=(0, 1)))
    return tuple(
        slice(max(int(c[0][0]) - m, 0), min(int(c[0][-1]) + m + 1, n)) for c, m, n in zip(coords, margin, mask.shape)
    )


def _draw_atria(rng: np.random.Generator) -> dict:
    """Heart-frame shapes of the labelled atria and of the unlabelled vessels beyond their stubs."""
    la_centre = np.array([19.0, 12.0, 0.0]) + rng.normal(0, (2.0, 2.0, 0.8))
    ra_centre = np.array([-23.0, 2.0, -0.5]) + rng.normal(0, (2.0, 2.0, 0.8))
    la_radii = np.array([40.0, 28.5, 17.5]) * rng.uniform((0.92, 0.92, 0.95), (1.08, 1.08, 1.03))
    ra_radii = np.array([32.0, 32.0, 18.0]) * rng.uniform((0.92, 0.92, 0.95), (1.08, 1.08, 1.03))
    la_body = _Blob(la_centre, la_radii, exponent=rng.uniform(2.5, 3.2), bumps=_bumps(rng, 0.08))
    ra_body = _Blob(ra_centre, ra_radii, exponent=rng.uniform(2.5, 3.2), bumps=_bumps(rng, 0.08))

    veins, vein_continuations = [], []
    sides_and_levels = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    if rng.uniform() < 0.25:  # a right middle vein, as in about a quarter of patients
        sides_and_levels.append((-1, 0))
    for side, level in sides_and_levels:
        start = la_centre + (side * 0.4 * la_radii[0], 0.45 * la_radii[1], level * 0.35 * la_radii[2])
        direction = _unit(np.array([side, 0.75, 0.15 * level]) + rng.normal(0, (0.12, 0.12, 0.05)))
        radius = rng.uniform(5.0, 6.5) * (0.8 if level == 0 else 1.0)
        end = start + direction * rng.uniform(26, 32)
        veins.append(_Tube(start, end, radius, radius))
        onward = _unit(direction + rng.normal(0, 0.25, 3))
        vein_continuations.append(_Tube(end, end + onward * rng.uniform(25, 40), 0.85 * radius, 0.6 * radius))
    appendage_base = la_centre + la_radii * (0.65, -0.6, 0.35)
    appendage_axis = _unit(np.array([0.55, -1.0, 0.1]) + rng.normal(0, (0.15, 0.15, 0.06)))
    appendage_tip = appendage_base + appendage_axis * rng.uniform(20, 28)
    appendage = _Tube(appendage_base, appendage_tip, rng.uniform(8, 9.5), rng.uniform(3.5, 5), rounded=True)

    svc_top = ra_centre + (3.0, 6.0, ra_radii[2] - 0.5)
    ivc_bottom = ra_centre + (2.0, 10.0, -ra_radii[2] + 1.5)
    svc_radius, ivc_radius = rng.uniform(8, 10), rng.uniform(9, 11)
    cavae = [
        _Tube(ra_centre + (3.0, 6.0, 0.0), svc_top, svc_radius, svc_radius),
        _Tube(ra_centre + (2.0, 10.0, 0.0), ivc_bottom, ivc_radius, ivc_radius),
    ]
    cava_continuations = [
        _Tube(svc_top, svc_top + (rng.normal(0, 5), rng.normal(0, 5), 150), svc_radius, svc_radius),
        _Tube(ivc_bottom, ivc_bottom + (rng.normal(0, 5), rng.normal(5, 5), -150), ivc_radius, ivc_radius),
    ]
    midpoint = (la_centre + ra_centre) / 2 + rng.normal(0, 1.5, 3)
    normal = _unit(la_centre - ra_centre + rng.normal(0, 3.0, 3))
    return {
        "la_body": la_body, "la_parts": veins + [appendage], "ra_body": ra_body, "ra_parts": cavae,
        "continuations": vein_continuations + cava_continuations,
        "septum": (midpoint, normal, rng.uniform(0.0, 0.006)),  # point, normal, curvature (1/mm)
        "wall_mm": rng.uniform(2.0, 3.0),
    }


def _union(shapes: list[_Blob | _Tube], q: list[np.ndarray]) -> np.ndarray:
    return np.logical_or.reduce([shape.inside(q) for shape in shapes])


def _septal_side(q: list[np.ndarray], midpoint: np.ndarray, normal: np.ndarray, curvature: float) -> np.ndarray:
    """Signed heart-frame distance (mm) to a septum bulging towards the right atrium; > 0 on the left."""
    rel = [qk - m for qk, m in zip(q, midpoint.tolist())]
    along = sum(r * n for r, n in zip(rel, normal.tolist()))
    across2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2
    return along + curvature * across2


def _rasterise_atria(scene: _HeartScene, atria: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-atrial cavity, right-atrial cavity and wall masks on the full grid.

    The right cavity keeps more than the wall thickness away from the left one (and off its
    6-neighbours), so the septum is wall; the wall is every voxel within ``wall_mm`` of a cavity
    or 6-adjacent to one, except in the lumen of the unlabelled vessels that go on beyond the
    stubs (the stubs end open). Only the largest 6-connected component is kept.
    """
    grid, wall_mm = scene.grid, atria["wall_mm"]
    masks = [np.zeros(grid.shape, bool) for _ in range(3)]
    shapes = [atria["la_body"], atria["ra_body"], *atria["la_parts"], *atria["ra_parts"]]
    points = np.concatenate([s.extent()[0] for s in shapes])
    box = scene.box(points, max(s.extent()[1] for s in shapes) + wall_mm)
    q = scene.coordinates(box)
    side = _septal_side(q, *atria["septum"])
    la = (atria["la_body"].inside(q) & (side > wall_mm / 2)) | _union(atria["la_parts"], q)
    ra = (atria["ra_body"].inside(q) & (side < -wall_mm / 2)) | _union(atria["ra_parts"], q)
    if not la.any() and not ra.any():  # a grid too coarse to hit the atria
        return tuple(masks)
    crop = _bounding_box(la | ra, np.ceil(wall_mm / grid.spacing).astype(int) + 2)
    la, ra, q = la[crop], ra[crop], [qk[crop] for qk in q]
    ra &= (distance_transform_edt(~la, sampling=grid.spacing) > wall_mm) & ~binary_dilation(la, SIX_NEIGHBOURS)
    cavity = la | ra
    near = (distance_transform_edt(~cavity, sampling=grid.spacing) <= wall_mm) | binary_dilation(cavity, SIX_NEIGHBOURS)
    wall = near & ~cavity & ~_union(atria["continuations"], q)
    components, _ = label_components(cavity | wall)  # 6-connected; the lumens can cut off single wall voxels
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    la, ra, wall = (part & (components == largest) for part in (la, ra, wall))
    full_box = tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, crop))
    for mask, part in zip(masks, (la, ra, wall)):
        mask[full_box] = part
    return tuple(masks)


def _orthonormal_axes(first: np.ndarray) -> np.ndarray:
    """Rows: ``first`` and two unit vectors completing a right-handed frame (the second horizontal)."""
    second = _unit(np.cross([0.0, 0.0, 1.0], first))
    return np.stack([first, second, np.cross(first, second)])


def _draw_confounders(rng: np.random.Generator) -> dict:
    """Heart-frame shapes of the ventricles and great vessels (blood as bright as atrial blood)."""
    lv_base = np.array([18.0, -14.0, -8.0]) + rng.normal(0, 2.0, 3)
    lv_axes = _orthonormal_axes(_unit(np.array([0.55, -0.55, -0.62]) + rng.normal(0, 0.08, 3)))
    lv_length = rng.uniform(70, 85)
    lv_centre = lv_base + lv_axes[0] * lv_length / 2
    lv_blood = _Blob(lv_centre, np.array([lv_length / 2, *rng.uniform(22, 27, 2)]), lv_axes, bumps=_bumps(rng, 0.05))
    lv_outer = lv_blood.grown(rng.uniform(8, 11))
    rv_blood = _Blob(
        lv_centre + lv_axes.T @ (rng.uniform(-8, -2), rng.uniform(-36, -30), rng.uniform(4, 10)),
        np.array([lv_length * 0.45, rng.uniform(24, 30), rng.uniform(15, 19)]), lv_axes, bumps=_bumps(rng, 0.05),
    )
    aortic_root = np.array([0.0, -10.0, -6.0]) + rng.normal(0, 2.0, 3)
    pulmonary_bifurcation = np.array([14.0, -20.0, 30.0]) + rng.normal(0, 2.0, 3)
    aorta_radius, descending_radius, trunk_radius = rng.uniform(12, 15), rng.uniform(10, 12), rng.uniform(12, 14)
    vessels = [
        _Tube(aortic_root, aortic_root + (-6, 6, 160) + rng.normal(0, 4, 3), aorta_radius, aorta_radius, rounded=True),
        _Tube(np.array([26.0, 52.0, 150.0]), np.array([22.0, 48.0, -150.0]) + rng.normal(0, 3, 3),
              descending_radius, descending_radius),
        _Tube(np.array([8.0, -42.0, -6.0]) + rng.normal(0, 2, 3), pulmonary_bifurcation, trunk_radius, trunk_radius,
              rounded=True),
        _Tube(pulmonary_bifurcation, np.array([-60.0, 6.0, 26.0]) + rng.normal(0, 3, 3), rng.uniform(9, 10.5), 8.0,
              rounded=True),  # right pulmonary artery, over the atrial roofs
        _Tube(pulmonary_bifurcation, np.array([60.0, 10.0, 34.0]) + rng.normal(0, 3, 3), rng.uniform(9, 10.5), 8.0,
              rounded=True),
    ]
    return {"lv": lv_blood, "lv_outer": lv_outer, "rv": rv_blood, "rv_wall_mm": rng.uniform(2.5, 4), "vessels": vessels}


def _draw_body(rng: np.random.Generator) -> dict:
    """Patient-frame sizes (mm) of the body outline, fat, lungs, liver and spine."""
    centre_y, half_x, half_y = rng.uniform(25, 35), rng.uniform(150, 172), rng.uniform(108, 122)
    return {
        "centre_y": centre_y, "half_x": half_x, "half_y": half_y,
        "outline": [(k, rng.uniform(0, 0.02), rng.uniform(0, 2 * np.pi)) for k in (2, 3)],
        "fat_mm": rng.uniform(8, 20), "chest_wall_mm": rng.uniform(12, 20),
        "lungs": [(side * rng.uniform(78, 90), rng.uniform(25, 35), rng.uniform(60, 80), rng.uniform(52, 62),
                   rng.uniform(72, 82), rng.uniform(140, 155)) for side in (-1, 1)],
        "liver": (rng.uniform(-55, -35), rng.uniform(5, 25), rng.uniform(-125, -110), 120.0, 95.0, 75.0),
        "spine_y": centre_y + 0.92 * half_y - rng.uniform(55, 62),
        "disc_period": rng.uniform(26, 30), "disc_phase": rng.uniform(0, 30),
    }


def _ellipsoid_mask(grid: _Grid, centre_x, centre_y, centre_z, half_x, half_y, half_z) -> np.ndarray:
    """Patient-frame axis-aligned ellipsoid (mm) on the full grid."""
    x, y, z = grid.mesh()
    return ((x - centre_x) / half_x) ** 2 + ((y - centre_y) / half_y) ** 2 + ((z - centre_z) / half_z) ** 2 < 1


def _body_masks(grid: _Grid, body: dict) -> dict[str, np.ndarray]:
    """Full-grid masks of the body (air outside), subcutaneous fat, lungs, liver and spine."""
    x, y, z = grid.mesh()
    x2d, y2d = x[:, :, 0], y[:, :, 0]
    # posterior half flatter, like a supine patient's back
    half_y = np.where(y2d > body["centre_y"], 0.92 * body["half_y"], body["half_y"])
    dx, dy = x2d / body["half_x"], (y2d - body["centre_y"]) / half_y
    angle = np.arctan2(dy, dx)
    outline = 1 + sum(a * np.cos(k * angle + phase) for k, a, phase in body["outline"])
    rho = np.sqrt(dx**2 + dy**2) / outline  # < 1 inside the body
    depth = np.hypot(x2d, y2d - body["centre_y"]) * (1 / np.maximum(rho, 1e-6) - 1)  # mm below the skin, radially
    liver = _ellipsoid_mask(grid, *body["liver"])
    lungs = _ellipsoid_mask(grid, *body["lungs"][0]) | _ellipsoid_mask(grid, *body["lungs"][1])
    lungs &= (depth > body["fat_mm"] + body["chest_wall_mm"])[..., None] & ~liver
    vertebra = (x2d / 17) ** 2 + ((y2d - body["spine_y"]) / 14) ** 2 < 1
    disc = ((z[0, 0] - body["disc_phase"]) % body["disc_period"]) < 6
    canal = x2d**2 + (y2d - body["spine_y"] - 23) ** 2 < 7**2
    inside = (rho < 1)[..., None]
    return {
        "body": np.broadcast_to(inside, grid.shape),
        "subcutaneous_fat": np.broadcast_to(((depth < body["fat_mm"]) & (rho < 1))[..., None], grid.shape),
        "liver": liver & inside,
        "lungs": lungs,
        "vertebra": np.broadcast_to(vertebra[..., None], grid.shape),
        "disc": vertebra[..., None] & disc[None, None, :],
        "canal": np.broadcast_to(canal[..., None], grid.shape),
    }


def _interpolate_axis(
    values: np.ndarray, axis: int, coords_mm: np.ndarray, low_mm: float, cell_mm: float
) -> np.ndarray:
    """Linear interpolation of a lattice along one axis at ``coords_mm`` (clamped to the lattice)."""
    n = values.shape[axis]
    position = np.clip((coords_mm - low_mm) / cell_mm, 0, n - 1 - 1e-4)
    index = np.floor(position).astype(np.intp)
    weight = (position - index).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    lower = np.take(values, index, axis=axis)
    return lower + (np.take(values, index + 1, axis=axis) - lower) * weight


def _smooth_field(
    rng: np.random.Generator, cell_mm: float, axes_mm: list[np.ndarray], half_extent_mm=FIELD_HALF_EXTENT
) -> np.ndarray:
    """Smooth random field (about unit variance, features of ~2 cells) at the grid points ``axes_mm``.

    The field lives on a fixed patient-frame lattice of ``cell_mm`` cells over
    ``[-half_extent_mm, half_extent_mm]`` (clamped beyond), so it does not depend on the grid it
    is sampled on; the three 1D interpolations cost little more than one pass over the output.

    Returns:
        float32 array of shape ``(len(axes_mm[0]), len(axes_mm[1]), len(axes_mm[2]))``.
    """
    lattice_shape = tuple(int(np.ceil(2 * h / cell_mm)) + 1 for h in half_extent_mm)
    lattice = gaussian_filter(rng.standard_normal(lattice_shape, dtype=np.float32), sigma=1.0)
    sampled = lattice / lattice.std()
    for axis in (2, 1, 0):  # shrinking z first keeps the intermediate arrays small
        sampled = _interpolate_axis(sampled, axis, axes_mm[axis], -half_extent_mm[axis], cell_mm)
    return sampled


def _draw_levels(rng: np.random.Generator) -> dict[str, float]:
    """LGE-like tissue levels (arbitrary units, blood about 200 before the per-case gain)."""
    blood = rng.uniform(180, 240)
    fat = rng.uniform(190, 260)
    return {
        "air": 0.0, "tissue": rng.uniform(70, 105), "fat": fat, "epicardial_fat": fat * rng.uniform(0.9, 1.05),
        "lung": rng.uniform(8, 22), "liver": rng.uniform(85, 125), "marrow": rng.uniform(120, 170),
        "disc": rng.uniform(40, 70), "csf": rng.uniform(15, 35), "blood": blood,
        "atrial_blood": blood * rng.uniform(0.95, 1.05), "myocardium": rng.uniform(20, 45),
        "atrial_wall": rng.uniform(55, 95), "fibrosis": blood * rng.uniform(0.9, 1.2),
        "fibrosis_threshold": rng.uniform(0.3, 1.0), "fat_patch_threshold": rng.uniform(-0.5, 0.2),
        "texture": rng.uniform(0.03, 0.08), "bias": rng.uniform(0.15, 0.3),
        "noise": blood * rng.uniform(0.04, 0.09), "gain": rng.uniform(0.6, 1.6),
    }


def _check_grid(shape_zyx, spacing_zyx) -> _Grid:
    if len(shape_zyx) != 3 or len(spacing_zyx) != 3 or min(shape_zyx) < 1 or min(spacing_zyx) <= 0:
        raise ValueError(f"shape and spacing must be 3 positive values (Z, Y, X), got {shape_zyx} and {spacing_zyx}")
    return _Grid(tuple(int(n) for n in shape_zyx[::-1]), tuple(float(s) for s in spacing_zyx[::-1]))


def _case_generators(seed: int) -> list[np.random.Generator]:
    """Independent generators for the anatomy, the intensity levels, the smooth fields and the noise.

    Separate streams keep the anatomy and levels independent of the grid (field lattices and
    noise arrays are drawn after them, in sizes that depend on the grid or the lattice).
    """
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def _structure_masks(
    seed: int, shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """Full-grid (X, Y, Z) bool masks of every structure of a case, by name.

    Atria (``left_atrium``, ``right_atrium``, ``wall``), unlabelled ``blood`` (ventricles, great
    vessels, veins beyond the stubs), ``myocardium`` (ventricular), ``pericardial`` (the 4 mm band
    where patchy epicardial fat may lie), and the patient-frame ``body``, ``subcutaneous_fat``,
    ``liver``, ``lungs``, ``vertebra``, ``disc`` and ``canal``. Masks may overlap; later
    structures are painted over earlier ones in this order.
    """
    grid = _check_grid(shape_zyx, spacing_zyx)
    rng = _case_generators(seed)[0]
    scene = _HeartScene(grid, _Pose(rng))
    atria, confounders, body = _draw_atria(rng), _draw_confounders(rng), _draw_body(rng)

    masks = _body_masks(grid, body)
    lv_outer = scene.paint(confounders["lv_outer"])
    lv_blood = scene.paint(confounders["lv"])
    rv_blood = scene.paint(confounders["rv"]) & ~lv_outer
    rv_outer = scene.paint(confounders["rv"].grown(confounders["rv_wall_mm"])) & ~lv_outer
    fat_mm = 4.0
    masks["pericardial"] = scene.paint(
        *(shape.grown(fat_mm) for shape in [atria["la_body"], atria["ra_body"], *confounders["vessels"]]),
        confounders["lv_outer"].grown(fat_mm), confounders["rv"].grown(confounders["rv_wall_mm"] + fat_mm),
    ) & masks["body"]
    masks["myocardium"] = (lv_outer | rv_outer) & ~lv_blood & ~rv_blood
    masks["blood"] = lv_blood | rv_blood | scene.paint(*confounders["vessels"], *atria["continuations"])
    masks["left_atrium"], masks["right_atrium"], masks["wall"] = _rasterise_atria(scene, atria)
    return masks


def _render(masks: dict[str, np.ndarray], grid: _Grid, seed: int) -> np.ndarray:
    """LGE-like float32 (X, Y, Z) magnitude image of the structures ``masks``."""
    _, levels_rng, field_rng, noise_rng = _case_generators(seed)
    levels = _draw_levels(levels_rng)
    texture = _smooth_field(field_rng, 3.0, grid.axes)
    bias = _smooth_field(field_rng, 40.0, grid.axes)
    fibrosis = _smooth_field(field_rng, 2.0, grid.axes, ATRIA_HALF_EXTENT) > levels["fibrosis_threshold"]
    fat_patches = _smooth_field(field_rng, 4.0, grid.axes) > levels["fat_patch_threshold"]

    values = np.full(grid.shape, levels["air"], np.float32)
    for name, level in (("body", "tissue"), ("subcutaneous_fat", "fat"), ("liver", "liver"), ("lungs", "lung"),
                        ("vertebra", "marrow"), ("disc", "disc"), ("canal", "csf")):
        values[masks[name]] = levels[level]
    values[masks["pericardial"] & fat_patches] = levels["epicardial_fat"]
    values[masks["myocardium"]] = levels["myocardium"]
    values[masks["blood"]] = levels["blood"]
    atrial_blood = masks["left_atrium"] | masks["right_atrium"]
    values[atrial_blood] = levels["atrial_blood"]
    values[masks["wall"]] = levels["atrial_wall"]
    values[masks["wall"] & fibrosis] = levels["fibrosis"]
    texture[masks["blood"] | atrial_blood] = 0  # blood pools are homogeneous
    values *= 1 + levels["texture"] * texture
    values = gaussian_filter(values, sigma=0.5 / grid.spacing)  # partial volume
    values *= levels["gain"] * np.exp(levels["bias"] * bias)
    noise_sd = np.float32(levels["noise"] * levels["gain"])
    real = values + noise_rng.standard_normal(grid.shape, dtype=np.float32) * noise_sd
    imaginary = noise_rng.standard_normal(grid.shape, dtype=np.float32) * noise_sd
    return np.sqrt(real**2 + imaginary**2)  # Rician magnitude


def make_phantom(
    seed: int,
    shape_zyx: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_zyx: tuple[float, float, float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        seed: the case's seed; the same seed gives identical arrays, and the same anatomy (in mm)
            on every grid.
        shape_zyx: grid size (Z, Y, X) in voxels.
        spacing_zyx: voxel size (Z, Y, X) in mm.

    Returns:
        ``(image, label, affine)``: float32 image and uint8 label (0 background, 1 wall, 2 right
        atrium, 3 left atrium), both of shape (X, Y, Z), and the float64 (4, 4) affine (mm).

    Raises:
        ValueError: ``shape_zyx`` or ``spacing_zyx`` not three positive values.
    """
    grid = _check_grid(shape_zyx, spacing_zyx)
    masks = _structure_masks(seed, shape_zyx, spacing_zyx)
    image = _render(masks, grid, seed)
    label = np.zeros(grid.shape, np.uint8)
    label[masks["wall"]] = WALL
    label[masks["right_atrium"]] = RIGHT_ATRIUM
    label[masks["left_atrium"]] = LEFT_ATRIUM
    return image, label, phantom_affine(tuple(shape_zyx), tuple(spacing_zyx))


def write_phantoms(
    out: str | os.PathLike,
    cases: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> list[str]:
    """Write ``cases`` phantoms as ``OUT/MBAS_<nnn>/MBAS_<nnn>_gt.nii.gz`` (image) and ``..._label.nii.gz``.

    Case ``i`` is made from ``case_seed(seed, i)``, so it is the same whatever ``cases`` is. Each
    file is written atomically (temporary file, then rename).

    Args:
        out: output folder (created).
        cases: number of cases, numbered from 001.
        seed: base seed.
        shape: grid size (Z, Y, X) in voxels.
        spacing: voxel size (Z, Y, X) in mm.

    Returns:
        The case ids written, ``["MBAS_001", ...]``.

    Raises:
        ValueError: ``cases`` < 1, or ``shape`` / ``spacing`` not three positive values.
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    written = []
    for index in range(1, cases + 1):
        case = f"MBAS_{index:03d}"
        image, label, affine = make_phantom(case_seed(seed, index), tuple(shape), tuple(spacing))
        folder = Path(out) / case
        save_nifti_atomic(image, affine, folder / f"{case}_gt.nii.gz")
        save_nifti_atomic(label, affine, folder / f"{case}_label.nii.gz")
        written.append(case)
    return written
