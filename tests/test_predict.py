"""``cascade predict`` end to end with the shipped phantom demo weights."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from cascade.bundles import bundle_dir
from cascade.metrics import dice
from cascade.phantom import make_phantom, write_phantoms
from cascade.settings import declared_settings
from cascade.weights_manifest import record_shipped_weights
from tests.bundle_utils import BUNDLES
from tests.conftest import labelled_outside_gate, write_nifti

SMALL = dict(shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))


def cascade_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("cascade: error:")]


@pytest.fixture(scope="module")
def demo_cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unseen")
    write_phantoms(root, cases=2, seed=4242, **SMALL)
    return root


def test_geometry_round_trip_on_odd_shape_and_oblique_affine(tmp_path, predict):
    image, _, affine = make_phantom(77, (37, 201, 173), (2.5, 1.25, 1.25))
    angle = np.deg2rad(20.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]]
    oblique = rotation @ tilt @ affine
    source = write_nifti(tmp_path / "in" / "oblique_case.nii.gz", image, oblique)
    before = source.read_bytes()
    predict(str(source), str(tmp_path / "out"), "--demo")
    output = nib.load(str(tmp_path / "out" / "oblique_case_label.nii.gz"))
    reference = nib.load(str(source))
    assert output.shape == reference.shape == (173, 201, 37)
    np.testing.assert_allclose(output.affine, reference.affine, atol=1e-5)
    assert nib.aff2axcodes(output.affine) == nib.aff2axcodes(reference.affine)
    labels = np.asanyarray(output.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    assert source.read_bytes() == before  # the input is never modified


def test_mbas_naming_overwrite_and_resume(demo_cases, tmp_path, predict):
    out = tmp_path / "out"
    result = predict(str(demo_cases), str(out), "--demo", "--save_masks")
    assert "DEMO weights" in result.stdout
    assert re.search(
        r"2 cases done \(0 with warnings\), 0 kept from an earlier run, 0 failed, [\d.]+ s per case", result.stdout
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "MBAS_001_gate.nii.gz", "MBAS_001_label.nii.gz", "MBAS_001_mask.nii.gz",
        "MBAS_002_gate.nii.gz", "MBAS_002_label.nii.gz", "MBAS_002_mask.nii.gz", "predictions.csv", "run.json",
    ]
    label = out / "MBAS_001_label.nii.gz"
    stamp = label.stat().st_mtime_ns

    again = cascade_cli("predict", str(demo_cases), str(out), "--demo", "--device", "cpu")
    assert again.returncode == 1
    assert len(error_lines(again)) == 1 and "MBAS_001_label.nii.gz: output exists" in error_lines(again)[0]
    assert label.stat().st_mtime_ns == stamp

    resumed = predict(str(demo_cases), str(out), "--demo", "--resume")
    assert "0 cases done (0 with warnings), 2 kept" in resumed.stdout and label.stat().st_mtime_ns == stamp

    predict(str(demo_cases), str(out), "--demo", "--overwrite")
    assert label.stat().st_mtime_ns != stamp
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_demo_predictions_are_gated_and_accurate(demo_cases, tmp_path, predict):
    """Stage 2 over the mask region is as accurate as stage 2 over the whole volume and agrees with
    it up to window placement (bench/mask_region_agreement.py measures it: the windows sit at other
    places on the anatomy, which moves the thin wall most), never labels outside the dilated
    stage-1 mask, and the demo weights segment unseen phantoms."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES["atria_segmenter"] / "configs" / f"{name}.json") for name in ("inference", "demo")])
    margin = parser.get_parsed_content("gate_margin_mm")
    outputs = {}
    for region in ("true", "false"):
        out = tmp_path / region
        predict(str(demo_cases), str(out), "--demo", "--save_masks", "--mask_region", region)
        outputs[region] = out
    for case in ("MBAS_001", "MBAS_002"):
        region = np.asanyarray(nib.load(str(outputs["true"] / f"{case}_label.nii.gz")).dataobj)
        full = np.asanyarray(nib.load(str(outputs["false"] / f"{case}_label.nii.gz")).dataobj)
        mask_image = nib.load(str(outputs["true"] / f"{case}_mask.nii.gz"))
        mask, spacing = np.asanyarray(mask_image.dataobj) > 0, mask_image.header.get_zooms()
        truth = np.asanyarray(nib.load(str(demo_cases / case / f"{case}_label.nii.gz")).dataobj)
        for value, agreement in ((1, 0.9), (2, 0.93), (3, 0.93)):  # measured 0.93-0.98 (demo weights)
            assert dice(region == value, full == value) >= agreement
            assert dice(region == value, truth == value) >= dice(full == value, truth == value) - 0.02
        assert labelled_outside_gate(region, mask, spacing, margin) == 0
        assert dice(region == 2, truth == 2) > 0.7 and dice(region == 3, truth == 3) > 0.7


