"""Run a function over items in worker processes of this machine and get the results back in item order.

The pool owns its processes and their pipes: each worker is a ``spawn``-ed process that runs an
initializer once, then serves one item at a time over a pipe of its own. The driver has no
helper thread and installs no exit hook, so nothing can block the interpreter's exit, and a stop
signal (see ``worldmodels.core.stopping``) unwinds straight out of the one wait the driver blocks in.

A worker that dies (a crash, a kill, a segfault in native code) is noticed through its process's
sentinel, and the map stops with an error naming the items in flight, never a hang.

Workers die with their parent: each asks the kernel for SIGKILL when the parent dies (so even a
``kill -9`` of the driver leaves no orphan), and a pool left by an exception (a stop signal, an
error) kills its workers instead of letting them finish their items.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from worldmodels.core import stopping
from worldmodels.pools.workers import WorkerError, environment, start_worker, thread_limits

Item = TypeVar("Item")
Result = TypeVar("Result")
_DONE: Any = object()

JOIN_TIMEOUT_S = 5.0
"""How long a worker asked to stop may take before it is killed."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as the ``__cause__`` of its re-raise."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def _serve(connection: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...], threads: int,
           parent_pid: int) -> None:
    """A worker's life: start (see ``start_worker``), then ``(function, item)`` in, ``(ok, value, text)`` out,
    until ``None`` arrives or the pipe closes. An exception is sent back (as text when it cannot be pickled)."""
    try:
        start_worker(initializer, initargs, threads, parent_pid)
    except BaseException as error:  # noqa: BLE001 - reported to the driver, which raises it
        _send_error(connection, error)
        return
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        function, item = task
        try:
            result = function(item)
        except BaseException as error:  # noqa: BLE001 - reported to the driver, which raises it
            _send_error(connection, error)
            continue
        try:
            connection.send((True, result, ""))
        except Exception as error:  # noqa: BLE001 - a result that does not pickle is the item's error
            _send_error(connection, WorkerError(f"{function.__name__}: its result cannot be sent back: "
                                                f"{type(error).__name__}: {error}"))


