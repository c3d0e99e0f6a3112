import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import DEVICES, synthetic_episode
from worldmodels.artifacts import load_vae
from worldmodels.config import load_pipeline
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.frames import median_frame
from worldmodels.data.info import describe_file
from worldmodels.data.latents import LatentReader
from worldmodels.data.store import RolloutReader, RolloutWriter, StoreError
from worldmodels.models.vae import ConvVAE, foreground_mask, frames_to_input, vae_loss
from worldmodels.stages import encode
from worldmodels.stages import vae as vae_stage

SMOKE = ["vae.epochs=2"]


def _config(*overrides):
    return load_pipeline("smoke", [*SMOKE, *overrides])


@pytest.fixture
def smoke_rollouts(smoke_run):
    """The smoke pipeline's rollouts (the session's shared run; vae.* settings do not change them); tests
    copy them into their own folders."""
    return smoke_run.through("collect").rollouts


@pytest.fixture
def paths(tmp_path, smoke_rollouts):
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.rollouts.write_bytes(smoke_rollouts.read_bytes())
    return paths


def test_the_paper_vae_has_its_parameter_count():
    assert sum(p.numel() for p in ConvVAE(32).parameters()) == 4_348_547
    assert sum(p.numel() for p in ConvVAE(64).parameters()) == 4_446_915
    with torch.no_grad():
        reconstruction, mu, logvar = ConvVAE(8)(torch.rand(2, 3, 64, 64))
    assert reconstruction.shape == (2, 3, 64, 64) and mu.shape == logvar.shape == (2, 8)
    assert 0 <= float(reconstruction.min()) and float(reconstruction.max()) <= 1


def test_the_kl_floor_holds_the_kl_term_and_its_gradient_below_tolerance():
    x = torch.rand(4, 3, 64, 64)
    mu = torch.zeros(4, 32, requires_grad=True)
    logvar = torch.zeros(4, 32)
    losses = vae_loss(x, x, mu, logvar, kl_tolerance=0.5)
    assert losses["kl"].item() == 0.0
    assert losses["kl_loss"].item() == pytest.approx(16.0)
    losses["total"].backward()
    assert float(mu.grad.abs().sum()) == 0.0, "below the floor the KL must not pull on mu"
    far = torch.full((4, 32), 2.0)
    above = vae_loss(x, x, far, logvar, kl_tolerance=0.5)
    assert float(above["kl"]) == pytest.approx(0.5 * 32 * 4.0)
    assert float(above["kl_loss"]) == float(above["kl"])


def test_pixel_weights_multiply_the_squared_error_of_foreground_pixels():
    background = torch.zeros(3, 64, 64)
    x = torch.zeros(1, 3, 64, 64)
    x[0, :, 10, 20] = 0.8                     # one foreground pixel
    reconstruction = torch.full_like(x, 0.05)  # wrong everywhere, below the threshold
    mask = foreground_mask(x, background, 0.1)
    assert int(mask.sum()) == 1
    config = _config("vae.foreground_weight=19").vae
    weights = vae_stage.pixel_weights(x, background, config)
    plain = vae_loss(reconstruction, x, torch.zeros(1, 4), torch.zeros(1, 4), 0.0)["recon"]
    weighted = vae_loss(reconstruction, x, torch.zeros(1, 4), torch.zeros(1, 4), 0.0, weights)["recon"]
    foreground_error = float(((reconstruction - x)[0, :, 10, 20] ** 2).sum())
    assert float(weighted - plain) == pytest.approx(19 * foreground_error, rel=1e-5)
    assert vae_stage.pixel_weights(x, background, _config("vae.foreground_weight=0").vae) is None


class _Fixed(torch.nn.Module):
    """A stand-in V that reconstructs every frame as the background, or as itself."""

    def __init__(self, background, perfect):
        super().__init__()
        self.background, self.perfect, self.z_size = background, perfect, 2

    def encode(self, x):
        self._x = x
        return torch.zeros(len(x), 2), torch.zeros(len(x), 2)

    def decode(self, z):
        return self._x.clone() if self.perfect else self.background.expand_as(self._x).clone()


def test_the_foreground_ratio_is_one_for_the_background_and_zero_for_a_perfect_v(paths):
    reader = RolloutReader(paths.rollouts)
    config = _config().vae
    rows = reader.frame_rows()
    background = median_frame(reader, rows, 50)
    assert vae_stage.evaluate(_Fixed(background, False), reader, rows, background, config)[
        "heldout/foreground_ratio"] == pytest.approx(1.0)
    assert vae_stage.evaluate(_Fixed(background, True), reader, rows, background, config)[
        "heldout/foreground_ratio"] == pytest.approx(0.0)


class _Brightness(_Fixed):
    """A stand-in V whose first z dimension is the frame's mean brightness with sigma 0.001, its second a
    constant with sigma 1: one dimension in use, one the KL term has won."""

    def encode(self, x):
        self._x = x
        brightness = x.mean(dim=(1, 2, 3))
        mu = torch.stack([brightness, torch.full_like(brightness, 0.3)], dim=1)
        logvar = torch.stack([torch.full_like(brightness, 2 * np.log(0.001)), torch.zeros_like(brightness)], dim=1)
        return mu, logvar


def test_the_z_dimensions_in_use_are_those_whose_mu_varies_beyond_the_posterior_noise(paths):
    reader = RolloutReader(paths.rollouts)
    config = _config().vae
    rows = reader.frame_rows()
    background = median_frame(reader, rows, 50)
    metrics = vae_stage.evaluate(_Brightness(background, True), reader, rows, background, config)
    brightness = frames_to_input(torch.from_numpy(reader.read_frame_rows(np.sort(rows)))).mean(dim=(1, 2, 3))
    assert metrics["heldout/z_dims_in_use"] == 1
    assert metrics["heldout/z_snr_in_use"] == pytest.approx(float(brightness.std(unbiased=False)) / 0.001, rel=1e-3)
    assert vae_stage.evaluate(_Fixed(background, True), reader, rows, background, config)["heldout/z_dims_in_use"] == 0


