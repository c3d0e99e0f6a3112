"""Published learning curves kept as data, to draw our runs against.

``dreamer_v1_dmc_curves.json``: the official Dreamer v1's evaluation returns on DeepMind Control from
64x64 pixels at action repeat 2, five seeds per task, every 100k env steps from 5k to 1,005k; its
``source`` field names where the numbers were read. At 5k env steps no update has been made yet, so
that point is the untrained actor (cartpole-balance: 136 +- 1).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

DREAMER_V1_CURVES = Path(__file__).with_name("dreamer_v1_dmc_curves.json")


@dataclasses.dataclass(frozen=True)
class Curve:
    """A published curve: ``env_steps`` ``(P,)`` and ``returns`` ``(S, P)`` of ``S`` seeds."""

    task: str
    env_steps: np.ndarray
    returns: np.ndarray
    source: str

    @property
    def mean(self) -> np.ndarray:
        return self.returns.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.returns.std(axis=0)

    def at(self, env_steps: float) -> tuple[float, float]:
        """Mean and std over seeds at the published point nearest to ``env_steps``."""
        index = int(np.abs(self.env_steps - env_steps).argmin())
        return float(self.mean[index]), float(self.std[index])


def task_name(env_id: str) -> str:
    """Our env id -> the curve file's task name: ``dmc:cartpole-balance`` -> ``dmc_cartpole_balance``."""
    return env_id.replace(":", "_").replace("-", "_")


def dreamer_v1_curve(env_id: str, path: Path = DREAMER_V1_CURVES) -> Curve | None:
    """The official Dreamer v1 curve of the task ``env_id`` names, or None when it was not published."""
    data = json.loads(Path(path).read_text())
    task = task_name(env_id)
    runs = [run for run in data["runs"] if run["task"] == task]
    if not runs:
        return None
    env_steps = np.asarray(runs[0]["env_steps"], dtype=np.float64)
    for run in runs:
        if not np.array_equal(np.asarray(run["env_steps"], dtype=np.float64), env_steps):
            raise ValueError(f"{path}: seed {run['seed']} of {task} is measured at other env steps than seed "
                             f"{runs[0]['seed']}")
    return Curve(task, env_steps, np.array([run["return"] for run in runs], dtype=np.float64), data["source"])
