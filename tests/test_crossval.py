"""`cascade crossval --quick` then `cascade predict --models WORK`: the paper's protocol on 6 phantom
cases, 2 folds, from another working folder with relative paths, and the fold ensemble on unseen cases.

The data is mixed: 4 fully labelled MBAS-layout phantoms and 2 phantoms whose labels are reduced
to the left atrium, declared by a dataset.json (partially labelled data, as most public atrial
data): one datalist trains one 4-class cascade, and the evaluation scores those 2 cases on the
left atrium only."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cascade.phantom import write_phantoms

SMALL = dict(shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))


def cascade(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=1800, cwd=cwd
    )


COMMAND = ("crossval", "data,la_only", "--work", "work", "--folds", "2", "--quick")


def stamp(path: Path) -> list[int]:
    """A file's modification time and inode: both change when it is written again (atomically or in place)."""
    status = path.stat()
    return [status.st_mtime_ns, status.st_ino]


def write_la_only(folder, cases: int, seed: int) -> list[str]:
    """Flat-layout phantoms ``LA_<n>`` whose labels keep the left atrium only, and their dataset.json."""
    write_phantoms(folder / "mbas", cases=cases, seed=seed, **SMALL)
    ids = []
    for case_dir in sorted((folder / "mbas").iterdir()):
        case = "LA_" + case_dir.name.split("_")[1]
        (case_dir / f"{case_dir.name}_gt.nii.gz").rename(folder / f"{case}.nii.gz")
        label = nib.load(str(case_dir / f"{case_dir.name}_label.nii.gz"))
        la = (np.asanyarray(label.dataobj) == 3).astype(np.uint8) * 3
        nib.save(nib.Nifti1Image(la, label.affine, label.header), str(folder / f"{case}_label.nii.gz"))
        ids.append(case)
    for path in sorted((folder / "mbas").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (folder / "mbas").rmdir()
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "left_atrium": 3}}))
    return ids


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossval")
    write_phantoms(root / "data", cases=4, seed=50, **SMALL)
    write_la_only(root / "la_only", cases=2, seed=60)
    first = cascade(*COMMAND, cwd=root)  # relative paths, resolved from the working folder
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    work = root / "work"
    finished = [*work.glob("*/fold*/models/*.pt"), *(work / "masks").iterdir(),
                *(work / "predictions").glob("*.nii.gz")]
    (root / "before_rerun.json").write_text(json.dumps({str(path): stamp(path) for path in finished}))
    second = cascade(*COMMAND, cwd=root)
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first, second


def test_protocol_outputs(crossval_run):
    root, first, _ = crossval_run
    work = root / "work"
    stored = json.loads((work / "datalist.json").read_text())["training"]
    assert sorted(e["fold"] for e in stored) == [0, 0, 0, 1, 1, 1]
    assert all(not e["image"].startswith("/") for e in stored)  # relative to the JSON's folder
    assert {e["case"]: e["annotated"] for e in stored if e["case"].startswith("LA_")} == {"LA_001": [3], "LA_002": [3]}
    for entry in stored:
        if entry["case"].startswith("MBAS"):
            image = root / "data" / entry["case"] / f"{entry['case']}_gt.nii.gz"
            assert (work / entry["image"]).resolve() == image.resolve()
            assert entry["annotated"] == [1, 2, 3]
        for kind in ("label", "mask", "gate"):
            assert (work / "predictions" / f"{entry['case']}_{kind}.nii.gz").is_file()
        assert (work / "masks" / f"{entry['case']}_mask.nii.gz").is_file()
    for stage in ("localizer", "segmenter"):
        assert json.loads((work / stage / "config.json").read_text())["num_epochs"] == 4  # the quick overlay
        for fold in (0, 1):
            assert (work / stage / f"fold{fold}" / "models" / "model.pt").is_file()
    rows = list(csv.DictReader((work / "evaluation" / "metrics.csv").open()))
    assert len(rows) == 18 and {r["class"] for r in rows} == {"wall", "right_atrium", "left_atrium"}
    silent = sorted((r["case"], r["class"]) for r in rows if r["status"] == "not_annotated")
    assert silent == [("LA_001", "right_atrium"), ("LA_001", "wall"), ("LA_002", "right_atrium"), ("LA_002", "wall")]
    assert all(r["dice"] == "" for r in rows if r["status"] == "not_annotated")
    report = list(csv.DictReader((work / "predictions.csv").open()))
    assert sorted(r["case"] for r in report) == sorted(e["case"] for e in stored)
    summary = json.loads((work / "summary.json").read_text())
    assert summary["cases"] == 6 and set(summary["mean"]) >= {"dice", "hd95_mm", "hd95_monai_vox"}
    assert summary["wall"]["status_counts"]["not_annotated"] == 2
    assert summary["wall"]["dice"]["n_valid"] + summary["wall"]["dice"]["n_undefined"] == 4
    assert "HD95 mm" in first.stdout and "HD95 vox" in first.stdout and "Right atrium" in first.stdout
    record = json.loads((work / "run.json").read_text())
    assert record["command"] == ["cascade", "crossval", "data,la_only", "--work", "work", "--folds", "2", "--quick"]
    assert record["settings"] == json.loads((work / "crossval.json").read_text()) and record["versions"]["cascade"]
    for stage in ("localizer", "segmenter"):
        checkpoints = record["stages"][stage]["checkpoints"]
        assert [Path(c["path"]) for c in checkpoints] == [
            work / stage / f"fold{k}" / "models" / "model_final.pt" for k in (0, 1)
        ]
        assert all(c["sha256"] == hashlib.sha256(Path(c["path"]).read_bytes()).hexdigest() for c in checkpoints)