def test_the_latent_signal_to_noise_is_mus_spread_over_the_mean_sigma():
    mu = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    sigma = torch.tensor([[0.5, 1.0], [1.5, 1.0], [1.0, 1.0]])
    expected = [np.std([0.0, 2.0, 4.0]) / 1.0, 0.0]
    assert vae_stage.latent_signal_to_noise(mu, sigma).tolist() == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_on_a_tiny_dataset_the_loss_falls_well_below_its_start(device):
    torch.manual_seed(0)
    frames = torch.from_numpy(np.stack([synthetic_episode(i, 3, 64).frames for i in range(2)]).reshape(-1, 64, 64, 3))
    frames = frames * 8  # brighter, so there is something to learn
    x = frames_to_input(frames.to(device))
    model = ConvVAE(8).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        reconstruction, mu, logvar = model(x)
        loss = vae_loss(reconstruction, x, mu, logvar, kl_tolerance=0.5)
        optimizer.zero_grad()
        loss["total"].backward()
        optimizer.step()
        losses.append(loss["recon"].item())
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.slow
def test_a_resumed_run_continues_at_the_next_epoch_and_matches_an_uninterrupted_one(paths, tmp_path, smoke_rollouts):
    vae_stage.run(_config("vae.epochs=1"), paths, progress=False)
    last = load_checkpoint(paths.last_checkpoint("vae"), "vae")
    assert last["epoch"] == 1
    steps_per_epoch = int(last["optimizer"]["state"][0]["step"])
    # A run killed after logging epoch 2 but before checkpointing it.
    MetricsLog(paths.metrics("vae")).append({"epoch": 2, "heldout/mse": -1.0})
    vae_stage.run(_config("vae.epochs=2"), paths, progress=False)
    resumed = load_checkpoint(paths.last_checkpoint("vae"), "vae")
    assert resumed["epoch"] == 2
    assert int(resumed["optimizer"]["state"][0]["step"]) == 2 * steps_per_epoch
    assert [r["epoch"] for r in MetricsLog(paths.metrics("vae")).read()] == [1, 2]
    assert all(r["heldout/mse"] > 0 for r in MetricsLog(paths.metrics("vae")).read())

    whole = PipelinePaths(tmp_path / "whole" / "smoke").ensure()
    whole.rollouts.write_bytes(smoke_rollouts.read_bytes())
    vae_stage.run(_config("vae.epochs=2"), whole, progress=False)
    uninterrupted = load_checkpoint(whole.last_checkpoint("vae"), "vae")
    for name, value in uninterrupted["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_finished_run_does_nothing_and_changed_settings_start_over(paths, caplog):
    caplog.set_level("INFO", logger="worldmodels")
    vae_stage.run(_config("vae.epochs=1"), paths, progress=False)
    vae_stage.run(_config("vae.epochs=1"), paths, progress=False)
    assert "already trained for 1 epochs" in caplog.text
    caplog.clear()
    vae_stage.run(_config("vae.epochs=1", "vae.learning_rate=0.001"), paths, progress=False)
    assert "learning_rate" in caplog.text


def test_training_writes_the_reconstruction_figure(paths):
    vae_stage.run(_config("vae.epochs=1"), paths, progress=False)
    image = Image.open(paths.figure("vae_reconstruction"))
    image.verify()
    assert image.size[0] > 200


@pytest.mark.slow
def test_encoded_latents_align_with_frames_and_stale_latents_are_refused(paths):
    config = _config("vae.epochs=1")
    vae_stage.run(config, paths, progress=False)
    encode.run(config, paths, progress=False)
    reader = RolloutReader(paths.rollouts)
    latents = LatentReader(paths.latents, paths.vae, reader)
    assert f"latents         {reader.num_frames} x 32" in describe_file(paths.latents)
    model, _ = load_vae(paths.vae)
    for episode, step in ((0, 0), (1, 5), (reader.num_episodes - 1, int(reader.lengths[-1]))):
        mu, logvar = latents.episode(episode)
        assert len(mu) == reader.lengths[episode] + 1
        frame = torch.from_numpy(reader.frames(episode, step, step + 1))
        with torch.no_grad():
            expected_mu, expected_logvar = model.encode(frames_to_input(frame))
        np.testing.assert_allclose(mu[step], expected_mu[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logvar[step], expected_logvar[0].numpy(), rtol=1e-4, atol=1e-5)

    # Another V: the latents no longer match it.
    vae_stage.run(_config("vae.epochs=2"), paths, progress=False)
    with pytest.raises(StoreError, match="stale.*wm encode"):
        LatentReader(paths.latents, paths.vae, reader)
    encode.run(_config("vae.epochs=2"), paths, progress=False)
    LatentReader(paths.latents, paths.vae, reader)
    # More episodes: the latents no longer match the rollouts.
    reader.close()
    with RolloutWriter(paths.rollouts, reader.env_config, reader.env_info, reader.frame_shape, 1) as writer:
        episode = synthetic_episode(9, 3, 64)
        episode.actions = episode.actions[:, :1]
        writer.append(episode)
    with pytest.raises(StoreError, match="other rollouts"):
        LatentReader(paths.latents, paths.vae, RolloutReader(paths.rollouts))


def test_a_latents_file_of_the_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "latents.h5"
    with h5py.File(path, "w") as handle:
        handle["mu"] = np.zeros((2, 2))
    with pytest.raises(StoreError, match="not a worldmodels latents file"):
        LatentReader(path)
