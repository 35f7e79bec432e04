"""Child-process entry point that runs one of the MNN wheel's compiled tools (``_tools``).

``ocrslim.export.mnn`` runs this file as a script in a child process, never imports it:
the tools can segfault (mnnquant on SE blocks, GELU, ReduceMean; PROBE.md), and a crash must
become a ``ToolError`` in the parent, not kill the stage.

It calls ``_tools`` directly, never the ``mnnconvert``/``mnnquant`` console scripts or anything
under ``MNN.tools``: those import ``MNN.tools.utils.log``, which pip-installs a logging SDK
and uploads usage data (PROBE.md, "MNN 3.6.1 wheel").

Usage: ``python -P _mnn_tool.py {mnnconvert|mnnquant} ARG...``. The exit code is 0 whenever the
tool returns (it returns True even on failure); the parent judges success by the output file.
"""

from __future__ import annotations

import ctypes
import sys

TOOLS = ("mnnconvert", "mnnquant")


def _unbuffer_c_stdout() -> None:
    """Make C ``stdout`` unbuffered, so the lines printed before a segfault reach the parent.

    Into a pipe, stdio buffers fully and a crash loses the buffer, and with it the name of
    the op the tool died on. MNN 3.6.1's own log lines survive a segfault anyway (checked), so
    this guards the tools' plain printf output. Best effort: glibc exports ``stdout``; other
    libcs may not.
    """
    try:
        libc = ctypes.CDLL(None)
        c_stdout = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf(c_stdout, None, 2, 0)  # 2 == _IONBF
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run ``_tools.<tool>([tool, *args])``; return 2 on a usage error, else 0."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in TOOLS:
        print(f"usage: _mnn_tool.py {{{'|'.join(TOOLS)}}} ARG...", file=sys.stderr)
        return 2
    _unbuffer_c_stdout()
    import _tools  # the MNN wheel's compiled module; imports nothing from MNN.tools

    tool = argv[0]
    # One argv list, program name first: the console script's three-string form aborts
    # with std::length_error (PROBE.md).
    getattr(_tools, tool)([tool, *argv[1:]])
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
