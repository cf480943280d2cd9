"""Messy input, round 3 (issue 29): DICOM headers that lie, label declarations that contradict,
reports edited by hand, pipes and FIFOs. Each test fails on the code before the fix."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cascade.annotation import declared_classes
from cascade.data import load_datalist
from cascade.dicom import find_series, read_series, write_segmentation
from cascade.errors import InputError
from cascade.io import read_header
from cascade.phantom import make_phantom
from cascade.predict import PredictionReport, check_resume_record, list_inputs, read_report
from tests.conftest import toy_case, write_nifti
from tests.dicom_series import SAVE_AS_FILE, write_series

SHAPE, SPACING = (24, 160, 160), (2.5, 1.25, 1.25)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return make_phantom(4242, SHAPE, SPACING)


@pytest.fixture(scope="module")
def volume(phantom) -> nib.Nifti1Image:
    image, _, affine = phantom
    return nib.Nifti1Image(image, affine)


def cascade(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=600, **kwargs
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cascade: error:")]


def rewrite(path: Path, change=None, **save) -> None:
    dataset = pydicom.dcmread(path)
    if change:
        change(dataset)
    dataset.save_as(path, **(save or SAVE_AS_FILE))


# DICOM -------------------------------------------------------------------------------------------


def test_dicom_files_without_preamble_are_read(volume, tmp_path):
    """Every other file of a 24-slice series rewritten without the 128-byte preamble (half of them
    also without file meta, implicit VR as old CDs hold them): all 24 slices are read, the grid and
    intensities are those of the clean series; a file that only starts like DICOM is named."""
    files = write_series(volume, tmp_path / "clean" / "lge")
    (clean,) = find_series(tmp_path / "clean", print)
    reference, _ = read_series(clean)
    headless = tmp_path / "in" / "lge"
    shutil.copytree(tmp_path / "clean" / "lge", headless)
    for index, path in enumerate(sorted(headless.iterdir())[::2]):
        dataset = pydicom.dcmread(path)
        dataset.preamble = None
        if index % 2:
            del dataset.file_meta
            dataset.save_as(path, implicit_vr=True, little_endian=True)
        else:
            dataset.save_as(path)
        assert path.read_bytes()[128:132] != b"DICM"
    (headless / "notes").write_bytes(b"\x08\x00 not a DICOM file at all" * 10)
    lines: list[str] = []
    (series,) = find_series(tmp_path / "in", lines.append)
    assert len(series.files) == len(files) == 24
    assert [line for line in lines if "notes" in line and "not a DICOM file" in line], lines
    image, datasets = read_series(series)
    assert len(datasets) == 24 and np.allclose(image.affine, reference.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(reference.dataobj))
    # a folder of headless files only is DICOM input, not "no NIfTI cases found"
    for path in sorted(headless.iterdir())[1::2]:
        path.unlink()
    (series,) = [item["series"] for item in list_inputs(tmp_path / "in")]
    assert len(series.files) == 12


@pytest.mark.parametrize(
    "scale, message",
    [
        (2.0, r"direction cosines of length 2 and 2, not 1; a broken header"),
        (1.004, None),  # within the tolerance: normalised, the voxel size stays 1.25 mm
    ],
)
def test_non_unit_orientation_is_normalised_within_tolerance_or_refused(volume, tmp_path, scale, message):
    write_series(volume, tmp_path / "lge", series_uid="1.2.3.4")
    for path in (tmp_path / "lge").iterdir():
        rewrite(
            path,
            lambda d: setattr(
                d, "ImageOrientationPatient", [f"{float(v) * scale:.6f}" for v in d.ImageOrientationPatient]
            ),
        )
    (series,) = find_series(tmp_path, print)
    if message:
        with pytest.raises(
            InputError, match=rf"^{tmp_path / 'lge'} \(series 1\.2\.3\.4\): ImageOrientationPatient of .*{message}"
        ):
            read_series(series)
    else:
        image, _ = read_series(series)
        np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), [1.25, 1.25, 2.5], atol=1e-3)
        np.testing.assert_allclose(image.affine, volume.affine, atol=2e-3)


def test_collinear_orientation_has_its_own_message(volume, tmp_path):
    write_series(volume, tmp_path / "lge")
    for path in (tmp_path / "lge").iterdir():
        rewrite(
            path,
            lambda d: setattr(
                d, "ImageOrientationPatient", [*d.ImageOrientationPatient[:3], *d.ImageOrientationPatient[:3]]
            ),
        )
    (series,) = find_series(tmp_path, print)
    with pytest.raises(InputError, match="row and column directions are parallel") as raised:
        read_series(series)
    assert "same position" not in str(raised.value)


def test_a_screenshot_in_the_series_is_set_aside_alone(volume, tmp_path):
    """A secondary capture filed in the MR series, sorting first: the 24 slices are still the series."""
    files = write_series(volume, tmp_path / "lge")
    screenshot = pydicom.dcmread(files[0])
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        delattr(screenshot, keyword)
    screenshot.Modality, screenshot.SOPClassUID = "OT", "1.2.840.10008.5.1.4.1.1.7"
    screenshot.SOPInstanceUID = screenshot.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    screenshot.save_as(tmp_path / "lge" / "AAA_screenshot.dcm", **SAVE_AS_FILE)
    lines: list[str] = []
    (series,) = find_series(tmp_path, lines.append)
    assert len(series.files) == 24 and not any("not an image series" in line for line in lines)
    [line] = lines
    assert "AAA_screenshot.dcm: not a slice of series" in line and "a screenshot" in line
    assert read_series(series)[0].shape == volume.shape


@pytest.mark.parametrize("keyword, what", [("PatientID", "patients"), ("StudyInstanceUID", "studies")])
def test_a_series_of_two_patients_or_studies_is_refused_before_inference(volume, tmp_path, keyword, what):
    files = write_series(volume, tmp_path / "lge")
    for path in sorted(files)[12:]:
        rewrite(path, lambda d: setattr(d, keyword, "OTHER" if keyword == "PatientID" else "1.2.3.999"))
    (series,) = find_series(tmp_path, print)
    with pytest.raises(InputError, match=rf"its slices belong to 2 {what} \({keyword} .*: a mixed-up export"):
        read_series(series)


def test_an_anonymised_series_gets_a_segmentation(volume, tmp_path):
    """No PatientID, PatientName, StudyID...: the SEG is written with them empty (type 2), the files untouched."""
    files = write_series(volume, tmp_path / "lge")
    removed = (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
    )
    for path in files:
        rewrite(path, lambda d: [delattr(d, keyword) for keyword in removed])
    before = {path: path.read_bytes() for path in files}
    (series,) = find_series(tmp_path, print)
    _, datasets = read_series(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[60:90, 60:90, 8:14] = 3
    seg = pydicom.dcmread(write_segmentation(labels, datasets, tmp_path / "seg.dcm", [1, 2, 3]))
    assert seg.Modality == "SEG" and seg.PatientID == "" and seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert {path: path.read_bytes() for path in files} == before


def test_two_patient_folders_of_one_name_get_case_ids_from_their_parents(volume, tmp_path, capsys):
    for patient in ("PAT1", "PAT2"):
        write_series(volume, tmp_path / "cd" / patient / "DICOM", series_number=5)
    inputs = list_inputs(tmp_path / "cd")
    assert [item["case"] for item in inputs] == ["PAT1_DICOM", "PAT2_DICOM"]
    assert "case id PAT1_DICOM (the folder name DICOM is not unique" in capsys.readouterr().err


def test_fifos_are_skipped_unopened(volume, tmp_path):
    """A FIFO named like a case (or among DICOM files) is named and never opened: opening one blocks."""
    image, _, affine = make_phantom(1, (8, 32, 32), (2.5, 1.25, 1.25))
    write_nifti(tmp_path / "nifti" / "good.nii.gz", image, affine)
    os.mkfifo(tmp_path / "nifti" / "stuck.nii.gz")
    write_series(volume, tmp_path / "dicom" / "lge")
    os.mkfifo(tmp_path / "dicom" / "lge" / "IM999.dcm")
    os.mkfifo(tmp_path / "lonely.nii.gz")
    script = (
        "import sys\nfrom cascade.predict import list_inputs\nfrom cascade.errors import InputError\n"
        f"print([i['case'] for i in list_inputs({str(tmp_path / 'nifti')!r})])\n"
        f"print([len(i['series'].files) for i in list_inputs({str(tmp_path / 'dicom')!r})])\n"
        f"try:\n    list_inputs({str(tmp_path / 'lonely.nii.gz')!r})\nexcept InputError as err:\n    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['good']",
        "[24]",
        f"{tmp_path / 'lonely.nii.gz'}: not a regular file or folder (a FIFO, socket "
        "or device); give an image file or a folder",
    ]
    assert (
        "stuck.nii.gz: skipped: not a regular file" in result.stderr
        and "IM999.dcm: not a regular file" in result.stderr
    )


# Label declarations ------------------------------------------------------------------------------


def test_dataset_json_names_must_carry_the_projects_values(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "left_atrium": 1}}))  # nnU-Net's LA-only habit
    with pytest.raises(
        InputError,
        match=r"'labels' gives 'left_atrium' the value 1, but this project's label maps use 3 for left_atrium "
        r"\(1 is wall\); relabel the maps \(1 -> 3\)",
    ):
        declared_classes(tmp_path)
    path.write_text(json.dumps({"labels": {"background": 0, "Left Atrium": 2}}))
    with pytest.raises(InputError, match="'Left Atrium' the value 2"):
        declared_classes(tmp_path)
    for labels, classes in (
        ({"background": 0, "LA": 3}, (3,)),
        ({"background": 0, "left_atrium": 3, "wall": 1}, (1, 3)),
        ({"background": 0, "scar": 1}, (1,)),
    ):
        path.write_text(json.dumps({"labels": labels}))
        assert declared_classes(tmp_path) == classes


def la_only_gt(root: Path, value: int = 3) -> tuple[Path, Path]:
    """A prediction folder and a ground-truth folder of one case whose truth draws the left atrium only."""
    _, label = toy_case()
    truth = np.where(label == 3, value, 0).astype(np.uint8)
    write_nifti(root / "pred" / "c1_label.nii.gz", label)
    write_nifti(root / "gt" / "c1_label.nii.gz", truth)
    return root / "pred", root / "gt"


@pytest.mark.parametrize(
    "annotated, message",
    [
        ([1], r"label values \[3\] are not among the annotated classes \[1\]"),
        ([], "'annotated' must be a non-empty list"),
        ([4], r"'annotated' holds \[4\]; expected label values among"),
        ("left_atrium", "'annotated' must be a non-empty list of the label values it annotates, e.g. \\[3\\]"),
    ],
)
def test_a_datalists_annotated_classes_are_checked_by_evaluate_too(tmp_path, annotated, message, cascade_in_process):
    pred, gt = la_only_gt(tmp_path)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        json.dumps({"training": [{"case": "c1", "label": "gt/c1_label.nii.gz", "annotated": annotated, "fold": 0}]})
    )
    result = cascade_in_process("evaluate", str(pred), str(datalist), "--out", str(tmp_path / "eval"))
    assert result.returncode == 1 and not (tmp_path / "eval" / "metrics.csv").exists()
    [line] = errors(result.stderr)
    assert __import__("re").search(message, line), line
    if annotated != [1]:  # the same check for crossval and the bundles: the one reader of datalists
        with pytest.raises(InputError, match=message):
            load_datalist(datalist)


def test_a_stale_nii_beside_the_nii_gz_is_not_scored(tmp_path, cascade_in_process):
    pred, gt = la_only_gt(tmp_path)
    write_nifti(pred / "c1_label.nii", np.zeros(toy_case()[1].shape, np.uint8))  # an older prediction, uncompressed
    result = cascade_in_process(
        "evaluate", str(pred), str(gt), "--out", str(tmp_path / "eval"), "--annotated", "left_atrium"
    )
    assert result.returncode == 1
    [line] = errors(result.stderr)
    assert "c1_label.nii.gz and c1_label.nii are both c1_label; neither is read (delete the stale one)" in line
    (pred / "c1_label.nii").unlink()
    scored = cascade_in_process(
        "evaluate", str(pred), str(gt), "--out", str(tmp_path / "eval"), "--annotated", "left_atrium"
    )
    assert scored.returncode == 0 and "Dice 1.000" in scored.stdout


def test_a_single_slice_volume_is_refused_like_a_single_dicom_image(phantom, tmp_path):
    image, _, affine = phantom
    path = write_nifti(tmp_path / "slice.nii.gz", image[:, :, 12:13], affine)
    with pytest.raises(InputError, match=r"slice.nii.gz: one slice \(shape \(160, 160, 1\)\), not a 3D volume"):
        read_header(path)


def test_unfinished_crossval_folds_are_not_ensembled_unasked(tmp_path):
    from cascade.bundles import bundle_dir, stage_weights

    work = tmp_path / "work"
    (work / "crossval.json").parent.mkdir()
    (work / "crossval.json").write_text("{}")
    for fold, names in ((0, ("model.pt", "model_final.pt")), (1, ("model.pt",))):  # fold 1: a killed training
        for name in names:
            (work / "localizer" / f"fold{fold}" / "models").mkdir(parents=True, exist_ok=True)
            (work / "localizer" / f"fold{fold}" / "models" / name).write_bytes(b"weights")
    with pytest.raises(
        InputError,
        match=r"fold1: unfinished training \(model.pt without model_final.pt\) of the localizer fold\(s\) \[1\]; "
        r"finish them \(rerun the same cascade crossval\) or name the finished ones with --folds 0",
    ):
        stage_weights("localizer", bundle_dir("localizer"), models=work)
    assert len(stage_weights("localizer", bundle_dir("localizer"), models=work, folds="0").checkpoints) == 1
    asked = stage_weights("localizer", bundle_dir("localizer"), models=work, folds="0,1")
    assert "unfinished training: fold(s) [1], as --folds asked" in asked.source
    (work / "crossval.json").unlink()  # an import-nnunet folder: model.pt alone is the whole fold
    assert len(stage_weights("localizer", bundle_dir("localizer"), models=work).checkpoints) == 2


# Reports edited by hand, run records -------------------------------------------------------------


def test_a_hand_edited_report_keeps_what_a_person_wrote(tmp_path):
    """Saved by a spreadsheet (BOM), with a column and a row added by hand: both stay; a report in
    another encoding is refused and left as it is."""
    path = tmp_path / "predictions.csv"
    path.write_text(
        "case,image,status,reviewer\nc1,a.nii.gz,ok,checked by AB\nnotes,,,rerun c2 later\n", encoding="utf-8-sig"
    )
    rows, extra = read_report(path)
    assert [row["case"] for row in rows] == ["c1", "notes"] and extra == ("reviewer",)
    PredictionReport(
        [{"case": "c1", "image": "a.nii.gz", "status": "ok"}, {"case": "c2", "image": "b.nii.gz", "status": "ok"}]
    ).write(path)
    with path.open(newline="") as stream:
        written = {row["case"]: row for row in csv.DictReader(stream)}
    assert list(written) == ["c1", "c2", "notes"] and written["c1"]["reviewer"] == "checked by AB"
    assert written["notes"]["reviewer"] == "rerun c2 later" and written["c2"]["reviewer"] == ""
    path.write_bytes("case,image,status,Bemerkung\nc1,a.nii.gz,ok,gepr\xfcft\n".encode("cp1252"))
    before = path.read_bytes()
    with pytest.raises(InputError, match="not a readable CSV report .*save it as UTF-8 CSV, or move it away"):
        PredictionReport([{"case": "c1", "status": "ok"}]).write(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", ["[]", "null", '{"stages": []}', '{"stages": {"localizer": {"checkpoints": "x"}}}', "{broken"]
)
def test_a_run_record_of_the_wrong_type_is_one_line(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(
        InputError, match="run.json: not a run record of cascade predict .*delete it to --resume without that check"
    ):
        check_resume_record(tmp_path, {"stages": {}})


def test_a_case_whose_second_output_fails_leaves_no_first(tmp_path):
    """Outputs of a case are all or nothing: a DICOM SEG that cannot be written takes the label map with it."""
    from cascade.engine import CaseResult
    from cascade.predict import _save, output_paths

    labels = np.zeros((8, 8, 4), np.uint8)
    result = CaseResult(labels, labels, labels, np.eye(4), nib.Nifti1Image(labels, np.eye(4)).header)
    paths = output_paths("c1", tmp_path, ("label", "seg"))
    with pytest.raises(Exception):
        _save(result, paths, [], [1, 2, 3])  # no source datasets: highdicom refuses
    assert not list(tmp_path.iterdir())


# Through the command line: pipes, locales, resume ------------------------------------------------


@pytest.fixture
def one_case(phantom, tmp_path) -> Path:
    image, _, affine = phantom
    write_nifti(tmp_path / "in" / "case1.nii.gz", image, affine)
    return tmp_path / "in"


def test_a_closed_stdout_pipe_does_not_stop_predict(one_case, tmp_path):
    """`cascade predict ... | head -1`: the reader goes after one line; the case is still predicted, no traceback."""
    command = f"{sys.executable} -m cascade.cli predict {one_case} {tmp_path / 'out'} --demo --device cpu | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 1 and (tmp_path / "out" / "case1_label.nii.gz").is_file()


def test_a_non_ascii_path_under_a_non_utf8_locale(phantom, tmp_path):
    """LC_ALL=C without UTF-8 mode: a file name like café.nii.gz is held as surrogates; the report keeps
    its bytes, the other case still runs and --resume recognises both."""
    image, _, affine = phantom
    write_nifti(tmp_path / "in" / "caf\u00e9.nii.gz", image, affine)
    write_nifti(tmp_path / "in" / "zeta.nii.gz", image, affine)
    environment = os.environ | {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    args = ["predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu"]
    first = cascade(*args, env=environment)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_label.nii.gz")) == [
        "caf\u00e9_label.nii.gz",
        "zeta_label.nii.gz",
    ]
    rows = {row["case"]: row for row in csv.DictReader((tmp_path / "out" / "predictions.csv").open(encoding="utf-8"))}
    assert set(rows) == {"caf\u00e9", "zeta"} and rows["caf\u00e9"]["status"] == "ok"
    again = cascade(*args, "--resume", env=environment)
    assert again.returncode == 0 and "2 kept from an earlier run" in again.stdout, again.stderr[-2000:]


def test_resume_redoes_a_label_map_copied_over_from_another_case(phantom, tmp_path):
    image, _, affine = phantom
    write_nifti(tmp_path / "in" / "a.nii.gz", image, affine)
    write_nifti(tmp_path / "in" / "b.nii.gz", np.flip(image, 0).copy(), affine)
    args = ["predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu"]
    assert cascade(*args).returncode == 0
    out = tmp_path / "out"
    own = (out / "b_label.nii.gz").read_bytes()
    shutil.copyfile(out / "a_label.nii.gz", out / "b_label.nii.gz")  # same grid, another case's labels
    resumed = cascade(*args, "--resume")
    assert (
        resumed.returncode == 0 and "1 cases done" in resumed.stdout and "1 kept from an earlier run" in resumed.stdout
    )
    assert (out / "b_label.nii.gz").read_bytes() == own


@pytest.mark.parametrize("blocked", ["predictions.csv", "run.json"])
def test_a_report_or_run_record_that_is_a_folder_stops_before_any_case(one_case, tmp_path, blocked, cascade_in_process):
    (tmp_path / "out" / blocked).mkdir(parents=True)
    result = cascade_in_process("predict", str(one_case), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 1
    [line] = errors(result.stderr)
    assert f"{tmp_path / 'out' / blocked}: not a file (a folder?)" in line and "move it away" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [blocked]


@pytest.mark.parametrize("bundle", ["atria_localizer", "atria_segmenter"])
def test_bundle_runs_without_data_or_on_a_missing_device_are_one_line(bundle, tmp_path, mbas_dir):
    """`python -m monai.bundle run` without --dataset_dir (the config's placeholder path), or with
    --device cuda where there is none: one line and status 1, not a 60-line traceback."""
    import torch

    from tests.bundle_utils import bundle_process

    base = ["run", "--config_file", "['configs/inference.json','configs/demo.json']", "--mask_from_label", "true"]
    runs = {"no data": (base, "error: --dataset_dir /workspace/data/MBAS: not found; pass --dataset_dir DIR")}
    if not torch.cuda.is_available():
        runs["no cuda"] = (
            [*base, "--dataset_dir", str(mbas_dir), "--device", "cuda"],
            "error: --device cuda: CUDA is not available on this machine",
        )
        training = [
            "run",
            "training",
            "--config_file",
            "configs/train.json",
            "--dataset_dir",
            str(mbas_dir),
            "--device",
            "cuda",
        ]
        runs["training, no cuda"] = (training, "error: --device cuda: CUDA is not available")
    for name, (args, expected) in runs.items():
        result = bundle_process(bundle, *args, timeout=300)
        assert result.returncode == 1, (name, result.stderr[-2000:])
        [line] = [line for line in result.stderr.splitlines() if line.strip() and " - INFO - " not in line]
        assert line.startswith(expected), (name, line)


# More messy input of the same kind (the closing note of issue 29 lists them) -----------------------


def test_datalists_and_dataset_json_as_hand_editors_save_them(tmp_path):
    """A byte order mark (Notepad) is read; a datalist of another shape, a path that is a number or a
    case listed twice is one line each (they were a KeyError or TypeError traceback, or the last
    entry of a case scored silently)."""
    _, label = toy_case()
    write_nifti(tmp_path / "c1_label.nii.gz", label)
    entry = {"case": "c1", "label": "c1_label.nii.gz", "annotated": ["left_atrium", 1, 2], "fold": 0}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [entry]}), encoding="utf-8-sig")
    assert load_datalist(path)[0]["annotated"] == [1, 2, 3]
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "left_atrium": 3}}), encoding="utf-8-sig"
    )
    assert declared_classes(tmp_path) == (3,)
    for content, message in (
        ({"cases": []}, "not a datalist: expected"),
        ({"training": [entry | {"label": 3}]}, "'label' must be a file path"),
        ({"training": [entry, entry]}, r"case ids listed more than once: \['c1'\]"),
        ({"training": [entry | {"fold": "1"}]}, "'fold' must be a whole number"),
    ):
        path.write_text(json.dumps(content))
        with pytest.raises(InputError, match=message):
            load_datalist(path)


def test_a_folder_scored_against_itself_is_named(tmp_path, cascade_in_process):
    pred, _ = la_only_gt(tmp_path)
    result = cascade_in_process("evaluate", str(pred), str(pred), "--out", str(tmp_path / "eval"))
    assert (
        result.returncode == 0
        and "warning: " + str(pred) + ": the predictions are the ground truth folder itself" in result.stderr
    )


def test_what_is_no_image_is_named_before_any_work(volume, tmp_path):
    """A datalist, a label map, a zip archive or a DICOMDIR given to predict; an output name too long
    for the file system (it failed after inference); a DICOM PixelSpacing of 0 (an unexpected error)."""
    import zipfile

    from cascade.predict import check_outputs

    image, label = toy_case()
    data = tmp_path / "data"
    write_nifti(data / "c1.nii.gz", image)
    write_nifti(data / "c1_label.nii.gz", label)
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"case": "c1", "image": "data/c1.nii.gz"}]}))
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as archive:
        archive.write(data / "c1.nii.gz", "c1.nii.gz")
    for source, message in (
        (tmp_path / "list.json", "a datalist JSON; predict reads images: give the data folder"),
        (data / "c1_label.nii.gz", r"named as a label map \(<case>_label\); give the image it labels"),
    ):
        with pytest.raises(InputError, match=message):
            list_inputs(source)
    with pytest.raises(InputError, match="export.zip: a zip archive, not a NIfTI file; unpack it"):
        read_header(tmp_path / "export.zip")
    with pytest.raises(InputError, match=r"is too long for the file system \(246 of at most 245 bytes"):
        check_outputs([{"case": "x" * 226, "image": "x.nii.gz"}], tmp_path / "out", ("label",), False, False)
    check_outputs([{"case": "x" * 225, "image": "x.nii.gz"}], tmp_path / "out", ("label",), False, False)
    from cascade.io import write_text_atomic

    assert write_text_atomic(
        tmp_path / "out" / f"{'x' * 225}_label.nii.gz", ""
    ).is_file()  # the longest name allowed can be written

    write_series(volume, tmp_path / "dicom" / "lge")
    from pydicom.fileset import FileSet

    media = FileSet()
    for path in sorted((tmp_path / "dicom" / "lge").iterdir()):
        media.add(pydicom.dcmread(path))
    media.write(tmp_path / "cd")
    with pytest.raises(InputError, match="DICOMDIR: a DICOMDIR .*give the folder that holds it"):
        list_inputs(tmp_path / "cd" / "DICOMDIR")
    assert [len(item["series"].files) for item in list_inputs(tmp_path / "cd")] == [24]
    for path in (tmp_path / "dicom" / "lge").iterdir():
        rewrite(path, lambda d: setattr(d, "PixelSpacing", ["0", "0"]))
    (series,) = find_series(tmp_path / "dicom", print)
    with pytest.raises(InputError, match="PixelSpacing of .* is 0 x 0 mm; a broken header"):
        read_series(series)


def test_a_header_without_orientation_is_warned_about(tmp_path):
    from cascade.qc import orientation_warnings

    image, _ = toy_case()
    unoriented = nib.Nifti1Image(image, None)
    unoriented.set_qform(None, code=0)
    unoriented.set_sform(None, code=0)
    nib.save(unoriented, tmp_path / "old.nii.gz")
    [warning] = orientation_warnings("old.nii.gz", nib.load(tmp_path / "old.nii.gz").header)
    assert warning.startswith("old.nii.gz: the header states no orientation (qform and sform codes 0)")
    assert orientation_warnings("new.nii.gz", nib.load(write_nifti(tmp_path / "new.nii.gz", image)).header) == []


def test_a_crossval_work_folder_that_is_a_file_is_one_line(tmp_path, mbas_dir, cascade_in_process):
    (tmp_path / "work").write_text("notes")
    result = cascade_in_process("crossval", str(mbas_dir), str(tmp_path / "work"), "--folds", "2", "--quick")
    assert result.returncode == 1 and errors(result.stderr) == [
        f"cascade: error: {tmp_path / 'work'}: the work folder is an existing file, not a folder"
    ]


def test_a_stray_nifti_in_a_dicom_folder_leaves_the_dicom_input(volume, tmp_path, capsys):
    """A NIfTI file that forms no case (deep in a DICOM export) no longer turns the folder into NIfTI input
    that holds "no NIfTI cases"; a folder of NIfTI cases beside DICOM files says the DICOM files are not read."""
    write_series(volume, tmp_path / "export" / "lge")
    write_nifti(tmp_path / "export" / "lge" / "derived" / "map.nii.gz", np.zeros((4, 4, 4), np.float32))
    (series,) = [item["series"] for item in list_inputs(tmp_path / "export")]
    assert len(series.files) == 24
    image, _ = toy_case()
    write_nifti(tmp_path / "export" / "scan.nii.gz", image)
    assert [item["case"] for item in list_inputs(tmp_path / "export")] == ["scan"]
    assert (
        "holds NIfTI images and DICOM files; the NIfTI cases are predicted, the DICOM files are not read"
        in capsys.readouterr().err
    )


def test_an_output_folder_that_is_a_link_to_nothing_or_a_foreign_table_is_one_line(tmp_path):
    from cascade.io import check_writable_folder

    (tmp_path / "out").symlink_to(tmp_path / "gone" / "results")  # e.g. a mount point that is not mounted
    with pytest.raises(
        InputError, match=r"out: the output folder is a symbolic link to .*gone/results, which does not exist"
    ):
        check_writable_folder(tmp_path / "out", "the output folder")
    table = tmp_path / "predictions.csv"
    table.write_text("patient,volume\nA,80\n")
    with pytest.raises(InputError, match="a CSV without the 'case' column, not a report of cascade predict"):
        read_report(table)


def test_a_fold_given_twice_is_refused():
    from cascade.bundles import bundle_dir, stage_weights

    with pytest.raises(InputError, match=r"--folds 0,0,1: fold\(s\) \[0\] given twice"):
        stage_weights("localizer", bundle_dir("localizer"), folds="0,0,1")


def test_a_fold_stands_for_its_final_weights_not_the_best_on_its_own_validation_cases(tmp_path):
    """`model.pt` is the best validation Dice, chosen on the fold's out-of-fold cases: scoring or
    shipping it would let the scored cases pick the model, so a finished fold is `model_final.pt`."""
    import torch

    from cascade.bundles import bundle_dir, publish_weights, stage_weights

    work = tmp_path / "work"
    models = work / "localizer" / "fold0" / "models"
    models.mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, models / "model.pt")  # the best epoch
    torch.save({"w": torch.ones(2)}, models / "model_final.pt")  # the last epoch
    assert stage_weights("localizer", bundle_dir("localizer"), models=work).checkpoints == [models / "model_final.pt"]
    bundle = tmp_path / "atria_localizer"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "mine.json").write_text("{}")
    published = publish_weights(work, "localizer", "mine", bundle=bundle)
    assert torch.equal(torch.load(published[0], weights_only=True)["w"], torch.ones(2, dtype=torch.float16))
    (models / "model_final.pt").unlink()  # an import-nnunet fold: model.pt alone
    assert stage_weights("localizer", bundle_dir("localizer"), models=work).checkpoints == [models / "model.pt"]
