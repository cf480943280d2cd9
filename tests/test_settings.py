"""One settings layer: user values parsed once and mapped onto each stage's config under one name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cascade.bundles import STAGES, bundle_dir, read_stage_config
from cascade.errors import InputError, SettingError
from cascade.settings import (
    as_bool, as_number, as_overlap, declared_settings, stage_defaults, stage_overrides, stage_settings,
)


def test_prediction_settings_go_to_the_stages_that_have_them():
    overrides = stage_overrides({
        "device": "cpu", "overlap": 0.25, "tta": None, "mask_threshold": 0.3, "gate_margin_mm": 5.0,
        "mask_region": False,
    })
    # the device is not a config override: it reaches the config through the stage's runtime (test_runtime.py)
    assert overrides["localizer"] == {"overlap": 0.25, "mask_threshold": 0.3}
    assert overrides["segmenter"] == {
        "overlap": 0.25, "gate_margin_mm": 5.0, "mask_region": False,
        "mask_from_label": False,
    }
    assert stage_settings() == {
        "localizer": ("device", "overlap", "tta", "mask_threshold"),
        "segmenter": ("device", "overlap", "tta", "gate_margin_mm", "mask_region"),
    }


def test_the_settings_are_those_each_bundle_declares(tmp_path):
    """A bundle's inference.json declares what a user may change (``user_settings``) and what a run
    records (``recorded_settings``); a setting it does not declare reaches neither the stage nor the engine."""
    for stage in STAGES:  # every declared setting is a config id of its bundle
        parser = read_stage_config(bundle_dir(stage))
        for declaration in ("user_settings", "recorded_settings"):
            assert declared_settings(bundle_dir(stage), declaration) and all(n in parser for n in parser[declaration])
    # the localizer has no gate: no dead setting
    assert "gate_margin_mm" not in read_stage_config(bundle_dir("localizer"))
    assert "gate_margin_mm" not in declared_settings(bundle_dir("localizer"), "recorded_settings")
    copies = {stage: tmp_path / stage for stage in STAGES}
    for stage, copy in copies.items():
        shutil.copytree(bundle_dir(stage) / "configs", copy / "configs")
    config = copies["segmenter"] / "configs" / "inference.json"
    segmenter = json.loads(config.read_text())
    config.write_text(json.dumps({**segmenter, "user_settings": [n for n in segmenter["user_settings"] if n != "tta"]}))
    declared = stage_settings(copies)
    overrides = stage_overrides({"tta": True, "overlap": 0.25}, declared)
    assert overrides["localizer"] == {"tta": True, "overlap": 0.25}
    assert overrides["segmenter"] == {"overlap": 0.25, "mask_from_label": False}
    assert stage_defaults("segmenter", copies["segmenter"]) == {
        "overlap": 0.5, "gate_margin_mm": [2.5, 2.5, 5.0], "mask_region": True
    }

    from cascade.engine import CascadeEngine

    config = copies["localizer"] / "configs" / "inference.json"
    localizer = json.loads(config.read_text())
    config.write_text(
        json.dumps({**localizer, "user_settings": [n for n in localizer["user_settings"] if n != "mask_threshold"]})
    )
    with pytest.raises(TypeError, match="unknown engine settings: \\['mask_threshold'\\]"):
        CascadeEngine.from_options(localizer=copies["localizer"], segmenter=copies["segmenter"], mask_threshold=0.3)
    config.write_text(json.dumps({**localizer, "user_settings": ["overlap", "no_such_id"]}))
    with pytest.raises(InputError, match="'user_settings' names no_such_id, not a config id"):
        stage_settings(copies)
    config.write_text(json.dumps({k: v for k, v in localizer.items() if k != "recorded_settings"}))
    with pytest.raises(InputError, match="inference.json: no 'recorded_settings' list"):
        declared_settings(copies["localizer"], "recorded_settings")


def test_each_stage_has_its_own_defaults_and_values_are_checked_once():
    localizer, segmenter = stage_defaults("localizer", bundle_dir("localizer")), stage_defaults(
        "segmenter", bundle_dir("segmenter")
    )
    assert set(localizer) == {"overlap", "tta", "mask_threshold"} and set(segmenter) == {
        "overlap", "tta", "gate_margin_mm", "mask_region"
    }
    la2018 = read_stage_config(bundle_dir("localizer"), overlays=["la2018"])
    assert stage_defaults("localizer", bundle_dir("localizer"), ["la2018"])["overlap"] == la2018["overlap"]
    assert as_bool("No", "tta") is False and as_number("0.5", "overlap", 0, 0.99) == 0.5
    for bad in ("abc", True, 1.5):
        with pytest.raises(SettingError, match="^--overlap: expected") as error:
            as_number(bad, "overlap", 0, 0.99)
        assert error.value.setting == "overlap" and error.value.problem.startswith("expected")


def test_the_old_name_of_a_config_key_still_applies_with_a_deprecation_line(tmp_path):
    overlay = tmp_path / "old.json"
    overlay.write_text(json.dumps({"crop_to_mask": False}))
    with pytest.warns(FutureWarning, match="'crop_to_mask' is now 'mask_region'"):
        parser = read_stage_config(bundle_dir("segmenter"), "inference", [overlay])
    assert parser["mask_region"] is False and "crop_to_mask" not in parser
    with pytest.warns(FutureWarning):
        assert read_stage_config(bundle_dir("segmenter"), overrides={"crop_to_mask": False})["mask_region"] is False


def test_overlap_is_one_value_or_one_per_stage():
    assert as_overlap("0.3") == 0.3 and as_overlap(0) == 0.0
    assert as_overlap("0,0.5") == as_overlap((0, "0.5")) == {"localizer": 0.0, "segmenter": 0.5}
    overrides = stage_overrides({"overlap": as_overlap([0.25, 0.5])})
    assert (overrides["localizer"]["overlap"], overrides["segmenter"]["overlap"]) == (0.25, 0.5)
    for bad, message in (("0.1,0.2,0.3", "one value or two"), ("0,1.5", r"\[0.0, 0.99\]")):
        with pytest.raises(ValueError, match=message):
            as_overlap(bad)


def test_precision_and_series_values_are_parsed_once():
    from cascade.errors import InputError
    from cascade.settings import as_precision, as_uids

    assert as_precision(None) is None and as_precision("int8") == "int8"
    assert as_precision("int8,bf16") == as_precision(("int8", "bf16")) == {"localizer": "int8", "segmenter": "bf16"}
    with pytest.raises(InputError, match="one value, or LOCALIZER,SEGMENTER"):
        as_precision("int8,bf16,fp32")
    assert as_uids("1.2.3, 1.2.4", "series") == as_uids(("1.2.3", "1.2.4"), "series") == ["1.2.3", "1.2.4"]
    for bad in ("lge", "1..2", "1." + "2" * 70):
        with pytest.raises(InputError, match="not a DICOM UID"):
            as_uids(bad, "series")


def test_the_device_reaches_the_config_as_a_device_and_is_recorded_as_before():
    """No "$torch.device('cpu')" string for the config parser to parse back; run.json keeps its device strings."""
    from cascade.engine import CascadeEngine

    engine = CascadeEngine.from_options(pretrained="demo", device="cpu", stages=("localizer",))
    assert type(engine.localizer.parser.config["device"]) is torch.device  # the object itself, not an expression
    assert engine.localizer.device == torch.device("cpu")
    record = engine.record()["localizer"]
    assert record["overrides"]["device"] == "$torch.device('cpu')" and record["device"] == "cpu"
    assert json.loads(json.dumps(record))["overrides"] == {"device": "$torch.device('cpu')"}
