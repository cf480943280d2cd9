"""Synthetic LGE-MRI atrial phantoms in the MBAS layout, for tests, the demo and CI.

Anatomy is modelled in mm in a heart frame (x patient left, y posterior, z superior) and
rasterised at the voxel centres of the requested grid, so a reduced grid shows the same anatomy
at its physical size:

- left and right atrial cavities: ellipsoids with a low-frequency radial perturbation, split by
  a septal plane; pulmonary-vein stubs and an appendage on the left atrium, caval stubs on the
  right; a 2-3 mm wall shell around both cavities and across the septum (labels 3, 2, 1, one
  connected component);
- confounders: ventricles, aorta and pulmonary artery with blood as bright as atrial blood,
  nulled (dark) ventricular myocardium, dark lungs, bright epicardial and subcutaneous fat, body
  outline in air;
- LGE-like appearance: patchy enhancement of the atrial wall, a smooth multiplicative bias
  field, slight partial-volume blur and Rician noise.

Pose (rotation mainly about z, small tilt, translation), size and contrast are drawn per case.
Images are written as float32, labels as uint8, both with the MBAS affine
``diag(-sx, -sy, sz)`` plus an origin, arrays stored (X, Y, Z).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, gaussian_filter

from cascade.io import save_nifti_atomic
from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL

__all__ = ["make_phantom", "write_phantoms", "phantom_affine"]

DEFAULT_SHAPE = (44, 576, 576)  # (Z, Y, X) voxels
DEFAULT_SPACING = (2.5, 0.625, 0.625)  # (Z, Y, X) mm


def phantom_affine(shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """MBAS-like affine for an (X, Y, Z) array: ``diag(-sx, -sy, sz)``, origin near the volume centre."""
    sz, sy, sx = spacing_zyx
    nz, ny, nx = shape_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * nx / 2 - 12.0, sy * ny / 2 + 30.0, -sz * nz / 2 - 40.0]
    return affine


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation mostly about z (±25°) with a small tilt about x and y (±8°)."""
    az, ax, ay = np.deg2rad([rng.uniform(-25, 25), rng.uniform(-8, 8), rng.uniform(-8, 8)])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return rz @ rx @ ry


class _HeartFrame:
    """Voxel-centre coordinates (mm) of a grid, expressed in a posed heart frame."""

    def __init__(self, shape_xyz: tuple[int, ...], spacing_xyz: np.ndarray, rng: np.random.Generator) -> None:
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(shape_xyz, spacing_xyz)]
        rotation = _rotation(rng).astype(np.float32)
        shift = rng.uniform(-8, 8, 3).astype(np.float32)
        self.scale = np.float32(rng.uniform(0.85, 1.15))
        # q = R^T (p - shift) / scale, evaluated per axis so no (3, X, Y, Z) array is needed
        x, y, z = (a - t for a, t in zip(axes, shift))
        self.q = [
            (rotation[0, k] * x[:, None, None] + rotation[1, k] * y[None, :, None] + rotation[2, k] * z[None, None, :])
            / self.scale
            for k in range(3)
        ]
        self.patient = (x[:, None, None], y[None, :, None])  # unposed in-plane coordinates (mm)
        self.shape = tuple(shape_xyz)
        self._rotation, self._shift, self._spacing = rotation, shift, np.asarray(spacing_xyz, np.float32)

    def box(self, centre, radius_mm: float) -> tuple[slice, ...]:
        """Voxel box holding the heart-frame ball of ``radius_mm`` around ``centre``."""
        position = self._rotation @ np.asarray(centre, np.float32) * self.scale + self._shift
        index = position / self._spacing + (np.asarray(self.shape) - 1) / 2
        half = radius_mm * self.scale / self._spacing + 1
        return tuple(
            slice(int(np.clip(np.floor(i - h), 0, n)), int(np.clip(np.ceil(i + h) + 1, 0, n)))
            for i, h, n in zip(index, half, self.shape)
        )

    def _in_box(self, box: tuple[slice, ...], inside_box: np.ndarray) -> np.ndarray:
        inside = np.zeros(self.shape, bool)
        inside[box] = inside_box
        return inside

    def ellipsoid(self, centre, radii, rng: np.random.Generator | None = None, bumpiness: float = 0.0) -> np.ndarray:
        """Inside of an ellipsoid (mm), optionally with a random low-frequency radial perturbation."""
        box = self.box(centre, max(radii) * (1 + 3 * bumpiness))
        d = [(qk[box] - c) / r for qk, c, r in zip(self.q, centre, radii)]
        norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        if rng is not None and bumpiness > 0:
            u = [dk / np.maximum(norm, 1e-6) for dk in d]
            radius = np.ones_like(norm)
            for _ in range(3):
                v = rng.normal(size=3)
                v /= np.linalg.norm(v)
                radius += rng.uniform(0.5, 1.0) * bumpiness * np.cos(
                    np.pi * rng.integers(1, 3) * (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]) + rng.uniform(0, 2 * np.pi)
                )
            return self._in_box(box, norm < radius)
        return self._in_box(box, norm < 1.0)

    def tube(self, start, end, radius: float) -> np.ndarray:
        """Inside of a finite cylinder from ``start`` to ``end`` (mm)."""
        start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
        axis = end - start
        length = np.linalg.norm(axis)
        axis /= length
        box = self.box((start + end) / 2, length / 2 + radius)
        rel = [qk[box] - s for qk, s in zip(self.q, start)]
        along = rel[0] * axis[0] + rel[1] * axis[1] + rel[2] * axis[2]
        dist2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2
        return self._in_box(box, (along >= 0) & (along <= length) & (dist2 < radius**2))

    def plane_side(self, point, normal) -> np.ndarray:
        """Signed distance (mm, heart frame) to a plane."""
        normal = np.asarray(normal, np.float32) / np.linalg.norm(normal)
        return sum((qk - p) * n for qk, p, n in zip(self.q, point, normal))


