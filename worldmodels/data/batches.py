"""Shuffled batches of frames streamed from a rollouts file, read ahead in a thread.

Only the rows of the current and the next batches are in memory, so a file larger than RAM
trains. The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same
batches an uninterrupted one would have.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from worldmodels.data.store import RolloutReader
from worldmodels.errors import UserValueError

_END = object()


class ShuffledFrameBatches:
    """Batches of frames from ``rows`` of /frames: uint8 tensors ``(B, H, W, 3)``.

    The last batch of an epoch may be smaller. ``prefetch`` batches are read ahead by a thread
    while the caller computes (torch releases the GIL during its kernels).
    """

    def __init__(self, reader: RolloutReader, rows: np.ndarray, batch_size: int, seed: int,
                 prefetch: int = 3) -> None:
        if len(rows) == 0:
            raise UserValueError(f"{reader.path}: no frames to train on")
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.prefetch = prefetch

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The rows of epoch ``epoch`` in the order they are served, ``(N,)``."""
        return self.rows[np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))]

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        order = self.order(epoch)
        batches: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def read() -> None:
            try:
                for start in range(0, len(order), self.batch_size):
                    if stop.is_set():
                        return
                    rows = order[start:start + self.batch_size]
                    # Reading in file order is kinder to the disk; the batch's content is the same.
                    sorted_rows = np.sort(rows)
                    batches.put(torch.from_numpy(self.reader.read_frame_rows(sorted_rows)))
                batches.put(_END)
            except BaseException as error:  # hand the error to the consumer
                batches.put(error)

        reader = threading.Thread(target=read, name="frame-reader", daemon=True)
        reader.start()
        try:
            while (item := batches.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    batches.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)
