"""atria-cascade: two-stage cascaded segmentation of the atria in 3D LGE cardiac MRI.

The submodules that bundle configs reference are imported here, so ``"$import cascade"`` in a
config makes ``cascade.bundles``, ``cascade.data``, ``cascade.handlers``, ``cascade.intensity``,
``cascade.losses``, ``cascade.networks`` and ``cascade.transforms`` available to its expressions.
"""

import logging
import warnings

__version__ = "0.1.0"

# With pydicom installed (the dicom extra), MONAI >= 1.6 builds an NvImgCodecPydicomReader in every
# LoadImage; without NVIDIA's nvImageCodec it logs and warns each time that pydicom's own decoders
# are used, which is what this package wants: the lines would drown the one-line messages.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register", category=UserWarning)

from cascade import bundles, data, handlers, intensity, io, labels, losses, networks, transforms  # noqa: E402

__all__ = ["bundles", "data", "handlers", "intensity", "io", "labels", "losses", "networks", "transforms"]
