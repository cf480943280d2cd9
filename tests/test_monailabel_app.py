"""The MONAI Label app's weights resolution, request settings and engine cache (no MONAI Label needed).

The app's tasks themselves run against a live server in ``make monailabel-test``
(apps/monailabel/test_live.sh); the modules tested here import only ``cascade`` and MONAI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from cascade.bundles import BUNDLE_NAMES, MissingCheckpointError, bundles_root
from cascade.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "monailabel"))
from lib.infers.predictors import (  # noqa: E402
    EngineCache, InferSettings, client_settings, default_settings, settings_from_request,
)
from lib.weights import weights_from_conf  # noqa: E402

HINT = "start with --conf demo true"


@pytest.fixture
def bundles_without_weights(tmp_path: Path) -> Path:
    """A copy of both bundles' configs, without any checkpoint."""
    root = tmp_path / "bundles"
    for name in BUNDLE_NAMES.values():
        shutil.copytree(bundles_root() / name / "configs", root / name / "configs")
    return root


def publish(model_dir: Path, stage: str) -> Path:
    """Put the demo checkpoint where the app's train task of ``stage`` publishes."""
    published = model_dir / BUNDLE_NAMES[stage] / "model.pt"
    published.parent.mkdir(parents=True)
    shutil.copyfile(bundles_root() / BUNDLE_NAMES[stage] / "models" / "demo" / "model.pt", published)
    return published


def test_demo_weights_are_the_cli_demo_weights(tmp_path):
    weights = weights_from_conf({"demo": "true"}, tmp_path / "model", HINT)
    for stage, name in BUNDLE_NAMES.items():
        served = weights.served(stage)
        assert served.checkpoints == [bundles_root() / name / "models" / "demo" / "model.pt"]
        assert served.configs == [bundles_root() / name / "configs" / "demo.json"]


def test_missing_weights_message_names_the_file_and_the_remedy(tmp_path, bundles_without_weights):
    weights = weights_from_conf({"bundles": str(bundles_without_weights)}, tmp_path / "model", HINT)
    with pytest.raises(MissingCheckpointError) as raised:
        weights.served("localizer")
    message = str(raised.value)
    assert str(bundles_without_weights / "atria_localizer" / "models" / "model.pt") in message
    assert HINT in message and "\n" not in message


def test_published_model_replaces_the_configured_weights(tmp_path, bundles_without_weights):
    model_dir = tmp_path / "model"
    weights = weights_from_conf({"bundles": str(bundles_without_weights)}, model_dir, HINT)
    published = publish(model_dir, "localizer")
    served = weights.served("localizer")
    assert served.checkpoints == [published] and served.configs == []
    with pytest.raises(MissingCheckpointError):  # the other stage still has none
        weights.served("segmenter")
    demo = weights_from_conf({"demo": "true"}, model_dir, HINT).served("localizer")
    assert demo.checkpoints == [published]
    assert demo.configs == [bundles_root() / "atria_localizer" / "configs" / "demo.json"]  # the net the model fits


def test_conflicting_or_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="exclude each other"):
        weights_from_conf({"demo": "true", "models": str(tmp_path)}, tmp_path, HINT)
    with pytest.raises(InputError, match="exclude each other"):
        weights_from_conf({"demo": "true", "pretrained": "la2018"}, tmp_path, HINT)
    demo = weights_from_conf({"demo": "true"}, tmp_path, HINT)
    assert weights_from_conf({"pretrained": "demo"}, tmp_path, HINT) == demo
    with pytest.raises(InputError, match="not a folder"):
        weights_from_conf({"models": str(tmp_path / "absent")}, tmp_path, HINT)
    with pytest.raises(ValueError, match="true or false"):
        weights_from_conf({"demo": "perhaps"}, tmp_path, HINT)


def test_work_folder_overlay_sets_the_request_defaults(tmp_path):
    work = tmp_path / "work"
    for stage in BUNDLE_NAMES:
        (work / stage / "fold0" / "models").mkdir(parents=True)
        (work / stage / "fold0" / "models" / "model.pt").write_bytes(b"")  # found, never loaded here
    (work / "segmenter" / "config.json").write_text(json.dumps({"overlap": 0.25, "tta": True, "mask_region": False}))
    (work / "localizer" / "config.json").write_text(json.dumps({"overlap": 0.1}))
    weights = weights_from_conf({"models": str(work)}, tmp_path / "model", HINT)
    assert default_settings(weights) == {"overlap": 0.25, "tta": True, "mask_region": False}
    # each stage's defaults come from its own bundle and overlay, not from the segmenter's
    assert default_settings(weights, "localizer") == {"overlap": 0.1, "tta": False}
    assert weights.served("segmenter").configs == [work / "segmenter" / "config.json"]


