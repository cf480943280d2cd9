"""Ensemble disagreement: member votes, the disagreement map, the case uncertainty and the review columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cascade.engine import EnsembleNetwork
from cascade.phantom import make_phantom, write_phantoms
from cascade.transforms import MergeIntoBackgroundd
from cascade.uncertainty import add_votes, case_uncertainty, disagreement, label_votes, needs_review, vote_groups
from tests.bundle_utils import BUNDLES
from tests.conftest import write_nifti

SMALL = dict(shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))


def rows(out: Path) -> dict[str, dict]:
    with (out / "predictions.csv").open() as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


@pytest.mark.parametrize("labelled", [None, [3], [2, 3]])
def test_a_member_votes_as_the_bundle_postprocessing_labels(labelled):
    logits = torch.randn(2, 4, 6, 5, 4, generator=torch.Generator().manual_seed(3)) * 2
    probabilities = torch.softmax(logits, dim=1)
    if labelled is not None:
        probabilities = torch.stack([MergeIntoBackgroundd("pred", labelled)({"pred": p})["pred"]
                                     for p in probabilities])
    groups = vote_groups(4, labelled)
    assert groups == [0, *(labelled or (1, 2, 3))]
    votes = torch.tensor(groups)[label_votes(logits, labelled).long()]
    assert torch.equal(votes, probabilities.argmax(dim=1))
    assert set(votes.unique().tolist()) == set(groups)
    ballots = add_votes(add_votes(torch.zeros(2, len(groups) - 1, 6, 5, 4), label_votes(logits, labelled)),
                        label_votes(logits, labelled))
    assert torch.equal(ballots, 2 * torch.stack([votes == k for k in groups[1:]], dim=1).float())


def constant_member(label: np.ndarray, classes: int = 4):
    """A member predicting ``label`` (X, Y, Z) whatever the window, as logits."""
    logits = torch.nn.functional.one_hot(torch.as_tensor(label).long(), classes).movedim(-1, 0)[None].float() * 5
    return lambda windows: logits.expand(windows.shape[0], -1, -1, -1, -1)


def test_votes_leave_the_mean_logits_bit_identical():
    torch.manual_seed(0)
    members = [torch.nn.Conv3d(1, 4, 3, padding=1).eval() for _ in range(2)]
    windows = torch.randn(1, 1, 8, 6, 4)
    plain = EnsembleNetwork(members, mirror_axes=(0, 1, 2))(windows)
    voting = EnsembleNetwork(members, mirror_axes=(0, 1, 2), votes=True)
    both = voting(windows)
    assert voting.passes == 16 and both.shape == (1, 7, 8, 6, 4)  # 4 logits, 3 foreground vote shares
    logits, shares = voting.split_votes(both[0])
    assert torch.equal(logits[None], plain)
    assert (shares >= 0).all() and (shares.sum(dim=0) <= 1 + 1e-6).all()
    assert torch.allclose(shares * 16, (shares * 16).round(), atol=1e-5)  # whole votes of 16 passes
    binary = EnsembleNetwork(members, mirror_axes=(0, 1, 2), votes=True, labelled=[3])
    merged = binary(windows)
    assert merged.shape == (1, 5, 8, 6, 4) and torch.equal(binary.split_votes(merged[0])[0][None], plain)


def test_disagreement_is_the_share_against_the_majority_and_the_case_uncertainty_its_relative_volume():
    shape = (20, 20, 20)
    grid = np.indices(shape) - 9.5
    radius = np.sqrt((grid**2).sum(axis=0))
    inner, outer = (radius <= 6).astype(np.uint8) * 3, (radius <= 8).astype(np.uint8) * 3
    network = EnsembleNetwork([constant_member(inner), constant_member(inner), constant_member(outer)], votes=True)
    shares = network.split_votes(network(torch.zeros(1, 1, *shape))[0])[1][None]
    disputed = disagreement(shares)[0, 0].numpy()
    shell = (radius > 6) & (radius <= 8)
    assert np.allclose(disputed[shell], 1 / 3) and not disputed[~shell].any()
    voxel_mm3 = 0.5**3
    labelled_mm3 = float((inner > 0).sum()) * voxel_mm3  # the majority's label map
    uncertainty = case_uncertainty(float(disputed.sum()) * voxel_mm3, labelled_mm3)
    assert uncertainty == pytest.approx(shell.sum() / (inner > 0).sum() / 3)
    assert case_uncertainty(1.0, 0.0) is None
    unanimous = EnsembleNetwork([constant_member(inner)] * 3, votes=True)(torch.zeros(1, 1, *shape))[:, 4:]
    assert unanimous.shape[1] == 3
    assert not disagreement(unanimous).any()


def test_the_review_rule():
    assert needs_review(0.2, 0.1, []) and not needs_review(0.05, 0.1, [])
    assert needs_review(0.05, 0.1, ["x.nii.gz: left atrium of 500.0 ml is outside the plausible 10-400 ml"])
    assert needs_review(None, 0.1, [])


@pytest.fixture(scope="module")
def oblique_case(tmp_path_factory) -> Path:
    """One phantom of an odd grid with a rotated, tilted affine."""
    image, _, affine = make_phantom(5, (25, 150, 141), (2.5, 1.25, 1.25))
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
    return write_nifti(tmp_path_factory.mktemp("oblique") / "oblique.nii.gz", image, turn @ affine)


def test_one_pass_says_n_a_and_refuses_an_uncertainty_map(tmp_path, oblique_case, predict, cascade_in_process):
    result = predict(str(oblique_case), str(tmp_path / "one"), "--demo")
    assert "predictions.csv's uncertainty and review say n/a" in result.stdout
    row = rows(tmp_path / "one")["oblique"]
    assert (row["uncertainty"], row["review"]) == ("n/a", "n/a")
    refused = cascade_in_process("predict", str(oblique_case), str(tmp_path / "map"), "--demo", "--save_uncertainty",
                                 "--device", "cpu")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("cascade: error:")]
    assert (refused.returncode != 0 and len(errors) == 1 and "--save_uncertainty" in errors[0]
            and "--tta true" in errors[0])
    assert not (tmp_path / "map").exists() or not any((tmp_path / "map").iterdir())


def test_mirroring_gives_an_uncertainty_map_on_the_input_grid(tmp_path, oblique_case, predict):
    out = tmp_path / "tta"
    predict(str(oblique_case), str(out), "--demo", "--tta", "true", "--save_uncertainty", "--save_masks")
    source = nib.load(oblique_case)
    stored = nib.load(out / "oblique_uncertainty.nii.gz")
    labels = np.asarray(nib.load(out / "oblique_label.nii.gz").dataobj)
    gate = np.asarray(nib.load(out / "oblique_gate.nii.gz").dataobj)
    disputed = np.asarray(stored.dataobj)
    assert stored.shape == source.shape and np.allclose(stored.affine, source.affine, atol=1e-4)
    assert nib.aff2axcodes(stored.affine) == nib.aff2axcodes(source.affine)
    assert disputed.dtype == np.float32 and disputed.min() >= 0 and disputed.max() <= 7 / 8
    assert disputed.max() > 0, "eight mirrorings of the demo model agree everywhere: nothing measured"
    assert not disputed[gate == 0].any(), "disagreement outside the gate stage 2 may label"
    row = rows(out)["oblique"]
    uncertainty = float(row["uncertainty"])
    # the case value is integrated on the network's grid; the stored map is that map resampled to the input grid
    assert uncertainty == pytest.approx(disputed.sum() / np.count_nonzero(labels), rel=0.1)
    threshold = json.loads(
        (BUNDLES["atria_segmenter"] / "configs" / "inference.json").read_text()
    )["review_uncertainty"]
    assert row["review"] == str(uncertainty > threshold or bool(row["message"])).lower()
    resumed = predict(str(oblique_case), str(out), "--demo", "--tta", "true", "--save_uncertainty", "--save_masks",
                      "--resume")
    assert "1 kept from an earlier run" in resumed.stdout + resumed.stderr


def test_uncertainty_rises_when_the_scan_is_degraded(tmp_path, predict):
    """The demo model's passes disagree more on a noisier copy of the same phantom."""
    write_phantoms(tmp_path / "data", cases=1, seed=31, **SMALL)
    clean = next((tmp_path / "data").glob("*/*_gt.nii.gz"))
    image = nib.load(clean)
    values = np.asarray(image.dataobj, dtype=np.float32)
    noisy = values + np.random.default_rng(0).normal(0, 0.6 * values.std(), values.shape).astype(np.float32)
    write_nifti(tmp_path / "noisy" / "noisy.nii.gz", noisy, image.affine)
    write_nifti(tmp_path / "noisy" / "clean.nii.gz", values, image.affine)
    predict(str(tmp_path / "noisy"), str(tmp_path / "out"), "--demo", "--tta", "true")
    report = rows(tmp_path / "out")
    assert float(report["noisy"]["uncertainty"]) > 1.5 * float(report["clean"]["uncertainty"])
