"""atria-cascade: two-stage cascaded segmentation of the atria in 3D LGE cardiac MRI.

The submodules are attributes of the package, imported on first use (PEP 562 ``__getattr__``),
so ``"$import cascade"`` in a bundle config makes every submodule (``cascade.bundles``,
``cascade.settings``, ``cascade.transforms``, ...) available to its expressions, while ``import
cascade`` alone (the command line's help and argument checks) does not load torch or MONAI.
"""

import importlib
import importlib.util
import logging
import warnings
from types import ModuleType

__version__ = "0.1.0"

# With pydicom installed (the dicom extra), MONAI >= 1.6 builds an NvImgCodecPydicomReader in every
# LoadImage; without NVIDIA's nvImageCodec it logs and warns each time that pydicom's own decoders
# are used, which is what this package wants: the lines would drown the one-line messages.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings(
    "ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register", category=UserWarning
)

__all__ = ["bundles", "data", "handlers", "intensity", "io", "labels", "losses", "networks", "transforms"]


def __getattr__(name: str) -> ModuleType:
    """Import a submodule the first time it is used as ``cascade.<name>`` (any submodule, not only
    those of :data:`__all__`: bundle configs may name e.g. ``cascade.settings`` in expressions)."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
