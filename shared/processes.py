"""Background processes the course starts (the local model server, ``chroma run``): ports, pids.

* :func:`free_port`: a port nothing listens on (or a check that a given one is free);
* :func:`pid_alive`: whether a process still runs (a zombie child of ours counts as ended).
"""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["free_port", "pid_alive"]


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """``port`` if it can be bound on ``host`` now, or any free port for ``port=0``.

    Raises ``OSError`` when ``port`` is taken. The port is released before returning, so another
    program could take it first; start the server right after.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as servers bind: TIME_WAIT is free
        s.bind((host, port))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one we may not signal counts); our own zombie is reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):  # reap our own zombie, if any
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True
