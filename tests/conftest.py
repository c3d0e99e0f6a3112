"""Shared test helpers: synthetic rollout files that encode where each frame came from, and the one smoke run
of the session (``smoke_run``) that the tests reading a trained pipeline share."""

from __future__ import annotations

import logging
import os
import shutil
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


# ------------------------------------------------------------------------------------ the shared smoke run

# Beyond pipelines/smoke.yaml (what tests/test_readout.py's assertions count on, written out): the readout of
# the two input sets its tests name (state and [z, h]). No other stage reads oracle.generations or readout.*.
SHARED_SMOKE = ("oracle.generations=2", "readout.oracle_episodes=2", "readout.dagger_rounds=1",
                "readout.dagger_episodes=1", "readout.fit_epochs=5", "readout.eval_episodes=2",
                "readout.inputs=[state, zh]")
SMOKE_STAGES = ("collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "evaluate", "oracle",
                "readout", "state-model", "dreamer")
# Stages after which the run's whole folder is also kept as it stood then, for tests that copy a run at that
# point (the live folder goes on to later stages as tests ask for them).
SNAPSHOT_STAGES = ("encode", "train-controller")


def _stage_module(name: str):
    from worldmodels.stages import (
        collect,
        controller,
        dreamer,
        encode,
        evaluate,
        mdnrnn,
        oracle,
        readout,
        state_model,
        vae,
    )

    return {"collect": collect, "train-vae": vae, "encode": encode, "train-mdnrnn": mdnrnn,
            "train-controller": controller, "evaluate": evaluate, "oracle": oracle, "readout": readout,
            "state-model": state_model, "dreamer": dreamer}[name]


def _manifest(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


class SmokeRun:
    """The smoke pipeline (``SHARED_SMOKE`` added) run once per test session, each stage the first time a
    test asks for it (`make collect` ... `make dreamer`, stage times recorded as `wm` records them).

    Its folders are READ ONLY: a test that writes (resumes, damages, retrains with other settings) works on
    its own copy (``copy``, ``shutil.copytree``, ``copy_trained_m``). Every file's size and time are
    checked before each later stage and at the end of the session, so that a test writing into the shared
    run fails the session instead of changing what the tests after it see."""

    def __init__(self, folder: Path) -> None:
        from worldmodels.core.paths import PipelinePaths

        self.config = smoke_config(*SHARED_SMOKE)
        self.paths = PipelinePaths(folder / "run" / "smoke")
        self._snapshots = folder / "after"
        self._done: list[str] = []
        self._manifests: dict[Path, dict[str, tuple[int, int]]] = {}

    def through(self, stage: str):
        """The run's ``PipelinePaths`` with every stage up to ``stage`` done (later ones may be done too)."""
        from worldmodels.core.stage_times import timed_stage

        for name in SMOKE_STAGES[:SMOKE_STAGES.index(stage) + 1]:
            if name in self._done:
                continue
            self.check_untouched()
            with timed_stage(self.paths, name):
                _stage_module(name).run(self.config, self.paths, progress=False)
            self._done.append(name)
            self._manifests[self.paths.root] = _manifest(self.paths.root)
            if name in SNAPSHOT_STAGES:
                snapshot = self._snapshots / name / "smoke"
                shutil.copytree(self.paths.root, snapshot)
                self._manifests[snapshot] = _manifest(snapshot)
        return self.paths

    def after(self, stage: str):
        """The run's folder exactly as it stood after ``stage`` (one of ``SNAPSHOT_STAGES``); read only."""
        from worldmodels.core.paths import PipelinePaths

        assert stage in SNAPSHOT_STAGES, f"no snapshot is kept after {stage} (SNAPSHOT_STAGES)"
        self.through(stage)
        return PipelinePaths(self._snapshots / stage / "smoke")

    def copy(self, stage: str, destination: Path):
        """A writable copy, in ``destination/smoke``, of the run as it stood after ``stage`` (a snapshot
        stage) or, for any other stage, of the run with at least that stage done."""
        from worldmodels.core.paths import PipelinePaths

        source = self.after(stage) if stage in SNAPSHOT_STAGES else self.through(stage)
        target = PipelinePaths(destination / "smoke")
        shutil.copytree(source.root, target.root)
        return target

    def check_untouched(self) -> None:
        for root, manifest in self._manifests.items():
            now = _manifest(root)
            changed = sorted(name for name in manifest.keys() | now.keys() if manifest.get(name) != now.get(name))
            assert not changed, (f"a test wrote into the shared smoke run {root} (tests must copy it): "
                                 f"{', '.join(changed)}")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """The session's one smoke run (``SmokeRun``): read it, copy it to write."""
    run = SmokeRun(tmp_path_factory.mktemp("shared_smoke"))
    yield run
    run.check_untouched()
