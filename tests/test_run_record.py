"""``run.json`` has one layout and one writer for ``cascade predict`` and ``cascade crossval``."""

from __future__ import annotations

import hashlib
import json

from cascade.crossval import _write_run_record
from cascade.engine import CascadeEngine
from cascade.predict import run_record
from cascade.run_record import RUN_RECORD_NAME, new_run_record, write_run_record

LAYOUT = ["command", "created", "versions", "stages"]


def assert_file_entries(entries: list[dict]) -> None:
    for entry in entries:
        assert set(entry) == {"path", "sha256"}
        with open(entry["path"], "rb") as file:
            assert entry["sha256"] == hashlib.sha256(file.read()).hexdigest()


def test_predict_and_crossval_records_share_one_layout(tmp_path):
    predicted = run_record(CascadeEngine.from_options(pretrained="demo", device="cpu"), ["cascade", "predict"])
    assert list(predicted) == LAYOUT and predicted["versions"]["monai"]
    work = tmp_path / "work"
    for stage in ("localizer", "segmenter"):
        (work / stage / "fold0" / "models").mkdir(parents=True)
        (work / stage / "fold0" / "models" / "model.pt").write_bytes(stage.encode())
        (work / stage / "config.json").write_text(json.dumps({"num_epochs": 4}))
    (work / "crossval.json").write_text(json.dumps({"folds": 1, "seed": 0}))
    _write_run_record(work, ["cascade", "crossval"], folds=1)
    crossval = json.loads((work / RUN_RECORD_NAME).read_text())
    assert list(crossval) == [*LAYOUT, "settings"] and crossval["settings"] == {"folds": 1, "seed": 0}
    for record in (predicted, crossval):
        assert set(record["stages"]) == {"localizer", "segmenter"}
        for entry in record["stages"].values():
            assert {"bundle", "configs", "checkpoints"} <= set(entry)
            assert_file_entries(entry["configs"])
            assert_file_entries(entry["checkpoints"])
    assert [c["path"] for c in crossval["stages"]["segmenter"]["configs"]] == [str(work / "segmenter" / "config.json")]


def test_the_writer_writes_the_record_it_is_given(tmp_path):
    record = new_run_record(["cascade", "x"], {}, versions={"cascade": "0"}, settings={"a": 1})
    path = write_run_record(tmp_path, record)
    assert path == tmp_path / RUN_RECORD_NAME and json.loads(path.read_text()) == record
    assert list(record) == [*LAYOUT, "settings"] and not list(tmp_path.glob("*.tmp*"))
