"""Checksums of a bundle's shipped weights: ``large_files.json``, checked before the weights are used.

The MONAI model zoo lists each bundle's weight files with their hashes in ``large_files.yml`` (or
``.json``: ``{"large_files": [{"path", "url", "hash_val", "hash_type"}]}``) so that a download can be
checked. This project ships its weights inside the bundles and downloads nothing, so the entries
have no ``url``; the hashes are SHA-256. A damaged or replaced file (a truncated copy, a partial
checkout, a retrained file without a new manifest) would otherwise load silently if it still fits
the network; :func:`verify_shipped_weights` refuses it in one line naming the file, before any
label is made. :func:`record_shipped_weights` updates the manifest when weights are published.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from cascade.errors import InputError
from cascade.io import file_sha256, write_text_atomic

__all__ = ["MANIFEST_NAME", "read_manifest", "record_shipped_weights", "verify_shipped_weights"]

MANIFEST_NAME = "large_files.json"


def read_manifest(bundle: str | os.PathLike) -> dict[str, str]:
    """The bundle's SHA-256 by weight file path (relative to the bundle, POSIX); empty without a manifest.

    Raises:
        InputError: the manifest exists but is not the expected JSON.
    """
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["large_files"]
        return {e["path"]: e["hash_val"].lower() for e in entries if e.get("hash_type", "sha256").lower() == "sha256"}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a readable weights manifest ({type(err).__name__}: {err})") from err


def record_shipped_weights(bundle: str | os.PathLike, files: Sequence[str | os.PathLike]) -> Path:
    """Add or update the SHA-256 of ``files`` (inside ``bundle``) in the bundle's manifest; returns its path."""
    bundle = Path(bundle)
    recorded = read_manifest(bundle)
    for file in files:
        recorded[Path(file).resolve().relative_to(bundle.resolve()).as_posix()] = file_sha256(file)
    entries = [{"path": p, "hash_val": recorded[p], "hash_type": "sha256"} for p in sorted(recorded)]
    return write_text_atomic(bundle / MANIFEST_NAME, json.dumps({"large_files": entries}, indent=4) + "\n")


def verify_shipped_weights(bundle: str | os.PathLike, checkpoints: Sequence[str | os.PathLike]) -> None:
    """Check shipped weight files against the bundle's manifest.

    Raises:
        InputError: a file is not listed in the manifest, or its SHA-256 differs from the recorded one.
    """
    bundle = Path(bundle)
    recorded = read_manifest(bundle)
    for checkpoint in checkpoints:
        key = Path(checkpoint).resolve().relative_to(bundle.resolve()).as_posix()
        if key not in recorded:
            raise InputError(
                f"{checkpoint}: shipped weights not listed in {bundle / MANIFEST_NAME} (publish weights with "
                "cascade.bundles.publish_weights, which records them)"
            )
        if file_sha256(checkpoint) != recorded[key]:
            raise InputError(
                f"{checkpoint}: damaged or replaced: its SHA-256 differs from the one recorded in "
                f"{bundle / MANIFEST_NAME} (restore the file from the release or a fresh checkout)"
            )
