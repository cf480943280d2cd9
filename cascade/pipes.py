"""Standard streams that outlive their reader: ``cascade predict ... | head -1`` still predicts every case.

A closed pipe makes the next write to stdout (or stderr) raise ``BrokenPipeError``; left alone it
aborts the run after the first printed line, and Python prints one more traceback at exit when it
flushes the stream. Well-behaved command-line tools stop writing to a reader that has gone and
keep their real work; here the stream is pointed at ``os.devnull`` (as Python's documentation on
``SIGPIPE`` advises) and the run goes on, its files and exit status unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = ["ReaderGoneStream", "outliving_readers"]


class ReaderGoneStream:
    """A text stream that drops what it is given once its reader has gone (a broken pipe).

    Args:
        stream: the stream wrapped (``sys.stdout`` or ``sys.stderr``); every other attribute is its own.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def _drop(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # Python's own flush at exit then writes nowhere, quietly
            os.close(devnull)

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def outliving_readers() -> Iterator[None]:
    """Within the block, ``sys.stdout`` and ``sys.stderr`` are :class:`ReaderGoneStream` s; flushed on leaving."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ReaderGoneStream(sys.stdout), ReaderGoneStream(sys.stderr)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved
