"""The dream videos: GIF frames and labels' data, and dreams that stop where M's done head ends them."""

import base64
import io
import re

import numpy as np
import torch
from PIL import Image

from tests.conftest import smoke_config
from worldmodels.core.paths import PipelinePaths
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE
from worldmodels.reporting.page import Report
from worldmodels.vmc.videos import (
    LABEL_HEIGHT,
    MAX_GIF_FRAMES,
    SCALE,
    controller_dream,
    dream_with_actions,
    write_gif,
)


def _solid(length: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (length, 8, 8, 3)).copy()


def test_a_panel_that_ends_first_holds_its_last_frame_darkened(tmp_path):
    path = tmp_path / "video.gif"
    count = write_gif([("long", _solid(10, (200, 0, 0)), np.arange(10.0)),
                       ("short", _solid(4, (0, 200, 0)), np.arange(4.0))], path)
    gif = Image.open(path)
    assert count == gif.n_frames == 10 and gif.size == (2 * 8 * SCALE, 8 * SCALE + 28)
    gif.seek(2)
    running = np.asarray(gif.convert("RGB"))[14 + 4, 8 * SCALE + 4]
    gif.seek(7)
    ended = np.asarray(gif.convert("RGB"))[14 + 4, 8 * SCALE + 4]
    left = np.asarray(gif.convert("RGB"))[14 + 4, 4]
    np.testing.assert_allclose(running, [0, 200, 0], atol=8)
    np.testing.assert_allclose(ended, [0, 100, 0], atol=8)
    np.testing.assert_allclose(left, [200, 0, 0], atol=8)


def test_long_episodes_are_subsampled_to_the_frame_budget(tmp_path):
    count = write_gif([("a", _solid(450, (9, 9, 9)), np.zeros(450))], tmp_path / "long.gif")
    assert count == 150 <= MAX_GIF_FRAMES  # every 3rd step


def test_the_report_links_a_video_beside_it_and_shows_its_first_frame(tmp_path):
    paths = PipelinePaths(tmp_path / "smoke")
    frames = np.concatenate([_solid(1, (200, 0, 0)), _solid(5, (0, 0, 200))])
    write_gif([("real", frames, np.arange(6.0))], paths.video("dream_vs_real"))
    shown = Report(smoke_config(), paths).video("dream_vs_real", "make mdnrnn", "a video")
    assert set(re.findall(r'href="([^"]*)"', shown)) == {"figures/dream_vs_real.gif"}  # relative to report.html
    assert (paths.report.parent / "figures/dream_vs_real.gif").is_file()
    assert re.search(r"\(animated GIF, \d+ kB\)", shown)  # its size, so a reader knows what opening it costs
    still = re.fullmatch(r'.*src="data:image/png;base64,([^"]+)".*', shown, re.DOTALL).group(1)
    still = Image.open(io.BytesIO(base64.b64decode(still)))
    assert still.size == Image.open(paths.video("dream_vs_real")).size
    np.testing.assert_allclose(np.asarray(still.convert("RGB"))[LABEL_HEIGHT + 4, 4], [200, 0, 0], atol=8)
    assert "Missing" in Report(smoke_config(), paths).video("controller_in_dream", "make controller", "C")


def _models(done_bias: float):
    torch.manual_seed(0)
    model = MDNRNN(z_size=8, action_size=1, hidden_size=16, mixtures=2).eval()
    with torch.no_grad():
        model.done_head.weight.zero_()
        model.done_head.bias.fill_(done_bias)
    return model, ConvVAE(8).eval()


def test_the_dream_video_stops_where_the_done_head_ends_the_dream():
    mu, logvar = torch.zeros(8), torch.zeros(8)
    actions = torch.zeros(30, 1)
    model, vae = _models(20.0)
    frames, returns = dream_with_actions(model, vae, mu, logvar, actions, 1.0, seed=0, reward="survival")
    assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(returns, [0.0, 1.0])
    model, vae = _models(-20.0)
    frames, returns = dream_with_actions(model, vae, mu, logvar, actions, 1.0, seed=0, reward="survival")
    assert len(frames) == 31 and returns[-1] == 30.0
    parameters = torch.zeros(LinearController(8, 16, 1, "zch", bias=False).num_parameters)
    frames, returns = controller_dream(model, vae, parameters, "zch", mu, logvar, 1.0, steps=12, seed=0,
                                       reward="survival")
    assert len(frames) == 13 and returns[-1] == 12.0