def test_request_settings_accept_client_strings_and_reject_bad_values():
    parsed = settings_from_request({"overlap": "0.25", "tta": "true", "mask_region": False}, "cpu")
    assert parsed == InferSettings(overlap=0.25, tta=True, mask_region=False, device="cpu")
    with pytest.raises(InputError, match=r"^overlap: expected a value in \[0.0, 0.99\], got 1.5$"):
        settings_from_request({"overlap": 1.5, "tta": False, "mask_region": True}, "cpu")
    with pytest.raises(InputError, match=r"^tta: expected true or false"):
        settings_from_request({"overlap": 0.5, "tta": "maybe", "mask_region": True}, "cpu")


def test_client_settings_are_the_declared_settings_the_app_takes(tmp_path):
    """The app lets a client send its own choice of settings, limited to those the bundles declare."""
    bundles = {stage: bundles_root() / name for stage, name in BUNDLE_NAMES.items()}
    assert client_settings(bundles) == ("overlap", "tta", "mask_region")
    bundles["segmenter"] = tmp_path / "atria_segmenter"
    shutil.copytree(bundles_root() / "atria_segmenter" / "configs", bundles["segmenter"] / "configs")
    config = bundles["segmenter"] / "configs" / "inference.json"
    declared = json.loads(config.read_text())
    config.write_text(
        json.dumps({**declared, "user_settings": [n for n in declared["user_settings"] if n != "mask_region"]})
    )
    assert client_settings(bundles) == ("overlap", "tta")


def test_engine_cache_rebuilds_only_for_new_settings_or_checkpoints(tmp_path):
    model_dir = tmp_path / "model"
    cache = EngineCache(weights_from_conf({"demo": "true"}, model_dir, HINT))
    settings = InferSettings(overlap=0.5, tta=False, mask_region=True, device="cpu")
    first = cache.stage("segmenter", settings)
    assert cache.stage("segmenter", settings) is first
    assert first.parser["mask_region"] is True and first.parser["overlap"] == 0.5
    other = cache.stage("segmenter", InferSettings(overlap=0.0, tta=True, mask_region=False, device="cpu"))
    assert other is not first
    assert other.parser["mask_region"] is False and other.parser["overlap"] == 0.0 and other.parser["tta"] is True
    assert len(other.network.flips) == 8  # mirroring on: every subset of the three spatial axes
    published = publish(model_dir, "localizer")
    localizer = cache.stage("localizer", settings)
    assert cache.checkpoints()["localizer"] == [str(published)]
    os.utime(published, ns=(published.stat().st_atime_ns, published.stat().st_mtime_ns + 10**9))
    assert cache.stage("localizer", settings) is not localizer  # a newly published model is picked up


def test_requests_with_unknown_settings_are_refused_naming_the_key():
    from lib.infers.predictors import SERVER_KEYS, check_request_keys

    settings = ["overlap", "tta", "mask_region", "device"]  # a task's config holds MONAI Label's device list too
    request = {
        "model": "atria_cascade", "image": "/x.nii.gz", "overlap": 0, "device": "cpu", "result_extension": ".nrrd",
    }
    check_request_keys(request, settings)
    check_request_keys(dict.fromkeys(SERVER_KEYS), settings)
    with pytest.raises(
        InputError, match=r"^unknown setting 'overlapp': this model takes overlap, tta, mask_region and device$"
    ):
        check_request_keys({"model": "atria_cascade", "overlapp": 0.5}, settings)
    with pytest.raises(InputError, match="unknown setting 'mask_region'"):  # the localizer task has no stage 2
        check_request_keys({"mask_region": True}, ["overlap", "tta"])


def test_uploads_that_are_not_usable_nifti_are_refused_naming_the_file(tmp_path):
    import nibabel as nib
    import numpy as np

    from lib.uploads import check_image_upload

    good = tmp_path / "tmpa1b2.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4)).astype(np.float32), np.eye(4)), good)
    check_image_upload(str(good), "case_1")
    text = tmp_path / "tmpc3d4.nii.gz"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"^case_2: not a readable NIfTI file") as raised:
        check_image_upload(str(text), "case_2")
    assert str(text) not in str(raised.value)
    dicom = tmp_path / "tmpe5f6.dcm"
    dicom.write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(InputError, match=r"^slice\.dcm: only NIfTI images \(\.nii, \.nii\.gz\) can be stored here"):
        check_image_upload(str(dicom), "slice.dcm")
    nan = tmp_path / "tmpg7h8.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), nan)
    with pytest.raises(InputError, match="case_3: image contains NaN"):
        check_image_upload(str(nan), "case_3")
