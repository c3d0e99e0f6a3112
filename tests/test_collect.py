import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_same_rollouts, smoke_config, synthetic_episode
from worldmodels.config import load_pipeline
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.store import RolloutReader, RolloutWriter, StoreError
from worldmodels.evaluation.rollout import episode_seeds
from worldmodels.pools.workers import WorkerError
from worldmodels.stages import collect

SMOKE = ["env.max_episode_steps=6"]


def _collect(data_dir: Path, *overrides: str) -> Path:
    config = load_pipeline("smoke", [*SMOKE, *overrides])
    return collect.run(config, PipelinePaths.for_pipeline(data_dir, config.name), progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Five episodes collected in this process, without interruption. Its own, not the shared smoke run's
    rollouts: 5 episodes of 6 steps (``SMOKE``), the reference the other collects here must equal."""
    return _collect(tmp_path_factory.mktemp("reference"), "collect.episodes=5", "collect.workers=0")


def test_collected_episodes_hold_moving_frames_and_their_seeds(reference):
    with RolloutReader(reference) as reader:
        assert reader.num_episodes == 5
        assert list(reader.lengths) == [6] * 5
        episode = reader.episode(2)
        assert episode.frames.shape == (7, 64, 64, 3)
        assert not np.array_equal(episode.frames[0], episode.frames[-1])
        assert (episode.seed, episode.policy_seed) == episode_seeds(0, 2)
        assert episode.source == "collect:held_random"
        assert episode.truncated[-1] and not episode.terminated.any()


@pytest.mark.slow
def test_the_data_do_not_depend_on_the_number_of_workers(reference, tmp_path):
    parallel = _collect(tmp_path, "collect.episodes=5", "collect.workers=2")
    assert_same_rollouts(reference, parallel)


def test_rerunning_resumes_and_raising_the_count_appends(reference, tmp_path):
    _collect(tmp_path, "collect.episodes=2", "collect.workers=0")
    path = _collect(tmp_path, "collect.episodes=2", "collect.workers=0")
    assert RolloutReader(path).num_episodes == 2
    path = _collect(tmp_path, "collect.episodes=5", "collect.workers=0")
    assert_same_rollouts(reference, path)


def test_cut_episodes_are_the_heads_of_the_full_ones_marked_truncated_and_kept_apart(reference, tmp_path):
    """``collect.episode_steps=4``: each episode is the first 4 steps of the same episode played to
    the env's end (6 steps), truncated there; a file of full episodes refuses cut ones."""
    path = _collect(tmp_path, "collect.episodes=3", "collect.workers=0", "collect.episode_steps=4")
    with RolloutReader(path) as cut, RolloutReader(reference) as full:
        assert list(cut.lengths) == [4] * 3
        for index in range(3):
            short, whole = cut.episode(index), full.episode(index)
            np.testing.assert_array_equal(short.frames, whole.frames[:5])
            np.testing.assert_array_equal(short.actions, whole.actions[:4])
            np.testing.assert_array_equal(short.rewards, whole.rewards[:4])
            assert short.truncated.tolist() == [False, False, False, True] and not short.terminated.any()
            assert short.source == "collect:held_random@4"
    _collect(tmp_path / "full", "collect.episodes=1", "collect.workers=0")
    with pytest.raises(StoreError, match="held_random@4"):
        _collect(tmp_path / "full", "collect.episodes=2", "collect.workers=0", "collect.episode_steps=4")


def test_a_source_longer_than_the_file_holds_still_resumes(tmp_path):
    """``held_random*U[0.125,1]@50`` is 33 bytes with its prefix; the file keeps 32, and a
    resumed collect must still know its own episodes."""
    settings = ("collect.workers=0", "collect.action_scale_min=0.125", "collect.episode_steps=50")
    _collect(tmp_path, "collect.episodes=1", *settings)
    path = _collect(tmp_path, "collect.episodes=2", *settings)
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 2
        assert reader.episode(1).source == "collect:held_random*U[0.125,1]@5"


def test_another_seed_in_the_same_file_is_refused(reference, tmp_path):
    _collect(tmp_path, "collect.episodes=1", "collect.workers=0")
    with pytest.raises(StoreError, match="collect.seed=4"):
        _collect(tmp_path, "collect.episodes=2", "collect.workers=0", "collect.seed=4")


@pytest.mark.slow
def test_a_collect_killed_mid_run_resumes_to_the_same_file(tmp_path):
    settings = ["collect.episodes=12", "collect.workers=1", "env.max_episode_steps=20"]
    command = [sys.executable, "-m", "worldmodels.cli", "collect", "--pipeline", "smoke",
               "--data-dir", str(tmp_path / "killed"), "--no-progress",
               *[arg for setting in settings for arg in ("--set", setting)]]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("committed episode 3/"):
            break
    # The collector and its worker die mid-episode, possibly mid-write.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    path = tmp_path / "killed" / "smoke" / "rollouts.h5"
    with RolloutReader(path) as reader:
        assert 3 <= reader.num_episodes < 12
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = load_pipeline("smoke", settings[:1] + ["collect.workers=0"] + settings[2:])
    uninterrupted = collect.run(config, PipelinePaths(tmp_path / "whole"), progress=False)
    assert_same_rollouts(uninterrupted, path)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_env_that_raises_names_the_episode_and_its_seed(tmp_path, workers):
    with pytest.raises(WorkerError) as error:
        _collect(tmp_path, "env.id=gym:tests.faulty_envs:Raising-v0",
                 "collect.episodes=3", f"collect.workers={workers}")
    env_seed, _ = episode_seeds(0, 0)
    assert f"episode 0 (env seed {env_seed}" in str(error.value)
    assert "simulated env failure" in str(error.value)


def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path):
    started = time.monotonic()
    with pytest.raises(WorkerError, match="worker process died.*episode 0"):
        _collect(tmp_path, "env.id=gym:tests.faulty_envs:Dying-v0",
                 "collect.episodes=4", "collect.workers=2")
    assert time.monotonic() - started < 60


