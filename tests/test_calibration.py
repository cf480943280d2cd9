"""int8 calibration data (cascade/calibration.py): the windows a stage's network sees, their cache key."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

import cascade.engine
from cascade.calibration import CALIBRATION_WINDOWS_PER_CASE, calibration_key, calibration_windows
from cascade.data import labelled_cases
from cascade.engine import CascadeEngine
from cascade.phantom import write_phantoms


def test_the_engine_does_not_import_the_phantom_generator():
    """Calibration data are made beside the backends: no import of cascade.phantom anywhere in engine.py
    (a function-level import included)."""
    tree = ast.parse(Path(cascade.engine.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "cascade.calibration" in imported and not any("phantom" in name for name in imported)


def test_calibration_windows_are_preprocessed_windows_spread_over_each_case(tmp_path):
    write_phantoms(tmp_path, cases=2, seed=321, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    cases = labelled_cases(tmp_path)
    segmenter = CascadeEngine.from_options(pretrained="demo", device="cpu", stages=("segmenter",)).segmenter
    patch = tuple(int(n) for n in segmenter.parser.get_parsed_content("patch_size"))
    windows = calibration_windows(cases, segmenter.load, segmenter.preprocessing, patch)
    first = segmenter.preprocessing(segmenter.load({"image": cases[0]["image"], "mask": cases[0]["label"]}))["image"]
    assert len(cases) < len(windows) <= CALIBRATION_WINDOWS_PER_CASE * len(cases)
    assert all(w.shape == (1, 1, *patch) and w.dtype == np.float32 for w in windows)
    if all(n >= p for n, p in zip(first.shape[1:], patch)):  # no padding: the first window is the image's corner
        corner = first.as_tensor()[(slice(None), *(slice(0, p) for p in patch))][None].numpy()
        np.testing.assert_array_equal(windows[0], corner)
    assert np.std(windows[0]) > 0  # the preprocessed image, not padding


def test_calibration_key_follows_cases_configs_and_overrides(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{}")
    images = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.nii.gz").write_bytes(name.encode())
        (tmp_path / f"{name}_label.nii.gz").write_bytes(name.encode() * 2)
        images.append({"image": str(tmp_path / f"{name}.nii.gz"), "label": str(tmp_path / f"{name}_label.nii.gz")})
    key = calibration_key(images, [config], {"overlap": 0.5})
    assert json.loads(key)["per_case"] == CALIBRATION_WINDOWS_PER_CASE
    assert calibration_key(images[::-1], [config], {"overlap": 0.5}) == key  # the cases' order does not matter
    assert calibration_key(images, [config], {"overlap": 0.25}) != key
    assert calibration_key(images[:1], [config], {"overlap": 0.5}) != key
    assert "phantoms of seed 11" in json.loads(calibration_key(None, [config], {}))["cases"][0]
    config.write_text('{"pixdim": [1, 1, 1]}')
    assert calibration_key(images, [config], {"overlap": 0.5}) != key
    config.write_text("{}")
    (tmp_path / "b_label.nii.gz").write_bytes(b"changed")
    assert calibration_key(images, [config], {"overlap": 0.5}) != key
