"""No silent drift between the two bundles: what they share stays equal, except the listed differences.

The stages differ by design (the paper's Tables 27 and 28) in: the network and its grid
(``network_def``, ``features_per_stage``, ``n_blocks_per_stage``, ``dropout``, ``pixdim``,
``patch_size``); the loss (``DiceCELoss`` vs the gated ``MaskedDiceCELoss``); the patch sampler
(25% foreground vs wall/RA/LA class ratios); the validation postprocessing and secondary metrics;
the stage-1 mask the segmenter carries as an extra key through every transform (made from the
label, or all ones for the single-stage baseline); and the copy of the label classes the localizer
keeps for its gate-recall metric. ``gate_margin_mm``, the hand-off's dilation, is shared. Everything
else (optimizer, schedule, augmentations, handlers, trainer and evaluator, training budget,
sliding-window settings, how images are loaded and oriented) must be the same.
"""

from __future__ import annotations

import json

import pytest

from tests.bundle_utils import BUNDLES, config_value, expand

SHARED_TRAIN = [
    "imports", "ckpt_dir", "output_dir", "fold", "num_folds", "seed", "resume_ckpt", "device", "amp", "num_epochs",
    "iterations_per_epoch", "val_interval", "batch_size", "num_workers", "cache_rate", "learning_rate", "axcodes",
    "max_samples_per_class", "sw_batch_size", "val_window_overlap", "gate_margin_mm", "optimizer", "lr_scheduler",
    "initialize", "run", "training",
    "train#preprocessing", "train#dataset", "train#sampler", "train#dataloader", "train#inferer", "train#handlers",
    "train#trainer", "train#intensity_transforms", "train#grid_transforms", "train#tensor_transforms",
    "validate#preprocessing", "validate#dataset", "validate#dataloader", "validate#inferer",
    "validate#handlers", "validate#evaluator",
]
SHARED_INFERENCE = [
    "bundle_root", "output_dir", "device", "amp", "num_workers", "axcodes", "sw_batch_size", "overlap", "tta",
    "mirror_axes", "loading", "intensity_transforms", "grid_transforms", "tensor_transforms", "preprocessing",
    "dataset", "dataloader", "inferer", "handlers", "evaluator", "initialize", "run",
]


def config(bundle: str, name: str) -> dict:
    return json.loads((BUNDLES[bundle] / "configs" / f"{name}.json").read_text())


STAGE_KEYS = ("mask", "label_classes")  # the segmenter's gate; the localizer's copy of the classes for gate recall


def without_mask(item):
    """The config fragment without the stage-specific keys (and their per-key arguments):
    the segmenter's ``mask`` and the localizer's ``label_classes``."""
    if isinstance(item, list):
        return [without_mask(i) for i in item]
    if not isinstance(item, dict):
        return item
    item = {k: without_mask(v) for k, v in item.items()}
    keys = item.get("keys")
    if not isinstance(keys, list):
        return item
    per_key = [
        name for name, value in item.items() if isinstance(value, list) and len(value) == len(keys) and name != "keys"
    ]
    for key in STAGE_KEYS:
        if key in item["keys"]:
            index = item["keys"].index(key)
            for name in per_key + ["keys"]:
                item[name] = item[name][:index] + item[name][index + 1 :]
    if len(item["keys"]) == 1:  # ["image"] and "image" mean the same to MONAI
        for name in per_key + ["keys"]:
            item[name] = item[name][0]
    return item


def transform_names(transforms: list[dict]) -> list[str]:
    return [t["_target_"] for t in transforms]


@pytest.mark.parametrize("path", SHARED_TRAIN)
def test_shared_training_sections_are_equal(path):
    localizer, segmenter = config("atria_localizer", "train"), config("atria_segmenter", "train")
    shared = config_value(localizer, path), without_mask(config_value(segmenter, path))
    if path in ("train#handlers",) or path.startswith("validate#"):
        shared = tuple(json.loads(json.dumps(s).replace("mask_dir", "")) for s in shared)
    assert without_mask(shared[0]) == shared[1]