def _background_only_localizer(tmp_path: Path) -> Path:
    """A copy of the localizer bundle whose demo weights predict background everywhere."""
    bundle = tmp_path / "localizer"
    shutil.copytree(BUNDLES["atria_localizer"], bundle)
    weights = bundle / "models" / "demo" / "model.pt"
    state = torch.load(weights, weights_only=True)
    for key in state:
        if key.startswith("decoder.seg_layers"):
            state[key] = torch.zeros_like(state[key])
            if key.endswith("bias"):
                state[key][0] = 10.0
    torch.save(state, weights)
    record_shipped_weights(bundle, [weights])  # replaced on purpose: shipped weights are checked against the manifest
    return bundle


def test_empty_stage1_mask_gives_empty_label_map_and_warning(demo_cases, tmp_path, predict):
    localizer = _background_only_localizer(tmp_path)
    case = demo_cases / "MBAS_001" / "MBAS_001_gt.nii.gz"
    result = predict(str(case), str(tmp_path / "out"), "--demo", "--localizer", str(localizer))
    assert "found no atria" in result.stderr and "1 with warnings" in result.stdout
    output = nib.load(str(tmp_path / "out" / "MBAS_001_label.nii.gz"))
    assert output.shape == nib.load(str(case)).shape and not np.asanyarray(output.dataobj).any()


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda p: write_nifti(p, np.full((40, 40, 8), np.nan, np.float32)), "NaN"),
        (lambda p: write_nifti(p, np.zeros((40, 40, 8, 2), np.float32)), "expected a 3D volume"),
        (lambda p: p.write_bytes(b"\x1f\x8b not really gzip"), "not a readable NIfTI"),
        (lambda p: write_nifti(p, np.random.default_rng(0).normal(size=(40, 40, 8)).astype(np.float32) * 1e35),
         "overflow float32"),
    ],
    ids=["nan", "4d", "corrupt", "1e35"],
)
def test_bad_input_is_one_error_line_and_no_output(tmp_path, make_input, message):
    source = tmp_path / "in" / "bad_case.nii.gz"
    source.parent.mkdir()
    make_input(source)
    result = cascade_cli("predict", str(source), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "bad_case.nii.gz" in line and message in line
    assert not (tmp_path / "out" / "bad_case_label.nii.gz").exists()


def test_missing_checkpoint_says_how_to_get_one(demo_cases, tmp_path):
    bundle = tmp_path / "segmenter"
    shutil.copytree(BUNDLES["atria_segmenter"], bundle, ignore=shutil.ignore_patterns("*.pt"))
    result = cascade_cli(
        "predict", str(demo_cases), str(tmp_path / "out"), "--segmenter", str(bundle), "--device", "cpu"
    )
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "model.pt: checkpoint not found" in line and "--pretrained demo" in line
    assert "monai.bundle run training" in line
    assert not (tmp_path / "out").exists()


def test_pretrained_la2018_runs_the_shipped_ensemble_on_a_real_like_case(tmp_path, predict):
    """The shipped real-anatomy model end to end on a volume stored as the la2018 scans are: 1.25 mm
    slices of 0.625 mm pixels, z-scored int16 with scl_slope 0.001. Only the pipeline is checked
    here (the five fold models of each stage, geometry, left-atrium-only labels, quiet QC):
    synthetic phantoms are not anatomy this model knows (Dice 0.0 on one, measured), so its
    accuracy is checked on real scans by the opt-in tests/test_real_data.py."""
    write_phantoms(tmp_path / "ph", cases=1, seed=3, shape=(64, 96, 96), spacing=(1.25, 0.625, 0.625))
    source = nib.load(str(tmp_path / "ph" / "MBAS_001" / "MBAS_001_gt.nii.gz"))
    intensities = np.asanyarray(source.dataobj, dtype=np.float64)
    stored = nib.Nifti1Image(
        np.round((intensities - intensities.mean()) / intensities.std() * 1000).astype(np.int16), source.affine
    )
    stored.header.set_slope_inter(0.001, 0)
    image = tmp_path / "real_like.nii.gz"
    nib.save(stored, str(image))
    result = predict(str(image), str(tmp_path / "out"), "--pretrained", "la2018")
    assert "weights of the localizer: the la2018 weights" in result.stdout
    assert "label only: left_atrium" in result.stdout and "cascade: warning" not in result.stderr
    stages = json.loads((tmp_path / "out" / "run.json").read_text())["stages"]
    for stage, bundle in (("localizer", "atria_localizer"), ("segmenter", "atria_segmenter")):
        names = [
            Path(c["path"]).relative_to(BUNDLES[bundle].resolve()).as_posix() for c in stages[stage]["checkpoints"]
        ]
        assert names == [f"models/la2018/fold{k}.pt" for k in range(5)]
        assert stages[stage]["settings"]["tta"] is True
    assert stages["segmenter"]["settings"]["labelled_classes"] == [3]
    output = nib.load(str(tmp_path / "out" / "real_like_label.nii.gz"))
    assert output.shape == stored.shape and np.allclose(output.affine, stored.affine)
    assert set(np.unique(np.asanyarray(output.dataobj)).tolist()) <= {0, 3}
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["wall_ml"] == row["right_atrium_ml"] == ""  # not labelled by these weights: no volume, not 0.00
    assert float(row["left_atrium_ml"]) >= 0 and float(row["stage1_ml"]) > 0


def header_variants(
    affine: np.ndarray
) -> dict[str, tuple[tuple[np.ndarray | None, int], tuple[np.ndarray | None, int]]]:
    """(qform, code) and (sform, code) of headers that readers interpret differently."""
    shifted = affine.copy()
    shifted[:3, 3] += [5.0, -3.0, 2.5]
    return {
        "both": ((affine, 1), (affine, 1)),
        "no_codes": ((affine, 0), (affine, 0)),  # nibabel and ITK then place it by pixdim alone
        "qform_only": ((affine, 1), (affine, 0)),
        "sform_only": ((affine, 0), (affine, 2)),
        "disagreeing": ((affine, 1), (shifted, 4)),  # nibabel trusts the sform; ITK may not
    }


def test_output_keeps_the_input_header_geometry_for_nibabel_and_simpleitk(tmp_path, predict):
    """Inputs whose qform and sform codes and matrices differ: each label map carries its input's
    qform and sform (matrices and codes) and pixdim, so nibabel and SimpleITK each place image and
    label on the same grid."""
    sitk = pytest.importorskip("SimpleITK")
    image, _, affine = make_phantom(5, (24, 160, 160), (2.5, 1.25, 1.25))
    variants = header_variants(affine)
    (tmp_path / "in").mkdir()
    for name, (qform, sform) in variants.items():
        img = nib.Nifti1Image(image, None)
        img.set_qform(*qform)
        img.set_sform(*sform)
        nib.save(img, str(tmp_path / "in" / f"{name}.nii.gz"))
    predict(str(tmp_path / "in"), str(tmp_path / "out"), "--demo")
    for name in variants:
        source, output = nib.load(str(tmp_path / "in" / f"{name}.nii.gz")), nib.load(
            str(tmp_path / "out" / f"{name}_label.nii.gz")
        )
        for get in ("get_qform", "get_sform"):
            assert int(getattr(output.header, get)(coded=True)[1]) == int(getattr(source.header, get)(coded=True)[1]), (
                name, get
            )
            np.testing.assert_allclose(getattr(output.header, get)(), getattr(source.header, get)(), atol=1e-5)
        np.testing.assert_allclose(output.header["pixdim"][1:4], source.header["pixdim"][1:4])
        np.testing.assert_allclose(output.affine, source.affine, atol=1e-5)
        paths = (tmp_path / "in" / f"{name}.nii.gz", tmp_path / "out" / f"{name}_label.nii.gz")
        itk_source, itk_output = (sitk.ReadImage(str(path)) for path in paths)
        assert itk_output.GetSize() == itk_source.GetSize()
        for get in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(
                getattr(itk_output, get)(), getattr(itk_source, get)(), atol=1e-4, err_msg=f"{name} {get}"
            )


def test_run_json_records_the_run_and_resume_refuses_other_settings(demo_cases, tmp_path, predict):
    case = demo_cases / "MBAS_001" / "MBAS_001_gt.nii.gz"
    out = tmp_path / "out"
    predict(str(case), str(out), "--demo", "--mask_threshold", "0.3")
    record = json.loads((out / "run.json").read_text())
    assert record["command"][:2] == ["cascade", "predict"] and record["versions"]["monai"] == monai.__version__
    localizer = record["stages"]["localizer"]
    [checkpoint] = localizer["checkpoints"]
    assert checkpoint["sha256"] == hashlib.sha256(Path(checkpoint["path"]).read_bytes()).hexdigest()
    assert localizer["settings"]["mask_threshold"] == 0.3
    assert record["stages"]["segmenter"]["settings"]["labelled_classes"] == [1, 2, 3]
    for stage, recorded in record["stages"].items():  # what each bundle declares recorded, and only that
        assert list(recorded["settings"]) == list(declared_settings(bundle_dir(stage), "recorded_settings"))
    assert "gate_margin_mm" not in localizer["settings"]
    assert "gate_margin_mm" in record["stages"]["segmenter"]["settings"]
    label = (out / "MBAS_001_label.nii.gz").read_bytes()

    refused = cascade_cli("predict", str(case), str(out), "--demo", "--resume", "--device", "cpu")
    assert refused.returncode == 1
    [line] = error_lines(refused)
    assert "run.json: --resume with other settings" in line and "localizer mask_threshold: 0.3 -> 0.2" in line
    assert (out / "MBAS_001_label.nii.gz").read_bytes() == label
    assert json.loads((out / "run.json").read_text()) == record

    kept = predict(str(case), str(out), "--demo", "--resume", "--mask_threshold", "0.3")
    assert "1 kept from an earlier run" in kept.stdout


def test_overlap_per_stage_reaches_each_stage(demo_cases, tmp_path, predict, monkeypatch):
    """``--overlap LOCALIZER SEGMENTER`` (two tokens, or ``0,0.5``) sets each stage's sliding window:
    the overlap each stage's inferer slides with (told apart by their demo patches), and the one recorded."""
    from monai.inferers import SlidingWindowInferer

    used, slide = [], SlidingWindowInferer.__call__

    def recording(self, *args, **kwargs):  # MONAI's own inferer, run as is; the overlap it slides with noted
        used.append((tuple(self.roi_size), self.overlap))
        return slide(self, *args, **kwargs)

    monkeypatch.setattr(SlidingWindowInferer, "__call__", recording)
    case = demo_cases / "MBAS_001" / "MBAS_001_gt.nii.gz"
    predict(str(case), str(tmp_path / "out"), "--demo", "--overlap", "0", "0.5")
    assert sorted(set(used)) == [((96, 96, 16), 0.0), ((128, 128, 16), 0.5)]  # localizer, segmenter patches (demo.json)
    stages = json.loads((tmp_path / "out" / "run.json").read_text())["stages"]
    assert (stages["localizer"]["settings"]["overlap"], stages["segmenter"]["settings"]["overlap"]) == (0.0, 0.5)


def test_the_loader_thread_changes_no_label(demo_cases, tmp_path):
    """Cases read one ahead in the loader thread give the labels and report of one case at a time."""
    from cascade.engine import CascadeEngine
    from cascade.predict import list_inputs, predict_cases

    engine = CascadeEngine.from_options(pretrained="demo", device="cpu")
    inputs = list_inputs(demo_cases)
    reports = {
        prefetch: predict_cases(engine, inputs, tmp_path / str(prefetch), prefetch=prefetch)
        for prefetch in (True, False)
    }
    for item in inputs:
        pipelined, sequential = (
            np.asarray(nib.load(str(tmp_path / str(p) / f"{item['case']}_label.nii.gz")).dataobj) for p in (True, False)
        )
        assert np.array_equal(pipelined, sequential) and pipelined.any()
    rows = {
        p: [(r["case"], r["status"], r["image_sha256"], r["left_atrium_ml"]) for r in report.rows]
        for p, report in reports.items()
    }
    assert rows[True] == rows[False] and len(rows[True]) == len(inputs)
