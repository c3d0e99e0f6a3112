"""The held-out split, by episode, shared by every model (V, M and Dreamer).

An episode is held out when a uniform number drawn from its env seed falls below the fraction.
The choice depends only on the episode itself, so it is the same for every stage and an
episode's side never changes as more episodes are appended.
"""

from __future__ import annotations

import numpy as np


def heldout_mask(episode_seeds: np.ndarray, fraction: float) -> np.ndarray:
    """``(E,)`` env seeds -> ``(E,)`` bool, True for held-out episodes.

    With at least two episodes and ``fraction > 0``, at least one episode is held out (the one
    with the smallest draw), so held-out metrics always exist.
    """
    seeds = np.asarray(episode_seeds, dtype=np.uint64)
    draws = np.array([np.random.default_rng([int(seed), 0x5EED]).random() for seed in seeds])
    mask = draws < fraction
    if fraction > 0 and len(seeds) >= 2 and not mask.any():
        mask[np.argmin(draws)] = True
    return mask


def split_episodes(episode_seeds: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Episode numbers ``(train, heldout)``, each sorted ascending."""
    mask = heldout_mask(episode_seeds, fraction)
    return np.flatnonzero(~mask), np.flatnonzero(mask)
