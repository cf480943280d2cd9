"""The oracle: nnU-Net v2's own predictor against the imported model run through the bundles.

A small nnU-Net model folder is built without training (tests/nnunet_reference.py); nnU-Net's
``nnUNetPredictor`` predicts two phantoms from their files with its defaults (Gaussian blending,
step 0.5) but no mirroring, and ``cascade.nnunet_import`` plus the bundle's inference config
predict the same files. The phantoms cover a grid resampled in 3D (spacing ratio below 3, two
windows per axis) and an anisotropic one (z resampled separately with order 0, three windows in
plane), both with zero-filled borders, so the crop to the non-zero box and its undoing are
exercised.

nnU-Net accumulates and resamples logits in float16. The asserted configuration does the same
(``accumulate_dtype="float16"`` of the nnU-Net inferer), so what remains are float16 roundings
where the two round differently: a logit below 16 rounds by at most 2**-8 and a softmax
probability moves by at most a quarter of a logit change, hence 2e-3 on the 99.9th percentile of
the absolute probability difference. The maximum is only printed: where the Gaussian weights of
all windows covering a voxel are tiny (the outer slices of a single window along z, patch
corners), the weighted logits are float16 subnormals with a few significant bits, and a 1e-6
difference in a logit can change its rounding by a step. The bundle's default float32
accumulation does not have that rounding and so differs from nnU-Net there; that, too, is
printed. Probabilities are compared inside the non-zero box: outside it nnU-Net writes
background probability 1, while the bundle pads the logits with 0
(uniform probabilities); both label it background, and labels are compared everywhere.

Also printed, not asserted beyond "worse": the nnU-Net preprocessing with MONAI's
``SlidingWindowInferer`` (overlap 0.5, Gaussian), and the bundle's default MONAI preprocessing.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import AsDiscreted, Compose

from cascade.bundles import bundle_dir
from cascade.engine import StagePredictor
from cascade.metrics import dice
from cascade.nnunet_import import import_nnunet
from cascade.nnunet_inference import NNUNetSlidingWindowInferer
from cascade.phantom import make_phantom
from cascade.transforms import ChannelArgmaxd
from tests.conftest import write_nifti
from tests.nnunet_reference import LOCALIZER_REGION_LABELS, SEGMENTER_LABELS, nnunet_network, write_model_folder

pytest.importorskip("nnunetv2")
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

PROBABILITY_TOLERANCE = 2e-3  # on the 99.9th percentile (module docstring)
# (Z, Y, X) grid, (Z, Y, X) spacing, zero-filled borders as (X, Y) slices of the (X, Y, Z) array
PHANTOMS = {
    "iso": ((16, 92, 96), (2.5, 1.0, 1.0), (np.s_[:5, :], np.s_[:, -4:])),
    "aniso": ((14, 176, 180), (3.0, 0.75, 0.75), (np.s_[-6:, :], np.s_[:, :3])),
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


def nnunet_predict(model: Path, images: dict[str, Path], out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """nnU-Net's predictor on the files: (probabilities (C, X, Y, Z), labels (X, Y, Z)) per case.

    ``manual_initialization`` with nnU-Net's own network and the checkpoint's weights, as
    ``initialize_from_trained_model_folder`` would set it up (that one also imports nnU-Net's
    trainer modules, whose training-only dependencies are not installed).
    """
    plans_manager = PlansManager(str(model / "plans.json"))
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )
    predictor.manual_initialization(
        nnunet_network(model), plans_manager, plans_manager.get_configuration("3d_fullres"),
        [checkpoint["network_weights"]], checkpoint["init_args"]["dataset_json"], checkpoint["trainer_name"],
        checkpoint["inference_allowed_mirroring_axes"],
    )
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(
        [[str(p)] for p in images.values()], str(out), save_probabilities=True, overwrite=True,
        folder_with_segs_from_prev_stage=None,
    )
    results = {}
    for case in images:
        # (C, z, y, x) -> (C, x, y, z)
        probabilities = np.load(out / f"{case}.npz")["probabilities"].transpose(0, 3, 2, 1)
        results[case] = probabilities, np.asanyarray(nib.load(str(out / f"{case}.nii.gz")).dataobj)
    return results


def bundle_probabilities(work: Path, stage: str, item: dict, overrides: dict) -> np.ndarray:
    """Softmax probabilities (C, X, Y, Z) on the input grid through the engine's stage predictor.

    The bundle's loading and preprocessing, the predictor's ensemble network in the config's
    inferer, and the bundle's postprocessing up to (not including) its argmax.
    """
    predictor = StagePredictor(
        bundle_dir(stage),
        sorted((work / stage).glob("fold*/models/model.pt")),
        overrides={"device": "$torch.device('cpu')", **overrides},
        configs=[work / stage / "config.json"],
    )
    data = predictor.preprocessing(predictor.load(item))
    image = data["image"]
    with torch.no_grad():
        logits = predictor.inferer(image.as_tensor()[None], predictor.network)[0]
    data["pred"] = MetaTensor(logits.float(), meta=image.meta, applied_operations=list(image.applied_operations))
    discrete = (AsDiscreted, ChannelArgmaxd)
    to_probabilities = Compose(
        list(itertools.takewhile(lambda t: not isinstance(t, discrete), predictor.postprocessing.transforms))
    )
    return to_probabilities(data)["pred"].numpy()


def nonzero_box(path: Path) -> tuple[slice, ...]:
    nonzero = np.argwhere(np.asanyarray(nib.load(str(path)).dataobj) != 0)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(nonzero.min(0), nonzero.max(0)))


def compare(
    ours: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray, box: tuple[slice, ...], classes: list[int]
) -> dict:
    """Abs probability difference inside ``box`` (max, 99.9th percentile) and per-class Dice of the labels.

    One channel is a foreground probability (the localizer's postprocessing keeps that one) and is
    labelled where it exceeds 0.5, as nnU-Net labels a region; more channels by argmax.
    """
    labels = ours.argmax(0) if len(ours) > 1 else (ours[0] > 0.5).astype(np.int64)
    difference = np.abs(ours[(slice(None), *box)] - reference[(slice(None), *box)]).max(0)
    return {
        "max_abs_probability": float(difference.max()),
        "p99.9_abs_probability": float(np.quantile(difference, 0.999)),
        "dice": {c: dice(labels == c, reference_labels == c) for c in classes},
        "voxels_differing": int((labels != reference_labels).sum()),
        "reference_voxels": {c: int((reference_labels == c).sum()) for c in classes},
    }


STAGES = {
    # stage: nnU-Net labels, classes compared, overrides of the stage's config
    "segmenter": (SEGMENTER_LABELS, [0, 1, 2, 3], {"mask_region": False, "mask_from_label": False}),
    "localizer": (LOCALIZER_REGION_LABELS, [0, 1], {}),
}


# the bundle's configurations compared: import mode, inferer override
MODES = {
    "nnU-Net preprocessing + nnU-Net inferer, float16 accumulation": (
        "nnunet", {"inferer#accumulate_dtype": "float16"}
    ),
    "nnU-Net preprocessing + nnU-Net inferer (default, float32)": ("nnunet", {}),
    "nnU-Net preprocessing + MONAI SlidingWindowInferer": ("nnunet", {"inferer": {
        "_target_": "SlidingWindowInferer", "roi_size": "@patch_size", "sw_batch_size": 1, "overlap": 0.5,
        "mode": "gaussian",
    }}),
    "bundle default (MONAI preprocessing and inferer)": ("monai", {}),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_imported_model_matches_nnunet_predictor(stage, phantoms, tmp_path):
    labels, classes, overrides = STAGES[stage]
    model = write_model_folder(tmp_path / "nnUNetTrainer__nnUNetResEncUNetPlans__3d_fullres", labels)
    works = {mode: tmp_path / f"work_{mode}" for mode in ("nnunet", "monai")}
    for mode, work in works.items():
        import_nnunet(model, stage, work, preprocessing=mode)
    reference = nnunet_predict(model, phantoms, tmp_path / "nnunet")
    for case, image in phantoms.items():
        item = {"image": str(image), "mask": str(image.with_name(f"{case}_mask.nii.gz"))}
        probabilities, reference_labels = reference[case]
        results = {}
        for name, (mode, inferer) in MODES.items():
            ours = bundle_probabilities(works[mode], stage, item, {**overrides, "overlap": 0.5, **inferer})
            assert ours.shape == probabilities.shape and reference_labels.shape == ours.shape[1:]
            results[name] = compare(ours, probabilities, reference_labels, nonzero_box(image), classes)
            print(f"{stage} {case} {name}: {results[name]}")
        exact = results["nnU-Net preprocessing + nnU-Net inferer, float16 accumulation"]
        assert exact["p99.9_abs_probability"] < PROBABILITY_TOLERANCE
        assert min(exact["dice"].values()) >= 0.999
        # the overlays are what close the gap: the bundle's default pipeline is measurably off
        bundle_default = results["bundle default (MONAI preprocessing and inferer)"]
        assert bundle_default["max_abs_probability"] > 10 * exact["max_abs_probability"]


def test_inferer_places_and_weights_windows_as_nnunet(tmp_path):
    """Three windows on one axis, two on another, padding on the third: nnU-Net's own sliding window."""
    model = write_model_folder(tmp_path / "model", SEGMENTER_LABELS)
    plans_manager = PlansManager(str(model / "plans.json"))
    network = nnunet_network(model)
    network.load_state_dict(
        torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    )
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )
    predictor.manual_initialization(network, plans_manager, plans_manager.get_configuration("3d_fullres"), None,
                                    json.loads((model / "dataset.json").read_text()), "nnUNetTrainer", None)
    image_zyx = torch.randn(1, 20, 110, 50, generator=torch.Generator().manual_seed(0))
    expected = predictor.predict_sliding_window_return_logits(image_zyx).float()
    expected = expected.permute(0, 3, 2, 1)
    differences = {}
    for name, inferer in {
        "float16": NNUNetSlidingWindowInferer(roi_size=(64, 64, 16), overlap=0.5, accumulate_dtype="float16"),
        "float32": NNUNetSlidingWindowInferer(roi_size=(64, 64, 16), overlap=0.5),
        "MONAI": SlidingWindowInferer(roi_size=(64, 64, 16), overlap=0.5, mode="gaussian"),
    }.items():
        with torch.no_grad():
            got = inferer(
                image_zyx.permute(0, 3, 2, 1)[None], lambda x: network(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
            )
        assert got.shape == (1, 4, 50, 110, 20)
        differences[name] = float((got[0] - expected).abs().max())
    print(f"sliding window vs nnU-Net's, max abs logit difference: {differences}")
    assert differences["float16"] < 2e-2  # a few float16 roundings of logits below 16 (2**-8 each)
    assert differences["MONAI"] > 10 * differences["float16"]
