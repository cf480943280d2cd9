"""Tasks of the atria-cascade MONAI Label app."""
