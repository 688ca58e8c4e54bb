"""Text for the terminal and log files, whatever the bytes or the value it comes from."""

import os
import reprlib

_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 2, 60, 60
_EXCERPT.maxdict = _EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxset = 4


def excerpt(value):
    """A short, one-line rendering of any value (at most about 80 characters), however large the value."""
    text = _EXCERPT.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def printable(name):
    """A path or name as one printable line: bytes that are not UTF-8 become \\x.. escapes, control characters too.

    File names on Linux are bytes; Python hands undecodable ones on as surrogate
    escapes, which a UTF-8 terminal or log cannot print.
    """
    if isinstance(name, bytes):
        text = name.decode("utf-8", "backslashreplace")
    else:
        text = os.fsencode(str(name)).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
