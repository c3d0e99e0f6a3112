"""M measured as a simulator: open-loop error against horizon, and the dream's replay gap.

Open loop: M sees the latents of ``context`` real frames with their actions, then predicts
``steps`` more frames from its own predictions (the mixture mean) and the real actions. The
latent error at horizon ``k`` is the squared error summed over dimensions divided by the
held-out latents' total variance (1.0: no information left); the pixel error decodes the
predictions with V and compares them with the real frames.

Replay gap: each held-out episode's real actions replayed in the dream (sampled at the dream
temperature) from its first frame; the dream's return against the episode's real return.

Any policy of ``(z, h)`` can be played in the dream (:func:`policy_dream_returns`): how a policy known
to balance in reality fares there says whether the dream can tell a good C at all.

Inputs may live anywhere: they are moved to the models' device, and results come back on the CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from worldmodels.models.mdnrnn import MDNRNN, mixture_mean, select_step
from worldmodels.models.vae import ConvVAE, frames_to_input
from worldmodels.vmc.dream import DreamEnv

REPORTED_HORIZONS = (1, 5, 10, 20, 45)
OPENLOOP_SEQUENCES = 6


def openloop_episodes(heldout_episodes: np.ndarray, count: int = OPENLOOP_SEQUENCES) -> np.ndarray:
    """The held-out episodes every open-loop figure shows (V+M's and Dreamer's): the first ``count``."""
    return np.sort(heldout_episodes)[:count]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


@torch.no_grad()
def openloop_rollout(model: MDNRNN, mu: torch.Tensor, actions: torch.Tensor, context: int,
                     steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict frames ``context .. context + steps - 1`` from the first ``context``, and the rewards
    of steps ``context - 1 .. context + steps - 2`` (the step leading to each predicted frame).

    ``mu`` ``(E, >= context, Z)`` real latents, ``actions`` ``(E, >= context + steps - 1, A)``
    -> latents ``(E, steps, Z)``, rewards ``(E, steps)``, both on the CPU.
    """
    model.eval()
    device = model_device(model)
    mu, actions = mu.to(device), actions.to(device)
    prediction, _, state = model(mu[:, :context], actions[:, :context])
    step = select_step(prediction, -1)
    z = mixture_mean(step)
    predicted, rewards = [z], [step.reward]
    for k in range(1, steps):
        prediction, _, state = model(z[:, None], actions[:, context + k - 1][:, None], state)
        step = select_step(prediction, 0)
        z = mixture_mean(step)
        predicted.append(z)
        rewards.append(step.reward)
    return torch.stack(predicted, dim=1).cpu(), torch.stack(rewards, dim=1).cpu()


def openloop_latents(model: MDNRNN, mu: torch.Tensor, actions: torch.Tensor, context: int,
                     steps: int) -> torch.Tensor:
    """The latents of :func:`openloop_rollout`, ``(E, steps, Z)``."""
    return openloop_rollout(model, mu, actions, context, steps)[0]


