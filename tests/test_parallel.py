import os

import pytest
import torch

from worldmodels.pools.backend import ordered_map


def _nothing():
    pass


def _threads_seen(_item):
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.environ.get("LP_NUM_THREADS")


@pytest.mark.slow
def test_workers_run_with_the_thread_limits_they_were_given():
    # The pool spawns its processes lazily, after the parent's environment block has ended; the
    # limits must still reach them, or two workers oversubscribe a two-core machine.
    before = os.environ.get("OMP_NUM_THREADS")
    seen = list(ordered_map(_threads_seen, range(4), 2, _nothing, threads_per_worker=1))
    assert seen == [(1, "1", "0")] * 4
    assert os.environ.get("OMP_NUM_THREADS") == before  # the parent's own settings are left alone


def test_results_come_back_in_item_order():
    assert list(ordered_map(abs, [-3, 2, -1, 0, -5], 2, _nothing)) == [3, 2, 1, 0, 5]


def _slow_times_100(x):
    import time

    time.sleep(0.05)
    return x * 100


class _NeedsTwoArguments(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def _raise_what_does_not_unpickle(_item):
    raise _NeedsTwoArguments(1, 2)


def _return_what_does_not_pickle(_item):
    return lambda: None


def test_a_map_left_early_leaves_the_pool_to_the_next_map_and_two_at_once_are_refused():
    from worldmodels.pools.local import WorkerPool

    with WorkerPool(2, _nothing) as pool:
        first = pool.map(_slow_times_100, [1, 2, 3, 4])
        assert next(first) == 100
        first.close()  # both workers still owe it a result: the next map must not take them for its own
        assert list(pool.map(_slow_times_100, [5, 6, 7])) == [500, 600, 700]
        second = pool.map(_slow_times_100, [1, 2, 3])
        assert next(second) == 100
        with pytest.raises(RuntimeError, match="another map of this pool is under way"):
            list(pool.map(_slow_times_100, [8, 9]))
        assert list(second) == [200, 300]


@pytest.mark.parametrize("function, message", [(_raise_what_does_not_unpickle, "_NeedsTwoArguments: 1 and 2"),
                                               (_return_what_does_not_pickle, "cannot be sent back")])
def test_what_cannot_cross_the_pipe_is_an_error_naming_it_not_a_dead_worker(function, message):
    from worldmodels.pools.workers import WorkerError

    with pytest.raises(WorkerError, match=message):
        list(ordered_map(function, [1, 2], 2, _nothing))
