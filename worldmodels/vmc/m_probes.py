"""M measured as a simulator against the real env, from the held-out episodes' start states: the
held-out episodes' actions replayed in the dream, doing nothing, each action dimension held at -1 / 0 /
+1 for a whole episode (and, where a pipeline asks, the real zero action under small action noise: how
far off the dream of doing nothing is in the env's own units), and whether M's future depends on the
action as the real one does. The M stage writes what these return to ``metrics/mdnrnn_simulator.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldmodels.config import MDNRNNConfig, PipelineConfig
from worldmodels.data.latents import LatentReader
from worldmodels.data.store import RolloutReader
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import frames_to_input
from worldmodels.vmc.dream_starts import first_latents
from worldmodels.vmc.simulator import held_action_dream, noise_equivalent, openloop_latents, replay_returns


def replay_gap(model: MDNRNN, rollouts: RolloutReader, latents: LatentReader, episodes: np.ndarray,
                settings: MDNRNNConfig) -> dict[str, Any]:
    """Replaying held-out episodes' real actions in the dream (at ``settings.temperature``), each for
    its whole length: where episodes end at different steps (a death in TakeCover), the dream is
    scored up to the step the real episode ended, so a dream that dies too soon or too late shows."""
    lengths = rollouts.lengths[episodes].astype(np.int64)
    horizon = int(lengths.max())
    starts_mu, starts_logvar = first_latents(latents, episodes)
    actions = torch.zeros(len(episodes), horizon, rollouts.action_size)
    real = np.zeros(len(episodes))
    for row, episode in enumerate(episodes):
        steps = rollouts.step_data(int(episode))
        actions[row, :lengths[row]] = torch.from_numpy(steps["actions"])
        real[row] = steps["rewards"].sum()
    dream = replay_returns(model, starts_mu, starts_logvar, actions, settings.temperature, settings.dream_samples,
                           settings.seed, lengths=torch.from_numpy(lengths)).double().numpy()
    correlation = float(np.corrcoef(dream.mean(1), real)[0, 1]) if len(real) > 1 and real.std() > 0 else 0.0
    return {"temperature": settings.temperature, "steps": horizon, "real_return_mean": float(real.mean()),
            "dream_return_mean": float(dream.mean()), "mean_gap": float((dream.mean(1) - real).mean()),
            "mean_abs_gap": float(np.abs(dream.mean(1) - real).mean()), "correlation": correlation,
            "real_returns": real.tolist(), "dream_returns": dream.mean(1).tolist()}


@torch.no_grad()
def zero_action_calibration(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                             latents: LatentReader, episodes: np.ndarray) -> dict[str, Any]:
    """A closed-loop probe: a = 0 at every step, in the real env and in the dream, from the
    held-out episodes' start states (the env reset with their seeds; the dream from their first
    latents). Doing nothing scores well on cartpole, so a dream that lets the pole fall shows here.

    Also M's reward head teacher-forced on the real zero-action frames (encoded by V): when that
    matches the real return while the dream does not, the reward head is right and M's open-loop
    dynamics are what fails."""
    from worldmodels.envs import make_env

    horizon = int(rollouts.lengths[episodes].min())
    env = make_env(config.env)
    real, teacher_forced = [], []
    try:
        for episode in episodes:
            frames, rewards = held_action_episode(env, int(rollouts.episodes["seed"][episode]), 0.0, horizon)
            real.append(float(rewards.sum()))
            device = next(model.parameters()).device
            z, _ = vae.encode(frames_to_input(torch.from_numpy(np.stack(frames[:-1])).to(device)))
            prediction = model(z[None], torch.zeros(1, len(z), rollouts.action_size, device=device))[0]
            teacher_forced.append(float(prediction.reward.sum()))
    finally:
        env.close()
    starts_mu, starts_logvar = first_latents(latents, episodes)
    actions = torch.zeros(len(episodes), horizon, rollouts.action_size)
    dream = replay_returns(model, starts_mu, starts_logvar, actions, config.mdnrnn.temperature,
                           config.mdnrnn.dream_samples, config.mdnrnn.seed).double().numpy().mean(1)
    real = np.asarray(real, dtype=np.float64)
    return {"steps": horizon, "real_return_mean": float(real.mean()), "dream_return_mean": float(dream.mean()),
            "mean_gap": float((dream - real).mean()), "mean_abs_gap": float(np.abs(dream - real).mean()),
            "teacher_forced_return_mean": float(np.mean(teacher_forced)),
            "real_returns": real.tolist(), "dream_returns": dream.tolist(), "teacher_forced_returns": teacher_forced}


HELD_ACTIONS = (-1.0, 0.0, 1.0)
SENSITIVITY_STEPS = 20


def held_action_episode(env, seed: int, value: float, steps: int, noise_std: float = 0.0,
                        noise_seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to ``steps`` steps of ``env`` from ``reset(seed)`` with every action dimension held at ``value``
    (plus, with ``noise_std``, Gaussian noise of that std drawn from ``noise_seed``, clipped to [-1, 1]):
    the frames (the reset frame first) and every step's reward ``(n,)``. Stops where the episode ends
    (doing nothing ends a TakeCover episode), so there may be fewer than ``steps + 1`` frames."""
    frames, rewards = [env.reset(seed)], []
    action = np.full(env.action_size, value)
    noise = np.random.default_rng(noise_seed)
    for _ in range(steps):
        played = action if not noise_std else np.clip(action + noise_std * noise.standard_normal(action.shape), -1, 1)
        result = env.step(played)
        rewards.append(result.reward)
        frames.append(result.frame)
        if result.terminated or result.truncated:
            break
    return frames, np.asarray(rewards, dtype=np.float64)