def _source_file(path, config, numbers):
    with RolloutWriter(path, dataclasses.asdict(config.env), {"backend": "test"}, (8, 8, 3), 2) as writer:
        for number in numbers:
            writer.append(synthetic_episode(number, 6 + number))


def test_collect_source_copies_another_files_episodes_and_tops_them_up(tmp_path):
    source = tmp_path / "other" / "dreamer_rollouts.h5"
    source.parent.mkdir()
    config = smoke_config("collect.source=other/dreamer_rollouts.h5")  # relative to the data dir
    paths = PipelinePaths(tmp_path / "smoke")
    _source_file(source, config, range(3))
    collect.run(config, paths, progress=False)
    assert_same_rollouts(source, paths.rollouts)
    _source_file(source, config, range(3, 5))  # the source grew: only the new episodes are copied
    collect.run(config, paths, progress=False)
    assert_same_rollouts(source, paths.rollouts)
    assert RolloutReader(paths.rollouts).episode(4).source == "test:synthetic"


def test_collect_source_names_a_missing_file_and_other_env_settings(tmp_path):
    config = smoke_config(f"collect.source={tmp_path / 'nowhere.h5'}")
    with pytest.raises(FileNotFoundError, match="nowhere.h5 does not exist"):
        collect.run(config, PipelinePaths(tmp_path / "smoke"), progress=False)
    other = tmp_path / "other.h5"
    _source_file(other, smoke_config("env.action_repeat=2"), range(2))
    with pytest.raises(StoreError, match="env.action_repeat: file has 2, config has 8"):
        collect.run(smoke_config(f"collect.source={other}"), PipelinePaths(tmp_path / "smoke"), progress=False)


def test_a_complete_file_is_not_even_opened_for_writing_again(reference, tmp_path):
    """A re-run with nothing to do leaves the file's bytes and time stamp alone (make and the stage times
    read a rewritten file as new work)."""
    copy = tmp_path / "smoke" / "rollouts.h5"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(reference.read_bytes())
    os.utime(copy, (1_000_000_000, 1_000_000_000))
    _collect(tmp_path, "collect.episodes=5", "collect.workers=0")
    assert copy.stat().st_mtime == 1_000_000_000
    assert copy.read_bytes() == reference.read_bytes()
