import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import SYNTHETIC_ENV, synthetic_episode, write_synthetic
from worldmodels.cli import main
from worldmodels.data.info import describe_rollouts
from worldmodels.data.store import RolloutReader, RolloutWriter, StoreError


def test_episodes_round_trip_exactly(synthetic_file):
    path, episodes = synthetic_file
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 4
        assert reader.num_steps == sum(e.length for e in episodes)
        assert reader.num_frames == reader.num_steps + 4
        assert reader.frame_shape == (8, 8, 3) and reader.action_size == 2
        for index, original in enumerate(episodes):
            loaded = reader.episode(index)
            for name in ("frames", "actions", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
            assert (loaded.seed, loaded.policy_seed, loaded.source) == (original.seed, original.policy_seed,
                                                                      original.source)
        np.testing.assert_allclose(reader.returns, [e.total_return for e in episodes], rtol=1e-6)


def test_a_window_is_the_slice_of_its_episode(synthetic_file):
    path, episodes = synthetic_file
    with RolloutReader(path) as reader:
        window = reader.window(3, 4, 6)
        np.testing.assert_array_equal(window["frames"], episodes[3].frames[4:11])
        np.testing.assert_array_equal(window["actions"], episodes[3].actions[4:10])
        np.testing.assert_array_equal(window["rewards"], episodes[3].rewards[4:10])
        with pytest.raises(IndexError):
            reader.window(0, 2, 4)  # episode 0 has 5 steps


def test_data_of_an_uncommitted_episode_are_invisible_and_cut_by_the_next_writer(tmp_path):
    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [4, 4])
    # A writer killed after writing an episode's data but before its index row.
    with h5py.File(path, "a") as handle:
        for name, extra in (("frames", 6), ("actions", 5), ("rewards", 5)):
            dataset = handle[name]
            dataset.resize(dataset.shape[0] + extra, axis=0)
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 2 and reader.num_steps == 8
    with RolloutWriter(path, SYNTHETIC_ENV, {}, (8, 8, 3), 2) as writer:
        writer.append(synthetic_episode(7, 3))
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 3
        np.testing.assert_array_equal(reader.episode(2).frames, synthetic_episode(7, 3).frames)
        assert reader.episodes["frame_offset"][2] == 10  # right after the two committed episodes


def test_appending_with_other_env_settings_names_the_setting(synthetic_file):
    path, _ = synthetic_file
    with pytest.raises(StoreError, match="env.action_repeat: file has 1, config has 4"):
        RolloutWriter(path, {**SYNTHETIC_ENV, "action_repeat": 4}, {}, (8, 8, 3), 2)


def test_a_cropped_env_appends_to_its_own_file(tmp_path):
    """A config's crop is a tuple, the file's (JSON) a list: the same setting, so appending is allowed."""
    path = tmp_path / "rollouts.h5"
    with RolloutWriter(path, {**SYNTHETIC_ENV, "crop": (0, 200)}, {}, (8, 8, 3), 2) as writer:
        writer.append(synthetic_episode(0, 3))
    with RolloutWriter(path, {**SYNTHETIC_ENV, "crop": (0, 200)}, {}, (8, 8, 3), 2) as writer:
        writer.append(synthetic_episode(1, 3))
        assert writer.num_episodes == 2
    with pytest.raises(StoreError, match=r"env.crop: file has \[0, 200\], config has \[0, 100\]"):
        RolloutWriter(path, {**SYNTHETIC_ENV, "crop": (0, 100)}, {}, (8, 8, 3), 2)


def test_a_truncated_file_gives_a_clear_error(synthetic_file, tmp_path):
    path, _ = synthetic_file
    damaged = tmp_path / "damaged.h5"
    shutil.copy(path, damaged)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.truncate(size // 3)
    with pytest.raises(StoreError, match="damaged.h5"):
        with RolloutReader(damaged) as reader:
            reader.episode(reader.num_episodes - 1)


def test_a_foreign_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = np.zeros((3, 4))
    with pytest.raises(StoreError, match="not a worldmodels rollouts file"):
        RolloutReader(path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all")
    with pytest.raises(StoreError, match="cannot open as HDF5"):
        RolloutReader(text)
    with pytest.raises(StoreError, match="no such file"):
        RolloutReader(tmp_path / "missing.h5")


def test_a_wrong_schema_version_is_refused(synthetic_file):
    path, _ = synthetic_file
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        RolloutReader(path)


def test_info_reports_counts_and_returns(synthetic_file):
    path, episodes = synthetic_file
    text = describe_rollouts(path)
    assert "episodes        4 (4 test:synthetic)" in text
    assert f"steps           {sum(e.length for e in episodes)} agent steps" in text
    returns = np.array([e.total_return for e in episodes])
    assert f"mean {returns.mean():.2f}" in text
    assert "schema version  1" in text


def test_wm_info_prints_the_summary_or_a_clear_error(synthetic_file, tmp_path):
    path, _ = synthetic_file
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0 and "episodes        4" in result.output
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = 1
    result = CliRunner().invoke(main, ["info", str(foreign)])
    assert result.exit_code == 1 and "not a worldmodels rollouts file" in result.output
