"""The MONAI Label app's weights resolution, request settings, engine cache and uncertainty scoring and
next-sample order (no MONAI Label needed).

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
    assert other.network.votes and not first.network.votes  # the passes vote (uncertainty) only where there are several
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


class FolderStore:
    """The four datastore calls the scoring makes, over image files and a set of labelled ids (MONAI
    Label's LocalDatastore answers them the same way; the live test scores through the real one)."""

    def __init__(self, images: dict[str, Path], labelled: set[str]) -> None:
        self.images, self.labelled = images, labelled
        self.infos: dict[str, dict] = {image: {} for image in images}

    def get_unlabeled_images(self) -> list[str]:
        return [image for image in self.images if image not in self.labelled]

    def get_image_uri(self, image_id: str) -> str:
        return str(self.images[image_id])

    def get_image_info(self, image_id: str) -> dict:
        return dict(self.infos[image_id])

    def update_image_info(self, image_id: str, info: dict) -> None:
        self.infos[image_id].update(info)


def test_scoring_stores_each_unlabelled_images_uncertainty_and_skips_failures(tmp_path, caplog):
    import logging

    from cascade.phantom import write_phantoms
    from lib.uncertainty_scores import KEY, PASSES, TTA_ADDED, UNCERTAINTY, score_unlabelled, scoring_key

    write_phantoms(str(tmp_path / "phantoms"), cases=2, seed=7, shape=(16, 112, 112), spacing=(2.5, 1.25, 1.25))
    broken = tmp_path / "broken.nii.gz"
    broken.write_text("not an image")
    images = {f"MBAS_00{i}": tmp_path / "phantoms" / f"MBAS_00{i}" / f"MBAS_00{i}_gt.nii.gz" for i in (1, 2)}
    images["broken"] = broken
    store = FolderStore(images, labelled={"MBAS_002"})
    engines = EngineCache(weights_from_conf({"demo": "true"}, tmp_path / "model", HINT))
    settings = InferSettings(device="cpu")
    assert engines.engine(settings).passes == 1  # the demo weights: one model, no mirroring

    with caplog.at_level(logging.INFO, logger="lib.uncertainty_scores"):
        summary = score_unlabelled(engines, store, settings)
    assert (summary["total"], summary["scored"], summary["skipped"], summary["failed"]) == (2, 1, 0, ["broken"])
    assert summary["tta_added"] is True and summary["passes"] == 8  # mirrored: every subset of the three axes
    info = store.infos["MBAS_001"]
    assert info[PASSES] == 8 and info[TTA_ADDED] is True and 0.0 < info[UNCERTAINTY] < 1.0
    assert store.infos["MBAS_002"] == {} and store.infos["broken"] == {}  # labelled: not scored; failed: untouched
    [failure] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert (failure.startswith(f"uncertainty: broken: not scored: {broken}: not a readable NIfTI file")
            and "\n" not in failure)
    assert any("scoring with test-time mirroring on: 8 passes" in r.getMessage() for r in caplog.records)

    again = score_unlabelled(engines, store, settings)  # same weights and settings: nothing to redo
    assert (again["scored"], again["skipped"], again["failed"], again["key"]) == (0, 1, ["broken"], info[KEY])
    mirrored = InferSettings(tta=True, device="cpu")  # what the scoring ran with
    assert (scoring_key(engines, mirrored) == info[KEY]
            != scoring_key(engines, InferSettings(tta=True, overlap=0.0, device="cpu")))
    publish(tmp_path / "model", "segmenter")  # new weights (the app's training published a model): scores are stale
    assert scoring_key(engines, mirrored) != info[KEY]


def test_next_sample_order_serves_the_least_certain_first():
    from lib.uncertainty_scores import UNCERTAINTY, ranked_for_labelling

    infos = {"a": {UNCERTAINTY: 0.05}, "b": {UNCERTAINTY: 0.20}, "c": {}, "d": {UNCERTAINTY: None},
             "e": {UNCERTAINTY: 0.20}, "f": {}}
    # nothing labelled first, then by uncertainty (ties by id), then not scored (by id)
    assert ranked_for_labelling(infos) == ["d", "b", "e", "a", "c", "f"]
    now = 1_000_000.0
    served = {"d": now - 60, "b": now - 30, "a": now - 7200}
    # served within the hour: behind the others, longest ago first; served two hours ago: back in its place
    assert ranked_for_labelling(infos, served, now=now) == ["e", "a", "c", "f", "d", "b"]
    assert ranked_for_labelling(infos, served, now=now, served_within_s=0) == ["d", "b", "e", "a", "c", "f"]
    assert ranked_for_labelling({}) == []


def test_scoring_without_unlabelled_images_needs_no_weights(tmp_path, bundles_without_weights):
    from lib.uncertainty_scores import score_unlabelled

    engines = EngineCache(weights_from_conf({"bundles": str(bundles_without_weights)}, tmp_path / "model", HINT))
    store = FolderStore({"MBAS_001": tmp_path / "MBAS_001.nii.gz"}, labelled={"MBAS_001"})
    assert score_unlabelled(engines, store, InferSettings())["total"] == 0  # MONAI Label scores at every server start
    store.labelled.clear()
    with pytest.raises(MissingCheckpointError, match=HINT):
        score_unlabelled(engines, store, InferSettings())


def test_localize_only_paths_of_the_app_and_crossval_are_the_cascades_stage_one(tmp_path, capsys):
    """The app's atria_localizer task and crossval's out-of-fold masks both run CascadeEngine.localize_image:
    a phantom gets the cascade's own stage-1 mask, a constant image an empty mask and predict's warning."""
    import nibabel as nib
    import numpy as np

    from cascade.crossval import _out_of_fold_masks
    from cascade.engine import CascadeEngine
    from cascade.phantom import write_phantoms
    from tests.conftest import write_nifti

    write_phantoms(tmp_path / "data", cases=1, seed=77, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    phantom = next((tmp_path / "data").glob("*/*_gt.nii.gz"))
    constant = write_nifti(tmp_path / "data" / "flat.nii.gz", np.full((40, 40, 12), 7.0, np.float32))
    work = tmp_path / "work"
    demo = bundles_root() / BUNDLE_NAMES["localizer"]
    (work / "localizer" / "fold0" / "models").mkdir(parents=True)
    shutil.copyfile(demo / "models" / "demo" / "model.pt", work / "localizer" / "fold0" / "models" / "model.pt")
    shutil.copyfile(demo / "configs" / "demo.json", work / "localizer" / "config.json")
    cases = [{"case": "phantom", "image": str(phantom)}, {"case": "flat", "image": str(constant)}]
    _out_of_fold_masks(work, 0, cases, work / "masks")
    warned = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warned == [f"[crossval] warning: {constant}: constant intensity 7, not a scan; the label map is empty"]

    app = EngineCache(weights_from_conf({"demo": "true"}, tmp_path / "model", HINT))
    cascade = CascadeEngine.from_options(pretrained="demo", device="cpu")
    for case in cases:
        served = app.localize(case["image"], InferSettings(device="cpu"))  # what the atria_localizer task returns
        predicted = cascade.predict_image(case["image"])
        stored = np.asanyarray(nib.load(str(work / "masks" / f"{case['case']}_mask.nii.gz")).dataobj)
        np.testing.assert_array_equal(served.mask, predicted.mask)
        np.testing.assert_array_equal(stored, predicted.mask)
        assert not served.labels.any() and not served.gate.any()
        if case["case"] == "flat":
            assert served.warnings == predicted.warnings == [
                f"{constant}: constant intensity 7, not a scan; the label map is empty"
            ]
            assert not stored.any()
        else:
            assert served.mask.any() and served.warnings == []


def imported_names_missing(app: Path) -> list[str]:
    """Names the app's modules import from ``lib.*`` and ``cascade.*`` that those modules do not define:
    the modules that import MONAI Label cannot be imported here, so their imports are read, not run."""
    import ast
    import importlib

    def defined(path: Path) -> set[str]:
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        return names

    missing = []
    for path in sorted(app.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(("lib", "cascade")):
                continue
            if node.module.startswith("lib"):
                source = app / (node.module.replace(".", "/") + ".py")
                names = defined(source if source.exists() else source.with_suffix("") / "__init__.py")
            else:
                names = set(dir(importlib.import_module(node.module)))
            missing += [f"{path.relative_to(app)}: {node.module}.{alias.name}" for alias in node.names
                        if alias.name not in names]
    return missing


def test_every_name_the_app_imports_exists(tmp_path):
    app = Path(__file__).resolve().parents[1] / "apps" / "monailabel"
    assert imported_names_missing(app) == []
    broken = tmp_path / "app"
    shutil.copytree(app / "lib", broken / "lib")
    scoring = broken / "lib" / "activelearning.py"
    scoring.write_text(scoring.read_text().replace("client_settings,", "CLIENT_SETTINGS,", 1))
    assert imported_names_missing(broken) == ["lib/activelearning.py: lib.infers.predictors.CLIENT_SETTINGS"]
