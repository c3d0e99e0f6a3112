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
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from worldmodels.pools.workers import WorkerError, environment, start_worker, thread_limits

Item = TypeVar("Item")
Result = TypeVar("Result")
_DONE: Any = object()


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
