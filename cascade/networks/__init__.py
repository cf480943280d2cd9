"""Segmentation networks: nnU-Net's residual-encoder U-Net, the paper's two presets, weight loading.

Every network takes (B, C, X, Y, Z) and returns logits (B, K, X, Y, Z), or with deep supervision a
list of logits, full resolution first, the contract of MONAI's networks and ``DeepSupervisionLoss``.
"""

from cascade.networks.nnunet_weights import load_nnunet_state_dict
from cascade.networks.presets import localizer_resenc_unet, segmenter_resenc_unet
from cascade.networks.resenc_unet import ResEncUNet

__all__ = ["ResEncUNet", "localizer_resenc_unet", "segmenter_resenc_unet", "load_nnunet_state_dict"]
