"""Dreamer's behaviour: a tanh-Normal actor and a value head learned in imagination.

From every posterior state of a batch the actor imagines ``horizon`` steps with the RSSM's prior;
rewards and values of the imagined states give lambda-returns; the actor maximises them by
backpropagating through the learned dynamics, whose parameters the actor loss leaves unchanged
(they are frozen while imagining); the value regresses on the returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from worldmodels.models.rssm import State, WorldModel, mlp


class Actor(nn.Module):
    """Features ``(N, F)`` -> a tanh-Normal over actions ``(N, A)`` in (-1, 1).

    The mean is squashed to ``mean_scale * tanh(mean / mean_scale)`` and the std starts at about
    ``init_std`` (Dreamer v1: 5 and 5), so early actions explore the whole range.
    """

    def __init__(self, feature_size: int, action_size: int, hidden: int = 400, layers: int = 4,
                 init_std: float = 5.0, mean_scale: float = 5.0, min_std: float = 1e-4) -> None:
        super().__init__()
        self.net = mlp(feature_size, hidden, layers, 2 * action_size)
        self.raw_init_std = math.log(math.exp(init_std) - 1.0)
        self.mean_scale, self.min_std = mean_scale, min_std

    def _normal(self, features: torch.Tensor) -> torch.distributions.Normal:
        mean, std = self.net(features).chunk(2, dim=-1)
        mean = self.mean_scale * torch.tanh(mean / self.mean_scale)
        return torch.distributions.Normal(mean, F.softplus(std + self.raw_init_std) + self.min_std)

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """A reparameterised sample ``(N, A)``: gradients flow to the actor and to ``features``."""
        return torch.tanh(self._normal(features).rsample())

    def sample_with_log_prob(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample ``(N, A)`` and its log-density under the tanh-Normal ``(N,)``:
        ``log N(x) - sum log(1 - tanh(x)^2)``, the second term written as ``2 (log 2 - x - softplus(-2x))``
        so that it stays finite where the sample saturates."""
        normal = self._normal(features)
        x = normal.rsample()
        log_det = 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))
        return torch.tanh(x), (normal.log_prob(x) - log_det).sum(-1)

    def sample_from(self, features: torch.Tensor, standard_normal: torch.Tensor) -> torch.Tensor:
        """A sample ``(N, A)`` drawn with the given standard-normal draws ``(N, A)`` (acting: the
        caller's seeded generator decides the draw, so an episode replays from its seed)."""
        normal = self._normal(features)
        return torch.tanh(normal.mean + normal.stddev * standard_normal)

    def mode(self, features: torch.Tensor) -> torch.Tensor:
        """The deterministic action used for evaluation: ``tanh`` of the Normal's mean."""
        return torch.tanh(self._normal(features).mean)


class Value(nn.Module):
    """Features ``(..., F)`` -> value ``(...)``."""

    def __init__(self, feature_size: int, hidden: int = 400, layers: int = 3) -> None:
        super().__init__()
        self.net = mlp(feature_size, hidden, layers, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, discount: float,
                   lambda_: float) -> torch.Tensor:
    """TD(lambda) returns ``(H, N)`` of ``rewards`` and ``values`` ``(H, N)``, ``bootstrap`` ``(N,)``:

    ``R_t = r_t + discount * ((1 - lambda) * v_{t+1} + lambda * R_{t+1})``, ``R_H = bootstrap``,
    where ``v_{t+1}`` is the value of the state after step ``t`` (``values[t + 1]``, and
    ``bootstrap`` for the last step).
    """
    next_values = torch.cat([values[1:], bootstrap[None]], dim=0)
    returns = []
    following = bootstrap
    for t in reversed(range(rewards.shape[0])):
        following = rewards[t] + discount * ((1 - lambda_) * next_values[t] + lambda_ * following)
        returns.append(following)
    return torch.stack(returns[::-1])


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` take no gradient inside the block (gradients still flow through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


def imagine_ahead(world_model: WorldModel, actor: Actor, start: State, horizon: int,
                  log_probs: list[torch.Tensor] | None = None) -> State:
    """Imagined prior states ``(H, N, ...)`` from ``start`` ``(N, ...)``, actions sampled from the actor
    (their log-densities ``(N,)`` appended to ``log_probs`` when given)."""
    state = start
    states = []
    for _ in range(horizon):
        if log_probs is None:
            action = actor.sample(state.features)
        else:
            action, log_prob = actor.sample_with_log_prob(state.features)
            log_probs.append(log_prob)
        state = world_model.rssm.imagine_step(state, action)
        states.append(state)
    return State.stack(states, dim=0)


def behaviour_losses(world_model: WorldModel, actor: Actor, value: Value, posterior: State, horizon: int,
                     discount: float, lambda_: float, entropy_scale: float = 0.0) -> dict[str, torch.Tensor]:
    """Actor and value losses from imagination starting at every posterior state ``(B, T, ...)``.

    The world model is frozen while imagining, so ``actor_loss.backward()`` fills only the actor's
    gradients (and the value's, which ``value_loss`` ignores: its returns are detached).
    ``entropy_scale`` > 0 adds that much of the imagined actions' entropy (estimated as the mean of
    ``-log p(a)`` of the tanh-Normal's samples) to the actor's objective; its ``log(1 - tanh^2)``
    part grows without bound as samples saturate, which keeps the actor from settling on a
    saturated push that no gradient through ``tanh`` can bring back (Dreamer v1: none).
    """
    start = posterior.detach().flatten()
    log_probs: list[torch.Tensor] | None = [] if entropy_scale > 0 else None
    with frozen(world_model), frozen(value):
        imagined = imagine_ahead(world_model, actor, start, horizon, log_probs)
        features = imagined.features
        # The returns in fp32 even under bf16 autocast: values of ~200 are spaced 1.0 apart in bf16,
        # coarser than the differences between actions the actor learns from.
        rewards = world_model.reward(features).squeeze(-1).float()
        values = value(features).float()
    returns = lambda_returns(rewards[:-1], values[:-1], values[-1], discount, lambda_)
    # Later imagined steps count less: discount^t, as in Dreamer v1.
    weights = torch.cumprod(torch.cat([torch.ones_like(returns[:1]), torch.full_like(returns[:-1], discount)]), 0)
    actor_loss = -(weights * returns).mean()
    entropy = -torch.stack(log_probs).mean() if log_probs else torch.zeros((), device=returns.device)
    actor_loss = actor_loss - entropy_scale * entropy
    value_loss = 0.5 * (value(features[:-1].detach()).float() - returns.detach()).pow(2).mul(weights).mean()
    return {"actor": actor_loss, "value": value_loss, "imagined_reward": rewards.mean().detach(),
            "imagined_return": returns[0].mean().detach(), "entropy": entropy.detach()}
