"""Label values of the MBAS data and the class names used in every output.

The files and the organisers' scorer use this order (some challenge web text lists another).
"""

from __future__ import annotations

__all__ = ["BACKGROUND", "WALL", "RIGHT_ATRIUM", "LEFT_ATRIUM", "LABEL_VALUES", "CLASS_NAMES", "CLASS_LABELS"]

BACKGROUND = 0
WALL = 1  # left and right atrial walls
RIGHT_ATRIUM = 2  # right atrium cavity
LEFT_ATRIUM = 3  # left atrium cavity

LABEL_VALUES = (BACKGROUND, WALL, RIGHT_ATRIUM, LEFT_ATRIUM)
CLASS_NAMES = {WALL: "wall", RIGHT_ATRIUM: "right_atrium", LEFT_ATRIUM: "left_atrium"}
CLASS_LABELS = tuple(CLASS_NAMES)
