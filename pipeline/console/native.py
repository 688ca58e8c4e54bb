"""Native libraries' stderr during a call whose failures the command reports itself.

TensorFlow's C++ runtime and libjpeg write straight to file descriptor 2: a
SavedModel call that fails on a bad image prints "W0000 ... Local rendezvous is
aborting with status: INVALID_ARGUMENT ..." with graph node names, and libjpeg
"Improper call to JPEG library in state 201", beside the one error line the
command prints for that file. `filtered_native_stderr` captures descriptor 2
for the call and writes back only what is not such noise.
"""

import contextlib
import os
import re
import sys
import tempfile

# TensorFlow's warning and information lines (an error line "E0000 ..." is kept), and libjpeg's messages.
_TF_LOG = re.compile(r"^[WI]\d{4} [\d:. ]+\d+ \S+:\d+\] ")
_LIBJPEG = re.compile(
    r"^(Improper call to JPEG library|Corrupt JPEG data|Premature end of JPEG file|Invalid JPEG file structure|"
    r"Not a JPEG file|Unsupported marker type|Bogus marker length|Warning: unknown JFIF revision)"
)


def kept_lines(text):
    """The lines of captured stderr that are not TensorFlow W/I lines (with their indented continuations) or libjpeg's."""
    kept, dropping = [], False
    for line in text.splitlines():
        if _TF_LOG.match(line) or _LIBJPEG.match(line):
            dropping = True
            continue
        if dropping and line[:1] in ("\t", " "):
            continue  # the graph-node lines under a dropped warning
        dropping = False
        kept.append(line)
    return kept


@contextlib.contextmanager
def filtered_native_stderr():
    """Captures file descriptor 2 for the block, then writes back the lines `kept_lines` keeps."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = kept_lines(captured.read().decode(errors="replace"))
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
