"""atria-cascade: two-stage cascaded segmentation of the atria in 3D LGE cardiac MRI."""

__version__ = "0.1.0"
