import numpy as np
import pytest
import torch

from tests.conftest import DEVICES, SYNTHETIC_ENV, synthetic_episode, write_synthetic
from worldmodels.data.replay import FileReplay, Replay, draw_windows, open_replay, training_episodes
from worldmodels.data.store import RolloutReader, RolloutWriter


def _draw(replay, generator_seed: int, size: int = 32) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in replay.batch(size, torch.Generator().manual_seed(generator_seed)).items()}


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_in_memory_equals_the_same_windows_read_from_the_file(tmp_path, device):
    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [9, 3, 12, 7, 10, 6])  # the 3-step episode is too short for windows of 4
    memory, file = Replay(path, 4, 0.3, 6, device), FileReplay(path, 4, 0.3, 6)
    assert len(memory) == len(file) > 0
    for seed in range(3):
        a, b = _draw(memory, seed), _draw(file, seed)
        for name in ("frames", "actions", "rewards"):
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    frames = a["frames"].numpy()
    # every window is 5 consecutive frames of one episode: channel 1 counts the steps, channel 0 is the episode
    assert (np.diff(frames[:, :, 0, 0, 1].astype(int), axis=1) == 1).all()
    assert (frames[:, :, 0, 0, 0] == frames[:, :1, 0, 0, 0]).all()


def test_appended_episodes_are_taken_in_by_refresh_and_memory_grows(tmp_path):
    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [10, 10, 10])
    memory = Replay(path, 5, 0.3, 3)
    before = len(memory)
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (8, 8, 3), 2) as writer:
        for number in range(3, 40):  # far past the first capacity: the buffers double
            writer.append(synthetic_episode(number, 10))
    memory.refresh()
    file = FileReplay(path, 5, 0.3, 3)
    assert len(memory) == len(file) == before + 37 * 6  # every appended episode is trained on
    a, b = _draw(memory, 7, 200), _draw(file, 7, 200)
    torch.testing.assert_close(a["frames"], b["frames"], rtol=0, atol=0)
    assert set(a["frames"][:, 0, 0, 0, 0].tolist()) > set(range(3, 10))


def test_only_the_first_episodes_have_held_out_ones(tmp_path):
    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [6] * 20)
    with RolloutReader(path) as reader:
        ten = training_episodes(reader, 0.5, 10)
        none_split = training_episodes(reader, 0.5, 0)
    assert len(ten) < 20 and set(range(10, 20)) <= set(ten.tolist())
    assert none_split.tolist() == list(range(20))


def test_a_replay_too_large_for_memory_reads_from_the_file(tmp_path, monkeypatch):
    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [6, 6, 6])
    assert isinstance(open_replay(path, 4, 0.3, 3, final_frames=1000, device="cpu"), Replay)
    monkeypatch.setattr("worldmodels.data.replay.MEMORY_LIMIT_BYTES", 8 * 8 * 3 * 999)
    assert isinstance(open_replay(path, 4, 0.3, 3, final_frames=1000, device="cpu"), FileReplay)


def test_a_share_of_windows_begins_at_episode_starts_and_zero_share_is_the_uniform_draw(tmp_path):
    ends = np.array([26, 34, 70, 91])  # four episodes of 26, 8, 36 and 21 windows
    uniform = torch.randint(91, (400,), generator=torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(draw_windows(400, torch.Generator().manual_seed(3), ends, 0.0), uniform)

    path = tmp_path / "rollouts.h5"
    write_synthetic(path, [30, 12, 40, 25])  # channel 1 of a frame is its step in the episode
    shared = Replay(path, 5, 0.0, 4, episode_start_share=0.25)
    a, b = _draw(shared, 3, 400), _draw(FileReplay(path, 5, 0.0, 4, episode_start_share=0.25), 3, 400)
    torch.testing.assert_close(a["frames"], b["frames"], rtol=0, atol=0)
    first_steps = a["frames"][:, 0, 0, 0, 1].numpy()
    assert (first_steps[:100] == 0).all()  # round(0.25 * 400) windows from episodes' first steps
    assert set(a["frames"][:100, 0, 0, 0, 0].tolist()) == set(range(4))  # from every episode, not just one
    # the rest are the uniform draw, window for window
    uniform_steps = _draw(Replay(path, 5, 0.0, 4), 3, 400)["frames"][:, 0, 0, 0, 1].numpy()
    np.testing.assert_array_equal(first_steps[100:], uniform_steps[100:])
    assert (uniform_steps[:100] > 0).sum() > 80  # which a uniform draw's first 100 would not be