def _send_error(connection: Connection, error: BaseException) -> None:
    """Send ``error`` back; one that would not arrive whole (it does not pickle, or does not unpickle: a
    custom ``__init__``) goes as a :class:`WorkerError` naming its type, message and traceback."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.loads(pickle.dumps(error))
        connection.send((False, error, text))
    except Exception:  # noqa: BLE001
        connection.send((False, WorkerError(f"{type(error).__name__}: {error}"), text))


@dataclass
class _Worker:
    process: Any  # multiprocessing's SpawnProcess
    connection: Connection
    item: int | None = None  # the index of the item it runs now, if any
    stale: int = 0  # results still owed for a map that ended early, to be discarded


class WorkerPool:
    """Worker processes that stay up across many maps (each runs ``initializer(*initargs)`` once).

    ``with WorkerPool(workers, initializer, initargs) as pool: pool.map(function, items)`` yields
    ``function(item)`` in item order; ``workers == 0`` runs everything in this process (for
    debugging). Workers hold native libraries to ``threads_per_worker`` threads. At most
    ``max_in_flight`` results (default ``2 * workers``) are pending at once, so memory stays
    bounded however many items there are. A worker that dies raises :class:`WorkerError` naming
    the items in flight, never a hang; an exception raised by ``function`` is raised again here,
    with the worker's traceback as its cause.
    """

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
                 threads_per_worker: int = 1, max_in_flight: int | None = None) -> None:
        self.workers, self.threads_per_worker = workers, threads_per_worker
        self.limit = max(max_in_flight or 2 * max(workers, 1), 1)
        self._workers: list[_Worker] = []
        self._mapping = False  # a map is under way (results are filed by item, so one map at a time)
        with environment(thread_limits(threads_per_worker)):
            if workers == 0:
                initializer(*initargs)
                return
            context = multiprocessing.get_context("spawn")
            try:
                for _ in range(workers):
                    mine, theirs = context.Pipe()
                    process = context.Process(target=_serve, daemon=True, name="worldmodels-worker",
                                              args=(theirs, initializer, initargs, threads_per_worker, os.getpid()))
                    process.start()
                    theirs.close()  # the worker's end lives in the worker: EOF here when it dies
                    self._workers.append(_Worker(process, mine))
            except BaseException:
                self.close(kill=True)
                raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=exc_type is not None)

    def worker_pids(self) -> list[int]:
        """The process ids of the workers (for tests that kill one)."""
        return [worker.process.pid for worker in self._workers]

    def close(self, kill: bool = False) -> None:
        """Stop the workers; with ``kill`` (an error, a stop signal) at once, not after their current item."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if kill or worker.item is not None or worker.stale:
                with contextlib.suppress(OSError, ValueError):
                    worker.process.kill()
            else:
                with contextlib.suppress(OSError, ValueError):
                    worker.connection.send(None)
        for worker in workers:
            worker.process.join(JOIN_TIMEOUT_S)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
            worker.process.close()

    def map(self, function: Callable[[Item], Result], items: Iterable[Item],
            describe: Callable[[Item], str] = repr) -> Iterator[Result]:
        """Yield ``function(item)`` for each item, in order."""
        if not self._workers:
            with environment(thread_limits(self.threads_per_worker)):
                for item in items:
                    yield function(item)
            return
        if self._mapping:
            raise RuntimeError("WorkerPool.map: another map of this pool is under way; finish or close it first")
        self._mapping = True
        remaining = iter(items)
        window: dict[int, Item] = {}  # index -> item, for the items started and not yet yielded
        results: dict[int, Result] = {}
        head = started = 0
        exhausted = False
        try:
            while True:
                idle = deque(w for w in self._workers if w.item is None and not w.stale)
                while idle and not exhausted and started < head + self.limit:
                    item = next(remaining, _DONE)
                    if item is _DONE:
                        exhausted = True
                        break
                    worker = idle.popleft()
                    with contextlib.suppress(OSError):  # a dead worker: its sentinel says so in _receive
                        worker.connection.send((function, item))
                    worker.item, window[started] = started, item
                    started += 1
                if head in results:
                    window.pop(head)
                    yield results.pop(head)
                    head += 1
                    continue
                if exhausted and not any(w.item is not None for w in self._workers):
                    return
                # Items in flight, or every worker still owes a result to an earlier map: wait for one.
                self._receive(results, window, describe)
        finally:
            self._mapping = False
            # A map left early (its consumer stopped) leaves results owed by busy workers: the next map
            # discards them instead of taking them for its own.
            for worker in self._workers:
                if worker.item is not None:
                    worker.item, worker.stale = None, worker.stale + 1

    def _receive(self, results: dict[int, Any], window: dict[int, Any], describe: Callable[[Any], str]) -> None:
        """Wait for at least one worker to answer or die; file its result under its item's index."""
        waiting = [w for w in self._workers if w.item is not None or w.stale]
        ready = set(wait([w.connection for w in waiting] + [w.process.sentinel for w in waiting]))
        for worker in waiting:
            if worker.connection not in ready and worker.process.sentinel not in ready:
                continue
            try:
                # A worker that answered and then died still has its answer in the pipe: read it first.
                answer = worker.connection.recv() if worker.connection.poll() else None
            except (EOFError, OSError):
                answer = None
            if answer is None:
                self._died(window, describe)
            ok, value, text = answer
            if worker.stale:
                worker.stale -= 1
                continue
            index, worker.item = worker.item, None
            if not ok:
                self.close(kill=True)
                raise value from RemoteTraceback(text)
            results[index] = value

    def _died(self, window: dict[int, Any], describe: Callable[[Any], str]) -> None:
        """A worker died: the stop signal that killed it, or an error naming the items in flight."""
        in_flight = sorted(w.item for w in self._workers if w.item is not None)
        self.close(kill=True)
        stopping.raise_if_requested()  # a stop signal sent to the whole process group killed it
        lost = ", ".join(describe(window[index]) for index in in_flight) or "nothing (between items)"
        raise WorkerError(f"a worker process died (killed, out of memory, or a crash in native code) while "
                          f"running: {lost}")
