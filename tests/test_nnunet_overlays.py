"""The nnU-Net overlays stay in step with the bundles' own configs.

They replace whole transform lists, so every other step of a bundle's list must reappear in the
overlay unchanged: only the documented ones differ (Orientationd -> CropForegroundd to the
non-zero box, Spacingd -> NNUNetResampled after the z-score; the postprocessing inverts before
the softmax).
"""

from __future__ import annotations

import json

import pytest

from cascade.bundles import bundle_dir

REPLACED = {"Orientationd", "Spacingd"}
ADDED = {"CropForegroundd", "cascade.nnunet_transforms.NNUNetResampled"}
BOX = "nonzero_box"  # the localizer's record of the non-zero box: probabilities outside it are 0


def configs(stage: str, name: str) -> dict:
    return json.loads((bundle_dir(stage) / "configs" / f"{name}.json").read_text())


def without(transforms: list[dict], targets: set[str]) -> list[dict]:
    return [t for t in transforms if t["_target_"] not in targets and BOX not in json.dumps(t)]


@pytest.mark.parametrize("stage", ["localizer", "segmenter"])
def test_overlays_change_only_the_documented_steps(stage):
    bundle, overlay = configs(stage, "inference"), configs(stage, "nnunet_preprocessing")
    assert without(overlay["preprocessing_transforms"], ADDED) == without(bundle["preprocessing_transforms"], REPLACED)
    post = bundle["postprocessing_transforms"]
    first, *rest = overlay["postprocessing_transforms"]
    assert first["_target_"] == "Invertd" and without(rest, set()) == without(post, {"Invertd"})
    train, train_overlay = configs(stage, "train")["train"], configs(stage, "nnunet_preprocessing_train")
    assert without(train_overlay["train#deterministic_transforms"], ADDED) == without(train["deterministic_transforms"], REPLACED)
