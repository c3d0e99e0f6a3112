"""Exploration policies: how the first rollouts pick actions before any model exists.

Every policy has the interface the agents share: ``reset(seeds)`` for ``n = len(seeds)`` envs,
then ``act(frames)`` on a batch of frames ``(n, H, W, 3)`` returning actions ``(n, A)`` in
[-1, 1]. Exploration policies ignore the frames; each env's action stream depends only on its
seed, so episodes are reproducible whatever process runs them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from worldmodels.errors import UserValueError


class Policy(abc.ABC):
    """Acts for a batch of ``n`` envs at once."""

    name: str

    @abc.abstractmethod
    def reset(self, seeds: Sequence[int]) -> None:
        """Start ``len(seeds)`` new episodes; ``seeds[i]`` fixes env ``i``'s randomness."""

    @abc.abstractmethod
    def act(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: uint8 ``(n, H, W, 3)`` -> float32 actions ``(n, A)`` in [-1, 1]."""

    def on_device(self, device: str) -> Policy:
        """This policy with its networks on ``device`` (itself when it has none): worker processes play
        on the CPU, so a policy trained on a GPU is copied there before it is shipped to them."""
        return self


class _RandomPolicy(Policy):
    """Random actions; with ``scale_min < 1`` each episode's actions are multiplied by a factor
    drawn uniformly from ``[scale_min, 1]``, so that the data also holds gentle episodes (on
    cartpole, full-strength random pushes knock the pole down at once, and a model of such data
    never sees it stay up)."""

    def __init__(self, action_size: int, scale_min: float = 1.0) -> None:
        if not 0.0 <= scale_min <= 1.0:
            raise ValueError(f"need 0 <= scale_min <= 1, got {scale_min}")
        self.action_size = action_size
        self.scale_min = scale_min
        self._rngs: list[np.random.Generator] = []
        self._scales: list[float] = []

    def reset(self, seeds: Sequence[int]) -> None:
        self._rngs = [np.random.default_rng(int(seed)) for seed in seeds]
        # Drawn only when asked for, so that files collected without scaling stay reproducible.
        self._scales = [float(rng.uniform(self.scale_min, 1.0)) if self.scale_min < 1 else 1.0 for rng in self._rngs]
        self._start()

    def _start(self) -> None:
        """Per-episode state after the generators are seeded."""

    def act(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) != len(self._rngs):
            raise ValueError(f"policy was reset for {len(self._rngs)} envs, got {len(frames)} frames")
        return np.stack([self._scales[i] * self._next(i, rng) for i, rng in enumerate(self._rngs)]).astype(np.float32)

    @abc.abstractmethod
    def _next(self, env_index: int, rng: np.random.Generator) -> np.ndarray:
        """The next action ``(A,)`` of env ``env_index``."""


class UniformRandomPolicy(_RandomPolicy):
    """A fresh uniform action in [-1, 1] at every step."""

    name = "random"

    def _next(self, env_index: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, self.action_size)


class HeldRandomPolicy(_RandomPolicy):
    """A uniform action held for a uniform number of steps in ``hold_min..hold_max`` (Doom's policy)."""

    name = "held_random"

    def __init__(self, action_size: int, hold_min: int = 1, hold_max: int = 10, scale_min: float = 1.0) -> None:
        super().__init__(action_size, scale_min)
        if not 1 <= hold_min <= hold_max:
            raise ValueError(f"need 1 <= hold_min <= hold_max, got {hold_min}, {hold_max}")
        self.hold_min, self.hold_max = hold_min, hold_max

    def _start(self) -> None:
        self._current = [np.zeros(self.action_size)] * len(self._rngs)
        self._left = [0] * len(self._rngs)

    def _next(self, env_index: int, rng: np.random.Generator) -> np.ndarray:
        if self._left[env_index] == 0:
            self._current[env_index] = rng.uniform(-1.0, 1.0, self.action_size)
            self._left[env_index] = int(rng.integers(self.hold_min, self.hold_max + 1))
        self._left[env_index] -= 1
        return self._current[env_index]


class BrownianPolicy(_RandomPolicy):
    """A random walk ``a' = clip(a + std * N(0, 1), -1, 1)`` starting from a uniform action."""

    name = "brownian"

    def __init__(self, action_size: int, std: float = 0.1414, scale_min: float = 1.0) -> None:
        super().__init__(action_size, scale_min)
        self.std = std

    def _start(self) -> None:
        self._current = [rng.uniform(-1.0, 1.0, self.action_size) for rng in self._rngs]

    def _next(self, env_index: int, rng: np.random.Generator) -> np.ndarray:
        action = self._current[env_index]
        self._current[env_index] = np.clip(action + self.std * rng.standard_normal(self.action_size), -1, 1)
        return action


def make_exploration_policy(name: str, action_size: int, hold_min: int = 1, hold_max: int = 10,
                            brownian_std: float = 0.1414, scale_min: float = 1.0) -> Policy:
    """The exploration policy called ``name`` (``random``, ``held_random`` or ``brownian``)."""
    if name == "random":
        return UniformRandomPolicy(action_size, scale_min)
    if name == "held_random":
        return HeldRandomPolicy(action_size, hold_min, hold_max, scale_min)
    if name == "brownian":
        return BrownianPolicy(action_size, brownian_std, scale_min)
    raise UserValueError(f"collect.policy: unknown exploration policy {name!r} (known: random, held_random, brownian)")
