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
