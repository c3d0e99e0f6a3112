"""The one environment interface every stage sees.

``reset(seed) -> frame`` and ``step(action) -> StepResult``; frames are uint8 ``(H, W, 3)`` and
actions float vectors in ``[-1, 1]^A`` that each adapter maps to its env's own bounds.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from worldmodels.errors import UserValueError


@dataclass(frozen=True)
class StepResult:
    """What one agent step returns. ``frame``: uint8 ``(H, W, 3)``."""

    frame: np.ndarray
    reward: float
    terminated: bool
    truncated: bool


class PixelEnv(abc.ABC):
    """An environment seen through uint8 frames, with actions in ``[-1, 1]^action_size``."""

    frame_shape: tuple[int, int, int]
    action_size: int

    @abc.abstractmethod
    def reset(self, seed: int) -> np.ndarray:
        """Start an episode determined by ``seed``; return its first frame ``(H, W, 3)`` uint8."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply ``action`` (shape ``(action_size,)``, in [-1, 1]) for one agent step."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the env (ids, bounds, time limit), stored with the rollouts."""

    def close(self) -> None:  # noqa: B027 - most envs have nothing to free
        """Free the env's resources (GL contexts, windows)."""

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_size,):
            raise ValueError(f"action must have shape ({self.action_size},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        # Exploration noise may step just outside the box; the env sees the box's edge.
        return np.clip(action, -1.0, 1.0)


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``action`` in [-1, 1] linearly onto ``[low, high]`` (elementwise)."""
    return low + (action + 1.0) * 0.5 * (high - low)


def crop_and_resize(image: np.ndarray, crop: tuple[int, int] | None, size: int) -> np.ndarray:
    """Keep rows ``[top, bottom)`` of ``image`` ``(H, W, 3)``, then resize to ``(size, size, 3)`` uint8.

    Pillow's area averaging (``BOX``): gymnasium's resize wrapper needs OpenCV, which we do not depend on.
    """
    image = np.asarray(image)
    if crop is not None:
        top, bottom = crop
        if bottom > image.shape[0]:
            raise UserValueError(f"env.crop: rows {top}:{bottom} exceed the frame height {image.shape[0]}")
        image = image[top:bottom]
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BOX))
    return np.ascontiguousarray(image, dtype=np.uint8)
