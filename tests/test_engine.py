"""The cascade engine: ensembles and mirroring per window, and the bundle configs ruling the run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from scipy.ndimage import binary_dilation

from cascade.engine import CascadeEngine, EnsembleNetwork, StagePredictor
from cascade.nnunet_inference import NNUNetSlidingWindowInferer
from cascade.networks import ResEncUNet
from cascade.phantom import write_phantoms
from cascade.transforms import ball
from cascade.window_progress import WindowProgress, count_windows
from tests.bundle_utils import BUNDLES

SMALL = dict(shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
DEMO = {stage: BUNDLES[f"atria_{stage}"] / "models" / "demo" / "model.pt" for stage in ("localizer", "segmenter")}


def tiny_network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    network = ResEncUNet(
        in_channels=1, out_channels=3, features_per_stage=[4, 8], kernel_sizes=[[3, 3, 3]] * 2,
        strides=[[1, 1, 1], [2, 2, 2]], n_blocks_per_stage=[1, 1], n_conv_per_stage_decoder=[1],
    )
    for parameter in network.parameters():  # random norm affines too, so nothing is symmetric by chance
        torch.nn.init.normal_(parameter, std=0.3)
    return network.eval()


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return torch.randn(2, 1, 8, 12, 6, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_single_member_without_mirroring_is_the_member(windows):
    network = tiny_network(0)
    assert torch.equal(EnsembleNetwork([network])(windows), network(windows))


@torch.no_grad()
def test_members_are_averaged_as_logits(windows):
    a, b = tiny_network(0), tiny_network(1)
    expected = (a(windows) + b(windows)) / 2
    torch.testing.assert_close(EnsembleNetwork([a, b])(windows), expected)


@torch.no_grad()
def test_mirroring_averages_every_flip_and_is_flip_equivariant(windows):
    network = tiny_network(2)
    ensemble = EnsembleNetwork([network], mirror_axes=(0, 1, 2))
    assert len(ensemble.flips) == 8
    expected = sum(torch.flip(network(torch.flip(windows, d)), d) for d in ensemble.flips) / 8
    mirrored = ensemble(windows)
    torch.testing.assert_close(mirrored, expected)
    # averaging over all mirrorings makes the prediction of a flipped window the flipped prediction
    torch.testing.assert_close(
        ensemble(torch.flip(windows, (2, 4))), torch.flip(mirrored, (2, 4)), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(network(torch.flip(windows, (2, 4))), torch.flip(network(windows), (2, 4)), atol=1e-3)


def test_mirror_axes_are_checked():
    with pytest.raises(ValueError, match="mirror_axes"):
        EnsembleNetwork([tiny_network(0)], mirror_axes=(3,))


def stage(name: str, checkpoints: list[Path], **overrides) -> StagePredictor:
    return StagePredictor(
        BUNDLES[f"atria_{name}"], checkpoints, {"device": "$torch.device('cpu')", **overrides}, ["demo"]
    )


def test_stage_settings_come_from_the_config(tmp_path):
    predictor = stage("localizer", [DEMO["localizer"]] * 2, tta=True, overlap=0.25)
    assert len(predictor.network.members) == 2 and len(predictor.network.flips) == 8
    assert predictor.inferer.overlap == 0.25
    default = stage("localizer", [DEMO["localizer"]])
    assert len(default.network.flips) == 1 and default.inferer.overlap == 0.5


def test_initialize_runs_and_amp_is_honoured(phantom_dir):
    key = "CASCADE_TEST_INITIALIZED"
    os.environ.pop(key, None)
    seen = []
    for amp in (False, True):
        predictor = stage(
            "localizer", [DEMO["localizer"]], amp=amp, initialize=[f"$os.environ.__setitem__('{key}', '1')"]
        )
        predictor.network.members[0].register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        image = predictor.load({"image": str(next(phantom_dir.glob("*/*_gt.nii.gz")))})["image"]
        predictor({"image": image[:, :64, :64, :12]})  # one window: autocast runs bf16 slowly on CPUs without it
    assert os.environ.pop(key) == "1"
    assert not any(seen[: len(seen) // 2]) and all(seen[len(seen) // 2 :]) and seen


def test_checkpoint_ensemble_of_one_model_twice_equals_the_model(phantom_dir):
    image_path = str(next(phantom_dir.glob("*/*_gt.nii.gz")))
    results = []
    for checkpoints in ([DEMO["localizer"]], [DEMO["localizer"]] * 2):
        predictor = stage("localizer", checkpoints)
        results.append(predictor(predictor.load({"image": image_path}))["pred"])
    assert torch.equal(results[0], results[1]) and results[0].any()


def test_corrupt_checkpoint_is_an_input_error(tmp_path):
    from cascade.errors import InputError

    broken = tmp_path / "model.pt"
    broken.write_bytes(DEMO["localizer"].read_bytes()[:5000])
    with pytest.raises(InputError, match="model.pt: not a readable checkpoint"):
        stage("localizer", [broken])


def test_edited_config_values_take_effect_through_cascade_predict(tmp_path):
    """Overlap and the gate margin edited in copies of the bundles rule `cascade predict` when no flag is given."""
    copies = {}
    for name, edits in (("localizer", {"overlap": 0.25}), ("segmenter", {"overlap": 0.25, "gate_margin_mm": 5.0})):
        copies[name] = tmp_path / name
        shutil.copytree(BUNDLES[f"atria_{name}"], copies[name])
        config = copies[name] / "configs" / "inference.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **edits}, indent=1))
    engine = CascadeEngine.from_options(
        pretrained="demo", localizer=copies["localizer"], segmenter=copies["segmenter"], device="cpu"
    )
    assert engine.localizer.inferer.overlap == engine.segmenter.inferer.overlap == 0.25
    flagged = CascadeEngine.from_options(
        pretrained="demo", localizer=copies["localizer"], segmenter=copies["segmenter"], overlap=0.0
    )
    assert flagged.localizer.inferer.overlap == 0.0

    write_phantoms(tmp_path / "data", cases=1, seed=31, **SMALL)
    command = [sys.executable, "-m", "cascade.cli", "predict", str(tmp_path / "data"), str(tmp_path / "out"), "--demo",
               "--localizer", str(copies["localizer"]), "--segmenter", str(copies["segmenter"]), "--save_masks"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    mask = np.asanyarray(nib.load(str(tmp_path / "out" / "MBAS_001_mask.nii.gz")).dataobj) > 0
    gate = np.asanyarray(nib.load(str(tmp_path / "out" / "MBAS_001_gate.nii.gz")).dataobj) > 0
    # the demo grid of the segmenter is the phantom's (1.25 x 1.25 x 2.5 mm), so the gate is the mask
    # dilated by the 5 mm ellipsoid of radii 4, 4, 2 voxels exactly
    np.testing.assert_array_equal(gate, binary_dilation(mask, structure=ball((4, 4, 2))))


def test_lower_mask_threshold_gives_a_larger_stage1_mask(phantom_dir, capfd):
    """The hand-off's threshold on the stage-1 foreground probability (0.5 is the paper's argmax);
    with ``progress`` the windows are counted on a bar named after the stage."""
    image_path = str(next(phantom_dir.glob("*/*_gt.nii.gz")))
    masks = {}
    for threshold in (0.5, 0.2):
        engine = CascadeEngine.from_options(
            pretrained="demo", stages=("localizer",), device="cpu", mask_threshold=threshold, progress=threshold == 0.2
        )
        masks[threshold] = engine.localize(engine.read(image_path)[0]).astype(bool)
    assert masks[0.5].any() and masks[0.2].sum() > masks[0.5].sum()
    assert not (masks[0.5] & ~masks[0.2]).any()
    totals = {
        int(total) for total in re.findall(r"atria_localizer windows: +\d+%\|.*?\| \d+/(\d+)", capfd.readouterr().err)
    }
    assert len(totals) == 1 and totals.pop() > 1


@pytest.mark.parametrize("inferer", [
    SlidingWindowInferer((8, 12, 6), sw_batch_size=1, overlap=0.5),
    SlidingWindowInferer((8, 12, 6), sw_batch_size=3, overlap=0.25),
    SlidingWindowInferer((8, 12, 6), sw_batch_size=2, overlap=(0.5, 0.0, 0.75)),
    NNUNetSlidingWindowInferer((8, 12, 6), overlap=0.5, sw_batch_size=2),
    NNUNetSlidingWindowInferer((8, 12, 6), overlap=0.0),
], ids=["monai", "monai-batched", "monai-per-axis", "nnunet", "nnunet-step-1"])
@pytest.mark.parametrize("shape", [(8, 12, 6), (21, 30, 13), (5, 40, 7)])
def test_window_count_is_what_the_inferer_predicts(inferer, shape):
    calls = []

    def network(windows: torch.Tensor) -> torch.Tensor:
        calls.append(windows.shape[0])
        return windows.repeat(1, 2, 1, 1, 1)

    with WindowProgress(network, "stage", count_windows(inferer, shape)) as counted:
        inferer(torch.rand(1, 1, *shape), counted)
        assert counted.bar.n == counted.bar.total == sum(calls)
        assert len(calls) == -(-sum(calls) // inferer.sw_batch_size)


def test_published_half_precision_weights_serve_as_pretrained(phantom_dir, tmp_path):
    """`publish_weights` stores fold models in fp16 under models/NAME/; `--pretrained NAME` ensembles
    them, loaded into the fp32 network, with masks equal to the fp32 ensemble's up to rounding."""
    from cascade.bundles import pretrained_names, publish_weights

    bundle = tmp_path / "atria_localizer"
    shutil.copytree(BUNDLES["atria_localizer"], bundle)
    shutil.copy(bundle / "configs" / "demo.json", bundle / "configs" / "mine.json")
    for fold in (0, 1):
        (tmp_path / "work" / "localizer" / f"fold{fold}" / "models").mkdir(parents=True)
        shutil.copy(DEMO["localizer"], tmp_path / "work" / "localizer" / f"fold{fold}" / "models" / "model.pt")
    written = publish_weights(tmp_path / "work", "localizer", "mine", bundle=bundle)
    assert [p.name for p in written] == ["fold0.pt", "fold1.pt"] and "mine" in pretrained_names(bundle)
    stored = torch.load(written[0], weights_only=True)
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert written[0].stat().st_size < 0.6 * DEMO["localizer"].stat().st_size

    image_path = str(next(phantom_dir.glob("*/*_gt.nii.gz")))
    half = CascadeEngine.from_options(pretrained="mine", localizer=bundle, stages=("localizer",), device="cpu")
    assert len(half.localizer.network.members) == 2
    assert all(p.dtype == torch.float32 for p in half.localizer.network.parameters())
    full = stage("localizer", [DEMO["localizer"]])
    masks = [
        half.localize(half.read(image_path)[0]).astype(bool),
        full(full.load({"image": image_path}))["pred"][0].numpy().astype(bool),
    ]
    assert masks[0].any() and (masks[0] != masks[1]).mean() < 1e-3


