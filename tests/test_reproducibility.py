"""A training run stopped after an epoch and resumed from its checkpoint ends with the weights of an
uninterrupted run (the bundles' SeedEachEpoch handler), and crossval finds that checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from cascade.bundles import bundle_dir, read_stage_config
from cascade.reproducibility import SeedEachEpoch, latest_epoch_checkpoint


def train(stage: str, data: Path, root: Path, resume: Path | None = None, stop_after_epoch: int | None = None) -> dict:
    """Two 3-iteration epochs of the stage's quick config on the CPU; the network's final state."""
    overrides = {
        "bundle_root": str(root), "dataset_dir": str(data), "fold": 0, "num_folds": 2, "num_epochs": 2,
        "iterations_per_epoch": 3, "val_interval": 100, "resume_ckpt": str(resume or ""),
        "device": "$torch.device('cpu')", "train#dataset#progress": False,
    }
    if stage == "segmenter":
        overrides["mask_from_label"] = True
    parser = read_stage_config(
        bundle_dir(stage), "train", [str(bundle_dir(stage) / "configs" / "quick.json")], overrides
    )
    parser.get_parsed_content("initialize")
    if stop_after_epoch:  # an interruption right after an epoch's checkpoint
        parser.get_parsed_content("train#trainer").add_event_handler(
            Events.EPOCH_COMPLETED(once=stop_after_epoch), lambda engine: engine.terminate()
        )
    parser.get_parsed_content("run")
    return {k: v.clone() for k, v in parser.get_parsed_content("network").state_dict().items()}


@pytest.fixture
def small_phantoms(tmp_path: Path) -> Path:
    from cascade.phantom import write_phantoms

    write_phantoms(str(tmp_path / "data"), cases=4, seed=3, shape=(24, 96, 96), spacing=(2.5, 1.25, 1.25))
    return tmp_path / "data"


@pytest.mark.parametrize("stage", ["localizer", "segmenter"])
def test_resumed_run_ends_with_the_uninterrupted_weights(stage, small_phantoms, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    uninterrupted = train(stage, small_phantoms, tmp_path / "whole")
    train(stage, small_phantoms, tmp_path / "parts", stop_after_epoch=1)
    checkpoint = latest_epoch_checkpoint(tmp_path / "parts" / "models")
    assert checkpoint is not None and checkpoint.name == "checkpoint_epoch=1.pt"
    checkpoint = Path(shutil.copy(checkpoint, tmp_path / checkpoint.name))  # kept for the second resume below
    resumed = train(stage, small_phantoms, tmp_path / "parts", resume=checkpoint)
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)

    # the reseeding is what makes it exact: without it the resumed run draws other patches
    monkeypatch.setattr(SeedEachEpoch, "__call__", lambda self, engine: None)
    resumed_unseeded = train(stage, small_phantoms, tmp_path / "parts", resume=checkpoint)
    assert not all(torch.equal(uninterrupted[k], resumed_unseeded[k]) for k in uninterrupted)


def test_latest_epoch_checkpoint_is_the_highest_epoch(tmp_path):
    assert latest_epoch_checkpoint(tmp_path) is None
    for name in ("checkpoint_epoch=9.pt", "checkpoint_epoch=10.pt", "checkpoint_final.pt", "model.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_epoch_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