@torch.no_grad()
def decode(vae: ConvVAE, z: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """``(..., Z)`` -> frames ``(..., 3, 64, 64)`` in [0, 1], on the CPU (decoded on V's device)."""
    flat = z.reshape(-1, z.shape[-1])
    device = model_device(vae)
    frames = torch.cat([vae.decode(flat[i:i + batch].to(device)).cpu() for i in range(0, len(flat), batch)])
    return frames.reshape(*z.shape[:-1], *frames.shape[1:])


def openloop_errors(model: MDNRNN, vae: ConvVAE, mu: torch.Tensor, actions: torch.Tensor, frames: np.ndarray,
                    latent_variance: torch.Tensor, context: int, steps: int) -> dict[str, list[float]]:
    """Per-horizon errors (lists of ``steps`` values, horizon 1 first) and the predicted frames.

    ``frames`` uint8 ``(E, >= context + steps, H, W, 3)``: the real frames of the episodes.
    """
    predicted = openloop_latents(model, mu, actions, context, steps)
    truth = mu[:, context:context + steps].cpu()
    latent = ((predicted - truth).pow(2).sum(-1) / latent_variance.sum()).mean(0)
    real = frames_to_input(torch.from_numpy(frames[:, context:context + steps].reshape(-1, *frames.shape[2:])))
    imagined = decode(vae, predicted).reshape(real.shape)
    pixel = (imagined - real).pow(2).flatten(1).mean(1).view(len(mu), steps).mean(0)
    return {"latent_error": latent.tolist(), "pixel_mse": pixel.tolist(), "predicted_frames": imagined.view(
        len(mu), steps, *real.shape[1:])}


@torch.no_grad()
def replay_returns(model: MDNRNN, start_mu: torch.Tensor, start_logvar: torch.Tensor, actions: torch.Tensor,
                   temperature: float, samples: int, seed: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Dream returns of replaying each episode's real actions ``(E, T, A)`` from its first latent.

    ``lengths`` ``(E,)``: each episode's own length (its actions padded to ``T``); a dream earns nothing
    after it, as there are no actions to replay there (default: all ``T``).

    Returns ``(E, samples)`` on the CPU: ``samples`` dream rollouts per episode, all run as one batch.
    """
    episodes, horizon = actions.shape[:2]
    dream = DreamEnv(model, start_mu, start_logvar, temperature=temperature, max_steps=horizon,
                     generator=torch.Generator().manual_seed(seed))
    starts = torch.arange(episodes).repeat_interleave(samples)
    dream.reset(len(starts), starts=starts)
    actions = actions.to(dream.device)
    rows = starts.to(dream.device)
    limits = (torch.full((episodes,), horizon) if lengths is None else lengths)[starts].to(dream.device)
    total = torch.zeros(len(starts), device=dream.device)
    for t in range(horizon):
        reward = dream.step(actions[rows, t]).reward
        total += torch.where(limits > t, reward, torch.zeros_like(reward))
    return total.view(episodes, samples).cpu()


def noise_equivalent(stds: list[float], noisy_returns: list[float], zero_return: float,
                     dream_return: float) -> dict[str, Any]:
    """Where M's dream of doing nothing sits on the real env's own sensitivity curve: the real
    zero-action return falls as Gaussian action noise of growing std is added (``noisy_returns``, one
    per std of the increasing ``stds``); the std at which it falls to the dream's return says how
    far off the dream is in the env's own units (a learned simulator is at best a slightly wrong
    physics, and near an unstable equilibrium a small error costs as much as a small push).

    Returns ``{"std": s, "bound": b}``: ``b`` is ``"at"`` with ``s`` interpolated linearly in log std
    between the two measured stds whose returns bracket the dream's; ``"below"`` (``s`` the smallest
    std) when the dream is within the smallest noise's effect; ``"above"`` (``s`` the largest std)
    when it is below even the largest noise's return; ``"over"`` (``s`` None) when the dream pays
    doing nothing more than reality does, which no noise explains.
    """
    if dream_return > zero_return:
        return {"std": None, "bound": "over"}
    if dream_return >= noisy_returns[0]:
        return {"std": float(stds[0]), "bound": "below"}
    for (low, high), (upper, lower) in zip(itertools.pairwise(stds), itertools.pairwise(noisy_returns), strict=True):
        if lower <= dream_return <= upper and upper > lower:
            fraction = (upper - dream_return) / (upper - lower)
            return {"std": float(np.exp(np.log(low) + fraction * (np.log(high) - np.log(low)))), "bound": "at"}
    return {"std": float(stds[-1]), "bound": "above"}


def describe_zero_action_noise(held: dict[str, Any]) -> str:
    """One line: the real zero action's return under each noise, and the noise M's dream of it matches."""
    noise = held["zero_action_noise"]
    curve = " / ".join(f"{r:.0f}" for r in noise["real_return_mean"])
    stds = " / ".join(f"{s:g}" for s in noise["stds"])
    dream = held["dream_return_mean"][held["actions"].index(0.0)]
    bound, std = noise["dream_as_noise"]["bound"], noise["dream_as_noise"]["std"]
    if bound == "over":  # std is None: nothing to format
        where = "above the real one: no action noise explains it"
    else:
        where = {"at": f"as if the real one had action noise of std {std:.3g}",
                 "below": f"within what action noise of std {std:g} costs the real one",
                 "above": f"below even the real one with action noise of std {std:g}"}[bound]
    return f"real zero action with action noise {stds}: {curve}; M's dream of doing nothing ({dream:.0f}) is {where}"


class HeldActionDreams(NamedTuple):
    """Dreams of held actions, averaged over each start's samples: ``returns`` and ``lengths``
    ``(V, E)`` (held values x starts), ``step_rewards`` ``(V, E, max_steps)`` (0 after a dream's end)."""

    returns: torch.Tensor
    lengths: torch.Tensor
    step_rewards: torch.Tensor


@torch.no_grad()
def held_action_dream(model: MDNRNN, start_mu: torch.Tensor, start_logvar: torch.Tensor, values: tuple[float, ...],
                      temperature: float, samples: int, max_steps: int, reward: str,
                      seed: int) -> HeldActionDreams:
    """Dreams with every action dimension held at each of ``values``, from each start latent
    ``(E, Z)``, until M's done head ends them or ``max_steps``, rewarded as C's dream is (``reward``:
    ``model`` or ``survival``).

    This is the probe an exploiting C runs first: a held action is the simplest policy, and one the
    exploration data (actions held a few steps at most) may never show for long. The reward of every
    step says where along the episode the dream parts from reality.

    Returns the means over ``samples`` dreams per start, on the CPU (:class:`HeldActionDreams`).
    """
    episodes = len(start_mu)
    dream = DreamEnv(model, start_mu, start_logvar, temperature=temperature, max_steps=max_steps,
                     generator=torch.Generator().manual_seed(seed), reward=reward)
    starts = torch.arange(episodes).repeat_interleave(samples).repeat(len(values))
    held = torch.tensor(values, dtype=torch.float32).repeat_interleave(episodes * samples)
    actions = held[:, None].expand(-1, model.action_size).to(dream.device)
    step_rewards = torch.zeros(len(starts), max_steps, device=dream.device)
    total, length = dream_to_the_end(dream, lambda active: actions[active], len(starts), starts, step_rewards)
    shape = (len(values), episodes, samples)
    return HeldActionDreams(total.view(shape).mean(-1).cpu(), length.view(shape).mean(-1).cpu(),
                            step_rewards.view(*shape, max_steps).mean(2).cpu())


def dream_to_the_end(dream: DreamEnv, act: Callable[[torch.Tensor], torch.Tensor], batch: int,
                     starts: torch.Tensor | None = None,
                     step_rewards: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` dreams (from ``starts`` ``(batch,)``, default random) stepped until M's done head or the
    dream's step limit ends each; finished rollouts leave the batch. ``act(active)`` gives the actions
    ``(N, A)`` of the still-running rollouts, ``active`` ``(N,)`` their indices among all (their z and h
    are ``dream.z``, ``dream.h``). Returns each rollout's return and length, ``(batch,)`` each, on the
    dream's device; ``step_rewards``, a ``(batch, dream.max_steps)`` tensor of zeros on that device, is
    filled with every step's reward when given."""
    dream.reset(batch, starts=starts)
    total = torch.zeros(batch, device=dream.device)
    length = torch.zeros(batch, device=dream.device)
    active = torch.arange(batch, device=dream.device)
    for step in range(dream.max_steps):
        result = dream.step(act(active))
        total[active] += result.reward
        if step_rewards is not None:
            step_rewards[active, step] = result.reward
        length[active] += 1
        running = ~result.done
        if not bool(running.any()):
            break
        if not bool(running.all()):
            dream.keep(running)
            active = active[running]
    return total, length


@torch.no_grad()
def policy_dream_returns(dream: DreamEnv, policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         rollouts: int) -> torch.Tensor:
    """The return of each of ``rollouts`` dreams ``(rollouts,)`` (on the CPU) of ``policy(z, h)``: ``z``
    ``(N, Z)`` and M's ``h`` ``(N, H)`` of the still-running rollouts -> their actions ``(N, A)``."""
    total, _ = dream_to_the_end(dream, lambda active: policy(dream.z, dream.h), rollouts)
    return total.cpu()
