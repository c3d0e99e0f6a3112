"""Stage `collect`: exploration episodes from the real env into ``rollouts.h5``.

Episode ``i`` is seeded from ``(collect.seed, i)``, so the file's content does not depend on the
number of workers; episodes are committed in order. Re-running resumes up to
``collect.episodes``; raising that number appends. A killed run loses only the episodes in
flight. With ``collect.source`` the episodes of another rollouts file are copied instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldmodels.config import CollectConfig, EnvConfig, PipelineConfig
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.data.store import (
    Episode,
    RolloutReader,
    RolloutWriter,
    StoreError,
    env_differences,
    first_unwritten_episode,
    stored_source,
)
from worldmodels.envs import make_env, make_exploration_policy, probe_env
from worldmodels.evaluation.rollout import episode_seeds, run_episode
from worldmodels.pools.backend import ordered_map
from worldmodels.pools.workers import WorkerError

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "collect:"

# One env and one policy per worker process, built once by the initializer.
_worker: dict[str, Any] = {}


def _init_worker(env_config: EnvConfig, collect_config: CollectConfig) -> None:
    env = make_env(env_config)
    _worker["env"] = env
    _worker["policy"] = make_exploration_policy(
        collect_config.policy, env.action_size, collect_config.hold_min, collect_config.hold_max,
        collect_config.brownian_std, collect_config.action_scale_min)
    _worker["base_seed"] = collect_config.seed
    _worker["episode_steps"] = collect_config.episode_steps
    _worker["source"] = collect_source(collect_config)


def collect_source(config: CollectConfig) -> str:
    """The ``source`` of this config's episodes: the policy, its action scaling when there is one
    and its episode length when cut (``@<steps>``), as the file's 32 bytes hold it."""
    scaled = f"*U[{config.action_scale_min:g},1]" if config.action_scale_min < 1 else ""
    cut = f"@{config.episode_steps}" if config.episode_steps else ""
    return stored_source(SOURCE_PREFIX + config.policy + scaled + cut)


def _describe(index: int, base_seed: int) -> str:
    env_seed, policy_seed = episode_seeds(base_seed, index)
    return f"episode {index} (env seed {env_seed}, policy seed {policy_seed})"


def _collect_episode(index: int) -> Episode:
    base_seed = _worker["base_seed"]
    env_seed, policy_seed = episode_seeds(base_seed, index)
    try:
        episode = run_episode(_worker["env"], _worker["policy"], env_seed, policy_seed, _worker["episode_steps"])
    except Exception as error:
        detail = traceback.format_exc(limit=-3)
        raise WorkerError(f"{_describe(index, base_seed)} failed: {type(error).__name__}: {error}\n"
                          f"{detail}") from None
    episode.index, episode.base_seed, episode.source = index, base_seed, _worker["source"]
    return episode


def _episodes_done(rows: np.ndarray, path: Path, config: CollectConfig) -> int:
    """How many of this config's collect episodes the index ``rows`` of ``path`` hold (checked to be 0..n-1)."""
    sources = np.char.decode(rows["source"]) if len(rows) else np.zeros(0, str)
    mine = rows[np.char.startswith(sources, SOURCE_PREFIX)] if len(rows) else rows
    wanted = collect_source(config)
    for row in mine:
        source = row["source"].decode()
        if source != wanted or int(row["base_seed"]) != config.seed:
            raise StoreError(
                f"{path} holds episodes collected with policy {source[len(SOURCE_PREFIX):]} and "
                f"seed {int(row['base_seed'])}; this config asks for {wanted[len(SOURCE_PREFIX):]} and "
                f"collect.seed={config.seed}. Use another --data-dir, or delete the file to start over.")
    if not np.array_equal(mine["index"], np.arange(len(mine))):
        raise StoreError(f"{path}: collect episodes are not numbered 0..{len(mine) - 1} (a damaged file)")
    return len(mine)


def source_path(config: CollectConfig, paths: PipelinePaths) -> Path:
    """``collect.source`` as a path: as given when absolute, else under the data dir."""
    source = Path(config.source)
    return source if source.is_absolute() else paths.root.parent / source


