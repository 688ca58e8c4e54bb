"""Native libraries' stderr (`pipeline.console.native`): `kept_lines` drops TensorFlow's W/I log lines with their
indented graph-node lines and libjpeg's messages, and keeps everything else (TensorFlow's E lines included)."""

from pipeline.console.native import kept_lines

# What a SavedModel call on a bad image, and libjpeg, write to descriptor 2, with two lines of the program's own.
CAPTURED = [
    ("W0000 00:00:1712345678.123456   12345 op_kernel.cc:1840] Local rendezvous is aborting with status: "
     "INVALID_ARGUMENT: Unknown image file format"),
    "\t [[{{node DecodeImage}}]]",
    "  [[StatefulPartitionedCall/map/while/body/_1/DecodeImage]]",
    "I0000 00:00:1712345678.2   12345 local_rendezvous.cc:405] Local rendezvous recv item cancelled.",
    "Corrupt JPEG data: 12 extraneous bytes before marker 0xd9",
    "Improper call to JPEG library in state 201",
    "Premature end of JPEG file",
    "E0000 00:00:1712345678.3   12345 cuda_platform.cc:52] failed call to cuInit",
    "a line of the program's own",
    "  indented, after a kept line",
]


def test_tensorflow_warnings_with_their_continuations_and_libjpeg_messages_are_dropped():
    assert kept_lines("\n".join(CAPTURED)) == [
        "E0000 00:00:1712345678.3   12345 cuda_platform.cc:52] failed call to cuInit",
        "a line of the program's own",
        "  indented, after a kept line",
    ]


def test_nothing_captured_keeps_nothing_and_plain_text_is_kept_whole():
    assert kept_lines("") == []
    assert kept_lines("one\n\ntwo\n") == ["one", "", "two"]
    # A W at the start of a line of prose is not a TensorFlow log line.
    assert kept_lines("Warning: disk almost full\nW0000 is not a timestamp") == [
        "Warning: disk almost full", "W0000 is not a timestamp"]
