"""The worker pool on Ray: the same contract as :class:`worldmodels.pools.local.WorkerPool`, on a cluster.

``RayWorkerPool(workers, initializer, initargs, threads_per_worker).map(function, items)`` yields
``function(item)`` in item order, as the local pool does; what changes is where the work runs. Each
worker is a Ray actor (one process holding its native libraries to ``threads_per_worker`` threads) that runs
``initializer(*initargs)`` once and then serves items, so the state it builds (an env; V and M for
the real-env fitness) is made once per worker, not once per item. Large arguments (V, M) go to the
object store once and every actor reads them from there.

A worker that dies (its process killed, its node lost) is replaced by a fresh actor and the items it
held are played again, at most ``max_retries`` times each; then the map stops with a
:class:`~worldmodels.pools.workers.WorkerError` naming the item. An exception raised *by* ``function`` is
not retried (it would raise again): it is re-raised as it was in the worker.

Ray is an optional dependency (``pip install 'worldmodels[ray]'``); the local backend never imports it.
The cluster: ``runtime.ray_address`` (or the ``RAY_ADDRESS`` environment variable; ``auto`` joins the
cluster this machine belongs to), else a Ray started for this process with every core of this machine.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from worldmodels.core import stopping
from worldmodels.pools.workers import WorkerError, thread_limits

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
"""How many times an item whose worker died is played again before the map gives up."""


def connect(address: str | None, num_cpus: int | None = None) -> Any:
    """Import Ray and join (or start, with ``num_cpus``: default every core) the cluster once per process;
    returns the ``ray`` module."""
    try:
        import ray
    except ImportError:
        raise WorkerError("runtime.backend=ray needs Ray: pip install 'worldmodels[ray]' "
                          "(or runtime.backend=local)") from None
    if not ray.is_initialized():
        # Workers import this package and the tests' helper envs as the driver does.
        paths = [os.getcwd(), *[p for p in sys.path if p and os.path.isdir(p)]]
        env_vars = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        if "MUJOCO_GL" in os.environ:
            env_vars["MUJOCO_GL"] = os.environ["MUJOCO_GL"]
        started_here = address is None and not os.environ.get("RAY_ADDRESS")
        ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=False,
                 logging_level=logging.WARNING,
                 **({"num_cpus": num_cpus, "include_dashboard": False} if started_here else {}))
        logger.info(f"ray: {ray.cluster_resources().get('CPU', 0):g} CPUs on {len(ray.nodes())} node(s)")
        stopping.reclaim()  # Ray's own SIGTERM handler would exit 1 with a stack dump instead of unwinding
    return ray


class _Worker:
    """The actor's body: the initializer once, then ``function(item)`` per call."""

    def __init__(self, initializer: Callable[..., None], initargs: tuple[Any, ...], threads: int) -> None:
        from worldmodels.pools.workers import start_worker

        start_worker(initializer, initargs, threads, parent_pid=None)

    def run(self, function: Callable[[Any], Any], item: Any) -> Any:
        return function(item)

    def pid(self) -> int:
        return os.getpid()


