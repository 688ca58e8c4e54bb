"""Text for the terminal and logs (`pipeline.console.text`): `printable` makes any file name one printable line
(bytes that are not UTF-8 and control characters escaped, other text as it is); `excerpt` renders any value in at
most 80 characters."""

import os
import pathlib

import pytest

from pipeline.console.text import excerpt, printable


@pytest.mark.parametrize("name, shown", [
    ("plain/name.jpg", "plain/name.jpg"),
    (pathlib.Path("runs/a b/x.png"), "runs/a b/x.png"),
    ("café/日本.png", "café/日本.png"),  # UTF-8 text stays as it is
    (b"\xff\xfe.jpg", "\\xff\\xfe.jpg"),  # bytes that are not UTF-8
    (os.fsdecode(b"cl\xe9"), "cl\\xe9"),  # the same, as Python hands an undecodable file name on
    ("a\nb\tc", "a\\nb\\tc"),  # a name cannot break the line
    ("\x1b[31mred", "\\x1b[31mred"),  # nor colour the terminal
], ids=["ascii", "path", "utf8", "bytes", "surrogates", "newline_tab", "escape"])
def test_printable_names(name, shown):
    assert printable(name) == shown


@pytest.mark.parametrize("value, shown", [
    ("abc", "'abc'"),
    (None, "None"),
    (1e-4, "0.0001"),
    ("line\nbreak", "'line\\nbreak'"),
    (list(range(10)), "[0, 1, 2, 3, ...]"),  # four items of a list
    ({"a": {"b": {"c": 1}}}, "{'a': {'b': {...}}}"),  # two levels deep
    ("x" * 100, "'" + "x" * 27 + "..." + "x" * 28 + "'"),  # 60 characters of a string
    (["a" * 30, "b" * 30, "c" * 30], "['" + "a" * 30 + "', '" + "b" * 30 + "', '" + "c" * 7 + "..."),  # 80 in all
], ids=["string", "none", "float", "newline", "long_list", "deep_dict", "long_string", "long_repr"])
def test_excerpts(value, shown):
    assert excerpt(value) == shown
