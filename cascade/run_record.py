"""``run.json``: one layout and one writer for what a run was (``cascade predict`` and ``cascade crossval``).

As nnU-Net keeps its prediction arguments beside the outputs, a run writes beside its outputs::

    {
      "command": ["cascade", ...],               the command line
      "created": "2026-12-07T16:00:00+0000",
      "versions": {"cascade": ..., "torch": ..., "monai": ..., ...},
      "stages": {                                per stage (crossval: also the single-stage baseline)
        "<stage>": {
          "bundle": "/.../atria_localizer",
          "configs": [{"path": ..., "sha256": ...}],       the overlays (predict: with inference.json)
          "checkpoints": [{"path": ..., "sha256": ...}],   the weights
          ...                                    predict: overrides, settings, backend, precision, device, weights
        }
      },
      ...                                        crossval: "settings" (its crossval.json)
    }

``cascade crossval`` also keeps, per fold, the record of its out-of-fold predictions in predict's layout
(``WORK/predictions/run_fold<k>.json``), which a rerun compares to decide whether they are still valid.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cascade.io import file_sha256, write_text_atomic

__all__ = ["RUN_RECORD_NAME", "file_entries", "new_run_record", "software_versions", "write_run_record"]

RUN_RECORD_NAME = "run.json"


def software_versions(openvino: bool = False) -> dict[str, str]:
    """Versions of the software that computes a run (OpenVINO's only when it is used)."""
    import monai
    import nibabel
    import numpy
    import torch

    import cascade

    versions = {"cascade": cascade.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
                "monai": monai.__version__, "nibabel": nibabel.__version__, "numpy": numpy.__version__}
    if openvino:
        import openvino as runtime

        versions["openvino"] = runtime.__version__
    return versions


def file_entries(paths: Sequence[str | os.PathLike]) -> list[dict[str, str]]:
    """``[{"path", "sha256"}]`` of files, as a stage's ``configs`` and ``checkpoints`` list them."""
    return [{"path": str(Path(p).resolve()), "sha256": file_sha256(p)} for p in paths]


def new_run_record(
    command: Sequence[str], stages: Mapping[str, dict], versions: Mapping[str, str] | None = None, **extra: object
) -> dict:
    """A run record in the layout above: ``command``, ``created`` (now), ``versions`` (default
    :func:`software_versions`), ``stages``, then ``extra`` top-level entries (e.g. crossval's ``settings``)."""
    record = {"command": list(command), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "versions": dict(versions) if versions is not None else software_versions(), "stages": dict(stages)}
    return {**record, **extra}


def write_run_record(folder: str | os.PathLike, record: Mapping, name: str = RUN_RECORD_NAME) -> Path:
    """Write ``FOLDER/run.json`` (or ``FOLDER/<name>``) atomically (no partial file is left if the run stops
    while writing)."""
    return write_text_atomic(Path(folder) / name, json.dumps(record, indent=2) + "\n")
