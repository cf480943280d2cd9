"""``cascade import-nnunet``: what it writes, that the weights compute nnU-Net's function, and its errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from cascade.bundles import bundle_dir
from cascade.engine import StagePredictor
from cascade.errors import InputError
from cascade.nnunet_import import import_nnunet
from cascade.phantom import make_phantom
from tests.conftest import write_nifti
from tests.nnunet_reference import (
    LOCALIZER_REGION_LABELS,
    SEGMENTER_LABELS,
    nnunet_network,
    tiny_plans,
    write_model_folder,
)

pytest.importorskip("nnunetv2")

MODEL_NAME = "nnUNetTrainer__nnUNetResEncUNetPlans__3d_fullres"


def bundle_network(stage: str, work: Path) -> torch.nn.Module:
    """The stage bundle's ``network_def`` with the imported overlay, as the predictor builds it."""
    parser = ConfigParser()
    parser.read_config([str(bundle_dir(stage) / "configs" / "inference.json"), str(work / stage / "config.json")])
    return parser.get_parsed_content("network_def", lazy=False).eval()


def assert_same_function(
    model: Path, fold: int, ours: torch.nn.Module, transpose_forward=(0, 1, 2), region: bool = False
) -> None:
    """Our network on (x, y, z) input computes nnU-Net's network on its (z, y, x) input, permuted by
    transpose_forward."""
    reference = nnunet_network(model)
    reference.load_state_dict(
        torch.load(model / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    )
    image = torch.randn(1, 1, 64, 64, 16, generator=torch.Generator().manual_seed(1))
    to_network = [2 + (2 - axis) for axis in transpose_forward]  # network axis i <- MONAI axis 2 - transpose_forward[i]
    with torch.no_grad():
        to_ours = [2 + to_network.index(2 + a) for a in range(3)]
        expected = reference(image.permute(0, 1, *to_network)).permute(0, 1, *to_ours)
        got = ours(image)
    if region:  # one sigmoid region -> softmax over (0, z)
        assert torch.equal(got[:, :1], torch.zeros_like(got[:, :1]))
        torch.testing.assert_close(torch.softmax(got, 1)[:, 1:], torch.sigmoid(expected), atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cli_writes_folds_and_overlay_that_compute_nnunets_network(tmp_path, cascade_in_process):
    model = write_model_folder(tmp_path / MODEL_NAME, SEGMENTER_LABELS, folds=(0, 1))
    work = tmp_path / "work"
    result = cascade_in_process("import-nnunet", str(model), "--stage", "segmenter", "--out", str(work))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "segmenter: 2 fold(s) 0, 1" in result.stdout and "'wall'" in result.stdout
    assert "patch_size (x, y, z): bundle [256, 256, 20], nnU-Net [64, 64, 16]" in result.stdout
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*.pt")) == [
        "segmenter/fold0/models/model.pt", "segmenter/fold1/models/model.pt",
    ]
    overlay = json.loads((work / "segmenter" / "config.json").read_text())
    assert overlay["pixdim"] == [1.25, 1.25, 2.5] and overlay["patch_size"] == [64, 64, 16]
    assert overlay["network_def#kernel_sizes"][0] == [3, 3, 1] and overlay["network_def#strides"][2] == [2, 2, 2]
    assert overlay["nnunet_image_order"] == 3
    assert overlay["inferer"]["_target_"] == "cascade.nnunet_inference.NNUNetSlidingWindowInferer"
    assert "cascade.nnunet_transforms.NNUNetResampled" in [t["_target_"] for t in overlay["grid_transforms"]]
    network = bundle_network("segmenter", work)
    for fold in (0, 1):
        state = torch.load(work / "segmenter" / f"fold{fold}" / "models" / "model.pt", weights_only=True)
        network.load_state_dict(state)  # a plain state dict, strictly fitting the configured network
        assert_same_function(model, fold, network)

    again = cascade_in_process("import-nnunet", str(model), "--stage", "segmenter", "--out", str(work), "--folds", "1")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"cascade: error: {work / 'segmenter' / 'fold1' / 'models' / 'model.pt'}: exists (use --overwrite)"
    ]
    imported = cascade_in_process(
        "import-nnunet", str(model), "--stage", "segmenter", "--out", str(work), "--folds", "1", "--overwrite"
    )
    assert imported.returncode == 0


