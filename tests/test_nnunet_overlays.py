"""The nnU-Net overlays replace named pieces of the bundles' pipelines, never a whole list.

Everything else of a bundle's pipeline (the gate, the intensity repair, the tensor conversion, the
segmenter's label steps) is shared with the overlay by construction; only the documented steps
differ: the grid piece (Orientationd, Spacingd -> CropForegroundd to the non-zero box, the z-score,
NNUNetResampled) and the postprocessing order (the inverse before the softmax).
"""

from __future__ import annotations

import json

import pytest

from cascade.bundles import bundle_dir
from tests.bundle_utils import expand

REPLACED = {"Orientationd", "Spacingd"}
ADDED = {"CropForegroundd", "cascade.nnunet_transforms.NNUNetResampled"}
BOX = "nonzero_box"  # the localizer's record of the non-zero box: probabilities outside it are 0
PIECES = {
    "grid_transforms", "inverse_transforms", "label_transforms", "postprocessing_transforms", "train#grid_transforms"
}


def configs(stage: str, name: str) -> dict:
    return json.loads((bundle_dir(stage) / "configs" / f"{name}.json").read_text())


def without(transforms: list[dict], targets: set[str]) -> list[dict]:
    return [t for t in transforms if t["_target_"] not in targets and BOX not in json.dumps(t)]


def as_monai_steps(transforms: list[dict]) -> list[dict]:
    """``ThresholdOnInputGridd`` written as the MONAI steps it equals: ``Invertd`` then ``AsDiscreted``."""
    steps = []
    for t in transforms:
        if t["_target_"] == "cascade.transforms.ThresholdOnInputGridd":
            steps += [
                {"_target_": "Invertd"}, {"_target_": "AsDiscreted", "keys": t["keys"], "threshold": t["threshold"]}
            ]
        else:
            steps.append(t)
    return steps


def layered(base: dict, overlay: dict) -> dict:
    """``overlay`` over ``base`` as MONAI layers configs (ids with # reach into sections)."""
    merged = json.loads(json.dumps(base))
    for key, value in overlay.items():
        *parents, last = key.split("#")
        target = merged
        for part in parents:
            target = target[part]
        target[last] = value
    return merged


@pytest.mark.parametrize("stage", ["localizer", "segmenter"])
def test_overlays_change_only_the_documented_steps(stage):
    bundle, overlay = configs(stage, "inference"), configs(stage, "nnunet_preprocessing")
    train, train_overlay = configs(stage, "train"), configs(stage, "nnunet_preprocessing_train")
    assert {key for key in [*overlay, *train_overlay] if "transform" in key} <= PIECES  # pieces, not whole lists
    merged, merged_train = layered(bundle, overlay), layered(train, train_overlay)
    assert without(expand(merged, "preprocessing_transforms"), ADDED) == without(
        expand(bundle, "preprocessing_transforms"), REPLACED
    )
    post, nnunet_post = as_monai_steps(expand(bundle, "postprocessing_transforms")), expand(
        merged, "postprocessing_transforms"
    )
    assert nnunet_post[0]["_target_"] == "Invertd" and without(nnunet_post[1:], set()) == without(post, {"Invertd"})
    deterministic = expand(train, "train#deterministic_transforms")
    assert without(expand(merged_train, "train#deterministic_transforms"), ADDED) == without(deterministic, REPLACED)
