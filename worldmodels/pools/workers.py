"""What every worker process or actor shares: its error type, its native-thread limits, and its start
(die with the parent, leave Ctrl-C to the parent, hold native libraries to a thread count)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from worldmodels.errors import UserError


class WorkerError(UserError, RuntimeError):
    """A worker process died, or a task in it failed; the message names the task."""


def thread_limits(threads: int) -> dict[str, str]:
    """Environment variables that hold a worker's native libraries to ``threads`` CPU threads.

    ``LP_NUM_THREADS=0`` makes Mesa's llvmpipe rasterize in the calling thread, which is the
    fastest for small frames when every core already runs a worker.
    """
    value = str(threads)
    return {
        "OMP_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "LP_NUM_THREADS": "0" if threads == 1 else value,
    }


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by processes started inside), restore them after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies, however the parent dies (SIGKILL
    included, where no Python code of the parent runs). Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(1)


def start_worker(initializer: Callable[..., None], initargs: tuple[Any, ...], threads: int,
                 parent_pid: int | None) -> None:
    """What every worker (a pool process or a Ray actor) runs first: die with ``parent_pid``, leave Ctrl-C
    to the parent, hold native libraries to ``threads``, then ``initializer(*initargs)``."""
    if parent_pid is not None:  # None: a Ray actor, whose life Ray manages
        die_with_parent(parent_pid)
    # The parent handles Ctrl-C and stops the pool; workers must not print their own tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pool spawns its processes on demand, after ordered_map's environment block has ended,
    # and unpickling the arguments may already have loaded torch: set the limits here too.
    # Without them 2 workers each ran 2 torch threads on 2 cores and evaluated at half the rate of 1.
    os.environ.update(thread_limits(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    initializer(*initargs)
