"""The baselines every agent is scored beside: doing nothing, and a linear policy on the true state."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldmodels.envs.policies import Policy


class ZeroPolicy(Policy):
    """a = 0 at every step: on cartpole the pole starts upright, so doing nothing scores well."""

    name = "zero"

    def __init__(self, action_size: int) -> None:
        self.action_size = action_size

    def reset(self, seeds: Sequence[int]) -> None:
        self._count = len(seeds)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros((len(frames), self.action_size), np.float32)


class StateLinearPolicy:
    """The oracle's form, ``a = tanh(W s + b)`` on the true state ``s`` ``(S,)``, from its flat parameters
    ``[W row by row, b]`` (what the oracle's CMA-ES searches over)."""

    def __init__(self, parameters, state_size: int, action_size: int) -> None:
        flat = np.asarray(parameters, dtype=np.float64)
        if len(flat) != action_size * (state_size + 1):
            raise ValueError(f"the oracle has {len(flat)} parameters; a state of {state_size} and {action_size} "
                             f"actions need {action_size * (state_size + 1)}")
        self.weights = flat[:action_size * state_size].reshape(action_size, state_size)
        self.bias = flat[action_size * state_size:]

    def preactivation(self, state: np.ndarray) -> np.ndarray:
        """``W s + b`` ``(A,)``: what the tanh squashes into the action."""
        return self.weights @ state + self.bias

    def __call__(self, state: np.ndarray) -> np.ndarray:
        return np.tanh(self.preactivation(state))
