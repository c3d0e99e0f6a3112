import errno
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import SYNTHETIC_ENV, smoke_config, synthetic_episode, write_synthetic
from worldmodels.artifacts import VAE_KIND, vae_identity
from worldmodels.cli import main
from worldmodels.core.checkpoint import save_checkpoint
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.training import TrainingOutputError
from worldmodels.data.info import describe_rollouts
from worldmodels.data.latents import LatentReader, StaleLatentsError, write_latents
from worldmodels.data.store import RolloutReader, RolloutWriter, StoreError, open_h5
from worldmodels.models.vae import ConvVAE
from worldmodels.stages import encode
from worldmodels.stages import mdnrnn as mdnrnn_stage


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
    with pytest.raises(StoreError, match=re.escape(f"{damaged}: truncated file: {size // 3} of the {size} bytes")):
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
    with pytest.raises(StoreError, match=re.escape(f"{text}: not an HDF5 file (no HDF5 signature)")):
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


# ------------------------------------------------------------------------------------- why a file does not open

def test_open_errors_name_the_file_and_the_cause(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.touch()
    with pytest.raises(StoreError, match=re.escape(f"{empty}: not an HDF5 file (empty)")):
        RolloutReader(empty)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(StoreError, match=re.escape(f"{garbage}: not an HDF5 file (no HDF5 signature)")):
        RolloutReader(garbage)
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path}: a folder, not a file")):
        RolloutReader(tmp_path)
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path / 'missing'}: no such folder")):
        open_h5(tmp_path / "missing" / "rollouts.h5", "a")


HOLD_OPEN = "import h5py, sys; f = h5py.File(sys.argv[1], sys.argv[2]); print('open', flush=True); sys.stdin.read()"


@contextmanager
def _held_open(path, mode):
    """``path`` open in ``mode`` by another process until the block ends (the child exits when its stdin closes)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(path), mode], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        yield
    finally:
        child.stdin.close()
        child.wait(timeout=60)


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() in ("FALSE", "0"),
                    reason="HDF5 file locking is turned off here")
def test_a_file_locked_by_another_process_says_so(synthetic_file):
    path, _ = synthetic_file
    with _held_open(path, "a"):
        with pytest.raises(StoreError, match=re.escape(f"{path}: locked: another process is writing it")):
            RolloutReader(path)
    with _held_open(path, "r"):
        with pytest.raises(StoreError, match=re.escape(f"{path}: locked: another process has it open")):
            RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2)
        with RolloutReader(path) as reader:  # readers share the file
            assert reader.num_episodes == 4
    with RolloutReader(path) as reader:  # this process's own reader keeps its writer out
        with pytest.raises(StoreError, match=re.escape(f"{path}: open for reading in this process")):
            RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders (see the test below)")
def test_a_read_only_file_or_folder_says_so(synthetic_file, tmp_path):
    path, _ = synthetic_file
    folder = tmp_path / "read_only"
    folder.mkdir()
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        for target in (path, folder / "rollouts.h5"):
            with pytest.raises(StoreError, match=re.escape(f"{target}: cannot be opened for writing "
                                                           "(Permission denied: a read-only file or folder")):
                RolloutWriter(target, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2)
        with RolloutReader(path) as reader:
            assert reader.num_episodes == 4
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")])
def test_a_file_that_may_not_be_written_says_why(tmp_path, monkeypatch, code, reason):
    """As h5py reports it (root ignores permission bits, and a read-only file system cannot be made here)."""
    path = tmp_path / "rollouts.h5"

    def refused(name, mode, **kwargs):
        raise OSError(code, f"Unable to synchronously open file (unable to open file: name = '{name}', "
                            f"errno = {code}, error message = '{reason}', flags = 1, o_flags = 2)")

    monkeypatch.setattr(h5py, "File", refused)
    with pytest.raises(StoreError, match=re.escape(f"{path}: cannot be opened for writing ({reason}: a read-only")):
        open_h5(path, "a")
    with pytest.raises(StoreError, match=re.escape(f"{path}: cannot be read ({reason})")):
        open_h5(path, "r")


# ------------------------------------------------------------------------------- which command makes latents again

def _save_vae(path, identity, z_size):
    save_checkpoint({"kind": VAE_KIND, **identity, "model_args": {"z_size": z_size},
                     "model": ConvVAE(z_size).state_dict()}, path)


def test_stale_latents_advise_training_v_first_when_v_is_another_runs(tmp_path):
    config = smoke_config()
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    write_synthetic(paths.rollouts, [6, 6, 6, 6], frame_size=64)
    other = tmp_path / "other_rollouts.h5"
    write_synthetic(other, [9, 9], frame_size=64)
    reader, others = RolloutReader(paths.rollouts), RolloutReader(other)
    frames = np.zeros((reader.num_frames, config.vae.z_size), np.float32)
    write_latents(paths.latents, reader.episodes, frames, frames, "0" * 64, reader.fingerprint)  # an earlier V's

    # vae.pt of another run, trained on other rollouts: `wm encode` refuses it, so `wm train-vae` comes first.
    _save_vae(paths.vae, vae_identity(config, others), config.vae.z_size)
    with pytest.raises(StaleLatentsError, match=re.escape(
            f"{paths.vae} is not this pipeline's V either (rollouts_fingerprint differ), and `wm encode` refuses "
            "it: run `wm train-vae`, then `wm encode`, then this command again.")):
        mdnrnn_stage.run(config, paths, progress=False)
    with pytest.raises(StaleLatentsError, match="run `wm train-vae`, then `wm encode`"):
        LatentReader(paths.latents, paths.vae, reader)  # without the settings: the chain of files alone
    with pytest.raises(TrainingOutputError, match="run `wm train-vae`"):
        encode.run(config, paths, progress=False)
    # Same rollouts, other settings: `wm encode` refuses it too.
    _save_vae(paths.vae, vae_identity(smoke_config("vae.kl_tolerance=0.1"), reader), config.vae.z_size)
    with pytest.raises(StaleLatentsError, match=r"\(settings differ\).*run `wm train-vae`"):
        mdnrnn_stage.run(config, paths, progress=False)

    # This pipeline's V: `wm encode` is all it takes.
    _save_vae(paths.vae, vae_identity(config, reader), config.vae.z_size)
    with pytest.raises(StaleLatentsError, match=re.escape("Run `wm encode`, then this command again.")):
        mdnrnn_stage.run(config, paths, progress=False)
    encode.run(config, paths, progress=False)
    LatentReader(paths.latents, paths.vae, reader, vae_identity(config, reader))
