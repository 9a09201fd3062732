"""Running our own command-line tools in subprocesses, their output streamed to a log.

Library code runs a tool as ``python -m <package>.cli.<tool>`` (never by a path into ``tools/``),
with our packages importable from any working directory.
"""

import os
import subprocess
import sys

# The folder holding the `pretrain`, `convert` and `detection` packages.
PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = PACKAGES_ROOT  # the checkout: configs/, tools/ and the packages side by side


def tool_command(module, python=None):
    """``[python, "-m", module]``: the command line of one of our tools' mains."""
    return [python or sys.executable, "-m", module]


def tool_env(extra=None):
    """The environment of a tool subprocess: unbuffered output, our packages first on the path."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra or {}))
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != PACKAGES_ROOT]
    env["PYTHONPATH"] = os.pathsep.join([PACKAGES_ROOT] + rest)
    return env


def run_logged(cmd, log, *, echo=None, env=None, cwd=None):
    """Run ``cmd``; every output line goes to the open file ``log``, and to stdout where
    ``echo(line)`` is true. Returns the exit code; the child is killed if we are interrupted."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=tool_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in proc.stdout:
            log.write(line)
            if echo is not None and echo(line):
                sys.stdout.write(line)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
