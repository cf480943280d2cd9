"""Inference runtimes for a stage's network: torch itself, or OpenVINO on the CPU in fp32, bf16 or int8.

A compiled network is a callable taking a (B, C, X, Y, Z) window batch of the patch shape and
returning (B, K, X, Y, Z) fp32 logits as a torch tensor, so it stands wherever a torch network
stands in the cascade: as a member of :class:`cascade.engine.EnsembleNetwork`, called window by
window by the bundle's sliding-window inferer.

The OpenVINO network is exported once per weights, architecture and patch shape, and kept on disk
as an OpenVINO IR (``model.xml`` + ``model.bin``, fp32 weights) in
``<cache dir>/openvino/<key>/``; later builds read it back without exporting. The cache folder is
``$CASCADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/atria-cascade``, else ``~/.cache/atria-cascade``;
it can be deleted at any time. The key is a SHA-256 of everything the exported graph depends on
(:func:`network_fingerprint`): the weights as loaded, the module's structure, the input shape and
the exporting torch and OpenVINO versions. The precision is not part of it: one fp32 IR serves
both precisions, which are chosen when the IR is compiled.

Export route (chosen by measurement, see docs/benchmarks.md): ``torch.onnx.export`` (TorchScript
exporter, opset 17), read by OpenVINO's ONNX frontend. Its graph keeps instance normalisation as
one fused MVN operation; ``torch.export`` followed by ``openvino.convert_model`` decomposes it into
reductions and element-wise operations (1.6-2.1x slower per window in one measurement), and
``convert_model`` on the torch module (TorchScript tracing inside OpenVINO) exported in 108 s
against 16-18 s. ``openvino.convert_model``
is not used at all: it sends usage telemetry, ``Core.read_model`` does not.

int8: NNCF's post-training quantization of the fp32 IR (the ``int8`` extra), calibrated on windows
of a documented set of cases (:func:`cascade.calibration.calibration_windows` makes them); quantized layers run
in int8, the others in fp32. The quantized IR is cached beside the fp32 one, under a key of the
calibration (``int8-<key>/``), and built again when the calibration changes.

OpenVINO runs bf16 wherever the CPU supports it natively (AVX-512 BF16 or AMX) unless told
otherwise, so the precision is always requested explicitly (``INFERENCE_PRECISION_HINT``); on a
CPU without bf16 support the hint bf16 falls back to fp32 (with a warning). Without a precision
given, :func:`default_precision` picks bf16 on such CPUs, as measured safe (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import optional_import

from cascade.errors import InputError
from cascade.settings import check_runtime

__all__ = [
    "OpenVINONetwork", "compile_network", "default_cache_dir", "default_precision", "network_fingerprint",
]

logger = logging.getLogger(__name__)

OPENVINO_EXTRA_HINT = "pip install 'atria-cascade[openvino]'"
INT8_EXTRA_HINT = "pip install 'atria-cascade[int8]'"
CACHE_FORMAT = 1  # bump when the export route changes what an IR holds
ONNX_OPSET = 17
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the layers NNCF left unquantized
# Stages whose OpenVINO bf16 label maps agreed with fp32 at Dice >= 0.99 per class on the demo
# weights and unseen phantoms (bench/backend_agreement.py; docs/benchmarks.md): bf16 is their default.
BF16_BY_DEFAULT = ("localizer", "segmenter")


def default_cache_dir() -> Path:
    """``$CASCADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/atria-cascade``, else ``~/.cache/atria-cascade``."""
    if os.environ.get("CASCADE_CACHE_DIR"):
        return Path(os.environ["CASCADE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atria-cascade"


def network_fingerprint(network: torch.nn.Module, input_shape: Sequence[int], *versions: str) -> str:
    """SHA-256 (hex) of what an exported graph of ``network`` depends on.

    Args:
        network: the module, weights loaded.
        input_shape: the exported input's shape, (B, C, X, Y, Z).
        versions: exporter versions (or any other strings) that change the exported graph.

    Returns:
        64 hex digits; equal for equal weights (every parameter and buffer, by name, dtype, shape
        and bytes), module structure (``repr``: layers, kernel sizes, strides, norms), shape and
        versions.
    """
    digest = hashlib.sha256()
    header = [f"format {CACHE_FORMAT}", repr(network), f"input {list(input_shape)}", *versions]
    digest.update("\n".join(header).encode())
    for name, tensor in network.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"\n{name} {tensor.dtype} {list(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()


def default_precision(backend: str, stage: str) -> str:
    """The precision a stage runs at when none is given.

    Args:
        backend: ``torch`` or ``openvino``.
        stage: ``localizer`` or ``segmenter``.

    Returns:
        ``bf16`` for OpenVINO on a CPU with native bf16 (AVX-512 BF16 or AMX) for the stages in
        ``BF16_BY_DEFAULT``; ``fp32`` otherwise (and whenever OpenVINO is not installed, which
        :func:`compile_network` then reports).
    """
    if backend != "openvino" or stage not in BF16_BY_DEFAULT:
        return "fp32"
    return "bf16" if _cpu_has_bf16() else "fp32"


@functools.cache
def _cpu_has_bf16() -> bool:
    openvino, has_openvino = optional_import("openvino")
    return has_openvino and "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _import_openvino():
    openvino, has_openvino = optional_import("openvino")
    _, has_onnx = optional_import("onnx")  # torch.onnx.export needs it
    if not (has_openvino and has_onnx):
        missing = "openvino" if not has_openvino else "onnx"
        raise InputError(f"--backend openvino: the {missing} package is not installed ({OPENVINO_EXTRA_HINT})")
    return openvino


def _export_openvino(network: torch.nn.Module, input_shape: tuple[int, ...], target: Path, openvino) -> None:
    """Write ``target/model.xml`` + ``model.bin`` (fp32) atomically: a concurrent export wins or loses whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        onnx_path = scratch / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # Instance norm always normalises by the window's own statistics, in eval mode too; and
            # the shape checks tracing freezes are right for the one input shape the IR takes.
            warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                network, (torch.zeros(input_shape),), str(onnx_path), dynamo=False, opset_version=ONNX_OPSET,
                input_names=["windows"], output_names=["logits"],
            )
        model = openvino.Core().read_model(str(onnx_path))
        openvino.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
        onnx_path.unlink()
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "model.xml").is_file():  # not a concurrent export that finished first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _quantize_openvino(fp32_model: Path, windows: Sequence[np.ndarray], target: Path, openvino, nncf) -> None:
    """Write ``target/model.xml`` + ``model.bin``: NNCF's int8 post-training quantization of the fp32 IR,
    calibrated on ``windows`` ((1, C, X, Y, Z) float32 each), atomically like :func:`_export_openvino`.

    The MIXED preset quantizes weights symmetrically and activations asymmetrically: the networks'
    leaky ReLUs make activations signed and skewed.
    """
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model = openvino.Core().read_model(str(fp32_model))
        quantized = nncf.quantize(
            model, nncf.Dataset(list(windows)), preset=nncf.QuantizationPreset.MIXED, subset_size=len(windows)
        )
        openvino.save_model(quantized, str(scratch / "model.xml"), compress_to_fp16=False)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "model.xml").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OpenVINONetwork:
    """An OpenVINO IR compiled for the CPU, called like the torch network it was exported from.

    Args:
        path: the IR's ``model.xml``.
        input_shape: the one input shape the IR takes, (1, C, X, Y, Z).
        precision: ``fp32``, ``bf16`` or ``int8`` (``INFERENCE_PRECISION_HINT`` f32 / bf16 / f32 for the
            layers an int8 IR keeps in floating point).
        exported: whether building it exported the IR (False when it came from the cache).

    Attributes:
        path, input_shape, precision, exported: as given.
    """

    def __init__(self, path: Path, input_shape: tuple[int, ...], precision: str, exported: bool) -> None:
        openvino = _import_openvino()
        core = openvino.Core()
        if precision == "bf16" and not _cpu_has_bf16():
            warnings.warn("--precision bf16: this CPU has no native bf16; OpenVINO runs fp32", stacklevel=3)
        config = {
            "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision],
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),  # OMP_NUM_THREADS, --threads apply alike
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
        self.path, self.input_shape, self.precision, self.exported = path, input_shape, precision, exported

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, X, Y, Z) fp32 of windows (B, C, X, Y, Z), on the windows' device.

        Raises:
            ValueError: a window's (C, X, Y, Z) differs from the compiled input shape.
        """
        if tuple(windows.shape[1:]) != self.input_shape[1:]:
            raise ValueError(
                f"windows of shape {list(windows.shape[1:])}; this "
                f"network was compiled for {list(self.input_shape[1:])}"
            )
        batch = windows.detach().to("cpu", torch.float32).contiguous().numpy()
        # The IR has a static batch of 1 (fastest on a CPU); the output buffer is reused by the next call.
        logits = [torch.from_numpy(self._request.infer({0: batch[i : i + 1]})[0].copy()) for i in range(len(batch))]
        return torch.cat(logits).to(windows.device)


def compile_network(
    network: torch.nn.Module,
    patch_size: Sequence[int],
    backend: str = "torch",
    precision: str = "fp32",
    in_channels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    calibration: Callable[[], Sequence[np.ndarray]] | None = None,
    calibration_key: str = "",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A stage network ready for sliding-window inference on the chosen runtime.

    Args:
        network: the stage's network with its weights loaded; it is put in eval mode (in which
            :class:`~cascade.networks.ResEncUNet` returns full-resolution logits only, deep
            supervision or not).
        patch_size: the window shape (X, Y, Z) every call gets (the config's ``patch_size``).
        backend: ``torch`` (the module itself, on whatever device it is) or ``openvino`` (CPU).
        precision: ``fp32``, or ``bf16`` or ``int8`` (openvino only).
        in_channels: window channels C (default: the network's ``in_channels`` attribute, else 1).
        cache_dir: where exported networks are kept (default :func:`default_cache_dir`).
        calibration: for ``int8``, makes the calibration windows ((1, C, X, Y, Z) float32 arrays);
            called only when the quantized IR is not cached.
        calibration_key: for ``int8``, identifies what ``calibration`` makes (its cases and the
            preprocessing), for the cache.

    Returns:
        A callable mapping windows (B, C, X, Y, Z) to logits (B, K, X, Y, Z): the module for
        ``torch``, an :class:`OpenVINONetwork` for ``openvino``.

    Raises:
        InputError: an unknown backend or precision, bf16 or int8 with the torch backend, int8 without
            calibration, or the ``openvino`` (``int8``) extra not installed (the message names the
            install command).
    """
    check_runtime(backend, [precision])
    network = network.eval()
    if backend == "torch":
        if precision != "fp32":
            raise InputError(f"--precision {precision}: the torch backend runs fp32 (use --backend openvino)")
        return network
    openvino = _import_openvino()
    in_channels = in_channels or getattr(network, "in_channels", 1)
    input_shape = (1, in_channels, *(int(s) for s in patch_size))
    network = network.to("cpu")
    key = network_fingerprint(network, input_shape, f"torch {torch.__version__}", f"openvino {openvino.__version__}")
    target = Path(cache_dir or default_cache_dir()) / "openvino" / key
    exported = not (target / "model.xml").is_file()
    if exported:
        logger.info(
            "exporting %s to OpenVINO for windows %s (once; cached in %s)",
            type(network).__name__, list(input_shape), target,
        )
        _export_openvino(network, input_shape, target, openvino)
    if precision == "int8":
        nncf, has_nncf = optional_import("nncf")
        if not has_nncf:
            raise InputError(f"--precision int8: the nncf package is not installed ({INT8_EXTRA_HINT})")
        if calibration is None:
            raise InputError("--precision int8: no calibration cases given")
        key = hashlib.sha256(f"{calibration_key}; nncf {nncf.__version__}".encode()).hexdigest()[:16]
        quantized = target / f"int8-{key}"
        if not (quantized / "model.xml").is_file():
            logger.info("quantizing %s to int8 (once; cached in %s)", type(network).__name__, quantized)
            _quantize_openvino(target / "model.xml", calibration(), quantized, openvino, nncf)
            exported = True
        target = quantized
    return OpenVINONetwork(target / "model.xml", input_shape, precision, exported)