def test_key_metric_is_the_mean_dice_of_each_target():
    """The localizer scores the union of the classes (its target), the segmenter each class."""
    localizer = config("atria_localizer", "train")["validate"]["key_metric"]["val_mean_dice"]
    segmenter = config("atria_segmenter", "train")["validate"]["key_metric"]["val_mean_dice"]
    assert localizer | {"output_transform": ""} == segmenter | {"output_transform": ""}
    assert localizer["output_transform"] == "$cascade.handlers.pred_and_atria"


def test_augmentations_are_equal_apart_from_the_patch_sampler():
    localizer = without_mask(config("atria_localizer", "train")["train"]["random_transforms"])
    segmenter = without_mask(config("atria_segmenter", "train")["train"]["random_transforms"])
    crop = "RandCropByLabelClassesd"  # 2 classes at 3:1 (25% foreground) vs wall/RA/LA at 0.5/0.25/0.25
    target = ("ConcatItemsd", "cascade.annotation.AnnotationChanneld")  # the segmenter's gated, partial-label target
    assert [t for t in localizer if t["_target_"] != crop] == [
        t for t in segmenter if t["_target_"] not in (crop, *target)
    ]
    assert transform_names(localizer).index(crop) == transform_names(segmenter).index(crop)
    crops = [
        {k: v for k, v in t.items() if k != "num_classes"}
        for side in (localizer, segmenter) for t in side if t["_target_"] == crop
    ]
    assert crops[0] == crops[1]


def test_sampling_transforms_differ_only_by_the_classes():
    """The class indices cached for the crop: the localizer's target is the union (2 classes)."""
    localizer = without_mask(config("atria_localizer", "train")["train"]["sampling_transforms"])
    segmenter = without_mask(config("atria_segmenter", "train")["train"]["sampling_transforms"])
    binarize = {"_target_": "AsDiscreted", "keys": "label", "threshold": 0.5}
    assert localizer[0] == binarize
    assert [{k: v for k, v in t.items() if k != "num_classes"} for t in localizer[1:]] == [
        {k: v for k, v in t.items() if k != "num_classes"} for t in segmenter
    ]


def test_deterministic_training_transforms_differ_only_by_the_mask():
    localizer = without_mask(expand(config("atria_localizer", "train"), "train#deterministic_transforms"))
    segmenter = without_mask(expand(config("atria_segmenter", "train"), "train#deterministic_transforms"))
    mask_only = {"CopyItemsd", "Lambdad", "cascade.transforms.DilateMaskd"}
    # the segmenter's mask file is absent when the mask comes from the label
    segmenter = [{k: v for k, v in t.items() if k != "allow_missing_keys"} for t in segmenter]
    assert localizer == [t for t in segmenter if t["_target_"] not in mask_only]


@pytest.mark.parametrize("path", SHARED_INFERENCE)
def test_shared_inference_sections_are_equal(path):
    localizer, segmenter = config("atria_localizer", "inference"), config("atria_segmenter", "inference")
    assert without_mask(config_value(localizer, path)) == without_mask(config_value(segmenter, path))


def test_image_preprocessing_is_equal_apart_from_the_gate():
    localizer = without_mask(expand(config("atria_localizer", "inference"), "preprocessing_transforms"))
    segmenter = without_mask(expand(config("atria_segmenter", "inference"), "preprocessing_transforms"))
    gate = {
        "CopyItemsd", "Lambdad", "AsDiscreted", "cascade.transforms.DilateMaskd",
        "cascade.transforms.CropForegroundMinSized",
    }
    assert localizer == [t for t in segmenter if t["_target_"] not in gate]


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundles_require_the_package_version_there_is(bundle):
    """The package version is stated once (cascade.__version__, read by pyproject.toml); each
    bundle's metadata names the package version its configs need, which must be that one."""
    import importlib.metadata

    import cascade

    metadata = json.loads((BUNDLES[bundle] / "configs" / "metadata.json").read_text())
    installed = importlib.metadata.version("atria-cascade")
    assert metadata["required_packages_version"]["atria-cascade"] == cascade.__version__ == installed
