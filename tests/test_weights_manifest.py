"""Shipped weights are checked against the SHA-256 each bundle's large_files.json records."""

from __future__ import annotations

import shutil

import pytest

from cascade.bundles import bundle_dir, stage_weights
from cascade.errors import InputError
from cascade.io import file_sha256
from cascade.weights_manifest import MANIFEST_NAME, read_manifest, record_shipped_weights


@pytest.mark.parametrize("stage", ["localizer", "segmenter"])
def test_every_shipped_weight_file_is_recorded_with_its_checksum(stage):
    bundle = bundle_dir(stage)
    shipped = {p.relative_to(bundle).as_posix(): p for p in (bundle / "models").glob("*/*.pt")}
    recorded = read_manifest(bundle)
    assert shipped and recorded.keys() == shipped.keys()
    assert all(recorded[key] == file_sha256(path) for key, path in shipped.items())


def test_damaged_or_unlisted_weights_are_refused_in_one_line(tmp_path, cascade_in_process, phantom_dir):
    copies = {}
    for stage in ("localizer", "segmenter"):
        copies[stage] = tmp_path / f"atria_{stage}"
        shutil.copytree(bundle_dir(stage), copies[stage])
    assert stage_weights("segmenter", copies["segmenter"], pretrained="demo").checkpoints  # intact copies pass

    damaged = copies["segmenter"] / "models" / "demo" / "model.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor: the file would still load
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged or replaced"):
        stage_weights("segmenter", copies["segmenter"], pretrained="demo")
    image = next(phantom_dir.glob("*/*_gt.nii.gz"))
    result = cascade_in_process(
        "predict", image, tmp_path / "out", "--demo", "--localizer", copies["localizer"], "--segmenter", copies[
            "segmenter"
        ]
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and str(damaged) in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*_label.nii.gz"))

    record_shipped_weights(copies["segmenter"], [damaged])  # e.g. retrained on purpose, recorded again
    assert stage_weights("segmenter", copies["segmenter"], pretrained="demo").checkpoints == [damaged]
    (copies["segmenter"] / MANIFEST_NAME).unlink()
    with pytest.raises(InputError, match="not listed in"):
        stage_weights("segmenter", copies["segmenter"], pretrained="demo")