def test_region_localizer_and_transposed_plans(tmp_path):
    """One sigmoid region becomes the localizer's softmax pair; transpose_forward permutes kernels and grids."""
    plans = tiny_plans(transpose_forward=(0, 2, 1))
    model = write_model_folder(tmp_path / MODEL_NAME, LOCALIZER_REGION_LABELS, plans=plans)
    checkpoint_file = model / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, weights_only=False)
    checkpoint["inference_allowed_mirroring_axes"] = (1, 2)  # network axes (x, y): in plane only
    torch.save(checkpoint, checkpoint_file)
    work = tmp_path / "work"
    report = import_nnunet(model, "localizer", work, preprocessing="monai")
    assert "region 'atria' [1, 2, 3] (sigmoid)" in report.labels
    overlay = json.loads((work / "localizer" / "config.json").read_text())
    assert "grid_transforms" not in overlay and "inferer" not in overlay  # the bundle's own pipeline
    assert overlay["mirror_axes"] == [0, 1]
    # network axes (z, x, y): plans' patch [16, 64, 64] and kernel [1, 3, 3] read in that order
    assert overlay["patch_size"] == [64, 64, 16] and overlay["network_def#kernel_sizes"][0] == [3, 3, 1]
    network = bundle_network("localizer", work)
    network.load_state_dict(torch.load(work / "localizer" / "fold0" / "models" / "model.pt", weights_only=True))
    assert_same_function(model, 0, network, transpose_forward=(0, 2, 1), region=True)


def _edited(plans: dict, path: str, value) -> dict:
    plans = copy.deepcopy(plans)
    node = plans["configurations"]["3d_fullres"]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return plans


PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


@pytest.mark.parametrize(
    "stage, labels, edit, message",
    [
        ("localizer", SEGMENTER_LABELS, None,
         "dataset.json: labels: the localizer needs one foreground class (one label or one region), got 3"),
        ("segmenter", LOCALIZER_REGION_LABELS, None,
         "dataset.json: labels: the segmenter needs the softmax classes 0-3"),
        ("segmenter", SEGMENTER_LABELS, ("architecture.network_class_name", PLAIN_UNET),
         f"plans.json: configurations.3d_fullres.architecture.network_class_name: '{PLAIN_UNET}' is not nnU-Net's "
         "ResidualEncoderUNet"),
        ("segmenter", SEGMENTER_LABELS, ("architecture.arch_kwargs.norm_op", "torch.nn.BatchNorm3d"),
         "plans.json: configurations.3d_fullres.architecture.arch_kwargs.norm_op: 'torch.nn.BatchNorm3d' is not "
         "supported"),
        ("segmenter", SEGMENTER_LABELS, ("normalization_schemes", ["CTNormalization"]),
         "plans.json: configurations.3d_fullres.normalization_schemes: ['CTNormalization'] (only ZScoreNormalization "
         "is supported)"),
        ("segmenter", SEGMENTER_LABELS, ("patch_size", [16, 64, 60]),
         "plans.json: configurations.3d_fullres.patch_size: not divisible by the network's total stride"),
        ("segmenter", SEGMENTER_LABELS, ("spacing", [1.25, 1.25]),
         "plans.json: configurations.3d_fullres.spacing: expected three positive voxel sizes (a 3D configuration)"),
    ],
)
def test_mismatch_is_one_line_naming_the_field(tmp_path, stage, labels, edit, message):
    model = write_model_folder(tmp_path / MODEL_NAME, labels)
    if edit:
        (model / "plans.json").write_text(json.dumps(_edited(tiny_plans(), *edit)))
    with pytest.raises(InputError) as error:
        import_nnunet(model, stage, tmp_path / "work")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "work").exists()


