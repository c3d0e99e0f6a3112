"""Playing a policy in the real env (episodes run in lockstep so that the policy acts on a batch), and
the one score record every scored agent is written as (:class:`Score`, ``scores/<agent>.json``).

Evaluation seeds come from ``SeedSequence([seed, stream, i])``: a different stream from the
collect seeds ``SeedSequence([seed, i])``, so no evaluation episode starts where a training
episode did. With ``workers > 0`` groups of episodes run in worker processes, each holding its
own copy of the policy; the returns do not depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.config import EnvConfig
from worldmodels.core.checkpoint import atomic_write
from worldmodels.data.store import Episode
from worldmodels.envs import make_env
from worldmodels.envs.policies import Policy
from worldmodels.errors import UserValueError
from worldmodels.pools.backend import ordered_map

EVALUATION_STREAM = 0xE7A1  # the final score (`wm evaluate`)
CHECK_STREAM = 0xC4EC  # the periodic real-env checks during C's training
ORACLE_STREAM = 0x0AC1  # the true-state oracle's training episodes
REAL_FITNESS_STREAM = 0xF177  # C's fitness episodes with `--in real`
ITERATION_STREAM = 0x17E4  # on-policy episodes of the iterative procedure


def evaluation_seeds(base_seed: int, count: int, stream: int = EVALUATION_STREAM, offset: int = 0) -> list[int]:
    """The env seeds of episodes ``offset .. offset + count - 1`` of ``stream``."""
    return [int(np.random.SeedSequence([base_seed, stream, i]).generate_state(1, dtype=np.uint32)[0])
            for i in range(offset, offset + count)]


def play_episodes(env_config: EnvConfig, policy: Policy, env_seeds: Sequence[int],
                  policy_seeds: Sequence[int] | None = None, batch: int = 8) -> Iterator[Episode]:
    """Play one episode per env seed, ``batch`` envs at a time in lockstep; yield them in order.

    ``policy.reset`` gets ``policy_seeds`` (default: the env seeds), which fix its own randomness.
    """
    policy_seeds = list(env_seeds if policy_seeds is None else policy_seeds)
    envs = [make_env(env_config) for _ in range(min(batch, len(env_seeds)))]
    try:
        for first in range(0, len(env_seeds), len(envs)):
            group = list(env_seeds[first:first + len(envs)])
            active = envs[:len(group)]
            frames = [[env.reset(seed)] for env, seed in zip(active, group, strict=True)]
            steps: list[list[tuple[np.ndarray, Any]]] = [[] for _ in group]
            policy.reset(policy_seeds[first:first + len(group)])
            done = np.zeros(len(group), bool)
            while not done.all():
                actions = policy.act(np.stack([episode_frames[-1] for episode_frames in frames]))
                for index, env in enumerate(active):
                    if done[index]:
                        continue
                    result = env.step(actions[index])
                    frames[index].append(result.frame)
                    steps[index].append((actions[index], result))
                    done[index] = result.terminated or result.truncated
            for index, seed in enumerate(group):
                results = [result for _, result in steps[index]]
                yield Episode(frames=np.stack(frames[index]),
                              actions=np.stack([action for action, _ in steps[index]]).astype(np.float32),
                              rewards=np.array([r.reward for r in results], np.float32),
                              terminated=np.array([r.terminated for r in results], bool),
                              truncated=np.array([r.truncated for r in results], bool),
                              seed=int(seed), policy_seed=int(policy_seeds[first + index]))
    finally:
        for env in envs:
            env.close()


_worker: dict[str, Any] = {}


def _init_worker(env_config: EnvConfig, policy: Policy, batch: int) -> None:
    _worker.update(env_config=env_config, policy=policy, batch=batch)


def _returns_of_group(seeds: tuple[int, ...]) -> list[tuple[float, int]]:
    """(return, agent steps) of each episode of ``seeds``."""
    episodes = play_episodes(_worker["env_config"], _worker["policy"], seeds, batch=_worker["batch"])
    return [(float(episode.rewards.sum()), len(episode.rewards)) for episode in episodes]


def _episodes_of_group(group: tuple[tuple[int, ...], tuple[int, ...]]) -> list[Episode]:
    env_seeds, policy_seeds = group
    return list(play_episodes(_worker["env_config"], _worker["policy"], env_seeds, policy_seeds,
                              batch=_worker["batch"]))


def play_in_workers(env_config: EnvConfig, policy: Policy, env_seeds: Sequence[int], policy_seeds: Sequence[int],
                    batch: int = 8, workers: int = 0) -> Iterator[Episode]:
    """:func:`play_episodes` with the groups of ``batch`` episodes played by ``workers`` workers (local
    processes or Ray actors, ``worldmodels.pools.backend.open_pool``); the same episodes in the same order
    whatever the number of workers, since each group is played as this process would play it."""
    if workers == 0:
        yield from play_episodes(env_config, policy, env_seeds, policy_seeds, batch=batch)
        return
    groups = [(tuple(env_seeds[first:first + batch]), tuple(policy_seeds[first:first + batch]))
              for first in range(0, len(env_seeds), batch)]
    for episodes in ordered_map(_episodes_of_group, groups, workers, _init_worker,
                                (env_config, policy.on_device("cpu"), batch),
                                describe=lambda group: f"episodes with env seeds {list(group[0])}"):
        yield from episodes


def evaluate_policy(env_config: EnvConfig, policy: Policy, seeds: Sequence[int], batch: int = 8,
                    workers: int = 0) -> np.ndarray:
    """Real returns ``(len(seeds),)`` of ``policy``, ``batch`` envs at a time in lockstep.

    ``workers == 0`` plays in this process; otherwise groups of ``batch`` seeds go to that many
    worker processes (a dead worker raises :class:`~worldmodels.pools.workers.WorkerError`).
    """
    return play_returns(env_config, policy, seeds, batch, workers)[0]


def play_returns(env_config: EnvConfig, policy: Policy, seeds: Sequence[int], batch: int = 8,
                 workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_policy`'s returns ``(len(seeds),)``, and the agent steps each episode lasted
    ``(len(seeds),)`` (times ``env.action_repeat``: the env steps it used)."""
    groups = [tuple(seeds[first:first + batch]) for first in range(0, len(seeds), batch)]
    if workers == 0:
        _init_worker(env_config, policy, batch)
        results = [_returns_of_group(group) for group in groups]
    else:
        # Workers play on the CPU: a copy of the policy's networks goes to them, never CUDA tensors.
        results = list(ordered_map(_returns_of_group, groups, workers, _init_worker,
                                   (env_config, policy.on_device("cpu"), batch),
                                   describe=lambda group: f"evaluation episodes with env seeds {list(group)}"))
    played = [pair for group in results for pair in group]
    return (np.array([value for value, _ in played], dtype=np.float64),
            np.array([steps for _, steps in played], dtype=np.int64))