@pytest.mark.parametrize("threshold", [0.2, 0.05])
def test_localizer_validation_scores_the_mask_the_cascade_hands_on(tmp_path, threshold):
    """The localizer's validation (and so its checkpoint selection) sees the engine's stage-1 mask:
    threshold and largest component as in inference. On a case stored on the localizer's own grid,
    in RAS, resampling is the identity and the two masks are equal."""
    from monai.bundle import ConfigParser

    from cascade.phantom import make_phantom
    from tests.conftest import write_nifti

    spacing = json.loads((BUNDLES["atria_localizer"] / "configs" / "demo.json").read_text())["pixdim"]  # (X, Y, Z)
    image, label, _ = make_phantom(21, (24, 112, 112), tuple(spacing[::-1]))
    affine = np.diag([*spacing, 1.0])  # RAS: orientation is the identity too
    write_nifti(tmp_path / "c.nii.gz", image, affine)
    write_nifti(tmp_path / "c_label.nii.gz", label, affine)

    parser = ConfigParser()
    parser.read_config([str(BUNDLES["atria_localizer"] / "configs" / name) for name in ("train.json", "demo.json")])
    parser.update({"bundle_root": str(tmp_path), "device": "$torch.device('cpu')", "mask_threshold": threshold})
    network = parser.get_parsed_content("network_def", lazy=False)
    network.load_state_dict(torch.load(DEMO["localizer"], weights_only=True))
    network.eval()
    item = parser.get_parsed_content("validate#preprocessing")(
        {"image": str(tmp_path / "c.nii.gz"), "label": str(tmp_path / "c_label.nii.gz")}
    )
    with torch.no_grad():
        item["pred"] = parser.get_parsed_content("validate#inferer")(item["image"][None], network)[0]
    validated = parser.get_parsed_content("validate#postprocessing")(item)["pred"][1].numpy().astype(bool)

    engine = CascadeEngine.from_options(
        pretrained="demo", stages=("localizer",), device="cpu", mask_threshold=threshold, overlap=0.5
    )
    handed_on = engine.localize(engine.read(tmp_path / "c.nii.gz")[0]).astype(bool)
    assert handed_on.any()
    np.testing.assert_array_equal(validated, handed_on)