def test_cli_error_for_missing_checkpoint_and_channels(tmp_path, cascade_in_process):
    model = write_model_folder(tmp_path / MODEL_NAME, SEGMENTER_LABELS)
    missing = cascade_in_process(
        "import-nnunet", str(model), "--stage", "segmenter", "--out", str(tmp_path / "w"), "--checkpoint", "best"
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"cascade: error: {model}: no fold_<k>/checkpoint_best.pth with a numbered fold k"
    everything = cascade_in_process(
        "import-nnunet", str(model), "--stage", "segmenter", "--out", str(tmp_path / "w"), "--folds", "all"
    )
    assert everything.returncode == 1 and "nnU-Net's fold_all is not imported" in everything.stderr
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "LGE", "1": "cine"}
    (model / "dataset.json").write_text(json.dumps(dataset))
    two_channels = cascade_in_process("import-nnunet", str(model), "--stage", "segmenter", "--out", str(tmp_path / "w"))
    assert two_channels.returncode == 1 and len(two_channels.stderr.strip().splitlines()) == 1
    assert "dataset.json: channel_names: the cascade has one input channel" in two_channels.stderr


def test_two_label_localizer_predicts_on_the_input_grid(tmp_path):
    """A {background, atria} model through the localizer bundle with the nnU-Net overlays, postprocessing included."""
    model = write_model_folder(tmp_path / MODEL_NAME, {"background": 0, "atria": 1})
    work = tmp_path / "work"
    report = import_nnunet(model, "localizer", work)
    assert report.labels == "label 1 'atria' -> atria"
    image, _, affine = make_phantom(5, (14, 100, 90), (3.0, 0.75, 0.75))
    image[:, :6] = 0  # zero-filled rows: outside the non-zero box
    path = write_nifti(tmp_path / "case.nii.gz", image, affine)
    predictor = StagePredictor(
        bundle_dir("localizer"), [work / "localizer" / "fold0" / "models" / "model.pt"],
        overrides={"device": "$torch.device('cpu')"}, configs=[work / "localizer" / "config.json"],
    )
    pred = predictor(predictor.load({"image": str(path)}))["pred"]
    assert pred.shape == (1, *image.shape)
    np.testing.assert_allclose(pred.affine.numpy(), affine, atol=1e-5)
    labels = pred[0].numpy()
    assert set(np.unique(labels).tolist()) == {0, 1} and not labels[:, :6].any()


def test_cascade_predict_runs_imported_stages(tmp_path, cascade_in_process):
    """Both stages imported into one work folder and run by `cascade predict --models`."""
    work = tmp_path / "work"
    for stage, labels in (("localizer", {"background": 0, "atria": 1}), ("segmenter", SEGMENTER_LABELS)):
        model = write_model_folder(tmp_path / stage / MODEL_NAME, labels, seed=3)
        assert cascade_in_process("import-nnunet", str(model), "--stage", stage, "--out", str(work)).returncode == 0
    image, _, affine = make_phantom(6, (14, 100, 90), (3.0, 0.75, 0.75))
    path = write_nifti(tmp_path / "in" / "case.nii.gz", image, affine)
    result = cascade_in_process(
        "predict", str(path), str(tmp_path / "out"), "--models", str(work), "--device", "cpu", "--save_masks"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the localizer: {work}, folds [0]" in result.stdout
    labels = nib.load(str(tmp_path / "out" / "case_label.nii.gz"))
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, affine, atol=1e-4)
    mask = np.asanyarray(nib.load(str(tmp_path / "out" / "case_mask.nii.gz")).dataobj)
    values = np.asanyarray(labels.dataobj)
    assert mask.any() and set(np.unique(values).tolist()) <= {0, 1, 2, 3} and values.any()
