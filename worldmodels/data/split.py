"""The held-out split, by episode, shared by every model (V, M and Dreamer).

An episode is held out when a uniform number drawn from its env seed falls below the fraction.
The choice depends only on the episode itself, so it is the same for every stage and an
episode's side never changes as more episodes are appended.
"""

from __future__ import annotations

import numpy as np

from worldmodels.data.store import PLAYED_SOURCE_PREFIX


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


def repeat_played(episodes: np.ndarray, sources: np.ndarray, repeat: int) -> np.ndarray:
    """``(E,)`` episode numbers -> the same with every episode a V + M + C played listed ``repeat``
    times (the copies appended after the originals), so that a training epoch sees it that often.

    ``sources``: the source of every episode of the file (``rollouts.episodes["source"]``, bytes or
    str), indexed by episode number.
    """
    episodes = np.asarray(episodes, dtype=np.int64)
    if repeat == 1 or len(episodes) == 0:
        return episodes
    names = np.char.decode(sources, "utf-8") if np.asarray(sources).dtype.kind == "S" else np.asarray(sources)
    played = episodes[np.char.startswith(names[episodes], PLAYED_SOURCE_PREFIX)]
    return np.concatenate([episodes, np.tile(played, repeat - 1)])
