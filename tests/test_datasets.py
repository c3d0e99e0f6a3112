import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import write_synthetic
from worldmodels.data.datasets import FrameDataset, WindowDataset
from worldmodels.data.split import heldout_mask, repeat_played, split_episodes


def test_windows_never_cross_an_episode_boundary(synthetic_file):
    path, episodes = synthetic_file
    dataset = WindowDataset(path, steps=4)
    lengths = [e.length for e in episodes]
    assert len(dataset) == sum(max(0, n - 4 + 1) for n in lengths)
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        frames = item["frames"].numpy()
        assert frames.shape == (5, 8, 8, 3)
        number = int(item["episode"])
        start = int(item["start"])
        # Channel 0 encodes the episode, channel 1 the time step: one episode, consecutive steps.
        assert np.all(frames[..., 0] == number)
        np.testing.assert_array_equal(frames[:, 0, 0, 1], np.arange(start, start + 5))
        assert start + 4 <= lengths[number]
        np.testing.assert_array_equal(item["actions"].numpy(), episodes[number].actions[start:start + 4])
        seen.add((number, start))
    assert len(seen) == len(dataset), "every valid start appears exactly once"
    assert 2 not in {n for n, _ in seen} or lengths[2] >= 4


def test_windows_longer_than_an_episode_skip_it(synthetic_file):
    path, _ = synthetic_file
    dataset = WindowDataset(path, steps=6)  # episode 0 (5 steps) and 2 (3 steps) are too short
    assert set(dataset.episodes.tolist()) == {1, 3}
    assert len(dataset) == (9 - 6 + 1) + (12 - 6 + 1)


def test_frame_dataset_selects_episodes(synthetic_file):
    path, episodes = synthetic_file
    dataset = FrameDataset(path, episodes=np.array([1, 3]))
    assert len(dataset) == (9 + 1) + (12 + 1)
    frames = torch.stack([dataset[i] for i in range(len(dataset))]).numpy()
    np.testing.assert_array_equal(frames, np.concatenate([episodes[1].frames, episodes[3].frames]))


def test_datasets_work_in_dataloader_worker_processes(synthetic_file):
    path, _ = synthetic_file
    dataset = WindowDataset(path, steps=3)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert sum(len(b["episode"]) for b in batches) == len(dataset)
    assert batches[0]["frames"].shape[1:] == (4, 8, 8, 3)


def test_heldout_split_is_deterministic_and_stable_when_episodes_are_added():
    seeds = np.random.default_rng(0).integers(0, 2**32, 200, dtype=np.uint64)
    mask = heldout_mask(seeds, 0.1)
    assert 10 <= mask.sum() <= 30
    np.testing.assert_array_equal(mask, heldout_mask(seeds, 0.1))
    grown = heldout_mask(np.concatenate([seeds, seeds + 1]), 0.1)
    np.testing.assert_array_equal(grown[:200], mask)
    train, heldout = split_episodes(seeds, 0.1)
    assert len(train) + len(heldout) == 200 and not set(train) & set(heldout)


def test_heldout_split_holds_out_at_least_one_of_two_or_more_episodes():
    assert heldout_mask(np.array([5, 6]), 0.01).sum() == 1
    assert heldout_mask(np.array([5, 6]), 0.0).sum() == 0


def test_played_episodes_are_listed_as_often_as_asked_and_exploration_once():
    sources = np.array([b"collect:held_random", b"iteration1:worldmodel+noise0.3", b"collect:held_random",
                        b"iteration2:worldmodel+noise0.3"], dtype="S32")
    np.testing.assert_array_equal(repeat_played(np.array([0, 1, 3]), sources, 3), [0, 1, 3, 1, 3, 1, 3])
    np.testing.assert_array_equal(repeat_played(np.array([0, 2]), sources, 3), [0, 2])
    np.testing.assert_array_equal(repeat_played(np.array([0, 1, 3]), sources, 1), [0, 1, 3])
    np.testing.assert_array_equal(repeat_played(np.array([1]), sources.astype(str), 2), [1, 1])


def test_the_last_window_ends_the_last_episode(tmp_path):
    path = tmp_path / "big.h5"
    write_synthetic(path, [50] * 20, frame_size=32)
    dataset = WindowDataset(path, steps=8)
    item = dataset[len(dataset) - 1]
    assert (int(item["episode"]), int(item["start"])) == (19, 42)
    with pytest.raises(IndexError):
        dataset[len(dataset)]
