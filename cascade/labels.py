"""Label values of the MBAS data, and the class names and display colours used in every output.

The files and the organisers' scorer use this order (some challenge web text lists another).
"""

from __future__ import annotations

__all__ = ["BACKGROUND", "WALL", "RIGHT_ATRIUM", "LEFT_ATRIUM", "LABEL_VALUES", "CLASS_NAMES", "CLASS_COLOURS"]

BACKGROUND = 0
WALL = 1  # left and right atrial walls
RIGHT_ATRIUM = 2  # right atrium cavity
LEFT_ATRIUM = 3  # left atrium cavity

LABEL_VALUES = (BACKGROUND, WALL, RIGHT_ATRIUM, LEFT_ATRIUM)
CLASS_NAMES = {WALL: "wall", RIGHT_ATRIUM: "right_atrium", LEFT_ATRIUM: "left_atrium"}
CLASS_COLOURS = {WALL: (255, 220, 0), RIGHT_ATRIUM: (40, 90, 255), LEFT_ATRIUM: (235, 40, 40)}  # RGB