@torch.no_grad()
def action_sensitivity(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                       episodes: np.ndarray, steps: int = SENSITIVITY_STEPS) -> dict[str, Any]:
    """Does M's future depend on the action as the real one does? From the held-out episodes' start
    states, every action dimension is held at -1, at 0 and at +1 for ``steps`` steps, in the real env
    (its frames encoded by V: z = mu) and in M's deterministic dream (mixture means from the first
    frame's mu). At each step the spread between the three futures is the mean pairwise distance of
    their ``z``, averaged over episodes.

    Returns the per-step spreads (``real``, ``dream``, lists of ``steps``) and ``ratio``: the dream's
    summed spread over the real one (1: M's futures part by action as reality's do; 0: M ignores the
    action; above 1: M exaggerates it).
    """
    from worldmodels.envs import make_env

    steps = min(steps, int(rollouts.lengths[episodes].min()))
    device = next(model.parameters()).device
    env = make_env(config.env)
    real = np.zeros((len(episodes), len(HELD_ACTIONS), steps + 1, model.z_size))
    try:
        for row, episode in enumerate(episodes):
            for column, value in enumerate(HELD_ACTIONS):
                frames, _ = held_action_episode(env, int(rollouts.episodes["seed"][episode]), value, steps)
                frames += [frames[-1]] * (steps + 1 - len(frames))  # an ended episode stays where it ended
                z, _ = vae.encode(frames_to_input(torch.from_numpy(np.stack(frames)).to(device)))
                real[row, column] = z.cpu().numpy()
    finally:
        env.close()
    first = torch.from_numpy(real[:, :, :1]).float().flatten(0, 1)  # (E * 3, 1, Z)
    held = torch.tensor(HELD_ACTIONS).repeat(len(episodes))[:, None, None].expand(-1, steps, model.action_size)
    dream = openloop_latents(model, first, held.contiguous(), 1, steps).view(len(episodes), len(HELD_ACTIONS),
                                                                             steps, -1).numpy()

    def spread(futures: np.ndarray) -> np.ndarray:  # (E, 3, T, Z) -> (T,)
        pairs = [(0, 1), (0, 2), (1, 2)]
        return np.mean([np.linalg.norm(futures[:, i] - futures[:, j], axis=-1) for i, j in pairs], axis=0).mean(0)

    real_spread, dream_spread = spread(real[:, :, 1:]), spread(dream)
    ratio = float(dream_spread.sum() / real_spread.sum()) if real_spread.sum() > 0 else float("nan")
    return {"steps": steps, "actions": list(HELD_ACTIONS), "real": real_spread.tolist(),
            "dream": dream_spread.tolist(), "ratio": ratio}


