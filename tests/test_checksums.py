"""Checksums of rollouts and latents files: a byte changed on disk is an error naming the file and the
episode, ``wm info --check`` finds every damaged chunk, and files written before checksums still work."""

import logging

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import SYNTHETIC_ENV, synthetic_episode
from worldmodels.cli import main
from worldmodels.data import latents as latents_module
from worldmodels.data import store
from worldmodels.data.batches import ShuffledFrameBatches
from worldmodels.data.datasets import FrameDataset, WindowDataset
from worldmodels.data.info import check_file, describe_file
from worldmodels.data.latents import LatentReader, write_latents
from worldmodels.data.store import EPISODE_DTYPE, FRAME_CHUNK, RolloutReader, RolloutWriter, StoreError

# Episodes of FRAME_CHUNK - 1 steps hold FRAME_CHUNK frames: episode e is exactly chunk e of /frames.
LENGTH = FRAME_CHUNK - 1
NO_CHECKSUMS = "checksums       none (written before checksums; a damaged chunk cannot be detected)"


def _write_rollouts(path, episodes=3, compression="none"):
    written = [synthetic_episode(number, LENGTH) for number in range(episodes)]
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2, compression) as writer:
        for episode in written:
            writer.append(episode)
    return written


def _corrupt_chunk(path, name, chunk):
    """Flip the bits of one byte in the middle of chunk number ``chunk`` of /``name`` as stored in the file
    (past any compression), so that the damage hits the chunk's data, not the file's metadata.

    One byte: fletcher32 sums 16-bit words modulo 65535, so it cannot tell a word 0x0000 from 0xFFFF (two
    zero bytes flipped together pass), but it finds any change of a single byte."""
    with h5py.File(path, "r") as handle:
        info = handle[name].id.get_chunk_info(chunk)
    middle = info.byte_offset + info.size // 2
    with open(path, "r+b") as raw:
        raw.seek(middle)
        byte = raw.read(1)[0]
        raw.seek(middle)
        raw.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_a_damaged_frame_chunk_names_the_file_and_its_episode(tmp_path, compression):
    path = tmp_path / "rollouts.h5"
    written = _write_rollouts(path, compression=compression)
    with h5py.File(path, "r") as handle:
        assert all(handle[name].fletcher32 for name in store.ROLLOUT_DATASETS)
        assert handle["frames"].compression == (None if compression == "none" else compression)
    _corrupt_chunk(path, "frames", 1)

    assert check_file(path) == [f"{path}: /frames rows 16..31 fail their checksum (episode 1)"]
    with RolloutReader(path) as reader:
        with pytest.raises(StoreError, match=f"{path}: damaged data in episode 1: /frames rows 16..31 fail"):
            reader.episode(1)
        for number in (0, 2):  # the chunks of the other episodes still read
            np.testing.assert_array_equal(reader.episode(number).frames, written[number].frames)
        np.testing.assert_array_equal(reader.step_data(1)["actions"], written[1].actions)
    result = CliRunner().invoke(main, ["info", "--check", str(path)])
    assert result.exit_code == 1 and "/frames rows 16..31 fail their checksum (episode 1)" in result.output


def test_the_readers_of_training_data_name_the_damaged_episode(tmp_path):
    path = tmp_path / "rollouts.h5"
    _write_rollouts(path)
    _corrupt_chunk(path, "frames", 2)
    damaged = f"{path}: damaged data in episode 2"
    windows = WindowDataset(path, steps=4)
    assert windows.locate(0)[0] == 0
    windows[0]  # episode 0 reads
    with pytest.raises(StoreError, match=damaged):
        windows[len(windows) - 1]
    frames = FrameDataset(path)
    frames[0]
    with pytest.raises(StoreError, match=damaged):
        frames[len(frames) - 1]
    batches = ShuffledFrameBatches(RolloutReader(path), np.arange(3 * FRAME_CHUNK), batch_size=8, seed=0)
    with pytest.raises(StoreError, match=damaged):
        list(batches.epoch(0))
    batches = ShuffledFrameBatches(RolloutReader(path), np.arange(2 * FRAME_CHUNK), batch_size=8, seed=0)
    assert sum(len(batch) for batch in batches.epoch(0)) == 2 * FRAME_CHUNK


