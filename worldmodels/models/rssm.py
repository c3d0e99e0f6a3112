"""Dreamer's world model: a conv encoder, the RSSM (deterministic GRU path + Gaussian stochastic
state), a conv decoder and a reward head (Hafner et al. 2019, v1).

Shapes: images ``(B, T, 3, 64, 64)`` float in [-0.5, 0.5]; actions ``(B, T, A)``; a state is a
:class:`State` of ``deter`` ``(B, D)``, ``stoch`` ``(B, S)`` and the Gaussian's ``mean`` / ``std``
``(B, S)``; features ``[deter, stoch]`` ``(B, D + S)`` feed the decoder and every head.

Time convention (the rollouts store ``actions[t]`` taken on ``frames[t]``): the posterior state
``s_t`` reads frame ``t`` and the action ``a_{t-1}`` (zero at ``t = 0``); the reward predicted
from ``s_{t+1}`` is ``rewards[t]``, the reward of the step that led there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class State:
    """An RSSM state for a batch: every field ``(B, ...)``; stacked over time they are ``(B, T, ...)``."""

    deter: torch.Tensor
    stoch: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def features(self) -> torch.Tensor:
        return torch.cat([self.deter, self.stoch], dim=-1)

    def detach(self) -> State:
        return State(self.deter.detach(), self.stoch.detach(), self.mean.detach(), self.std.detach())

    @staticmethod
    def stack(states: list[State], dim: int = 1) -> State:
        return State(*(torch.stack([getattr(s, name) for s in states], dim) for name in ("deter", "stoch", "mean",
                                                                                          "std")))

    def flatten(self) -> State:
        """``(B, T, ...)`` -> ``(B * T, ...)``."""
        return State(*(getattr(self, name).reshape(-1, getattr(self, name).shape[-1])
                       for name in ("deter", "stoch", "mean", "std")))

    def distribution(self) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mean, self.std)


class ConvEncoder(nn.Module):
    """``(N, 3, 64, 64)`` -> ``(N, 32 * depth)``: four 4x4 stride-2 convolutions, ReLU."""

    def __init__(self, depth: int = 32, fast: bool = True) -> None:
        super().__init__()
        self.fast = fast
        channels = [3, depth, 2 * depth, 4 * depth, 8 * depth]
        self.layers = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2)
                                    for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.output_size = 8 * depth * 2 * 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Channels-last runs these convolutions ~25% faster on CPU (oneDNN); same values.
        x = images.contiguous(memory_format=torch.channels_last) if self.fast else images
        for layer in self.layers:
            x = F.relu(layer(x))
        return x.contiguous().flatten(1)


class ConvDecoder(nn.Module):
    """Features ``(N, F)`` -> image means ``(N, 3, 64, 64)``: a dense layer to ``32 * depth`` channels
    at 1x1, then 5, 5, 6, 6 transposed convolutions of stride 2.

    ``fast`` (the default) computes the same function faster on CPU: the first transposed
    convolution, which reads a 1x1 input, as the matrix product it is, and the rest in
    channels-last memory format (``fast=False`` is the plain path the benchmark compares with).
    """

    def __init__(self, feature_size: int, depth: int = 32, fast: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(feature_size, 32 * depth)
        channels = [32 * depth, 4 * depth, 2 * depth, depth, 3]
        kernels = [5, 5, 6, 6]
        self.layers = nn.ModuleList(nn.ConvTranspose2d(a, b, k, stride=2)
                                    for a, b, k in zip(channels[:-1], channels[1:], kernels, strict=True))
        self.fast = fast

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dense(features)
        first = self.layers[0]
        if self.fast:
            # On a 1x1 input, output[n, o, i, j] = sum_c x[n, c] W[c, o, i, j] + b[o].
            size = first.kernel_size[0]
            x = F.linear(x, first.weight.flatten(1).t()).view(len(x), first.out_channels, size, size)
            x = F.relu(x + first.bias[:, None, None]).contiguous(memory_format=torch.channels_last)
        else:
            x = F.relu(first(x[:, :, None, None]))
        for index, layer in enumerate(self.layers[1:], start=1):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x.contiguous()


def mlp(input_size: int, hidden: int, layers: int, output_size: int) -> nn.Sequential:
    """``layers`` dense ELU layers of ``hidden`` units, then a linear output."""
    modules: list[nn.Module] = []
    size = input_size
    for _ in range(layers):
        modules += [nn.Linear(size, hidden), nn.ELU()]
        size = hidden
    modules.append(nn.Linear(size, output_size))
    return nn.Sequential(*modules)


class RSSM(nn.Module):
    """The recurrent state-space model: ``imagine_step`` (prior) and ``observe_step`` (posterior)."""

    def __init__(self, action_size: int, embed_size: int, deter_size: int = 200, stoch_size: int = 30,
                 hidden_size: int = 200, min_std: float = 0.1) -> None:
        super().__init__()
        self.action_size, self.deter_size, self.stoch_size, self.min_std = action_size, deter_size, stoch_size, min_std
        self.input_layer = nn.Linear(stoch_size + action_size, hidden_size)
        self.cell = nn.GRUCell(hidden_size, deter_size)
        self.prior_hidden = nn.Linear(deter_size, hidden_size)
        self.prior_out = nn.Linear(hidden_size, 2 * stoch_size)
        self.posterior_hidden = nn.Linear(deter_size + embed_size, hidden_size)
        self.posterior_out = nn.Linear(hidden_size, 2 * stoch_size)

    @property
    def feature_size(self) -> int:
        return self.deter_size + self.stoch_size

    def initial(self, batch: int) -> State:
        zeros = self.cell.weight_hh.new_zeros
        return State(zeros(batch, self.deter_size), zeros(batch, self.stoch_size), zeros(batch, self.stoch_size),
                     zeros(batch, self.stoch_size) + 1.0)

    def _gaussian(self, deter: torch.Tensor, raw: torch.Tensor, noise: torch.Tensor | None) -> State:
        mean, std = raw.chunk(2, dim=-1)
        std = F.softplus(std) + self.min_std
        noise = torch.randn_like(mean) if noise is None else noise
        return State(deter, mean + std * noise, mean, std)

    def imagine_step(self, state: State, action: torch.Tensor, noise: torch.Tensor | None = None) -> State:
        """The prior ``p(s_t | s_{t-1}, a_{t-1})``: ``action`` ``(B, A)``."""
        x = F.elu(self.input_layer(torch.cat([state.stoch, action], dim=-1)))
        deter = self.cell(x, state.deter)
        return self._gaussian(deter, self.prior_out(F.elu(self.prior_hidden(deter))), noise)

    def observe_step(self, state: State, action: torch.Tensor, embed: torch.Tensor,
                     noise: torch.Tensor | None = None) -> tuple[State, State]:
        """(posterior, prior) of ``s_t`` given ``s_{t-1}``, ``a_{t-1}`` and the frame's embedding ``(B, E)``."""
        prior = self.imagine_step(state, action, torch.zeros_like(state.stoch))
        raw = self.posterior_out(F.elu(self.posterior_hidden(torch.cat([prior.deter, embed], dim=-1))))
        return self._gaussian(prior.deter, raw, noise), prior

    def observe(self, embeds: torch.Tensor, previous_actions: torch.Tensor, state: State | None = None,
                sample: bool = True, noise: torch.Tensor | None = None) -> tuple[State, State]:
        """Posterior and prior states ``(B, T, ...)`` along a sequence: ``embeds`` ``(B, T, E)``,
        ``previous_actions`` ``(B, T, A)`` (``a_{t-1}`` for each frame ``t``); ``sample=False``
        takes the posterior's mean at every step; ``noise`` ``(B, T, S)`` fixes the draws.

        Equal to calling :meth:`observe_step` along the sequence, but only the GRU and the
        posterior's sampling run step by step: the embeddings' share of the posterior layer and the
        prior's layers (which read only ``deter``) run as one batch over all steps.
        """
        state = state or self.initial(embeds.shape[0])
        steps = embeds.shape[1]
        embed_part = F.linear(embeds, self.posterior_hidden.weight[:, self.deter_size:], self.posterior_hidden.bias)
        deter_weight = self.posterior_hidden.weight[:, :self.deter_size]
        deters, stochs, means, stds = [], [], [], []
        deter, stoch = state.deter, state.stoch
        for t in range(steps):
            deter = self.cell(F.elu(self.input_layer(torch.cat([stoch, previous_actions[:, t]], dim=-1))), deter)
            mean, std = self.posterior_out(F.elu(embed_part[:, t] + F.linear(deter, deter_weight))).chunk(2, dim=-1)
            std = F.softplus(std) + self.min_std
            if not sample:
                stoch = mean
            else:
                stoch = mean + std * (torch.randn_like(mean) if noise is None else noise[:, t])
            deters.append(deter)
            stochs.append(stoch)
            means.append(mean)
            stds.append(std)
        deter_all = torch.stack(deters, dim=1)
        posterior = State(deter_all, torch.stack(stochs, dim=1), torch.stack(means, dim=1), torch.stack(stds, dim=1))
        prior_mean, prior_std = self.prior_out(F.elu(self.prior_hidden(deter_all))).chunk(2, dim=-1)
        prior = State(deter_all, prior_mean, prior_mean, F.softplus(prior_std) + self.min_std)
        return posterior, prior

    def observe_stepwise(self, embeds: torch.Tensor, previous_actions: torch.Tensor,
                         noise: torch.Tensor) -> tuple[State, State]:
        """:meth:`observe` written as one :meth:`observe_step` per frame (the reference it must equal)."""
        state = self.initial(embeds.shape[0])
        posteriors, priors = [], []
        for t in range(embeds.shape[1]):
            state, prior = self.observe_step(state, previous_actions[:, t], embeds[:, t], noise[:, t])
            posteriors.append(state)
            priors.append(prior)
        return State.stack(posteriors), State.stack(priors)

    def imagine(self, state: State, actions: torch.Tensor) -> State:
        """Prior states ``(B, T, ...)`` from ``state`` ``(B, ...)`` under ``actions`` ``(B, T, A)``."""
        states = []
        for t in range(actions.shape[1]):
            state = self.imagine_step(state, actions[:, t])
            states.append(state)
        return State.stack(states)


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder + reward head."""

    def __init__(self, action_size: int, depth: int = 32, deter_size: int = 200, stoch_size: int = 30,
                 hidden_size: int = 200, reward_hidden: int = 400, reward_layers: int = 2) -> None:
        super().__init__()
        self.encoder = ConvEncoder(depth)
        self.rssm = RSSM(action_size, self.encoder.output_size, deter_size, stoch_size, hidden_size)
        self.decoder = ConvDecoder(self.rssm.feature_size, depth)
        self.reward = mlp(self.rssm.feature_size, reward_hidden, reward_layers, 1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, 64, 64)`` -> ``(B, T, E)``."""
        batch, steps = images.shape[:2]
        return self.encoder(images.flatten(0, 1)).view(batch, steps, -1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` -> image means ``(B, T, 3, 64, 64)``."""
        batch, steps = features.shape[:2]
        return self.decoder(features.flatten(0, 1)).view(batch, steps, *self.image_shape)

    image_shape = (3, 64, 64)


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [-0.5, 0.5] (Dreamer's input scaling)."""
    return frames.movedim(-1, -3).float() / 255.0 - 0.5


def kl_with_free_nats(posterior: State, prior: State, free_nats: float, balance: float = 0.5,
                      floor_prior: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, raw KL) of the posterior against the prior, KL summed over the state's dimensions and
    averaged over batch and time, floored at ``free_nats`` (below the floor a term carries no gradient).

    ``balance`` is DreamerV2's KL balancing: the loss is
    ``(1 - balance) * max(KL(q || sg(p)), free) + balance * max(KL(sg(q) || p), free)``, so a share
    ``balance`` of the gradient trains the prior towards the posterior and ``1 - balance`` pulls the
    posterior towards the prior (DreamerV2 uses 0.8). ``balance = 0.5`` with the floor on both is Dreamer
    v1's ``max(KL(q || p), free)``, whose gradient reaches both sides whole (the balanced form at 0.5 would
    give each side half of it). ``floor_prior=False`` floors the posterior's term alone: the posterior may
    carry ``free_nats`` of information unpunished while the prior learns to predict it at every KL.
    """
    def mean_kl(q: State, p: State) -> torch.Tensor:
        return torch.distributions.kl_divergence(q.distribution(), p.distribution()).sum(-1).mean()

    if balance == 0.5 and floor_prior:  # Dreamer v1's loss, not the balanced form at 0.5 (half the gradient)
        kl = mean_kl(posterior, prior)
        return torch.clamp(kl, min=free_nats), kl
    posterior_side = mean_kl(posterior, prior.detach())
    prior_side = mean_kl(posterior.detach(), prior)
    if floor_prior:
        prior_side = torch.clamp(prior_side, min=free_nats)
    loss = (1 - balance) * torch.clamp(posterior_side, min=free_nats) + balance * prior_side
    return loss, posterior_side.detach()


def world_model_losses(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                       free_nats: float, kl_balance: float = 0.5,
                       floor_prior: bool = True) -> tuple[dict[str, torch.Tensor], State]:
    """Losses on a batch of windows and the posterior states ``(B, L + 1, ...)``.

    ``frames`` uint8 ``(B, L + 1, H, W, 3)``, ``actions`` ``(B, L, A)``, ``rewards`` ``(B, L)``.
    Image and reward are unit-variance Gaussians, so their NLLs are half squared errors (summed
    over pixels, averaged over frames), up to constants.
    """
    images = frames_to_images(frames)
    previous_actions = torch.cat([torch.zeros_like(actions[:, :1]), actions], dim=1)
    posterior, prior = model.rssm.observe(model.embed(images), previous_actions)
    features = posterior.features
    reconstruction = model.decode(features)
    # One fused pass over the B x (L + 1) x 3 x 64 x 64 pixels (the largest tensor of the update).
    image_nll = 0.5 * F.mse_loss(reconstruction.float(), images, reduction="sum") / (images.shape[0] * images.shape[1])
    predicted_reward = model.reward(features[:, 1:]).squeeze(-1)
    reward_nll = 0.5 * (predicted_reward - rewards).pow(2).mean()
    kl_loss, kl = kl_with_free_nats(posterior, prior, free_nats, kl_balance, floor_prior)
    losses = {"image_nll": image_nll, "reward_nll": reward_nll, "kl": kl,
              "total": image_nll + reward_nll + kl_loss}
    return losses, posterior


@torch.no_grad()
def openloop_prediction(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor,
                        context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and rewards predicted open loop: ``context`` frames through the posterior, then the
    prior's mean with the real actions; later frames are never read.

    ``frames`` uint8 ``(B, T + 1, H, W, 3)`` (only ``[:, :context]`` is used), ``actions`` ``(B, T, A)``.
    Returns image means ``(B, T + 1 - context, 3, 64, 64)`` for frames ``context .. T`` and
    predicted rewards ``(B, T + 1 - context)`` for steps ``context - 1 .. T - 1``, on the CPU
    (computed on the model's device).
    """
    device = next(model.parameters()).device
    frames, actions = frames.to(device), actions.to(device)
    images = frames_to_images(frames[:, :context])
    previous_actions = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :context - 1]], dim=1)
    posterior, _ = model.rssm.observe(model.embed(images), previous_actions, sample=False)
    state = State(*(getattr(posterior, name)[:, -1] for name in ("deter", "stoch", "mean", "std")))
    states = []
    for t in range(context - 1, actions.shape[1]):
        state = model.rssm.imagine_step(state, actions[:, t], torch.zeros_like(state.stoch))
        states.append(state)
    features = State.stack(states).features
    return model.decode(features).cpu(), model.reward(features).squeeze(-1).cpu()
