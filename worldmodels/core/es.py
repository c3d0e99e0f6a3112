"""CMA-ES (the ``cma`` package) maximising a fitness, with a state that can be saved and resumed.

``cma`` minimises, so the fitness is negated on the way in. The whole optimiser (mean, step size,
covariance, evolution paths and its random state) is one picklable object, saved with the
controller's checkpoints so that a killed run continues at its generation.
"""

from __future__ import annotations

import io
import pickle

import cma
import numpy as np


class CMAES:
    """``ask()`` a population ``(P, D)``, ``tell(population, fitness)`` with fitness ``(P,)``, higher better."""

    def __init__(self, dimension: int, sigma0: float, popsize: int, seed: int,
                 x0: np.ndarray | None = None, step_scales: np.ndarray | None = None) -> None:
        """``step_scales`` ``(D,)``: each coordinate's first step is ``sigma0`` times its scale (cma's
        ``CMA_stds``); None: the same ``sigma0`` everywhere."""
        start = np.zeros(dimension) if x0 is None else np.asarray(x0, dtype=np.float64)
        # cma treats seed 0 as "pick one at random": shift it so that every seed is reproducible.
        options = {"popsize": popsize, "seed": seed + 1, "verbose": -9, "verb_disp": 0, "verb_log": 0}
        if step_scales is not None:
            scales = np.asarray(step_scales, dtype=np.float64)
            if scales.shape != (dimension,) or not np.all(scales > 0):
                raise ValueError(f"step_scales must be {dimension} positive numbers, got shape {scales.shape}")
            if not np.all(scales == 1.0):  # all ones is the isotropic start: leave cma's default path
                options["CMA_stds"] = scales.tolist()
        self._strategy = cma.CMAEvolutionStrategy(start, sigma0, options)
        self.generation = 0

    def ask(self) -> np.ndarray:
        return np.asarray(self._strategy.ask())

    def tell(self, population: np.ndarray, fitness: np.ndarray) -> None:
        self._strategy.tell(list(population), list(-np.asarray(fitness, dtype=np.float64)))
        self.generation += 1

    @property
    def mean(self) -> np.ndarray:
        """The distribution's mean: the current best guess, ``(D,)``."""
        return np.asarray(self._strategy.mean)

    @property
    def sigma(self) -> float:
        return float(self._strategy.sigma)

    def state(self) -> bytes:
        return pickle.dumps(self)

    @staticmethod
    def from_state(state: bytes) -> CMAES:
        restored = _StateUnpickler(io.BytesIO(state)).load()
        if not isinstance(restored, CMAES):
            raise ValueError("not a saved CMAES state")
        return restored


class _StateUnpickler(pickle.Unpickler):
    """Reads states saved before this module moved from ``worldmodels.es`` to ``worldmodels.core.es``, so
    that a search stopped then resumes now."""

    def find_class(self, module: str, name: str) -> object:
        return super().find_class("worldmodels.core.es" if module == "worldmodels.es" else module, name)
