"""nnU-Net v2's sliding-window prediction as a MONAI inferer (``configs/nnunet_inferer.json``).

MONAI's ``SlidingWindowInferer`` and nnU-Net's ``nnUNetPredictor`` blend windows differently, and
no option of MONAI's makes them agree:

- window placement: nnU-Net spreads ``ceil((size - patch) / (patch * step)) + 1`` windows evenly
  over an axis (starts rounded), MONAI steps by ``int(patch * (1 - overlap))`` and clamps the last
  window to the border; from three windows per axis on, the starts differ;
- the Gaussian weights: nnU-Net filters an impulse at ``size // 2`` with sigma ``size / 8``
  (``scipy.ndimage.gaussian_filter``, truncated at 4 sigma), and replaces zeros by the smallest
  non-zero weight; MONAI centres its Gaussian at ``(size - 1) / 2`` and floors it at 1e-3 of the peak.

:class:`NNUNetSlidingWindowInferer` places and weights windows as nnU-Net does (padding inputs
smaller than the patch with zeros, centred, as nnU-Net's ``pad_nd_image``). It accumulates in
float32 by default; nnU-Net accumulates in float16, where the products of logits and the tiny
corner weights (below float16's normal range) lose most of their digits, so voxels covered only by
window corners differ (``accumulate_dtype="float16"`` reproduces nnU-Net's numbers). Mirroring is
not its business: the predictor's network (e.g. the engine's ensemble) averages mirrorings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

__all__ = ["nnunet_window_starts", "nnunet_gaussian", "NNUNetSlidingWindowInferer"]


def nnunet_window_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float) -> list[list[int]]:
    """Window start indices per axis, as nnU-Net's ``compute_steps_for_sliding_window``.

    Args:
        image_size: spatial size, at least ``patch_size`` on every axis.
        patch_size: window size, same axis order.
        step: window step as a fraction of the patch (``1 - overlap``), in (0, 1].

    Returns:
        One list of starts per axis.
    """
    starts = []
    for size, patch in zip(image_size, patch_size):
        count = math.ceil((size - patch) / (patch * step)) + 1
        spacing = (size - patch) / (count - 1) if count > 1 else 0.0
        starts.append([int(np.round(spacing * i)) for i in range(count)])
    return starts


def nnunet_gaussian(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8, peak: float = 10.0) -> torch.Tensor:
    """nnU-Net's window weights (``compute_gaussian``) with its float16 rounding.

    As nnU-Net: scaled to ``peak``, rounded to float16 (the smallest weights in the patch corners
    underflow to 0), zeros replaced by the smallest non-zero weight.

    Returns:
        float32 tensor of shape ``patch_size``.
    """
    impulse = np.zeros(patch_size)
    impulse[tuple(s // 2 for s in patch_size)] = 1
    weights = gaussian_filter(impulse, [s * sigma_scale for s in patch_size], 0, mode="constant", cval=0)
    weights = torch.as_tensor(weights / weights.max() * peak).half()
    weights[weights == 0] = weights[weights > 0].min()
    return weights.float()


class NNUNetSlidingWindowInferer(Inferer):
    """Sliding-window inference with nnU-Net v2's window placement and Gaussian blending.

    Args:
        roi_size: window (patch) size, in the input's spatial axis order.
        overlap: ``1 - `` nnU-Net's ``tile_step_size`` (0.5 by default, as nnU-Net's).
        sw_batch_size: windows per network call.
        progress: show a progress bar over the windows.
        accumulate_dtype: ``"float32"``, or ``"float16"`` as nnU-Net (see the module docstring);
            the output is float32 either way.

    Raises:
        ValueError: ``overlap`` outside [0, 1) or another ``accumulate_dtype``.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        progress: bool = False,
        accumulate_dtype: str = "float32",
    ) -> None:
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if accumulate_dtype not in ("float32", "float16"):
            raise ValueError(f"accumulate_dtype must be float32 or float16, got {accumulate_dtype!r}")
        self.accumulate_dtype = getattr(torch, accumulate_dtype)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.step = 1.0 - overlap
        self.sw_batch_size = sw_batch_size
        self.progress = progress
        self.weights = nnunet_gaussian(self.roi_size)

    def windows(self, spatial_shape: Sequence[int]) -> list[tuple[slice, ...]]:
        """The windows over an input of ``spatial_shape`` once padded up to the window (voxel slices)."""
        padded = [max(s, p) for s, p in zip(spatial_shape, self.roi_size)]
        starts = nnunet_window_starts(padded, self.roi_size, self.step)
        return [tuple(slice(s, s + p) for s, p in zip(corner, self.roi_size)) for corner in itertools.product(*starts)]

    def __call__(
        self, inputs: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor], *args, **kwargs
    ) -> torch.Tensor:
        """Blend ``network`` over windows of ``inputs`` (B, C, *spatial) into (B, K, *spatial) outputs."""
        spatial = inputs.shape[2:]
        padding = [max(p - s, 0) for s, p in zip(spatial, self.roi_size)]
        padded = F.pad(inputs, [side for d in reversed(padding) for side in (d // 2, d - d // 2)])
        windows = self.windows(spatial)
        weights = self.weights.to(inputs.device, self.accumulate_dtype)
        output = counts = None
        batches = range(0, len(windows), self.sw_batch_size)
        for first in tqdm(batches, desc="windows", unit="batch", leave=False, disable=not self.progress):
            chunk = windows[first : first + self.sw_batch_size]
            batch_windows = torch.cat([padded[(slice(None), slice(None), *w)] for w in chunk])
            logits = network(batch_windows, *args, **kwargs).float()
            if output is None:
                output = torch.zeros(
                    (inputs.shape[0], logits.shape[1], *padded.shape[2:]),
                    device=inputs.device,
                    dtype=self.accumulate_dtype,
                )
                counts = torch.zeros(padded.shape[2:], device=inputs.device, dtype=self.accumulate_dtype)
            for index, window in enumerate(chunk):
                batch = slice(index * inputs.shape[0], (index + 1) * inputs.shape[0])
                output[(slice(None), slice(None), *window)] += logits[batch] * weights
                counts[window] += weights
        output /= counts
        crop = tuple(slice(d // 2, d // 2 + s) for d, s in zip(padding, spatial))
        return output[(slice(None), slice(None), *crop)].float()