HELD_EPISODES = 10


@torch.no_grad()
def held_action_calibration(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                            latents: LatentReader, episodes: np.ndarray,
                            count: int = HELD_EPISODES) -> dict[str, Any]:
    """Whole episodes with every action dimension held at -1, at 0 and at +1, in the real env (reset
    with the seeds of the first ``count`` held-out episodes) and in M's dream from their first
    latents (at M's temperature, rewarded as C's dream is, ended by M's done head), both up to C's
    dream length. Where the dream pays a held action far more than reality does, a C evolved in
    the dream finds it (TakeCover: holding one direction, which the exploration data never does for
    long, survives in the dream and walks into the wall in the game).

    Returns per held value (lists in the order of ``actions``) the real and dream return and episode
    length means, their mean reward at every step (``real_reward_per_step``, ``dream_reward_per_step``:
    where along the episode the dream parts from reality; 0 after an episode's end), and
    ``largest_overestimate``: the largest dream - real return over the values. ``zero_action_noise``
    (only where the pipeline asks for it, ``mdnrnn.zero_action_noise_stds``): the real zero action's
    return with Gaussian action noise of each std (the same starts; noise seeded by the start's index),
    and ``dream_as_noise``, the noise std whose real return the dream of doing nothing matches
    (:func:`~worldmodels.vmc.simulator.noise_equivalent`).
    """
    from worldmodels.envs import make_env

    episodes = np.sort(episodes)[:count]
    noise_stds = list(config.mdnrnn.zero_action_noise_stds)
    steps = config.controller.dream_steps or int(rollouts.lengths.min())
    env = make_env(config.env)
    real_rewards = np.zeros((len(HELD_ACTIONS), len(episodes), steps))  # 0 after an episode's end
    real_lengths = np.zeros((len(HELD_ACTIONS), len(episodes)))
    try:
        for row, value in enumerate(HELD_ACTIONS):
            for column, episode in enumerate(episodes):
                _, rewards = held_action_episode(env, int(rollouts.episodes["seed"][episode]), value, steps)
                real_rewards[row, column, :len(rewards)], real_lengths[row, column] = rewards, len(rewards)
        noisy = np.array([[held_action_episode(env, int(rollouts.episodes["seed"][episode]), 0.0, steps, std,
                                               noise_seed=column)[1].sum()
                           for column, episode in enumerate(episodes)] for std in noise_stds])
    finally:
        env.close()
    starts_mu, starts_logvar = first_latents(latents, episodes)
    dreams = held_action_dream(model, starts_mu, starts_logvar, HELD_ACTIONS, config.mdnrnn.temperature,
                               config.mdnrnn.dream_samples, steps, config.controller.dream_reward, config.mdnrnn.seed)
    real, dream = real_rewards.sum(2).mean(1), dreams.returns.double().numpy().mean(1)
    zero = HELD_ACTIONS.index(0.0)
    measured = {"actions": list(HELD_ACTIONS), "episodes": len(episodes), "steps": steps,
                "temperature": config.mdnrnn.temperature,
                "real_return_mean": real.tolist(), "dream_return_mean": dream.tolist(),
                "real_length_mean": real_lengths.mean(1).tolist(),
                "dream_length_mean": dreams.lengths.double().numpy().mean(1).tolist(),
                "largest_overestimate": float((dream - real).max()),
                "real_reward_per_step": real_rewards.mean(1).tolist(),
                "dream_reward_per_step": dreams.step_rewards.double().numpy().mean(1).tolist()}
    if noise_stds:
        noisy_means = noisy.mean(1).tolist()
        measured["zero_action_noise"] = {"stds": noise_stds, "real_return_mean": noisy_means,
                                         "dream_as_noise": noise_equivalent(noise_stds, noisy_means, float(real[zero]),
                                                                            float(dream[zero]))}
    return measured
