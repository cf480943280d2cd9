"""cascade.nnunet_transforms against nnU-Net v2's own resampling code, and its inversion in MONAI pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, CropForegroundd, Invertd

from cascade.bundles import bundle_dir
from cascade.nnunet_transforms import (
    NNUNetResample, NNUNetResampled, nnunet_output_shape, resample_nnunet, separate_resampling_axis,
)

default_resampling = pytest.importorskip("nnunetv2.preprocessing.resampling.default_resampling")

# (C, Z, Y, X) shape, (Z, Y, X) spacing, target spacing, order, order_z: nnU-Net's axis order
CASES = [
    ((1, 14, 60, 50), (3.0, 0.75, 0.75), (2.5, 1.25, 1.25), 3, 0),  # anisotropic input: z separate, z changes
    ((1, 14, 60, 50), (3.0, 0.75, 0.75), (2.5, 1.25, 1.25), 3, 1),
    ((2, 16, 40, 44), (2.5, 1.0, 1.0), (2.5, 1.25, 1.25), 3, 0),  # ratio 2.5: resampled in 3D
    ((1, 10, 40, 40), (2.5, 0.625, 0.625), (1.0, 1.0, 1.0), 1, 0),  # probabilities' order
    ((1, 12, 30, 30), (2.0, 2.0, 2.0), (2.0, 0.5, 0.5), 3, 0),  # anisotropic target decides
    ((1, 12, 30, 30), (5.0, 1.0, 1.0), (10.0, 1.0, 1.0), 3, 0),  # z halved: nearest ties at x.5
]


@pytest.mark.parametrize("shape, spacing, target, order, order_z", CASES)
def test_resampling_equals_nnunet(shape, spacing, target, order, order_z):
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    new_shape = default_resampling.compute_new_shape(shape[1:], spacing, target)
    expected = default_resampling.resample_data_or_seg_to_shape(
        data, new_shape, spacing, target, is_seg=False, order=order, order_z=order_z, force_separate_z=None
    )
    xyz = data.transpose(0, 3, 2, 1)  # MONAI order
    shape_xyz = nnunet_output_shape(xyz.shape[1:], spacing[::-1], target[::-1])
    assert shape_xyz == tuple(new_shape[::-1])
    axis = separate_resampling_axis(spacing[::-1], target[::-1])
    got = resample_nnunet(xyz, shape_xyz, axis, order, order_z).transpose(0, 3, 2, 1)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_separate_axis_rules():
    assert separate_resampling_axis((0.625, 0.625, 2.5), (1.0, 1.0, 1.0)) == 2
    assert separate_resampling_axis((1.0, 1.0, 2.5), (1.25, 1.25, 2.5)) is None  # ratio 2.5 < 3
    assert separate_resampling_axis((2.5, 2.5, 0.5), (1, 1, 1)) is None  # two low-resolution axes
    assert separate_resampling_axis((1.0, 1.0, 2.5), (1, 1, 1), force_separate=True) == 2
    assert separate_resampling_axis((0.5, 0.5, 2.5), (1, 1, 1), force_separate=False) is None


def _image(shape=(40, 36, 12), spacing=(0.75, 0.75, 3.0)) -> MetaTensor:
    affine = torch.diag(torch.tensor([-spacing[0], -spacing[1], spacing[2], 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([10.0, -5.0, 3.0], dtype=torch.float64)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return MetaTensor(torch.as_tensor(np.sin(3 * x) + np.cos(2 * y) + z, dtype=torch.float32)[None], affine=affine)


def test_affine_follows_the_field_of_view_and_inverse_restores_the_grid():
    image = _image()
    resample = NNUNetResample(pixdim=(1.25, 1.25, 2.5))
    out = resample(image)
    assert out.shape[1:] == (24, 22, 14)  # round(40 * 0.75 / 1.25) = 24, round(36 * 0.6) = 22, round(12 * 1.2) = 14
    corner = torch.tensor([-0.5, -0.5, -0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(out.affine @ corner, image.affine @ corner)  # the field of view's edge stays put
    back = resample.inverse(out)
    assert back.shape == image.shape and not back.applied_operations
    torch.testing.assert_close(back.affine, image.affine)
    assert float((back - image).abs().mean()) < 0.05  # a smooth image survives down- and up-sampling
    with pytest.raises(ValueError, match="MetaTensor"):
        resample(torch.zeros(1, 4, 4, 4))


def test_invertd_undoes_crop_and_resampling_nearest_for_masks():
    image = _image()
    image[:, :5] = 0  # a zero-filled border: cropped away, padded back with zeros
    mask = MetaTensor((image > 1.2).float(), affine=image.affine)
    preprocessing = Compose([
        CropForegroundd(keys=["image", "mask"], source_key="image", select_fn=lambda x: x != 0, allow_smaller=True),
        NNUNetResampled(keys=["image", "mask"], pixdim=(1.25, 1.25, 2.5), order=[3, 0], inverse_order=[1, 0]),
    ])
    data = preprocessing({"image": image, "mask": mask})
    assert data["image"].shape[1:] == (21, 22, 14)
    data["pred"] = MetaTensor(torch.cat([data["image"], -data["image"]]), meta=data["image"].meta)
    data["pred"].applied_operations = list(data["image"].applied_operations)
    invert = Invertd(
        keys=["pred", "mask"], transform=preprocessing, orig_keys=["image", "mask"], nearest_interp=[False, True]
    )
    inverted = invert(data)
    assert inverted["pred"].shape == (2, 40, 36, 12) and inverted["mask"].shape == mask.shape
    torch.testing.assert_close(inverted["pred"].affine, image.affine)
    assert not inverted["pred"][:, :5].any()  # outside the crop
    assert set(torch.unique(inverted["mask"]).tolist()) <= {0.0, 1.0}
    assert float((inverted["pred"][0, 5:] - image[0, 5:]).abs().mean()) < 0.05


@pytest.mark.parametrize("bundle", ["atria_localizer", "atria_segmenter"])
def test_training_overlay_preprocesses_to_the_network_grid(bundle, phantom_dir):
    """configs/nnunet_preprocessing_train.json over train.json: crop, z-score, nnU-Net resampling of
    image, label (and mask)."""
    parser = ConfigParser()
    configs = bundle_dir(bundle.removeprefix("atria_")) / "configs"
    parser.read_config([str(configs / "train.json"), str(configs / "nnunet_preprocessing_train.json")])
    parser.update({"pixdim": [2.0, 2.0, 2.5], "mask_from_label": True})
    case = sorted(phantom_dir.iterdir())[0]
    item = {"image": str(case / f"{case.name}_gt.nii.gz"), "label": str(case / f"{case.name}_label.nii.gz")}
    data = Compose(parser.get_parsed_content("train#deterministic_transforms"))(item)
    assert data["image"].shape[1:] == (100, 100, 24)  # 160 x 1.25 / 2.0, z unchanged
    assert abs(float(data["image"].mean())) < 0.05 and abs(float(data["image"].std()) - 1) < 0.05
    assert set(torch.unique(data["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert data["label"].shape == data["image"].shape
    if "mask" in data:
        assert data["mask"].sum() > (data["label"] > 0).sum()  # the dilated gate
