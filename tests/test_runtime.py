"""A stage's runtime (cascade/runtime.py): one typed object, built in one place for the CLI's engine and the app."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from cascade.bundles import bundle_dir
from cascade.engine import CascadeEngine, StagePredictor
from cascade.phantom import write_phantoms
from cascade.runtime import StageRuntime, stage_runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "monailabel"))
from lib.infers.predictors import EngineCache, InferSettings  # noqa: E402
from lib.weights import weights_from_conf  # noqa: E402


def test_stage_runtime_reads_the_users_runtime_settings(tmp_path):
    assert stage_runtime("localizer") == StageRuntime()  # nothing given: the config's device, torch fp32
    assert stage_runtime("segmenter", "cpu", progress=1) == StageRuntime(torch.device("cpu"), progress=True,
                                                                        uncertainty=True)
    openvino = stage_runtime("localizer", backend="openvino", precision={"localizer": "fp32", "segmenter": "int8"})
    assert openvino.device == torch.device("cpu") and openvino.backend == "openvino" and openvino.precision == "fp32"
    write_phantoms(tmp_path, cases=1, seed=5, shape=(8, 32, 32), spacing=(2.5, 1.25, 1.25))
    int8 = stage_runtime("segmenter", backend="openvino", precision="int8", calibration=tmp_path)
    assert [Path(case["image"]).parent.parent for case in int8.calibration] == [tmp_path]
    assert stage_runtime("localizer", backend="openvino", precision="fp32", calibration=tmp_path).calibration is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        int8.precision = "fp32"


def test_the_app_and_the_engine_build_their_stages_with_the_same_runtime(tmp_path):
    engine = CascadeEngine.from_options(pretrained="demo", device="cpu", progress=True)
    app = EngineCache(weights_from_conf({"demo": "true"}, tmp_path / "model", "start with --conf demo true"))
    for stage, predictor in (("localizer", engine.localizer), ("segmenter", engine.segmenter)):
        served = app.stage(stage, InferSettings(device="cpu"))
        assert dataclasses.replace(predictor.runtime, progress=False) == served.runtime == stage_runtime(stage, "cpu")
        assert type(served.parser.config["device"]) is torch.device and served.device == torch.device("cpu")
    assert engine.segmenter.runtime.uncertainty and not engine.localizer.runtime.uncertainty
    assert engine.localizer.progress and not app.stage("localizer", InferSettings(device="cpu")).progress


def test_a_device_given_twice_is_refused():
    with pytest.raises(ValueError, match="the device is given twice"):
        StagePredictor(bundle_dir("localizer"), [], {"device": "$torch.device('cpu')"}, runtime=StageRuntime(
            torch.device("cpu")))