def copy_episodes(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Fill ``paths.rollouts`` with a copy of every episode of ``collect.source`` (the env settings must
    be the same); episodes already copied are kept, so a grown source is topped up."""
    source = source_path(config.collect, paths)
    if not source.is_file():
        raise FileNotFoundError(f"collect.source: {source} does not exist (the pipeline that writes it must "
                                "run first, e.g. `make dreamer PIPELINE=cartpole_balance_dreamer`)")
    paths.ensure()
    with RolloutReader(source) as reader:
        env_config = dataclasses.asdict(config.env)
        detail = env_differences(reader.env_config, env_config)
        if detail:
            raise StoreError(f"collect.source: {source} was played with other env settings than this pipeline's "
                             f"({detail})")
        with RolloutWriter(paths.rollouts, env_config, reader.env_info, reader.frame_shape,
                           reader.action_size, config.collect.compression) as writer:
            done = writer.num_episodes
            mine, theirs = writer.episode_rows(), reader.episodes[:done]
            if done > reader.num_episodes or not np.array_equal(mine["seed"], theirs["seed"]):
                raise StoreError(f"{paths.rollouts} holds other episodes than {source}. Delete it to copy again.")
            for index in tqdm(range(done, reader.num_episodes), desc="copy", unit="ep", disable=not progress,
                              dynamic_ncols=True):
                writer.append(reader.episode(index))
            logger.info(f"{paths.rollouts}: {reader.num_episodes} episodes of {source} "
                        f"({reader.num_steps * reader.action_repeat:,} env steps)")
    return paths.rollouts


def _already_complete(config: PipelineConfig, paths: PipelinePaths) -> bool:
    """Whether ``rollouts.h5`` holds every episode asked for, whole and of this env, read without opening it
    for writing (HDF5 touches a file it opens to write, and a re-run with nothing to do must not count as work)."""
    if not paths.rollouts.is_file():
        return False
    with RolloutReader(paths.rollouts) as reader:
        if env_differences(reader.env_config, dataclasses.asdict(config.env)) or \
                first_unwritten_episode(reader.handle) is not None:
            return False  # the writer says what is wrong, or mends it
        done = _episodes_done(reader.episodes, reader.path, config.collect)
    if done < config.collect.episodes:
        return False
    logger.info(f"{paths.rollouts}: already holds {done} collect episodes (asked for {config.collect.episodes})")
    return True


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Fill ``paths.rollouts`` up to ``config.collect.episodes`` collect episodes (or copy them from
    ``collect.source``); return its path."""
    collect = config.collect
    if collect.source is not None:
        return copy_episodes(config, paths, progress)
    resolve(config.runtime).apply()  # the workers' backend
    if _already_complete(config, paths):
        return paths.rollouts
    env_info, frame_shape, action_size = probe_env(config.env)
    paths.ensure()
    with RolloutWriter(paths.rollouts, dataclasses.asdict(config.env), env_info, frame_shape,
                       action_size, collect.compression) as writer:
        done = _episodes_done(writer.episode_rows(), writer.path, collect)
        if done >= collect.episodes:
            logger.info(f"{paths.rollouts}: already holds {done} collect episodes (asked for {collect.episodes})")
            return paths.rollouts
        todo = range(done, collect.episodes)
        steps = 0
        started = time.perf_counter()
        with tqdm(total=collect.episodes, initial=done, unit="ep", desc="collect",
                  disable=not progress, dynamic_ncols=True) as bar:
            for episode in ordered_map(_collect_episode, todo, collect.workers, _init_worker,
                                       (config.env, collect),
                                       describe=lambda i: _describe(i, collect.seed),
                                       threads_per_worker=collect.threads_per_worker):
                writer.append(episode)
                steps += episode.length
                elapsed = time.perf_counter() - started
                bar.set_postfix(steps_per_s=f"{steps / elapsed:.0f}", ret=f"{episode.total_return:.0f}")
                bar.update(1)
                if not progress:
                    logger.info(f"committed episode {episode.index + 1}/{collect.episodes}: "
                                f"return {episode.total_return:.1f}, {steps / elapsed:.0f} steps/s")
    return paths.rollouts
