"""A small nnU-Net v2 trained-model folder built without training, for the nnU-Net tests.

The plans describe a reduced ResEnc (the paper's operators, 4 stages, 4-16 features); the weights
are random (seeded) and written in nnU-Net's checkpoint format. Needs nnunetv2 (a test-only
dependency, see the Makefile's setup target).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

TINY_ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": {
        "n_stages": 4,
        "features_per_stage": [4, 8, 16, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 2, 2, 2],
        "n_conv_per_stage_decoder": [1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}

TINY_CONFIGURATION = {
    "data_identifier": "nnUNetResEncUNetPlans_3d_fullres",
    "preprocessor_name": "DefaultPreprocessor",
    "batch_size": 2,
    "patch_size": [16, 64, 64],
    "median_image_size_in_voxels": [16, 80, 80],
    "spacing": [2.5, 1.25, 1.25],
    "normalization_schemes": ["ZScoreNormalization"],
    "use_mask_for_norm": [False],
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    "architecture": TINY_ARCHITECTURE,
    "batch_dice": True,
}

SEGMENTER_LABELS = {"background": 0, "wall": 1, "right_atrium": 2, "left_atrium": 3}
LOCALIZER_REGION_LABELS = {"background": 0, "atria": [1, 2, 3]}


def tiny_plans(transpose_forward=(0, 1, 2), **configuration) -> dict:
    """nnU-Net v2 plans with one ``3d_fullres`` configuration (reduced ResEnc); ``configuration`` overrides."""
    forward = list(transpose_forward)
    return {
        "dataset_name": "Dataset901_Phantoms",
        "plans_name": "nnUNetResEncUNetPlans",
        "original_median_spacing_after_transp": [2.5, 1.25, 1.25],
        "original_median_shape_after_transp": [16, 80, 80],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": forward,
        "transpose_backward": [forward.index(i) for i in range(3)],
        "configurations": {"3d_fullres": {**copy.deepcopy(TINY_CONFIGURATION), **configuration}},
        "experiment_planner_used": "nnUNetPlannerResEncM",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 4.0, "mean": 1.0, "median": 1.0, "min": 0.0, "percentile_00_5": 0.0, "percentile_99_5": 3.0,
                "std": 0.5,
            }
        },
    }


def dataset_json(labels: dict) -> dict:
    dataset = {"channel_names": {"0": "LGE"}, "labels": labels, "numTraining": 16, "file_ending": ".nii.gz"}
    if any(isinstance(v, list) for v in labels.values()):
        dataset["regions_class_order"] = [
            v[0] if isinstance(v, list) else v for k, v in labels.items() if k != "background"
        ]
    return dataset


def nnunet_network(folder: Path, deep_supervision: bool = False) -> torch.nn.Module:
    """nnU-Net's own network for the folder's plans, built by MONAI's ``get_network_from_nnunet_plans``."""
    from monai.apps.nnunet import get_network_from_nnunet_plans

    network = get_network_from_nnunet_plans(str(folder / "plans.json"), str(folder / "dataset.json"), "3d_fullres")
    network.decoder.deep_supervision = deep_supervision  # what nnU-Net's trainer toggles for inference
    return network.eval()


def write_model_folder(folder: Path, labels: dict, plans: dict | None = None, folds=(0,), seed: int = 0) -> Path:
    """``folder`` as nnU-Net's ``nnUNetTrainer__<plans>__3d_fullres``: dataset.json, plans.json,
    fold_<k>/checkpoint_final.pth.

    Weights are nnU-Net's own initialisation (He-normal convolutions, zero biases), seeded per fold.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plans = plans or tiny_plans()
    dataset = dataset_json(labels)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold in folds:
        with torch.random.fork_rng():
            torch.manual_seed(seed + int(fold) if str(fold).isdigit() else seed)
            network = nnunet_network(folder, deep_supervision=True)
        checkpoint = {
            "network_weights": network.state_dict(),
            "optimizer_state": None,
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)], "train_losses": [np.float32(-0.3)]
            },
            "_best_ema": np.float64(0.5),
            "current_epoch": 1,
            "init_args": {
                "plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset,
                "device": torch.device("cpu"),
            },
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
