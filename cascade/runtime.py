"""How a stage runs, apart from what its bundle config says: device, runtime, precision, calibration.

:class:`StageRuntime` is what :class:`cascade.engine.StagePredictor` takes besides the config and
its weights; :func:`stage_runtime` builds it from the user's settings for every caller
(:meth:`cascade.engine.CascadeEngine.from_options`, which ``cascade predict``, ``cascade crossval``
and the bench scripts use, and the MONAI Label app's engine cache).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from cascade.backends import default_precision
from cascade.settings import resolve_device

__all__ = ["StageRuntime", "stage_runtime"]


@dataclass(frozen=True)
class StageRuntime:
    """The runtime options of one stage.

    Attributes:
        device: where the network runs, set as the config's ``device``; ``None`` leaves the config's
            own (the bundles': CUDA when available).
        backend: inference runtime of the networks, ``torch`` or ``openvino`` (CPU only; see
            :func:`cascade.backends.compile_network`).
        precision: ``fp32``, or ``bf16`` or ``int8`` (openvino only).
        calibration: for ``int8``, labelled cases ``{"image", "label"}`` whose windows calibrate the
            quantization (:func:`cascade.calibration.calibration_windows`); ``None``: phantoms.
        progress: a bar on stderr over each case's windows, named after the bundle
            (:class:`~cascade.window_progress.WindowProgress`).
        uncertainty: measure how much the ensemble's passes (checkpoints times mirrorings) disagree
            (:mod:`cascade.uncertainty`); only where there are several passes.
    """

    device: torch.device | None = None
    backend: str = "torch"
    precision: str = "fp32"
    calibration: tuple[Mapping[str, str], ...] | None = None
    progress: bool = False
    uncertainty: bool = False


def stage_runtime(
    stage: str,
    device: str | torch.device | None = None,
    backend: str | None = None,
    precision: str | Mapping[str, str | None] | None = None,
    calibration: Sequence[Mapping[str, str]] | str | os.PathLike | None = None,
    progress: bool = False,
) -> StageRuntime:
    """The runtime of ``stage`` (``localizer`` or ``segmenter``) for the user's settings.

    Args:
        stage: the stage; the segmenter measures the uncertainty.
        device: a name (:func:`cascade.settings.resolve_device`); ``None``: the config's, or ``cpu``
            for a backend other than torch.
        backend: ``torch`` (default) or ``openvino``.
        precision: one precision, or stage -> precision; ``None``:
            :func:`cascade.backends.default_precision`.
        calibration: for ``int8``: labelled cases, or a labelled data folder (any layout); ``None``:
            phantoms. Ignored at other precisions.
        progress: a progress bar over each case's windows.

    Raises:
        InputError: a bad device name; no labelled case in a calibration folder.
    """
    backend = backend or "torch"
    if backend != "torch" and device is None:
        device = "cpu"
    chosen = precision.get(stage) if isinstance(precision, Mapping) else precision
    chosen = chosen or default_precision(backend, stage)
    cases = None
    if calibration is not None and chosen == "int8":
        if isinstance(calibration, (str, os.PathLike)):
            from cascade.data import labelled_cases

            calibration = labelled_cases(calibration)
        cases = tuple(dict(case) for case in calibration)
    return StageRuntime(
        device=None if device is None else resolve_device(str(device)),
        backend=backend, precision=chosen, calibration=cases, progress=bool(progress),
        uncertainty=stage == "segmenter",
    )
