"""V+M and Dreamer's RSSM measured side by side as simulators, on the same held-out episodes.

Both models see ``mdnrnn.context_frames`` real frames, then predict ``mdnrnn.openloop_steps``
more from the real actions alone (V+M: M's mixture mean decoded by V; RSSM: the prior's mean
decoded). Errors per horizon: image MSE per pixel (frames in [0, 1]); the foreground ratio (V's
measure of whether the task's objects are drawn: squared error on the foreground pixels of the
true frame over that of the median frame, which draws none; plain MSE scores a blank background
better than a misplaced pole, this does not); the absolute error of the predicted reward of the
step leading to each frame. Each model's foreground horizon: the first step whose foreground ratio
passes ``FOREGROUND_THRESHOLD``. Also the RSSM's foreground ratio on posterior reconstructions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldmodels.artifacts import load_mdnrnn, load_vae
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import file_sha256
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.frames import median_frame
from worldmodels.data.latents import LatentReader, latents_match
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.errors import UserValueError
from worldmodels.models.rssm import WorldModel, frames_to_images, openloop_prediction
from worldmodels.models.vae import foreground_mask
from worldmodels.vmc.simulator import decode, openloop_episodes, openloop_rollout

FOREGROUND_EPISODES = 6
FOREGROUND_THRESHOLD = 0.5
"""A prediction has lost the objects once its error on them is over half that of not drawing them."""


def _errors(predicted: torch.Tensor, truth: torch.Tensor, predicted_rewards: torch.Tensor, rewards: torch.Tensor,
            background: torch.Tensor, threshold: float) -> dict[str, Any]:
    """Per-horizon errors over episodes: images ``(E, K, 3, H, W)`` in [0, 1], rewards ``(E, K)``,
    ``background`` ``(3, H, W)`` the median frame, ``threshold`` V's foreground threshold."""
    background = background.to(truth.device)
    mask = foreground_mask(truth.flatten(0, 1), background, threshold).reshape(
        truth.shape[0], truth.shape[1], 1, *truth.shape[3:])
    model_error = ((predicted - truth).pow(2) * mask).sum(dim=(0, 2, 3, 4))
    median_error = ((background - truth).pow(2) * mask).sum(dim=(0, 2, 3, 4))
    ratio = (model_error / median_error.clamp_min(1e-12)).tolist()
    crossed = [step + 1 for step, value in enumerate(ratio) if value > FOREGROUND_THRESHOLD]
    return {"pixel_mse": (predicted - truth).pow(2).flatten(2).mean(2).mean(0).tolist(),
            "foreground_ratio": ratio,
            "foreground_horizon": crossed[0] if crossed else None,
            "reward_abs_error": (predicted_rewards - rewards).abs().mean(0).tolist()}


@torch.no_grad()
def compare(config: PipelineConfig, paths: PipelinePaths, world_model: WorldModel) -> dict[str, Any]:
    """Open-loop error curves of the RSSM (and V+M), the frames for the figure, and foreground ratios."""
    context, steps = config.mdnrnn.context_frames, config.mdnrnn.openloop_steps
    rollouts = RolloutReader(paths.rollouts)
    train_episodes, heldout = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    usable = np.array([e for e in heldout if rollouts.lengths[e] >= context + steps], dtype=np.int64)
    if len(usable) == 0:
        raise UserValueError(f"no held-out episode has {context + steps} steps for the open-loop comparison "
                         "(mdnrnn.context_frames + mdnrnn.openloop_steps)")
    frames = torch.from_numpy(np.stack([rollouts.frames(int(e), 0, context + steps) for e in usable]))
    step_data = [rollouts.step_data(int(e)) for e in usable]
    actions = torch.from_numpy(np.stack([d["actions"][:context + steps - 1] for d in step_data]))
    rewards = torch.from_numpy(np.stack([d["rewards"][context - 1:context + steps - 1] for d in step_data]))
    truth = frames_to_images(frames) + 0.5
    world_model.eval()
    images, predicted_rewards = openloop_prediction(world_model, frames, actions, context)
    rssm_images = (images + 0.5).clamp(0, 1)
    background = median_frame(rollouts, rollouts.frame_rows(train_episodes), config.vae.median_frames)
    fg = (background, config.vae.foreground_threshold)
    curves = {"Dreamer RSSM": _errors(rssm_images, truth[:, context:], predicted_rewards, rewards, *fg)}
    mdnrnn_sha256 = None
    if paths.vae.is_file() and paths.mdnrnn.is_file() and latents_match(paths.latents, paths.vae, rollouts):
        latents = LatentReader(paths.latents)
        mu = torch.from_numpy(np.stack([latents.episode(int(e))[0][:context + steps] for e in usable]))
        device = next(world_model.parameters()).device
        model, _ = load_mdnrnn(paths.mdnrnn, device)
        vae, _ = load_vae(paths.vae, device)
        z, m_rewards = openloop_rollout(model, mu, actions, context, steps)
        curves["V+M (MDN-RNN)"] = _errors(decode(vae, z), truth[:, context:], m_rewards, rewards, *fg)
        mdnrnn_sha256 = file_sha256(paths.mdnrnn)
    shown = [list(usable).index(e) for e in openloop_episodes(usable)]
    return {"context_frames": context, "foreground_threshold": FOREGROUND_THRESHOLD, "episodes": usable.tolist(),
            "curves": curves, "mdnrnn_sha256": mdnrnn_sha256,
            "rssm_foreground_ratio": foreground_ratio(world_model, rollouts, usable[:FOREGROUND_EPISODES],
                                                      background, config.vae.foreground_threshold),
            "truth_frames": truth[shown].numpy(),
            "rssm_frames": torch.cat([truth[shown, :context], rssm_images[shown]], dim=1).numpy()}


@torch.no_grad()
def foreground_ratio(world_model: WorldModel, rollouts: RolloutReader, episodes: np.ndarray,
                     background: torch.Tensor, threshold: float) -> float:
    """Squared error of the posterior reconstructions on foreground pixels, over that of the median
    frame (1: the objects are not drawn at all; V's measure)."""
    device = next(world_model.parameters()).device
    background = background.to(device)
    model_error = median_error = 0.0
    for episode in episodes:
        frames = torch.from_numpy(rollouts.frames(int(episode)))[None].to(device)
        actions = torch.from_numpy(rollouts.step_data(int(episode))["actions"])[None].to(device)
        images = frames_to_images(frames)
        previous = torch.cat([torch.zeros_like(actions[:, :1]), actions], dim=1)
        posterior, _ = world_model.rssm.observe(world_model.embed(images), previous, sample=False)
        reconstruction = (world_model.decode(posterior.features)[0] + 0.5).clamp(0, 1)
        x = images[0] + 0.5
        mask = foreground_mask(x, background, threshold)
        model_error += float(((reconstruction - x).pow(2) * mask).sum())
        median_error += float(((background - x).pow(2) * mask).sum())
    return model_error / max(median_error, 1e-12)
