"""Which pool runs the work that scales with env steps: worker processes of this machine (``local``) or
actors of a Ray cluster (``ray``), chosen once per process from the pipeline's ``runtime.backend``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from worldmodels.pools.local import WorkerPool

Item = TypeVar("Item")
Result = TypeVar("Result")


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
    """A :class:`WorkerPool`, or with the ``ray`` backend a :class:`~worldmodels.pools.ray_cluster.RayWorkerPool`:
    the same ``map`` and the same results. ``workers == 0`` always runs in this process."""
    if _backend["name"] == "ray" and workers > 0:
        from worldmodels.pools.ray_cluster import RayWorkerPool

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
