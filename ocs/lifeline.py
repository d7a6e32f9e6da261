"""Child processes that do not outlive the process that started them (Linux PR_SET_PDEATHSIG).

A kill -9 of `ocs serve --workers N`'s supervisor left its workers serving on the port, out of
reach of any later SIGTERM (one still holding the CDR export lock); a kill -9 of `ocs invoice`
left its render processes blocked forever on their task queue. Elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Call first thing in the child: `sig` comes when `parent_pid` (the starter) dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before we asked: the signal will never come
        os.kill(os.getpid(), sig)
