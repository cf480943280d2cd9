"""Every shipped config overlay builds a network that runs on its own patch, in training and inference,
and the two bundles' overlays of one name agree on the hand-off they share."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import BUNDLES

STACKS = [["demo"], ["quick"], ["la2018"], ["la2018", "la2018_gpu"], ["la2018", "mednext"]]


def parsed(bundle: str, base: str, overlays: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES[bundle] / "configs" / f"{name}.json") for name in (base, *overlays)])
    parser.update({"device": "$torch.device('cpu')"})
    return parser


@pytest.mark.parametrize("overlays", STACKS, ids=lambda stack: "+".join(stack))
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_overlay_networks_run_on_their_patch(bundle, overlays):
    for base in ("train", "inference"):
        parser = parsed(bundle, base, overlays)
        network = parser.get_parsed_content("network_def", lazy=False).eval()
        patch = parser.get_parsed_content("patch_size")
        with torch.no_grad():
            output = network(torch.zeros(1, 1, *patch))
        full = output[0] if isinstance(output, (list, tuple)) else output
        assert full.shape == (1, 4 if bundle == "atria_segmenter" else 2, *patch), (base, full.shape)


@pytest.mark.parametrize("overlays", [s for s in STACKS if "la2018_gpu" not in s], ids=lambda stack: "+".join(stack))
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_deep_supervision_weights_one_per_training_output(bundle, overlays):
    """The loss weighs every output the network gives in training (MONAI's DeepSupervisionLoss would
    silently fall back to its own weights with fewer), the lowest resolution with 0 as nnU-Net does."""
    parser = parsed(bundle, "train", overlays)
    network = parser.get_parsed_content("network_def", lazy=False).train()
    patch = parser.get_parsed_content("patch_size")
    with torch.no_grad():
        outputs = network(torch.zeros(1, 1, *patch))
    weights = parser.get_parsed_content("loss#weights")
    assert len(weights) == len(outputs) and weights[0] > 0 and weights[-1] == 0


def test_mednext_overlay_trains_and_predicts_through_a_work_folder(phantom_dir, tmp_path, cascade_in_process):
    """`--config la2018,mednext` (the paper's alternative backbone, MONAI's MedNeXt): both stages train
    with their deep supervision, and `cascade predict --models WORK` runs them on the input's grid."""
    import nibabel as nib

    from cascade.bundles import read_stage_config

    tiny = {"features_per_stage": [4, 8, 16, 32, 64], "num_epochs": 1, "iterations_per_epoch": 1, "tta": False}
    for stage, bundle in (("localizer", "atria_localizer"), ("segmenter", "atria_segmenter")):
        overlay = {}
        for name in ("la2018", "mednext"):
            overlay.update(json.loads((BUNDLES[bundle] / "configs" / f"{name}.json").read_text()))
        overlay.pop("checkpoint")
        (tmp_path / "work" / stage).mkdir(parents=True)
        (tmp_path / "work" / stage / "config.json").write_text(json.dumps({**overlay, **tiny}))
        overrides = {
            "bundle_root": str(tmp_path / "work" / stage / "fold0"), "dataset_dir": str(phantom_dir), "fold": -1,
            "num_folds": 2, "device": "$torch.device('cpu')", "train#dataset#progress": False, "val_interval": 1,
        }  # fold -1 trains on every case: the validation due after the epoch has none and is skipped
        if stage == "segmenter":
            overrides["mask_from_label"] = True
        parser = read_stage_config(
            BUNDLES[bundle], "train", [str(tmp_path / "work" / stage / "config.json")], overrides
        )
        parser.get_parsed_content("initialize")
        parser.get_parsed_content("run")
        assert type(parser.get_parsed_content("network")).__name__ == "MedNeXt"
        models = tmp_path / "work" / stage / "fold0" / "models"
        shutil.copy(models / "model_final.pt", models / "model.pt")  # a finished fold, as crossval leaves it
    image = next(phantom_dir.glob("*/*_gt.nii.gz"))
    result = cascade_in_process("predict", image, tmp_path / "out", "--models", tmp_path / "work", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    label = nib.load(tmp_path / "out" / f"{image.parent.name}_label.nii.gz")
    assert label.shape == nib.load(image).shape and (label.affine == nib.load(image).affine).all()


@pytest.mark.parametrize("overlays", [*STACKS, ["paper_handoff"]], ids=lambda stack: "+".join(stack))
def test_overlays_of_one_name_share_the_hand_off(overlays):
    """The gate margin the localizer's gate recall is validated with (its train.json) is the one the
    segmenter trains and predicts with, for every stack as resolved, whether an overlay sets it or not."""
    margins = {
        (bundle, base): parsed(bundle, base, overlays).get_parsed_content("gate_margin_mm")
        for bundle, base in (
            ("atria_localizer", "train"), ("atria_segmenter", "train"), ("atria_segmenter", "inference")
        )
    }
    assert len({json.dumps([float(m) for m in margin]) for margin in margins.values()}) == 1, margins
