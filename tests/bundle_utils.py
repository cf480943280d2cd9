"""Running bundle configs the way users do: ``python -m monai.bundle ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {name: REPO / "bundles" / name for name in ("atria_localizer", "atria_segmenter")}
SCHEMA = Path(os.environ.get("CASCADE_METADATA_SCHEMA", REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"))


def bundle_process(bundle: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` from the bundle directory (warnings off); its completed process."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=BUNDLES[bundle],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def run_bundle(bundle: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` from the bundle directory; fail with its output on error."""
    result = bundle_process(bundle, *args, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def config_files(*names: str) -> str:
    """The ``--config_file`` argument for a list of configs in ``configs/``."""
    return "[" + ",".join(f"'configs/{name}.json'" for name in names) + "]"


def config_value(config: dict, path: str):
    """The raw value at an id (``a#b#c``) of a config dictionary."""
    for part in path.split("#"):
        config = config[part]
    return config


def expand(config: dict, path: str) -> list:
    """A transform list of a raw config with its named pieces joined: an expression
    ``"$@a + @b#c"`` becomes the lists at ``a`` and ``b#c``, themselves expanded."""
    value = config_value(config, path)
    if isinstance(value, str) and value.startswith("$"):
        return [t for ref in value[1:].split("+") for t in expand(config, ref.strip().removeprefix("@"))]
    return value
