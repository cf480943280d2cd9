"""Exporting the bundles' networks with MONAI's own commands: TorchScript and ONNX, output-equal.

Also the model zoo's full verification (`ci/verify_bundle.py -m full` of Project-MONAI/model-zoo)
as its MONAI calls make it, on a copy of each bundle with random full-size weights in
`models/model.pt`: the files it requires, the metadata, and `ckpt_export` of `inference.json`
alone (`verify_net_in_out` is in tests/test_bundle_runs.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import BUNDLES, SCHEMA, config_files, run_bundle

DEMO = config_files("inference", "demo")


def demo_network(bundle: str) -> tuple[torch.nn.Module, list[int]]:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES[bundle] / "configs" / f"{name}.json") for name in ("inference", "demo")])
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(BUNDLES[bundle] / "models" / "demo" / "model.pt", weights_only=True))
    return network.eval(), parser.get_parsed_content("patch_size")


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_torchscript_and_onnx_exports_equal_the_network(bundle, tmp_path):
    network, patch = demo_network(bundle)
    common = [
        "--net_id", "network_def", "--ckpt_file", "models/demo/model.pt", "--meta_file", "configs/metadata.json",
        "--config_file", DEMO,
    ]
    run_bundle(bundle, "ckpt_export", "--filepath", str(tmp_path / "model.ts"), *common)
    run_bundle(
        bundle, "onnx_export", "--filepath", str(tmp_path / "model.onnx"), "--use_trace", "True",
        "--input_shape", json.dumps([1, 1, *patch]), *common,
    )
    window = torch.randn(1, 1, *patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(window)
        scripted = torch.jit.load(str(tmp_path / "model.ts"))(window)
    torch.testing.assert_close(scripted, expected, rtol=1e-4, atol=1e-5)
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(str(tmp_path / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    onnx_logits = torch.as_tensor(np.asarray(compiled([window.numpy()])[0]))
    torch.testing.assert_close(onnx_logits, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_model_zoo_full_verification_with_full_size_weights(bundle, tmp_path):
    copy = tmp_path / bundle
    shutil.copytree(BUNDLES[bundle], copy, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    (copy / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), copy / "models" / "model.pt")
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (copy / required).is_file()
    script = copy.parent / "verify.py"
    script.write_text(
        "import sys\nfrom monai.bundle import ckpt_export, verify_metadata\nroot = sys.argv[1]\n"
        "if sys.argv[2]:\n    verify_metadata(meta_file=root + '/configs/metadata.json', filepath=sys.argv[2])\n"
        "ckpt_export(net_id='network_def', filepath=root + '/models/verify_model.ts',"
        " ckpt_file=root + '/models/model.pt', meta_file=root + '/configs/metadata.json',"
        " config_file=root + '/configs/inference.json', bundle_root=root)\n"
    )
    schema = str(SCHEMA) if SCHEMA.is_file() else ""
    result = subprocess.run(
        [sys.executable, str(script), str(copy), schema], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.jit.load(str(copy / "models" / "verify_model.ts"))
