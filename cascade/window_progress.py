"""A progress bar over a stage's sliding windows, labelled with the stage.

MONAI's ``SlidingWindowInferer(progress=True)`` draws an unlabelled bar, so a terminal running the
cascade shows two anonymous bars per case; :class:`WindowProgress` counts windows where they are
predicted (it stands in for the network) on a bar named after the stage, whatever the inferer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import Inferer, SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval  # private, but the interval rule of MONAI's own inferer
from monai.utils import ensure_tuple_rep, fall_back_tuple
from tqdm import tqdm

from cascade.nnunet_inference import NNUNetSlidingWindowInferer

__all__ = ["count_windows", "WindowProgress"]


def count_windows(inferer: Inferer, spatial_shape: Sequence[int]) -> int | None:
    """How many windows ``inferer`` predicts over one input of ``spatial_shape`` (voxels).

    Follows MONAI's placement for :class:`~monai.inferers.SlidingWindowInferer` (the input padded
    up to the window, MONAI's scan interval) and nnU-Net's for
    :class:`~cascade.nnunet_inference.NNUNetSlidingWindowInferer`; ``None`` for other inferers.
    """
    if isinstance(inferer, NNUNetSlidingWindowInferer):
        return len(inferer.windows(spatial_shape))
    if isinstance(inferer, SlidingWindowInferer):
        roi = fall_back_tuple(inferer.roi_size, spatial_shape)
        size = [max(s, r) for s, r in zip(spatial_shape, roi)]
        overlap = ensure_tuple_rep(inferer.overlap, len(size))
        return len(dense_patch_slices(size, roi, _get_scan_interval(size, roi, len(size), overlap)))
    return None


class WindowProgress:
    """``network`` counting the windows it predicts on a tqdm bar on stderr.

    Args:
        network: called on (N, C, *window) batches of N windows.
        label: the bar's description, e.g. the stage's bundle name.
        total: windows expected (:func:`count_windows`; ``None``: a count without a total).

    Use as a context manager; the bar is removed when the stage ends.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], label: str, total: int | None) -> None:
        self.network = network
        self.bar = tqdm(total=total, desc=f"{label} windows", unit="window", leave=False, file=sys.stderr)

    def __call__(self, windows: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        output = self.network(windows, *args, **kwargs)
        self.bar.update(windows.shape[0])
        return output

    def __enter__(self) -> WindowProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
