"""Calibration data of ``--precision int8``: windows of labelled cases as a stage's network sees them.

:func:`cascade.backends.compile_network` quantizes a network with NNCF on windows that
:func:`calibration_windows` makes, and caches the quantized IR under :func:`calibration_key`. The
cases are the user's (``--calibration DIR``) or, by default, :data:`CALIBRATION_PHANTOMS` phantoms
of seed :data:`CALIBRATION_PHANTOM_SEED` written to a temporary folder (``cascade phantom DIR
--cases 2 --seed 11`` on the generator's default grid: 44 x 576 x 576 at 2.5 x 0.625 x 0.625 mm,
the MBAS grid). Which windows are taken is our own choice (MONAI has no calibration sampler):
:data:`CALIBRATION_WINDOWS_PER_CASE` sliding-window positions per case, spread evenly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from monai.data.utils import dense_patch_slices

from cascade.io import file_sha256
from cascade.settings import recorded_overrides

__all__ = [
    "CALIBRATION_PHANTOMS", "CALIBRATION_PHANTOM_SEED", "CALIBRATION_WINDOWS_PER_CASE", "calibration_key",
    "calibration_windows",
]

CALIBRATION_PHANTOMS, CALIBRATION_PHANTOM_SEED = 2, 11
CALIBRATION_WINDOWS_PER_CASE = 8


def calibration_key(
    cases: Sequence[Mapping[str, str]] | None, config_files: Sequence[str | os.PathLike], overrides: Mapping
) -> str:
    """What a stage's calibration windows depend on, for the cache of quantized networks.

    Args:
        cases: the labelled cases ``{"image", "label"}``; ``None`` for the default phantoms.
        config_files: the stage's config files (by SHA-256: they set the preprocessing).
        overrides: the stage's config overrides (a device as its config expression,
            :func:`cascade.settings.recorded_overrides`).

    Returns:
        A JSON string; equal for equal cases (by checksum), configs, overrides and windows per case.
    """
    configs = [file_sha256(path) for path in config_files]
    if cases is None:
        from cascade import __version__

        names = [f"{CALIBRATION_PHANTOMS} phantoms of seed {CALIBRATION_PHANTOM_SEED}, atria-cascade {__version__}"]
    else:
        names = sorted(f"{file_sha256(case['image'])} {file_sha256(case['label'])}" for case in cases)
    return json.dumps({"cases": names, "configs": configs, "overrides": recorded_overrides(overrides),
                       "per_case": CALIBRATION_WINDOWS_PER_CASE}, sort_keys=True, default=str)


def calibration_windows(
    cases: Sequence[Mapping[str, str]] | None,
    load: Callable[[dict], dict],
    preprocess: Callable[[dict], dict],
    patch_size: Sequence[int],
) -> list[np.ndarray]:
    """Calibration windows of a stage.

    Each case is read by the stage's ``load`` (its config's ``loading`` transforms) with its label
    as the stage-1 mask (the segmenter's gate), transformed by ``preprocess`` (its
    ``preprocessing_transforms``), padded to the patch like the inferer, and
    :data:`CALIBRATION_WINDOWS_PER_CASE` of its sliding-window positions (overlap 0.5) are taken,
    spread evenly.

    Args:
        cases: labelled cases ``{"image", "label"}``; ``None`` for the default phantoms.
        load: reads ``{"image": path, "mask": path}`` into channel-first MetaTensors.
        preprocess: the stage's preprocessing of a loaded item.
        patch_size: the window shape (X, Y, Z).

    Returns:
        (1, C, X, Y, Z) float32 arrays, at most :data:`CALIBRATION_WINDOWS_PER_CASE` per case.
    """
    from cascade.data import labelled_cases

    patch = [int(n) for n in patch_size]
    windows = []
    with tempfile.TemporaryDirectory(prefix="cascade-calibration-") as folder:
        if cases is None:
            from cascade.phantom import write_phantoms

            write_phantoms(folder, cases=CALIBRATION_PHANTOMS, seed=CALIBRATION_PHANTOM_SEED)
            cases = labelled_cases(folder)
        for case in cases:
            image = preprocess(load({"image": case["image"], "mask": case["label"]}))["image"].as_tensor()
            shortfall = [max(p - n, 0) for p, n in zip(patch, image.shape[1:])]
            pad = [side for missing in reversed(shortfall) for side in (missing // 2, missing - missing // 2)]
            image = torch.nn.functional.pad(image, pad)
            positions = dense_patch_slices(image.shape[1:], patch, [max(p // 2, 1) for p in patch])
            chosen = np.unique(np.linspace(0, len(positions) - 1, CALIBRATION_WINDOWS_PER_CASE).round().astype(int))
            windows += [image[(slice(None), *positions[i])][None].numpy().astype(np.float32) for i in chosen]
    return windows
