"""Every shipped config overlay builds a network that runs on its own patch, in training and inference,
and the two bundles' overlays of one name agree on the hand-off they share."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import BUNDLES

STACKS = [["demo"], ["quick"], ["la2018"], ["la2018", "la2018_gpu"]]


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


@pytest.mark.parametrize("name", ["demo", "quick", "la2018", "la2018_gpu", "paper_handoff"])
def test_overlays_of_one_name_share_the_hand_off(name):
    localizer, segmenter = (json.loads((BUNDLES[b] / "configs" / f"{name}.json").read_text()) for b in sorted(BUNDLES))
    if "gate_margin_mm" in localizer or "gate_margin_mm" in segmenter:
        assert localizer.get("gate_margin_mm") == segmenter.get("gate_margin_mm")