# The one score record. V+M+C, the random and zero-action baselines, the true-state oracle and Dreamer
# are all written as a Score by the stage that plays them, on the same evaluation seeds, and read back
# as one by the report; what is particular to an agent (its controller's hash, its updates, its tuned
# parameters) goes in ``about`` and is written beside the common fields.
_COMMON = ("agent", "episodes", "mean", "std", "returns", "seeds", "env_steps_of_data", "wall_clock_s")


@dataclasses.dataclass(frozen=True)
class Score:
    """Real returns of one agent over evaluation episodes, and what it was trained on."""

    agent: str
    returns: list[float]
    seeds: list[int]
    env_steps_of_data: int | None
    """Env steps of data the agent learned from (None: a baseline that learns nothing)."""
    wall_clock_s: float = 0.0
    about: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, agent: str, returns: np.ndarray, seeds: list[int], env_steps_of_data: int | None,
           wall_clock_s: float = 0.0, **about: Any) -> Score:
        return cls(agent, [float(r) for r in returns], [int(s) for s in seeds], env_steps_of_data, wall_clock_s,
                   about)

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: the common fields, then ``about``'s."""
        return {"agent": self.agent, "episodes": self.episodes, "mean": self.mean, "std": self.std,
                "returns": self.returns, "seeds": self.seeds, "env_steps_of_data": self.env_steps_of_data,
                "wall_clock_s": self.wall_clock_s, **self.about}

    def write(self, path: Path) -> Score:
        atomic_write(path, lambda temporary: temporary.write_text(json.dumps(self.to_dict(), indent=1)))
        return self

    def summary(self) -> str:
        return f"{self.mean:.1f} +- {self.std:.1f} over {self.episodes} episodes"

    @classmethod
    def from_dict(cls, record: dict[str, Any], source: str = "a score") -> Score:
        missing = [key for key in ("agent", "returns", "seeds") if key not in record]
        if missing:
            raise UserValueError(f"{source}: not a score record (no {', '.join(missing)})")
        about = {key: value for key, value in record.items() if key not in _COMMON}
        return cls(record["agent"], list(record["returns"]), list(record["seeds"]),
                   record.get("env_steps_of_data"), record.get("wall_clock_s", 0.0), about)

    @classmethod
    def read(cls, path: Path) -> Score:
        try:
            record = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise UserValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(record, str(path))


def searches_beside_reality(dreams: list[float], chosen: int, reals: list[float]) -> dict[str, Any]:
    """Several CMA-ES searches of C: their dream scores, the dream's pick, and their real scores on the
    evaluation episodes, shown beside the pick and never used by it: does the dream rank the searches as
    reality does? (``restart_dream_real_correlation``: NaN where either side does not vary.)"""
    spread = np.std(dreams) > 0 and np.std(reals) > 0
    return {"restart_dream_means": dreams, "restart_chosen": chosen, "restart_real_means": reals,
            "restart_dream_real_correlation": float(np.corrcoef(dreams, reals)[0, 1]) if spread else float("nan")}
