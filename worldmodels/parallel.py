"""Run a function over items in worker processes and get the results back in item order.

Built on :class:`concurrent.futures.ProcessPoolExecutor`, which notices a dead worker (a crash,
a kill, a segfault in native code) and fails the pending futures instead of hanging; we turn
that into an error naming the items in flight.

Workers die with their parent: each asks the kernel for SIGKILL when the parent dies (so even a
``kill -9`` of the driver leaves no orphan, and multiprocessing's resource tracker, whose pipe the
workers hold, ends too), and a pool left by an exception (Ctrl-C, SIGTERM, an error) kills its
workers instead of letting them finish their tasks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class WorkerError(RuntimeError):
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


class WorkerPool:
    """Worker processes that stay up across many maps (each runs ``initializer(*initargs)`` once).

    ``with WorkerPool(workers, initializer, initargs) as pool: pool.map(function, items)`` yields
    ``function(item)`` in item order; ``workers == 0`` runs everything in this process (for
    debugging). Workers hold native libraries to ``threads_per_worker`` threads. At most
    ``max_in_flight`` results (default ``2 * workers``) are pending at once, so memory stays
    bounded however many items there are. A worker that dies raises :class:`WorkerError` naming
    the items in flight, never a hang.
    """

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
                 threads_per_worker: int = 1, max_in_flight: int | None = None) -> None:
        self.workers, self.threads_per_worker = workers, threads_per_worker
        self.limit = max_in_flight or 2 * max(workers, 1)
        self._pool: ProcessPoolExecutor | None = None
        if workers == 0:
            with environment(thread_limits(threads_per_worker)):
                initializer(*initargs)
        else:
            with environment(thread_limits(threads_per_worker)):
                self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=start_worker,
                                                 initargs=(initializer, initargs, threads_per_worker,
                                                           os.getpid()))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=exc_type is not None)

    def close(self, kill: bool = False) -> None:
        """Stop the workers; with ``kill`` (an error, Ctrl-C, SIGTERM) at once, not after their current task."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if kill:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, ValueError):
                    process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def map(self, function: Callable[[Item], Result], items: Iterable[Item],
            describe: Callable[[Item], str] = repr) -> Iterator[Result]:
        """Yield ``function(item)`` for each item, in order."""
        if self._pool is None:
            with environment(thread_limits(self.threads_per_worker)):
                for item in items:
                    yield function(item)
            return
        pending: deque[tuple[Item, Future]] = deque()
        remaining = iter(items)
        for item in remaining:
            pending.append((item, self._pool.submit(function, item)))
            if len(pending) >= self.limit:
                break
        while pending:
            item, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                lost = ", ".join(describe(i) for i in [item, *(p[0] for p in pending)])
                self.close()
                raise WorkerError(f"a worker process died (killed, out of memory, or a crash in "
                                  f"native code) while running: {lost}") from None
            next_item = next(remaining, _DONE)
            if next_item is not _DONE:
                pending.append((next_item, self._pool.submit(function, next_item)))
            yield result


_backend: dict[str, Any] = {"name": "local", "address": None}


def use_backend(name: str, address: str | None = None) -> None:
    """Where :func:`open_pool` runs its workers from now on in this process: ``local`` (processes of this
    machine) or ``ray`` (actors of a Ray cluster at ``address``; None: ``RAY_ADDRESS``, else a local Ray).
    Set from the pipeline's ``runtime:`` section by ``Runtime.apply``."""
    if name not in ("local", "ray"):
        raise ValueError(f"runtime.backend: expected local or ray, got {name!r}")
    _backend.update(name=name, address=address)


def backend() -> str:
    """The backend :func:`open_pool` uses now."""
    return _backend["name"]


def open_pool(workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
              threads_per_worker: int = 1, max_in_flight: int | None = None) -> Any:
    """A :class:`WorkerPool`, or with the ``ray`` backend a :class:`~worldmodels.ray_pool.RayWorkerPool`:
    the same ``map`` and the same results. ``workers == 0`` always runs in this process."""
    if _backend["name"] == "ray" and workers > 0:
        from worldmodels.ray_pool import RayWorkerPool

        return RayWorkerPool(workers, initializer, initargs, threads_per_worker, max_in_flight,
                             address=_backend["address"])
    return WorkerPool(workers, initializer, initargs, threads_per_worker, max_in_flight)


def ordered_map(function: Callable[[Item], Result], items: Iterable[Item], workers: int,
                initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
                describe: Callable[[Item], str] = repr, threads_per_worker: int = 1,
                max_in_flight: int | None = None) -> Iterator[Result]:
    """Yield ``function(item)`` for each item, in order, from a pool (:func:`open_pool`) made for this one map."""
    with open_pool(workers, initializer, initargs, threads_per_worker, max_in_flight) as pool:
        yield from pool.map(function, items, describe)


_DONE: Any = object()
