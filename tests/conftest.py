"""Shared test helpers: synthetic rollout files that encode where each frame came from."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

import worldmodels  # noqa: E402, F401  (sets OpenMP's wait policy, which torch reads once when it loads)
from worldmodels.data.store import Episode, RolloutReader, RolloutWriter  # noqa: E402

SYNTHETIC_ENV = {"id": "gym:Synthetic-v0", "action_repeat": 1}

# Key tests run on every device this machine has: the CPU always, CUDA when torch sees a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here (torch.cuda.is_available() is False)"))]


def tolerance(*devices: str) -> dict[str, float]:
    """``assert_close`` tolerances for one computation done on ``devices``: tight on the CPU; on CUDA,
    cuBLAS and cuDNN pick kernels by shape (a batch of 5 rows and one row alone take different ones)
    and cuDNN's recurrent kernels may use TF32 (10-bit mantissa), about 1e-3 relative (an H200 gave 8e-4)."""
    if any(device.startswith("cuda") for device in devices):
        return {"rtol": 2e-3, "atol": 2e-4}
    return {"rtol": 1e-5, "atol": 1e-6}


def smoke_config(*overrides: str):
    """The smoke pipeline (``pipelines/smoke.yaml``, the tests' one source of small settings) with a
    test's own ``section.key=value`` overrides."""
    from worldmodels.config import load_pipeline

    return load_pipeline("smoke", overrides)


def synthetic_episode(number: int, length: int, frame_size: int = 8) -> Episode:
    """Frames whose pixels say (episode number, time step): channel 0 = number, channel 1 = t."""
    frames = np.zeros((length + 1, frame_size, frame_size, 3), np.uint8)
    frames[..., 0] = number
    frames[..., 1] = np.arange(length + 1, dtype=np.uint8)[:, None, None]
    actions = np.linspace(-1, 1, length * 2, dtype=np.float32).reshape(length, 2)
    rewards = np.full(length, number, np.float32) + np.arange(length, dtype=np.float32) / 100
    truncated = np.zeros(length, bool)
    truncated[-1] = True
    return Episode(frames, actions, rewards, np.zeros(length, bool), truncated,
                   seed=1000 + number, policy_seed=2000 + number, index=number, base_seed=0,
                   source="test:synthetic")


def write_synthetic(path: Path, lengths: list[int], frame_size: int = 8) -> list[Episode]:
    episodes = [synthetic_episode(i, n, frame_size) for i, n in enumerate(lengths)]
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (frame_size, frame_size, 3), 2) as writer:
        for episode in episodes:
            writer.append(episode)
    return episodes


def assert_same_rollouts(path_a: Path, path_b: Path) -> None:
    """Two rollout files hold identical episodes, data and index rows."""
    with RolloutReader(path_a) as a, RolloutReader(path_b) as b:
        assert a.num_episodes == b.num_episodes
        np.testing.assert_array_equal(a.episodes, b.episodes)
        for index in range(a.num_episodes):
            ea, eb = a.episode(index), b.episode(index)
            for name in ("frames", "actions", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name),
                                              err_msg=f"{name} of episode {index}")


@pytest.fixture(autouse=True)
def _worldmodels_logs_reach_pytest():
    """A test that ran `wm` configured the package's logger not to propagate; give pytest its records back."""
    logging.getLogger("worldmodels").propagate = True
    yield


@pytest.fixture
def synthetic_file(tmp_path: Path) -> tuple[Path, list[Episode]]:
    path = tmp_path / "rollouts.h5"
    return path, write_synthetic(path, [5, 9, 3, 12])


def copy_trained_m(source, tmp_path):
    """A fresh smoke pipeline folder holding ``source``'s rollouts, V, latents and M (the inputs of C and
    Dreamer), so that each test trains on the same models without retraining them."""
    from worldmodels.core.paths import PipelinePaths

    paths = PipelinePaths(tmp_path / "smoke").ensure()
    for artifact in (source.rollouts, source.vae, source.latents, source.mdnrnn):
        (paths.root / artifact.name).write_bytes(artifact.read_bytes())
    return paths
