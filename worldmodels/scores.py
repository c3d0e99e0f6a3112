"""One score record for every agent scored in the real env: ``scores/<agent>.json``.

V+M+C, the random and zero-action baselines, the true-state oracle and Dreamer are all written as
a :class:`Score` by the stage that plays them, on the same evaluation seeds, and read back as one
by the report; what is particular to an agent (its controller's hash, its updates, its tuned
parameters) goes in ``about`` and is written beside the common fields.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.checkpoint import atomic_write

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
            raise ValueError(f"{source}: not a score record (no {', '.join(missing)})")
        about = {key: value for key, value in record.items() if key not in _COMMON}
        return cls(record["agent"], list(record["returns"]), list(record["seeds"]),
                   record.get("env_steps_of_data"), record.get("wall_clock_s", 0.0), about)

    @classmethod
    def read(cls, path: Path) -> Score:
        try:
            record = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(record, str(path))
