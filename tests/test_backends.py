"""Inference runtimes: agreement with torch fp32, the export cache, the missing-extra error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.utils import optional_import

from cascade.backends import compile_network, default_precision
from cascade.bundles import bundle_dir
from cascade.calibration import calibration_windows
from cascade.engine import CascadeEngine, StagePredictor
from cascade.errors import InputError
from cascade.labels import CLASS_NAMES
from cascade.metrics import dice
from cascade.networks import localizer_resenc_unet, segmenter_resenc_unet
from cascade.phantom import write_phantoms
from cascade.runtime import StageRuntime
from tests.conftest import toy_case, write_nifti

_, has_openvino = optional_import("openvino")
_, has_onnx = optional_import("onnx")
needs_openvino = pytest.mark.skipif(
    not (has_openvino and has_onnx), reason="the openvino extra is not installed (pip install '.[openvino]')"
)

TINY = {
    "localizer": (lambda: localizer_resenc_unet(features_per_stage=[4, 8, 16, 16], n_blocks_per_stage=1), (64, 64, 8)),
    "segmenter": (
        lambda: segmenter_resenc_unet(features_per_stage=[4, 8, 16, 16, 16], n_blocks_per_stage=1), (64, 64, 8)
    ),
}


def tiny_network(stage: str, seed: int = 0) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(seed)
    build, patch = TINY[stage]
    return build(), patch


def windows(patch: tuple[int, int, int], batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, *patch, generator=torch.Generator().manual_seed(seed))


def test_torch_backend_is_the_network_in_eval_mode():
    network = localizer_resenc_unet(features_per_stage=[4, 8, 16, 16], n_blocks_per_stage=1, deep_supervision=True)
    patch = (64, 64, 8)
    compiled = compile_network(network.train(), patch, backend="torch")
    assert compiled is network and not network.training
    logits = compiled(windows(patch))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 2, *patch)  # no deep-supervision list


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "tensorrt"}, "--backend tensorrt: expected one of torch, openvino"),
        ({"precision": "fp16"}, "--precision fp16: expected one of fp32, bf16, int8"),
        ({"precision": "int8"}, "--precision int8: the torch backend runs fp32 (use --backend openvino)"),
        ({"precision": "bf16"}, "--precision bf16: the torch backend runs fp32 (use --backend openvino)"),
    ],
)
def test_bad_options_are_input_errors(options, message):
    network, patch = tiny_network("localizer")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_network(network, patch, **options)


@needs_openvino
@pytest.mark.parametrize("stage", ["localizer", "segmenter"])
def test_openvino_fp32_matches_torch_and_bf16_stays_close(stage, tmp_path):
    network, patch = tiny_network(stage)
    batch = windows(patch)
    with torch.no_grad():
        reference = network.eval()(batch)
    fp32 = compile_network(network, patch, backend="openvino", precision="fp32", cache_dir=tmp_path)(batch)
    assert fp32.shape == reference.shape and fp32.dtype == torch.float32
    # OpenVINO's own default on bf16-capable CPUs is bf16 (errors ~1e-2): fp32 must really be fp32.
    torch.testing.assert_close(fp32, reference, atol=1e-4, rtol=1e-4)
    bf16 = compile_network(network, patch, backend="openvino", precision="bf16", cache_dir=tmp_path)(batch)
    scale = reference.abs().max()
    assert (bf16 - reference).abs().max() <= 0.05 * scale
    assert (bf16.argmax(1) == reference.argmax(1)).float().mean() >= 0.97


_, has_nncf = optional_import("nncf")
needs_nncf = pytest.mark.skipif(
    not (has_openvino and has_onnx and has_nncf), reason="the int8 extra is not installed (pip install '.[int8]')"
)


@needs_nncf
def test_int8_is_calibrated_once_cached_by_calibration_and_stays_close(tmp_path):
    network, patch = tiny_network("segmenter")
    batch = windows(patch, batch=4, seed=3)
    calls = []

    def calibration() -> list:
        calls.append(1)
        return [windows(patch, batch=1, seed=10 + i).numpy() for i in range(8)]

    with pytest.raises(InputError, match="--precision int8: no calibration cases given"):
        compile_network(network, patch, backend="openvino", precision="int8", cache_dir=tmp_path)
    int8_options = {"backend": "openvino", "precision": "int8", "cache_dir": tmp_path, "calibration": calibration}
    int8 = compile_network(network, patch, **int8_options, calibration_key="a")
    assert int8.path.parent.name.startswith("int8-")
    assert (int8.path.parent.parent / "model.xml").is_file()  # beside the fp32 IR
    with torch.no_grad():
        reference = network.eval()(batch)
    quantized = int8(batch)
    assert quantized.shape == reference.shape and not torch.equal(quantized, reference)
    assert torch.corrcoef(torch.stack([quantized.flatten(), reference.flatten()]))[0, 1] >= 0.98
    assert (quantized.argmax(1) == reference.argmax(1)).float().mean() >= 0.9
    again = compile_network(network, patch, **int8_options, calibration_key="a")
    assert calls == [1] and again.path == int8.path and not again.exported  # cached: not calibrated again
    other = compile_network(network, patch, **int8_options, calibration_key="b")
    assert calls == [1, 1] and other.path != int8.path and other.path.parent.parent == int8.path.parent.parent


@needs_nncf
def test_int8_cascade_calibrates_on_the_given_cases_and_records_them(tmp_path):
    data = tmp_path / "calibration"
    write_phantoms(data, cases=2, seed=321, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    options = dict(pretrained="demo", device="cpu", backend="openvino", calibration=data)
    engine = CascadeEngine.from_options(precision={"localizer": "fp32", "segmenter": "int8"}, **options)
    segmenter = engine.segmenter
    patch = tuple(segmenter.parser.get_parsed_content("patch_size"))
    windows_made = calibration_windows(segmenter.calibration, segmenter.load, segmenter.preprocessing, patch)
    assert 2 <= len(windows_made) <= 16
    assert all(w.shape == (1, 1, *patch) and w.dtype == "float32" for w in windows_made)
    assert engine.record()["segmenter"]["calibration"] == [str(p) for p in sorted(data.glob("*/*_gt.nii.gz"))]
    assert "calibration" not in engine.record()["localizer"]
    image = sorted(data.glob("*/*_gt.nii.gz"))[0]
    truth = np.asarray(nib.load(str(image).replace("_gt.nii.gz", "_label.nii.gz")).dataobj)
    labels = engine.predict_image(image).labels  # the int8 segmenter still segments the atria
    assert dice(labels == 2, truth == 2) > 0.85 and dice(labels == 3, truth == 3) > 0.8


@needs_openvino
def test_export_is_cached_per_weights_and_patch_and_reused_without_exporting(tmp_path, monkeypatch):
    network, patch = tiny_network("localizer")
    batch = windows(patch)
    first = compile_network(network, patch, backend="openvino", cache_dir=tmp_path)
    assert first.exported
    entries = sorted((tmp_path / "openvino").iterdir())
    assert [p.name for p in entries] == [first.path.parent.name]  # no scratch folder left behind
    files = sorted(entries[0].iterdir())
    assert [p.name for p in files] == ["model.bin", "model.xml"]
    stamps = [p.stat().st_mtime_ns for p in files]
    expected = first(batch)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    for precision in ("fp32", "bf16"):  # one IR serves both precisions
        again = compile_network(network, patch, backend="openvino", precision=precision, cache_dir=tmp_path)
        assert not again.exported and again.path == first.path
    assert [p.stat().st_mtime_ns for p in files] == stamps
    torch.testing.assert_close(compile_network(network, patch, backend="openvino", cache_dir=tmp_path)(batch), expected)
    # A rebuilt network with the same weights hits the cache; other weights or another patch shape miss it.
    same, _ = tiny_network("localizer", seed=0)
    assert not compile_network(same, patch, backend="openvino", cache_dir=tmp_path).exported
    monkeypatch.undo()
    other, _ = tiny_network("localizer", seed=1)
    assert compile_network(other, patch, backend="openvino", cache_dir=tmp_path).exported
    assert compile_network(network, (32, 64, 8), backend="openvino", cache_dir=tmp_path).exported
    assert len(list((tmp_path / "openvino").iterdir())) == 3


@needs_openvino
def test_openvino_network_rejects_other_window_shapes(tmp_path):
    network, patch = tiny_network("localizer")
    compiled = compile_network(network, patch, backend="openvino", cache_dir=tmp_path)
    with pytest.raises(
        ValueError, match=r"windows of shape \[1, 32, 64, 8\]; this network was compiled for \[1, 64, 64, 8\]"
    ):
        compiled(windows((32, 64, 8)))


def test_missing_openvino_extra_is_a_one_line_error(tmp_path):
    # `cascade predict --backend openvino` in an interpreter where importing the package fails, as
    # it does where the extra is not installed: the CLI's one error line, exit status 1.
    image = write_nifti(tmp_path / "case.nii.gz", toy_case()[0])
    script = (
        "import sys\n"
        "from cascade.cli import main\n"
        "for blocked in ('openvino', 'onnx'):\n"
        "    sys.modules[blocked] = None\n"
        f"    sys.argv = ['cascade', 'predict', {str(image)!r}, {str(tmp_path / 'out')!r}, '--demo', "
        "'--backend', 'openvino']\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as stop:\n"
        "        print(f'exit {stop.code}', flush=True)\n"
        "    sys.modules.pop(blocked)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.stdout.count("exit 1") == 2, result.stdout + result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        f"cascade: error: --backend openvino: the {blocked} package is not installed "
        "(pip install 'atria-cascade[openvino]')"
        for blocked in ("openvino", "onnx")
    ]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def torch_predictions(tmp_path_factory) -> list[tuple[Path, object]]:
    """Two phantoms on the demo weights' training grid that they were not trained on, and the
    cascade's results on them with the demo weights in torch fp32."""
    root = tmp_path_factory.mktemp("unseen")
    write_phantoms(root, cases=2, seed=4242, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    reference = CascadeEngine.from_options(pretrained="demo", device="cpu")
    return [(image, reference.predict_image(image)) for image in sorted(root.glob("*/*_gt.nii.gz"))]


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", None], ids=["fp32", "default"])
def test_openvino_label_maps_agree_with_torch_on_demo_weights(precision, torch_predictions, tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(tmp_path))
    engine = CascadeEngine.from_options(pretrained="demo", backend="openvino", precision=precision)
    expected_precisions = {
        stage: precision or default_precision("openvino", stage) for stage in ("localizer", "segmenter")
    }
    assert {"localizer": engine.localizer.precision, "segmenter": engine.segmenter.precision} == expected_precisions
    assert engine.localizer.device.type == "cpu"  # openvino's default device
    for image, expected in torch_predictions:
        result = engine.predict_image(image)
        assert result.labels.shape == expected.labels.shape
        assert dice(result.mask, expected.mask) >= 0.99
        for value in CLASS_NAMES:
            assert (expected.labels == value).any()  # the demo weights find every class here
            assert dice(result.labels == value, expected.labels == value) >= 0.99, (image.name, CLASS_NAMES[value])


def test_openvino_is_refused_on_a_gpu_device():
    with pytest.raises(InputError, match="--backend openvino runs on the CPU; use --device cpu"):
        StagePredictor(bundle_dir("localizer"), [], runtime=StageRuntime(torch.device("cuda:0"), "openvino"))