class RayWorkerPool:
    """``workers`` Ray actors serving maps in item order (see the module's docstring)."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = (),
                 threads_per_worker: int = 1, max_in_flight: int | None = None, address: str | None = None,
                 max_retries: int = MAX_RETRIES) -> None:
        self.ray = connect(address)
        self.workers = max(workers, 1)
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        if self.workers * threads_per_worker > cpus > 0:
            capped = max(cpus // threads_per_worker, 1)
            logger.warning(f"ray: {self.workers} workers x {threads_per_worker} CPUs asked, the cluster has "
                           f"{cpus} CPUs: {capped} workers")
            self.workers = capped
        self.threads, self.max_retries = threads_per_worker, max_retries
        self.limit = max_in_flight or 2 * self.workers
        # Ray's default for an actor: a CPU to be placed, none held while it lives. Holding its CPUs would
        # deadlock a second pool of the same command (C's periodic real check while the fitness workers
        # live) on a cluster that the first one fills; the workers' number is the cap on CPU use instead.
        # SPREAD puts them on as many nodes as it can.
        self._actor_class = self.ray.remote(max_restarts=0, scheduling_strategy="SPREAD",
                                            runtime_env={"env_vars": thread_limits(threads_per_worker)})(_Worker)
        # Put once: every actor reads the same object instead of a copy sent with each one.
        self._initargs = self.ray.put(initargs)
        self._initializer = initializer
        self.actors = [self._new_actor() for _ in range(self.workers)]

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._initializer, self._initargs, self.threads)

    def __enter__(self) -> RayWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, kill: bool = True) -> None:
        """End the actors at once (their processes go back to Ray); ``kill`` is accepted for the local pool's
        signature: an actor is always ended, never left to finish its item."""
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor already gone
                pass
        self.actors = []

    def worker_pids(self) -> list[int]:
        """The process ids of the actors (for tests that kill one)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def map(self, function: Callable[[Item], Result], items: Iterable[Item],
            describe: Callable[[Item], str] = repr) -> Iterator[Result]:
        """Yield ``function(item)`` for each item, in order.

        Each worker holds one item at a time, so that a worker's death is blamed on the item it was
        running; at most ``limit`` items past the next one to yield are started (memory stays bounded)."""
        ray = self.ray
        from ray import exceptions

        died = tuple(getattr(exceptions, name) for name in ("RayActorError", "ActorUnavailableError",
                                                            "WorkerCrashedError", "NodeDiedError")
                     if hasattr(exceptions, name))
        remaining = iter(items)
        window: dict[int, Any] = {}  # index -> item, for the items started and not yet yielded
        results: dict[int, Any] = {}
        in_flight: dict[Any, tuple[int, int]] = {}  # ref -> (index, worker)
        to_run: deque[int] = deque()  # indices waiting for a worker (items played again first)
        tries: dict[int, int] = {}
        idle = deque(range(len(self.actors)))
        head, started, exhausted = 0, 0, False
        while True:
            while not exhausted and started < head + self.limit and len(to_run) < len(idle):
                item = next(remaining, _DONE)
                if item is _DONE:
                    exhausted = True
                    break
                window[started] = item
                to_run.append(started)
                started += 1
            while to_run and idle:
                index, worker = to_run.popleft(), idle.popleft()
                in_flight[self.actors[worker].run.remote(function, window[index])] = (index, worker)
            if head in results:
                window.pop(head)
                yield results.pop(head)
                head += 1
                continue
            if not in_flight:
                return
            try:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
            except SystemExit:
                stopping.raise_if_requested()  # Ray turns a stop signal met in its wait into SystemExit(1)
                raise
            for ref in ready:
                index, worker = in_flight.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except exceptions.RayTaskError as error:
                    self.close()
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise WorkerError(f"{describe(window[index])} failed in a Ray worker: {error}") from None
                except died as error:
                    tries[index] = tries.get(index, 0) + 1
                    self._replace(worker, window[index], tries[index], describe, error)
                    to_run.appendleft(index)
                idle.append(worker)

    def _replace(self, worker: int, item: Any, tries: int, describe: Callable[[Any], str],
                 error: BaseException) -> None:
        """Worker ``worker`` died running ``item`` (for the ``tries``-th time): a fresh actor in its place,
        or, past ``max_retries``, an error naming the item."""
        if tries > self.max_retries:
            self.close()
            raise WorkerError(f"a Ray worker died {tries} times while running {describe(item)} (killed, out "
                              f"of memory, a lost node, or a crash in native code): {type(error).__name__}")
        logger.warning(f"ray: a worker died while running {describe(item)}; playing it again "
                       f"(try {tries} of {self.max_retries})")
        try:
            self.ray.kill(self.actors[worker])
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[worker] = self._new_actor()


_DONE: Any = object()
