"""The oracle: nnU-Net v2's own predictor against the imported model run through the bundles.

A small nnU-Net model folder is built without training (tests/nnunet_reference.py); nnU-Net's
``nnUNetPredictor`` predicts two phantoms from their files, and ``cascade.nnunet_import`` plus the
bundle's inference config predict the same files. The phantoms cover a grid resampled in 3D
(spacing ratio below 3) and an anisotropic one (z resampled separately with order 0), both with
zero-filled borders, so the crop to the non-zero box and its undoing are exercised.

Settings on both sides: no mirroring, step 0.5 / overlap 0.5, and constant window weighting. The
window positions agree for these sizes (two windows per axis at most); the Gaussian weightings do
not (nnU-Net centres its Gaussian at ``size // 2`` and truncates it at 4 sigma, MONAI at
``(size - 1) / 2``), so they are compared and printed separately. nnU-Net accumulates logits in
float16 and resamples them in float16, which bounds the agreement: a float16 rounding of a logit
of magnitude below 16 is at most 2**-7, and a softmax probability moves by at most a quarter of
the logit change, so the tolerance is 1e-2 on probabilities (the measured values are printed).

Probabilities are compared inside the non-zero box: outside it nnU-Net writes background
probability 1, while the bundle pads the logits with 0 (uniform probabilities); both label it
background, and labels are compared everywhere.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose

from cascade.metrics import dice
from cascade.nnunet_import import import_nnunet
from cascade.phantom import make_phantom
from cascade.runner import REPO_BUNDLES, BundlePredictor
from tests.conftest import write_nifti
from tests.nnunet_reference import LOCALIZER_REGION_LABELS, SEGMENTER_LABELS, nnunet_network, write_model_folder

pytest.importorskip("nnunetv2")
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

PROBABILITY_TOLERANCE = 1e-2
# (Z, Y, X) grid, (Z, Y, X) spacing, zero-filled borders as (X, Y) slices of the (X, Y, Z) array
PHANTOMS = {
    "iso": ((16, 92, 96), (2.5, 1.0, 1.0), (np.s_[:5, :], np.s_[:, -4:])),
    "aniso": ((14, 124, 128), (3.0, 0.75, 0.75), (np.s_[-6:, :], np.s_[:, :3])),
}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    """Phantom images as nnU-Net input files (``<case>_0000.nii.gz``) and an all-ones stage-1 mask each."""
    root = tmp_path_factory.mktemp("oracle_phantoms")
    files = {}
    for seed, (case, (shape, spacing, borders)) in enumerate(PHANTOMS.items()):
        image, _, affine = make_phantom(100 + seed, shape, spacing)
        for border in borders:
            image[border] = 0
        files[case] = write_nifti(root / f"{case}_0000.nii.gz", image.astype(np.float32), affine)
        write_nifti(root / f"{case}_mask.nii.gz", np.ones(image.shape, np.uint8), affine)
    return files


def nnunet_predict(model: Path, images: dict[str, Path], out: Path, gaussian: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """nnU-Net's predictor on the files: (probabilities (C, X, Y, Z), labels (X, Y, Z)) per case.

    ``manual_initialization`` with nnU-Net's own network and the checkpoint's weights, as
    ``initialize_from_trained_model_folder`` would set it up (that one also imports nnU-Net's
    trainer modules, whose training-only dependencies are not installed).
    """
    plans_manager = PlansManager(str(model / "plans.json"))
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=gaussian, use_mirroring=False, perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )
    predictor.manual_initialization(
        nnunet_network(model), plans_manager, plans_manager.get_configuration("3d_fullres"),
        [checkpoint["network_weights"]], checkpoint["init_args"]["dataset_json"], checkpoint["trainer_name"],
        checkpoint["inference_allowed_mirroring_axes"],
    )
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(p)] for p in images.values()], str(out), save_probabilities=True, overwrite=True,
                                             folder_with_segs_from_prev_stage=None)
    results = {}
    for case in images:
        probabilities = np.load(out / f"{case}.npz")["probabilities"].transpose(0, 3, 2, 1)  # (C, z, y, x) -> (C, x, y, z)
        results[case] = probabilities, np.asanyarray(nib.load(str(out / f"{case}.nii.gz")).dataobj)
    return results


def bundle_probabilities(work: Path, stage: str, item: dict, overrides: dict) -> np.ndarray:
    """Softmax probabilities (C, X, Y, Z) on the input grid through the bundle's own configs.

    The bundle's preprocessing, the predictor's networks and the bundle's postprocessing up to (not
    including) its argmax; with the engine (``cascade.engine.StagePredictor``) this becomes its
    per-stage call.
    """
    predictor = BundlePredictor(
        REPO_BUNDLES / f"atria_{stage}",
        sorted((work / stage).glob("fold*/models/model.pt")),
        overrides={"device": "$torch.device('cpu')", **overrides},
        extra_configs=[str(work / stage / "config.json")],
    )
    data = predictor.preprocessing(dict(item))
    image = data["image"]
    probabilities = predictor.probabilities(image.unsqueeze(0))[0]
    data["pred"] = MetaTensor(torch.log(probabilities.clamp_min(1e-12)), meta=image.meta)
    data["pred"].applied_operations = list(image.applied_operations)
    to_probabilities = Compose(list(itertools.takewhile(lambda t: not isinstance(t, AsDiscreted), predictor.postprocessing.transforms)))
    return to_probabilities(data)["pred"].numpy()


def nonzero_box(path: Path) -> tuple[slice, ...]:
    nonzero = np.argwhere(np.asanyarray(nib.load(str(path)).dataobj) != 0)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(nonzero.min(0), nonzero.max(0)))


def compare(ours: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray, box: tuple[slice, ...], classes: list[int]) -> dict:
    """Max abs probability difference inside ``box`` and per-class Dice of the argmax labels."""
    labels = ours.argmax(0)
    return {
        "max_abs_probability": float(np.abs(ours[(slice(None), *box)] - reference[(slice(None), *box)]).max()),
        "dice": {c: dice(labels == c, reference_labels == c) for c in classes},
        "voxels_differing": int((labels != reference_labels).sum()),
        "reference_voxels": {c: int((reference_labels == c).sum()) for c in classes},
    }


STAGES = {
    # stage: nnU-Net labels, classes compared, overrides of the stage's config
    "segmenter": (SEGMENTER_LABELS, [0, 1, 2, 3], {"crop_to_mask": False, "mask_from_label": False}),
    "localizer": (LOCALIZER_REGION_LABELS, [0, 1], {}),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_imported_model_matches_nnunet_predictor(stage, phantoms, tmp_path):
    labels, classes, overrides = STAGES[stage]
    model = write_model_folder(tmp_path / "nnUNetTrainer__nnUNetResEncUNetPlans__3d_fullres", labels)
    works = {mode: tmp_path / f"work_{mode}" for mode in ("nnunet", "monai")}
    for mode, work in works.items():
        import_nnunet(model, stage, work, preprocessing=mode)
    reference = {gaussian: nnunet_predict(model, phantoms, tmp_path / f"nnunet_{gaussian}", gaussian) for gaussian in (False, True)}
    for case, image in phantoms.items():
        item = {"image": str(image), "mask": str(image.with_name(f"{case}_mask.nii.gz"))}
        box = nonzero_box(image)
        results = {}
        for mode, gaussian in (("nnunet", False), ("nnunet", True), ("monai", False)):
            ours = bundle_probabilities(works[mode], stage, item, {**overrides, "overlap": 0.5, "inferer#mode": "gaussian" if gaussian else "constant"})
            probabilities, reference_labels = reference[gaussian][case]
            if stage == "localizer":  # nnU-Net's region output is the sigmoid of the atria region alone
                probabilities = np.concatenate([1 - probabilities, probabilities])
            assert ours.shape == probabilities.shape and reference_labels.shape == ours.shape[1:]
            results[mode, gaussian] = compare(ours, probabilities, reference_labels, box, classes)
            print(f"{stage} {case} preprocessing={mode} weighting={'gaussian' if gaussian else 'constant'}: {results[mode, gaussian]}")
        exact = results["nnunet", False]
        assert exact["max_abs_probability"] < PROBABILITY_TOLERANCE
        assert min(exact["dice"].values()) >= 0.999
        # the overlay is what closes the gap: the bundle's default preprocessing is measurably off
        assert results["monai", False]["max_abs_probability"] > 10 * exact["max_abs_probability"]
