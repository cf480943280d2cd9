"""atria-cascade: two-stage cascaded segmentation of the atria in 3D LGE cardiac MRI.

The submodules that bundle configs reference are imported here, so ``"$import cascade"`` in a
config makes ``cascade.bundles``, ``cascade.data``, ``cascade.handlers``, ``cascade.intensity``,
``cascade.losses``, ``cascade.networks`` and ``cascade.transforms`` available to its expressions.
"""

from cascade import bundles, data, handlers, intensity, io, labels, losses, networks, transforms

__version__ = "0.1.0"
__all__ = ["bundles", "data", "handlers", "intensity", "io", "labels", "losses", "networks", "transforms"]