def test_damaged_step_data_and_a_damaged_index_are_found(tmp_path):
    path = tmp_path / "rollouts.h5"
    _write_rollouts(path)
    _corrupt_chunk(path, "actions", 0)  # one chunk holds every episode's steps
    assert check_file(path) == [f"{path}: /actions rows 0..44 fail their checksum (episodes 0..2)"]
    with RolloutReader(path) as reader:
        with pytest.raises(StoreError, match="damaged data in episodes 0..2: /actions"):
            reader.window(1, 0, 4)
        assert len(reader.frames(1)) == FRAME_CHUNK

    _corrupt_chunk(path, "episodes", 0)
    with pytest.raises(StoreError, match=f"{path}: damaged data in episodes 0..2: /episodes rows 0..2"):
        RolloutReader(path)
    assert check_file(path) == [
        f"{path}: /actions rows 0..44 fail their checksum (episodes unknown: the episode index is damaged too)",
        f"{path}: /episodes rows 0..2 fail their checksum (episodes 0..2)"]
    assert "damaged         " in describe_file(path)  # `wm info` still gets to its check
    result = CliRunner().invoke(main, ["info", "--check", str(path)])
    assert result.exit_code == 1 and "/episodes rows 0..2 fail their checksum" in result.output


def test_a_file_written_before_checksums_opens_trains_and_takes_more_episodes(tmp_path, monkeypatch, caplog):
    path = tmp_path / "rollouts.h5"
    with monkeypatch.context() as patch:
        patch.setattr(store, "CHECKSUMS", {})  # the layout before checksums
        written = _write_rollouts(path, episodes=2)
    assert NO_CHECKSUMS in describe_file(path)
    assert check_file(path) == []
    with caplog.at_level(logging.INFO, logger=store.logger.name):
        with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2) as writer:
            writer.append(synthetic_episode(2, LENGTH))
    assert "written before checksums" in caplog.text
    with h5py.File(path, "r") as handle:  # HDF5 cannot add a filter to a dataset that exists
        assert not any(handle[name].fletcher32 for name in store.ROLLOUT_DATASETS)
    window = WindowDataset(path, steps=4)[0]
    np.testing.assert_array_equal(window["frames"].numpy(), written[0].frames[:5])
    # Without checksums a changed byte reads as data: nothing can tell.
    _corrupt_chunk(path, "frames", 1)
    assert check_file(path) == []
    with RolloutReader(path) as reader:
        assert not np.array_equal(reader.episode(1).frames, written[1].frames)


def _latents_index(episodes, frames_each):
    index = np.zeros(episodes, EPISODE_DTYPE)
    index["frame_offset"] = np.arange(episodes) * frames_each
    index["length"] = frames_each - 1
    return index


def test_a_damaged_latents_chunk_names_the_file_and_its_episode(tmp_path):
    # 4096 latents per episode: episode e is exactly chunk e of /mu and /logvar.
    path, frames_each = tmp_path / "latents.h5", 4096
    index = _latents_index(3, frames_each)
    mu = torch.randn(3 * frames_each, 2, generator=torch.Generator().manual_seed(0)).numpy()
    write_latents(path, index, mu, -mu, "a" * 64, "b" * 64)
    assert "checksums       fletcher32 on every chunk" in describe_file(path)
    assert check_file(path) == []
    _corrupt_chunk(path, "mu", 1)
    assert check_file(path) == [f"{path}: /mu rows 4096..8191 fail their checksum (episode 1)"]
    with pytest.raises(StoreError, match=f"{path}: damaged data in episode 1: /mu rows 4096..8191"):
        LatentReader(path)
    assert "damaged         " in describe_file(path)  # `wm info` still gets to its check
    with h5py.File(path, "r") as handle:  # the other episodes' chunks still read
        np.testing.assert_array_equal(handle["mu"][:frames_each], mu[:frames_each])
        np.testing.assert_array_equal(handle["logvar"][:], -mu)


def test_a_latents_file_written_before_checksums_still_reads(tmp_path):
    path = tmp_path / "latents.h5"
    index, mu = _latents_index(2, 5), np.ones((10, 3), np.float32)
    with h5py.File(path, "w") as handle:  # the layout before checksums: /episodes not even chunked
        handle.create_dataset("mu", data=mu, chunks=(10, 3))
        handle.create_dataset("logvar", data=mu, chunks=(10, 3))
        handle.create_dataset("episodes", data=index)
        handle.attrs.update({"schema_version": 1, "kind": latents_module.LATENTS_KIND, "z_size": 3,
                             "vae_sha256": "a" * 64, "rollouts_fingerprint": "b" * 64})
    assert NO_CHECKSUMS in describe_file(path)
    assert check_file(path) == []
    np.testing.assert_array_equal(LatentReader(path).episode(1)[0], mu[5:])


def test_damage_past_the_last_committed_episode_is_not_a_problem_of_the_file(tmp_path):
    path = tmp_path / "rollouts.h5"
    _write_rollouts(path, episodes=2)
    with h5py.File(path, "r+") as handle:  # what a writer stopped in the middle of episode 2 leaves
        frames = handle["frames"]
        frames.resize(frames.shape[0] + FRAME_CHUNK, axis=0)
        frames[-FRAME_CHUNK:] = 7
    _corrupt_chunk(path, "frames", 2)
    assert check_file(path) == []
    _corrupt_chunk(path, "frames", 1)
    assert check_file(path) == [f"{path}: /frames rows 16..31 fail their checksum (episode 1)"]
