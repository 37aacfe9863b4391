"""Run a module as a child that dies with its parent: `python -m pipeline.orphan_guard PPID MODULE ARGS`.

The kernel is asked (PR_SET_PDEATHSIG) to send SIGKILL when the parent goes, then MODULE runs
as `python -m MODULE ARGS` would. Done here, after exec, rather than between fork and exec,
which is unsafe in a parent with threads. MODULE starts with the garbage collector's threshold
raised (`pipeline.startup`).
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

from pipeline import startup

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's process-group kill still applies
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    startup.raise_for_start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