def test_folds_pick_shipped_fold_weights():
    """`--pretrained la2018 --folds 2` is fold 2's model alone (its out-of-fold cases were unseen by it),
    not the five-fold ensemble; a fold the weights do not have is one error naming what is shipped."""
    from cascade.bundles import bundle_dir, stage_weights
    from cascade.errors import InputError

    for stage in ("localizer", "segmenter"):
        bundle = bundle_dir(stage)
        assert [c.name for c in stage_weights(stage, bundle, pretrained="la2018").checkpoints] == [
            f"fold{k}.pt" for k in range(5)
        ]
        picked = stage_weights(stage, bundle, folds="2,4", pretrained="la2018")
        assert [c.name for c in picked.checkpoints] == ["fold2.pt", "fold4.pt"] and "folds [2, 4]" in picked.source
        with pytest.raises(InputError, match=r"no fold 7 \(shipped: fold0, fold1, fold2, fold3, fold4\)"):
            stage_weights(stage, bundle, folds="7", pretrained="la2018")
        with pytest.raises(InputError, match="no fold 0 .shipped: model"):
            stage_weights(stage, bundle, folds="0", pretrained="demo")


def test_weights_of_another_config_say_where_from_which_config_and_what_to_do():
    """The demo weights (trained with configs/demo.json) loaded without their overlay: the message
    names the file, the configs the network was built from, how the two differ, and the fixes."""
    from cascade.errors import InputError

    with pytest.raises(InputError) as raised:
        StagePredictor(BUNDLES["atria_localizer"], [DEMO["localizer"]], {"device": "$torch.device('cpu')"})
    message = str(raised.value)
    assert message.startswith(f"{DEMO['localizer']}: weights do not fit the network built from ")
    assert str(BUNDLES["atria_localizer"] / "configs" / "inference.json") in message
    assert re.search(
        r"tensors of other shapes, e\.g\. [\w.]+: \[\d+(, \d+)*\] in the file, \[\d+(, \d+)*\] in the network", message
    )
    assert "--models WORK" in message and "--pretrained NAME" in message and "--bundle_root" in message
    assert "\n" not in message


