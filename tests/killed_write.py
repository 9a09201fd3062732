"""Run a tool in a child process that the kernel kills in the middle of writing a file.

The child's file-size limit (RLIMIT_FSIZE) is set below the size of the file under test: the
write that crosses it gets SIGXFSZ, whose default action ends the process on the spot, as a
kill or a power cut would, with the file half written. Smaller files (logs, metrics) are written
as usual. Python ignores SIGXFSZ at start-up (a write would fail with EFBIG instead, which code
could catch and clean up after), so the child restores the default first.
"""

import signal
import subprocess
import sys

_CHILD = r"""
import os, resource, runpy, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python script` does
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_killed_mid_write(script, args, *, limit_bytes, cwd, timeout=600):
    """Run ``python script *args`` with files capped at ``limit_bytes``; assert it was killed by
    SIGXFSZ (i.e. inside a write) and return the ``CompletedProcess``."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(int(limit_bytes)), str(script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == -signal.SIGXFSZ, (
        f"expected the child to die inside a write (SIGXFSZ), got return code {proc.returncode}\n"
        f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
    )
    return proc
