"""The paper's MDN-RNN (M of V-M-C): an LSTM over ``[z_t, a_t]`` predicting ``z_{t+1}``.

For every latent dimension a mixture of ``K`` diagonal Gaussians (log-weights, means and
log-stds per dimension, as in the paper's code), plus a reward head and a done head.

Shapes: ``z`` ``(B, T, Z)``, actions ``(B, T, A)``; mixture parameters ``(B, T, Z, K)``;
reward and done logits ``(B, T)``; LSTM state ``(h, c)`` each ``(1, B, H)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class MixturePrediction:
    """M's prediction for the next step. ``logits``, ``means``, ``log_stds``: ``(..., Z, K)``;
    ``reward``, ``done_logit``: ``(...)``."""

    logits: torch.Tensor
    means: torch.Tensor
    log_stds: torch.Tensor
    reward: torch.Tensor
    done_logit: torch.Tensor


class MDNRNN(nn.Module):
    """``forward(z, actions, state)`` -> (prediction for every step, final LSTM state)."""

    def __init__(self, z_size: int = 32, action_size: int = 1, hidden_size: int = 256, mixtures: int = 5) -> None:
        super().__init__()
        self.z_size, self.action_size = z_size, action_size
        self.hidden_size, self.mixtures = hidden_size, mixtures
        self.lstm = nn.LSTM(z_size + action_size, hidden_size, batch_first=True)
        self.mixture_head = nn.Linear(hidden_size, 3 * z_size * mixtures)
        self.reward_head = nn.Linear(hidden_size, 1)
        self.done_head = nn.Linear(hidden_size, 1)

    def heads(self, hidden: torch.Tensor) -> MixturePrediction:
        """LSTM outputs ``(..., H)`` -> the next step's prediction."""
        mixture = self.mixture_head(hidden).unflatten(-1, (self.z_size, 3 * self.mixtures))
        logits, means, log_stds = mixture.split(self.mixtures, dim=-1)
        return MixturePrediction(logits=functional.log_softmax(logits, dim=-1), means=means,
                                 log_stds=log_stds.clamp(-7.0, 5.0),
                                 reward=self.reward_head(hidden).squeeze(-1),
                                 done_logit=self.done_head(hidden).squeeze(-1))

    def forward(self, z: torch.Tensor, actions: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[MixturePrediction, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the fused LSTM over ``(B, T)`` steps. Returns (prediction, outputs ``(B, T, H)``, state)."""
        assert z.dim() == 3 and z.shape[-1] == self.z_size, f"z must be (B, T, {self.z_size}), got {tuple(z.shape)}"
        assert actions.shape[:2] == z.shape[:2] and actions.shape[-1] == self.action_size, \
            f"actions must be (B, T, {self.action_size}) like z, got {tuple(actions.shape)}"
        outputs, state = self.lstm(torch.cat([z, actions], dim=-1), state)
        return self.heads(outputs), outputs, state


def mixture_log_prob(prediction: MixturePrediction, target: torch.Tensor) -> torch.Tensor:
    """log p(target) under the per-dimension mixtures: ``target`` ``(..., Z)`` -> ``(..., Z)``."""
    target = target.unsqueeze(-1)
    log_normal = -0.5 * ((target - prediction.means) * torch.exp(-prediction.log_stds)).pow(2) \
        - prediction.log_stds - LOG_SQRT_2PI
    return torch.logsumexp(prediction.logits + log_normal, dim=-1)


def mixture_noise(shape: torch.Size, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The randomness of one draw of ``z`` of shape ``shape`` ``(..., Z)``: (uniform, normal)."""
    return torch.rand(shape, generator=generator), torch.randn(shape, generator=generator)


def sample_mixture(prediction: MixturePrediction, temperature: float,
                   noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Draw ``z`` ``(..., Z)`` with temperature: mixture logits / tau, Gaussian noise * sqrt(tau).

    ``noise`` = (uniform, normal), each ``(..., Z)`` (see :func:`mixture_noise`): the uniform picks
    each dimension's component by inverse CDF, the normal perturbs its mean. As tau -> 0 the draw
    goes to the mean of each dimension's most likely component; tau = 0 returns exactly that.
    """
    if temperature <= 0:
        chosen = prediction.logits.argmax(dim=-1, keepdim=True)
        return prediction.means.gather(-1, chosen).squeeze(-1)
    uniform, normal = noise
    cumulative = torch.softmax(prediction.logits / temperature, dim=-1).cumsum(dim=-1)
    chosen = (uniform.unsqueeze(-1) > cumulative).sum(dim=-1, keepdim=True).clamp(max=prediction.means.shape[-1] - 1)
    means = prediction.means.gather(-1, chosen).squeeze(-1)
    stds = prediction.log_stds.gather(-1, chosen).squeeze(-1).exp()
    return means + stds * normal * math.sqrt(temperature)


def select_step(prediction: MixturePrediction, index: int) -> MixturePrediction:
    """The prediction at time ``index`` of a ``(B, T, ...)`` prediction."""
    return MixturePrediction(logits=prediction.logits[:, index], means=prediction.means[:, index],
                             log_stds=prediction.log_stds[:, index], reward=prediction.reward[:, index],
                             done_logit=prediction.done_logit[:, index])


def mdn_loss(prediction: MixturePrediction, next_z: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
             mask: torch.Tensor, done_pos_weight: float = 10.0) -> dict[str, torch.Tensor]:
    """M's losses over the valid steps of a padded batch.

    ``next_z`` ``(B, T, Z)``; ``rewards``, ``dones`` (0/1) and ``mask`` (1: a real step, 0:
    padding) ``(B, T)``. ``z_nll``: negative log-likelihood of ``next_z`` per latent dimension;
    ``reward``: squared error; ``done``: binary cross-entropy with positives weighted
    ``done_pos_weight`` (episodes end once, so ends are rare). Each is averaged over real steps.
    """
    valid = mask.to(next_z.dtype)
    count = valid.sum().clamp(min=1.0)
    z_nll = -mixture_log_prob(prediction, next_z).mean(dim=-1)
    reward = (prediction.reward - rewards).pow(2)
    done = functional.binary_cross_entropy_with_logits(
        prediction.done_logit, dones.to(next_z.dtype), reduction="none",
        pos_weight=torch.tensor(done_pos_weight, dtype=next_z.dtype))
    # where(), not a product: a padded step may hold anything, NaN included.
    losses = {name: torch.where(valid > 0, value, torch.zeros_like(value)).sum() / count
              for name, value in (("z_nll", z_nll), ("reward", reward), ("done", done))}
    losses["total"] = losses["z_nll"] + losses["reward"] + losses["done"]
    return losses


def mixture_mean(prediction: MixturePrediction) -> torch.Tensor:
    """The expected next ``z`` under the mixtures, ``(..., Z)`` (the least-squares prediction)."""
    return (prediction.logits.exp() * prediction.means).sum(dim=-1)