def test_a_case_is_opened_once_searched_once_and_loaded_as_the_bundles_load_it(phantom_dir, tmp_path, monkeypatch):
    """engine.read opens the file by name once (its header check) and hands the open image to the
    bundles' LoadImaged (OpenedNiftiReader): the same array and affine as LoadImaged reading the
    file; the intensity outliers are searched once for both stages; a DICOM series assembled in
    memory loads as the NIfTI file written from it does (no temporary file)."""
    from cascade import intensity

    engine = CascadeEngine.from_options(pretrained="demo", device="cpu")
    path = next(phantom_dir.glob("*/*_gt.nii.gz"))
    opened, searches = [], []
    load = nib.load
    monkeypatch.setattr(nib, "load", lambda *args, **kwargs: opened.append(args[0]) or load(*args, **kwargs))
    search = intensity.find_intensity_outliers
    monkeypatch.setattr(intensity, "find_intensity_outliers", lambda *args: searches.append(1) or search(*args))
    image, source = engine.read(path)
    result = engine.predict_loaded(image, source, str(path))
    assert opened == [str(path)] and len(searches) == 1 and result.labels.any()
    monkeypatch.undo()
    by_name = engine.localizer.load({"image": str(path)})["image"]
    assert torch.equal(image.as_tensor(), by_name.as_tensor()) and torch.equal(image.affine, by_name.affine)

    in_memory = nib.Nifti1Image(np.asarray(source.dataobj, np.float32), source.affine)
    nib.save(in_memory, tmp_path / "series.nii")
    from_memory, kept = engine.read_opened(in_memory, "series 1.2.3")
    from_file = engine.read(tmp_path / "series.nii")[0]
    assert kept is in_memory and from_memory.meta["filename_or_obj"] == "series 1.2.3"
    assert torch.equal(from_memory.as_tensor(), from_file.as_tensor())
    np.testing.assert_allclose(from_memory.affine.numpy(), from_file.affine.numpy(), atol=1e-5)
