"""Ending a process at once, without the interpreter's teardown (which frees every module and
object one by one: 0.1 s of the `capture` command after its summary, 0.8 s of the batch process
after its report; benchmarks/README.md). For a process whose work is all written and closed;
the callers say what else they finish first (`pipeline.cli._leave`, `pipeline.batchrun._leave`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_at_once(code: int) -> NoReturn:
    """Close the log handlers, flush stdout and stderr (one that is gone or closed is left
    alone), then end the process with `code`. A flush that fails (a reader that went away)
    raises before anything is skipped."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not stream.closed:
            stream.flush()
    os._exit(code)
