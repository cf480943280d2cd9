"""The errors of bad input: each message is one line naming the file or setting and the problem.

The command line reports them as ``cascade: error: ...`` (exit status 1), a bundle run as
``error: ...`` (:func:`cascade.bundles.stop_on_input_error`), the MONAI Label app as a 400 answer.
"""

from __future__ import annotations

__all__ = ["InputError", "SettingError"]


class InputError(ValueError):
    """A file that cannot be used as given; the message names the file and the problem."""


class SettingError(ValueError):
    """A setting's value that cannot be used.

    ``str()`` words it for the command line (``--overlap: expected ...``); another caller names the
    setting in its own terms from :attr:`setting` and :attr:`problem` (the MONAI Label app:
    ``overlap: expected ...``).

    Attributes:
        setting: the setting's name (a config id or a command-line flag without ``--``).
        problem: what is wrong with the value.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"--{setting}: {problem}")
        self.setting, self.problem = setting, problem