def _shell(inside: np.ndarray, thickness_mm: float, spacing_xyz: np.ndarray) -> np.ndarray:
    """Voxels outside ``inside`` within ``thickness_mm`` of it (computed in its bounding box)."""
    if not inside.any():
        return np.zeros_like(inside)
    margin = np.ceil(thickness_mm / spacing_xyz).astype(int) + 1
    coords = np.nonzero(inside)
    box = tuple(
        slice(max(int(c.min()) - m, 0), min(int(c.max()) + m + 1, n)) for c, m, n in zip(coords, margin, inside.shape)
    )
    shell = np.zeros_like(inside)
    distance = distance_transform_edt(~inside[box], sampling=spacing_xyz)
    shell[box] = (distance > 0) & (distance <= thickness_mm)
    return shell


def _smooth_noise(shape_xyz, spacing_xyz, rng: np.random.Generator, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with features of about ``scale_mm``.

    Drawn on a grid of ``scale_mm / 2`` cells, smoothed there and interpolated (trilinear) to the
    full grid: far cheaper than smoothing full-resolution noise with a wide kernel.
    """
    extent = np.asarray(shape_xyz) * spacing_xyz
    coarse_shape = np.maximum(np.ceil(extent / (scale_mm / 2)).astype(int) + 2, 2)
    coarse = gaussian_filter(rng.normal(size=tuple(coarse_shape)).astype(np.float32), sigma=2.0, mode="wrap")
    field = F.interpolate(torch.from_numpy(coarse)[None, None], size=tuple(shape_xyz), mode="trilinear")[0, 0].numpy()
    return (field - field.mean()) / (field.std() + 1e-6)


def make_phantom(
    seed: int,
    shape_zyx: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_zyx: tuple[float, float, float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        seed: the case's seed; the same seed gives identical arrays.
        shape_zyx: grid size (Z, Y, X) in voxels.
        spacing_zyx: voxel size (Z, Y, X) in mm.

    Returns:
        ``(image, label, affine)``: float32 image and uint8 label of shape (X, Y, Z), and the
        4x4 affine (mm).
    """
    rng = np.random.default_rng(seed)
    shape_xyz = tuple(int(n) for n in shape_zyx[::-1])
    spacing_xyz = np.asarray(spacing_zyx[::-1], np.float32)
    frame = _HeartFrame(shape_xyz, spacing_xyz, rng)
    jitter = lambda centre, sd=3.0: np.asarray(centre) + rng.normal(0, sd, 3)  # noqa: E731

    # Atria: cavities split by a septal plane, veins and appendage on the LA, cavae on the RA.
    la_centre, ra_centre = jitter((18, 22, 6)), jitter((-20, 10, 2))
    la = frame.ellipsoid(la_centre, rng.uniform(0.85, 1.15, 3) * (33, 25, 22), rng, bumpiness=0.08)
    ra = frame.ellipsoid(ra_centre, rng.uniform(0.85, 1.15, 3) * (29, 24, 25), rng, bumpiness=0.08)
    septum = frame.plane_side((la_centre + ra_centre) / 2, la_centre - ra_centre + rng.normal(0, 2, 3))
    wall_mm = rng.uniform(2.0, 3.0)
    half_septum = wall_mm / 2
    for side in (-1, 1):  # pulmonary veins: superior and inferior, left and right
        for level in (-1, 1):
            start = la_centre + (side * 14 + 6, 12, level * 9)
            end = start + (side * 12, 16, level * 6) + rng.normal(0, 2, 3)
            la |= frame.tube(start, end, rng.uniform(4.0, 6.0))
    la |= frame.ellipsoid(la_centre + (24, -22, 10), (13, 7, 7), rng, bumpiness=0.1)  # appendage
    ra |= frame.tube(ra_centre + (0, 0, 10), ra_centre + (2, 2, 32), rng.uniform(8, 10))  # superior vena cava
    ra |= frame.tube(ra_centre - (0, 0, 10), ra_centre + (0, 4, -30), rng.uniform(9, 11))  # inferior vena cava
    la_cavity = la & (septum > half_septum)
    ra_cavity = ra & ~la_cavity & (septum < -half_septum)
    cavities = la_cavity | ra_cavity
    wall = (_shell(cavities, wall_mm, spacing_xyz) | ((la | ra) & ~cavities)) & ~cavities

    # Confounders.
    lv_blood = frame.ellipsoid(jitter((28, -32, -28)), (26, 24, 34), rng, bumpiness=0.05)
    lv_myocardium = _shell(lv_blood, rng.uniform(8, 11), spacing_xyz)
    rv_blood = frame.ellipsoid(jitter((-22, -36, -22)), (26, 18, 30), rng, bumpiness=0.05)
    rv_myocardium = _shell(rv_blood, 3.0, spacing_xyz)
    aorta = frame.tube((4, -8, -10), jitter((2, -4, 70)), rng.uniform(11, 14))
    aorta |= frame.tube(jitter((14, 46, 70)), (16, 48, -70), rng.uniform(9, 11))  # descending aorta
    pulmonary_artery = frame.tube((-8, -28, -8), jitter((-2, -10, 45)), rng.uniform(10, 13))
    blood = lv_blood | rv_blood | aorta | pulmonary_artery
    heart = blood | lv_myocardium | rv_myocardium | cavities | wall
    epicardial_fat = _shell(heart, rng.uniform(3, 6), spacing_xyz) & (_smooth_noise(shape_xyz, spacing_xyz, rng, 8.0) > -0.3)

    x, y = frame.patient
    body_r = ((x / rng.uniform(150, 175)) ** 2 + ((y - 20) / rng.uniform(110, 130)) ** 2) + np.zeros(shape_xyz, np.float32)
    body = body_r < 1
    subcutaneous_fat = body & (body_r > rng.uniform(0.80, 0.86))
    lungs = np.zeros(shape_xyz, bool)
    for side in (-1, 1):
        lungs |= ((x - side * 85) / 55) ** 2 + ((y - 25) / 75) ** 2 + np.zeros(shape_xyz, np.float32) < 1
    lungs &= body & ~heart & ~epicardial_fat

    # LGE-like intensities.
    blood_level = rng.uniform(190, 240)
    values = np.full(shape_xyz, 5.0, np.float32)  # air
    values[body] = rng.uniform(90, 120)  # muscle, liver, other tissue
    values[subcutaneous_fat] = rng.uniform(240, 290)
    values[lungs] = rng.uniform(15, 30)
    values[epicardial_fat] = rng.uniform(230, 280)
    values[lv_myocardium | rv_myocardium] = rng.uniform(25, 50)  # nulled myocardium
    values[blood] = blood_level
    values[cavities] = blood_level * rng.uniform(0.95, 1.05)
    fibrosis = _smooth_noise(shape_xyz, spacing_xyz, rng, 4.0) > rng.uniform(0.2, 0.8)
    values[wall] = rng.uniform(60, 90)
    values[wall & fibrosis] = rng.uniform(200, 260)
    values = gaussian_filter(values, sigma=0.5 / spacing_xyz)  # partial volume
    bias = np.exp(0.25 * _smooth_noise(shape_xyz, spacing_xyz, rng, 80.0))
    values *= bias.astype(np.float32)
    noise_sd = rng.uniform(8, 18)
    real = values + rng.normal(0, noise_sd, shape_xyz).astype(np.float32)
    imaginary = rng.normal(0, noise_sd, shape_xyz).astype(np.float32)
    image = np.sqrt(real**2 + imaginary**2).astype(np.float32)  # Rician magnitude

    label = np.zeros(shape_xyz, np.uint8)
    label[wall] = WALL
    label[ra_cavity] = RIGHT_ATRIUM
    label[la_cavity] = LEFT_ATRIUM
    return image, label, phantom_affine(tuple(shape_zyx), tuple(spacing_zyx))


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` (1-based) of a phantom set: independent of how many cases are made."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_phantoms(
    out: str | os.PathLike,
    cases: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> list[str]:
    """Write ``cases`` phantoms as ``OUT/MBAS_<nnn>/MBAS_<nnn>_gt.nii.gz`` and ``..._label.nii.gz``.

    Args:
        out: output folder.
        cases: number of cases, numbered from 001.
        seed: base seed.
        shape: grid (Z, Y, X) in voxels.
        spacing: voxel size (Z, Y, X) in mm.

    Returns:
        The case ids written.
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing must be 3 positive values (Z, Y, X), got {shape} and {spacing}")
    written = []
    for index in range(1, cases + 1):
        case = f"MBAS_{index:03d}"
        image, label, affine = make_phantom(case_seed(seed, index), tuple(shape), tuple(spacing))
        folder = Path(out) / case
        save_nifti_atomic(image, affine, folder / f"{case}_gt.nii.gz")
        save_nifti_atomic(label, affine, folder / f"{case}_label.nii.gz")
        written.append(case)
    return written