def test_masks_are_out_of_fold(crossval_run):
    """A case's stage-1 mask comes from the fold model that did not train on it: the other fold's
    localizer gives another mask."""
    root, _, _ = crossval_run
    work = root / "work"
    from cascade.engine import CascadeEngine

    case = next(e for e in json.loads((work / "datalist.json").read_text())["training"] if e["fold"] == 1)
    stored = np.asanyarray(nib.load(str(work / "masks" / f"{case['case']}_mask.nii.gz")).dataobj)
    masks = {}
    for fold in (0, 1):
        engine = CascadeEngine.from_options(models=work, folds=[fold], stages=("localizer",))
        masks[fold] = engine.localize(engine.read(work / case["image"])[0])
    np.testing.assert_array_equal(stored, masks[1])
    assert (masks[0] != masks[1]).any()


def test_crossval_prediction_equals_cascade_predict_with_the_fold_model(crossval_run, tmp_path):
    root, _, _ = crossval_run
    work = root / "work"
    case = next(e for e in json.loads((work / "datalist.json").read_text())["training"] if e["fold"] == 0)
    result = cascade(
        "predict", str(work / case["image"]), str(tmp_path / "p"), "--models", "work", "--folds", "0",
        "--device", "cpu", cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ours = np.asanyarray(nib.load(str(tmp_path / "p" / f"{case['case']}_label.nii.gz")).dataobj)
    crossval = np.asanyarray(nib.load(str(work / "predictions" / f"{case['case']}_label.nii.gz")).dataobj)
    np.testing.assert_array_equal(ours, crossval)


def test_fold_ensemble_predicts_unseen_cases(crossval_run, tmp_path):
    """`--models WORK` ensembles every fold found there; the label maps keep the input's geometry."""
    root, _, _ = crossval_run
    write_phantoms(tmp_path / "unseen", cases=2, seed=9090, **SMALL)
    result = cascade(
        "predict", str(tmp_path / "unseen"), str(tmp_path / "out"), "--models", str(root / "work"), "--device", "cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the localizer: " in result.stdout and "folds [0, 1]" in result.stdout
    for case in ("MBAS_001", "MBAS_002"):
        output = nib.load(str(tmp_path / "out" / f"{case}_label.nii.gz"))
        source = nib.load(str(tmp_path / "unseen" / case / f"{case}_gt.nii.gz"))
        assert output.shape == source.shape and np.allclose(output.affine, source.affine, atol=1e-5)


def test_rerun_skips_finished_steps(crossval_run):
    """A rerun reaches the end (its summary) and leaves every model, stage-1 mask and out-of-fold prediction of
    the first run as it was (each fold's report and run record in WORK/predictions vouch for its predictions)."""
    root, _, second = crossval_run
    before = json.loads((root / "before_rerun.json").read_text())
    # the models of 2 stages x 2 folds (with finals), a mask per case, its label map, mask and gate
    assert len(before) >= 4 * 2 + 6 + 6 * 3, sorted(before)
    changed = [path for path, earlier in before.items() if stamp(Path(path)) != earlier]
    assert not changed, changed
    assert "cascade predictions of fold 1" in second.stdout and (root / "work" / "summary.json").is_file()
    assert "training" not in second.stdout and "stage-1 masks of fold" not in second.stdout


def test_rerun_with_other_settings_is_refused(crossval_run):
    root, _, _ = crossval_run
    result = cascade("crossval", "data,la_only", "--work", "work", "--folds", "3", "--quick", cwd=root)
    assert result.returncode == 1
    assert "other settings" in result.stderr and "folds 2 -> 3" in result.stderr


def test_rerun_predicts_a_retrained_fold_again(crossval_run, tmp_path):
    """Other weights in a fold (as a training run again would leave) make that fold's out-of-fold predictions
    again on a rerun, and only that fold's; the combined report holds every case, with the new files' checksums."""
    root, _, _ = crossval_run
    shutil.copytree(root, tmp_path / "copy", symlinks=True)  # a moved work folder: the records compare checksums
    work = tmp_path / "copy" / "work"
    fold_of = {e["case"]: e["fold"] for e in json.loads((work / "datalist.json").read_text())["training"]}
    before = {path: stamp(path) for path in (work / "predictions").glob("*.nii.gz")}
    models = work / "segmenter" / "fold{}" / "models" / "model_final.pt"
    shutil.copyfile(str(models).format(0), str(models).format(1))
    result = cascade(*COMMAND, cwd=tmp_path / "copy")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fold 1's models, configs or settings changed" in result.stdout
    assert "fold 0's models" not in result.stdout
    remade = sorted(path.name for path, earlier in before.items() if stamp(path) != earlier)
    assert remade == sorted(f"{case}_{kind}.nii.gz" for case, fold in fold_of.items() if fold == 1
                            for kind in ("gate", "label", "mask"))
    record = json.loads((work / "predictions" / "run_fold1.json").read_text())
    checkpoints = [c["sha256"] for c in record["stages"]["segmenter"]["checkpoints"]]
    assert checkpoints == [hashlib.sha256(Path(str(models).format(0)).read_bytes()).hexdigest()]
    report = {row["case"]: row for row in csv.DictReader((work / "predictions.csv").open())}
    assert sorted(report) == sorted(fold_of)
    for case in fold_of:
        label = work / "predictions" / f"{case}_label.nii.gz"
        assert f"label={hashlib.sha256(label.read_bytes()).hexdigest()}" in report[case]["outputs_sha256"]
        assert report[case]["status"] in ("ok", "warning") and report[case]["left_atrium_ml"]
