"""The paper's MDN-RNN (M of V-M-C): an LSTM over ``[z_t, a_t]`` predicting ``z_{t+1}``.

Two mixture forms, plus a reward head and a done head:
- ``per_dimension`` (the paper's code): every latent dimension has its own mixture of ``K``
  Gaussians (log-weights, means and log-stds per dimension), so dimensions are independent;
- ``shared``: one mixture of ``K`` diagonal Gaussians over the whole ``z``, so a component is a
  joint mode of all dimensions (one set of weights per step).

With ``residual`` the means are offsets from the z read at that step (M predicts z's change).

Shapes: ``z`` ``(B, T, Z)``, actions ``(B, T, A)``; means and log-stds ``(B, T, Z, K)``; mixture
log-weights ``(B, T, Z, K)`` per dimension or ``(B, T, 1, K)`` shared; reward and done logits
``(B, T)``; LSTM state ``(h, c)`` each ``(1, B, H)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class MixturePrediction:
    """M's prediction for the next step. ``means``, ``log_stds``: ``(..., Z, K)``; ``logits``
    (normalised log-weights): ``(..., Z, K)`` per dimension or ``(..., 1, K)`` shared;
    ``reward``, ``done_logit``: ``(...)``."""

    logits: torch.Tensor
    means: torch.Tensor
    log_stds: torch.Tensor
    reward: torch.Tensor
    done_logit: torch.Tensor


class MDNRNN(nn.Module):
    """``forward(z, actions, state)`` -> (prediction for every step, final LSTM state)."""

    def __init__(self, z_size: int = 32, action_size: int = 1, hidden_size: int = 256, mixtures: int = 5,
                 mixture: str = "per_dimension", latents: str = "sampled", residual: bool = False) -> None:
        super().__init__()
        if mixture not in ("per_dimension", "shared"):
            raise ValueError(f"mixture must be 'per_dimension' or 'shared', got {mixture!r}")
        if latents not in ("sampled", "mean"):
            raise ValueError(f"latents must be 'sampled' or 'mean', got {latents!r}")
        self.z_size, self.action_size = z_size, action_size
        self.hidden_size, self.mixtures, self.mixture = hidden_size, mixtures, mixture
        self.latents = latents
        """What z this M was trained on (``mdnrnn.latents``): its dreams start from the same."""
        self.residual = residual
        """The mixture's means are offsets from the z just read (``mdnrnn.residual``): M predicts how z
        changes, so that standing still is what an untrained head predicts."""
        self.lstm = nn.LSTM(z_size + action_size, hidden_size, batch_first=True)
        weights = mixtures * (z_size if mixture == "per_dimension" else 1)
        self.mixture_head = nn.Linear(hidden_size, weights + 2 * z_size * mixtures)
        self.reward_head = nn.Linear(hidden_size, 1)
        self.done_head = nn.Linear(hidden_size, 1)

    def heads(self, hidden: torch.Tensor) -> MixturePrediction:
        """LSTM outputs ``(..., H)`` -> the next step's prediction."""
        out = self.mixture_head(hidden)
        weight_count = out.shape[-1] - 2 * self.z_size * self.mixtures
        logits = out[..., :weight_count].unflatten(-1, (weight_count // self.mixtures, self.mixtures))
        means, log_stds = out[..., weight_count:].unflatten(-1, (self.z_size, 2 * self.mixtures)).split(
            self.mixtures, dim=-1)
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
        prediction = self.heads(outputs)
        if self.residual:
            prediction = dataclasses.replace(prediction, means=prediction.means + z[..., None])
        return prediction, outputs, state


class MDNRNNEnsemble(nn.Module):
    """``members`` MDN-RNNs of one shape, trained side by side on the same batches from different
    initial weights (a deep ensemble).

    Used as an M (``forward``, ``heads``, the sizes) it is its first member: the one whose ``h`` C
    reads, in the dream and in the real env. :meth:`step` advances every member at once for the
    dream, which draws each step from a member picked at random and measures where they disagree.
    LSTM states of all members stack on the first axis: ``(K, N, H)`` each.
    """

    def __init__(self, members: int, z_size: int = 32, action_size: int = 1, hidden_size: int = 256,
                 mixtures: int = 5, mixture: str = "per_dimension", latents: str = "sampled",
                 residual: bool = False) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = nn.ModuleList(MDNRNN(z_size, action_size, hidden_size, mixtures, mixture, latents, residual)
                                     for _ in range(members))
        self.z_size, self.action_size = z_size, action_size
        self.hidden_size, self.mixtures, self.mixture = hidden_size, mixtures, mixture
        self.latents, self.residual = latents, residual

    def heads(self, hidden: torch.Tensor) -> MixturePrediction:
        return self.members[0].heads(hidden)

    def forward(self, z: torch.Tensor, actions: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[MixturePrediction, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The first member's :meth:`MDNRNN.forward`."""
        return self.members[0](z, actions, state)

    def step(self, z: torch.Tensor, actions: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[MixturePrediction, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step of every member: ``z`` ``(N, Z)``, ``actions`` ``(N, A)``, ``state`` ``(K, N, H)`` x 2 ->
        the members' predictions stacked on a first axis ``K`` (means ``(K, N, Z, M)``, reward ``(K, N)``, ...),
        their outputs ``(K, N, H)`` and the new state."""
        predictions, outputs, hs, cs = [], [], [], []
        for index, member in enumerate(self.members):
            prediction, output, (h, c) = member(z[:, None], actions[:, None],
                                                (state[0][index:index + 1], state[1][index:index + 1]))
            predictions.append(select_step(prediction, 0))
            outputs.append(output[:, 0])
            hs.append(h)
            cs.append(c)
        stacked = MixturePrediction(*(torch.stack([getattr(p, name) for p in predictions])
                                      for name in ("logits", "means", "log_stds", "reward", "done_logit")))
        return stacked, torch.stack(outputs), (torch.cat(hs), torch.cat(cs))


def members_of(model: nn.Module) -> list[MDNRNN]:
    """The MDN-RNNs a model is made of: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, MDNRNNEnsemble) else [model]


def member_rows(stacked: MixturePrediction, member: torch.Tensor) -> MixturePrediction:
    """From predictions stacked over members (first axis ``K``), row ``n`` of member ``member[n]``:
    ``member`` ``(N,)`` -> a prediction of ``N`` rows."""
    rows = torch.arange(len(member), device=member.device)
    return MixturePrediction(*(getattr(stacked, name)[member, rows]
                               for name in ("logits", "means", "log_stds", "reward", "done_logit")))


def disagreement(stacked: MixturePrediction) -> torch.Tensor:
    """How far apart the members' expected next ``z`` are: the standard deviation over members of
    :func:`mixture_mean`, averaged over the latent dimensions. ``(K, N, ...)`` -> ``(N,)``; 0 when
    every member predicts the same."""
    return mixture_mean(stacked).std(dim=0, unbiased=False).mean(dim=-1)


def is_shared(prediction: MixturePrediction) -> bool:
    """True for one mixture over the whole ``z`` (log-weights ``(..., 1, K)``)."""
    return prediction.logits.shape[-2] == 1 and prediction.means.shape[-2] > 1


def mixture_log_prob(prediction: MixturePrediction, target: torch.Tensor) -> torch.Tensor:
    """log p(target) of the whole ``z``: ``target`` ``(..., Z)`` -> ``(...)``."""
    target = target.unsqueeze(-1)
    log_normal = -0.5 * ((target - prediction.means) * torch.exp(-prediction.log_stds)).pow(2) \
        - prediction.log_stds - LOG_SQRT_2PI
    if is_shared(prediction):
        return torch.logsumexp(prediction.logits[..., 0, :] + log_normal.sum(dim=-2), dim=-1)
    return torch.logsumexp(prediction.logits + log_normal, dim=-1).sum(dim=-1)


def mixture_noise(shape: torch.Size, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The randomness of one draw of ``z`` of shape ``shape`` ``(..., Z)``: (uniform, normal), on ``device``.

    Drawn by ``generator`` (a CPU generator) and then moved, so a seed gives the same dream on every device."""
    uniform, normal = torch.rand(shape, generator=generator), torch.randn(shape, generator=generator)
    return uniform.to(device), normal.to(device)


def sample_mixture(prediction: MixturePrediction, temperature: float,
                   noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Draw ``z`` ``(..., Z)`` with temperature: mixture logits / tau, Gaussian noise * sqrt(tau).

    ``noise`` = (uniform, normal), each ``(..., Z)`` (see :func:`mixture_noise`): the uniform picks
    each dimension's component by inverse CDF, the normal perturbs its mean. As tau -> 0 the draw
    goes to the mean of each dimension's most likely component; tau = 0 returns exactly that.
    """
    shape = (*prediction.means.shape[:-1], 1)
    if temperature <= 0:
        chosen = prediction.logits.argmax(dim=-1, keepdim=True).expand(shape)
        return prediction.means.gather(-1, chosen).squeeze(-1)
    uniform, normal = noise
    if is_shared(prediction):
        uniform = uniform[..., :1]  # one component for the whole z
    cumulative = torch.softmax(prediction.logits / temperature, dim=-1).cumsum(dim=-1)
    chosen = (uniform.unsqueeze(-1) > cumulative).sum(dim=-1, keepdim=True).clamp(max=prediction.means.shape[-1] - 1)
    chosen = chosen.expand(shape)
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
    padding) ``(B, T)``. ``z_nll``: negative log-likelihood of ``next_z`` divided by ``Z``;
    ``reward``: squared error; ``done``: binary cross-entropy with positives weighted
    ``done_pos_weight`` (episodes end once, so ends are rare). Each is averaged over real steps.
    """
    valid = mask.to(next_z.dtype)
    count = valid.sum().clamp(min=1.0)
    z_nll = -mixture_log_prob(prediction, next_z) / next_z.shape[-1]
    reward = (prediction.reward - rewards).pow(2)
    done = functional.binary_cross_entropy_with_logits(
        prediction.done_logit, dones.to(next_z.dtype), reduction="none",
        pos_weight=torch.tensor(done_pos_weight, dtype=next_z.dtype, device=next_z.device))
    # where(), not a product: a padded step may hold anything, NaN included.
    losses = {name: torch.where(valid > 0, value, torch.zeros_like(value)).sum() / count
              for name, value in (("z_nll", z_nll), ("reward", reward), ("done", done))}
    losses["total"] = losses["z_nll"] + losses["reward"] + losses["done"]
    return losses


def mixture_mean(prediction: MixturePrediction) -> torch.Tensor:
    """The expected next ``z`` under the mixtures, ``(..., Z)`` (the least-squares prediction)."""
    return (prediction.logits.exp() * prediction.means).sum(dim=-1)


def openloop_nll(model: MDNRNN, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, start: int,
                 steps: int) -> torch.Tensor:
    """Mean z NLL (per dimension) of ``steps`` predictions made open loop from step ``start``.

    ``z`` ``(B, T + 1, Z)``, ``actions`` and ``mask`` ``(B, T)``; ``start + steps <= T``. M reads
    the real ``z[:, :start + 1]``, then its own mixture means; gradients flow through them.
    """
    _, _, state = model(z[:, :start], actions[:, :start]) if start > 0 else (None, None, None)
    current = z[:, start]
    total, count = z.new_zeros(()), z.new_zeros(())
    for offset in range(steps):
        t = start + offset
        prediction, _, state = model(current[:, None], actions[:, t:t + 1], state)
        prediction = select_step(prediction, 0)
        valid = mask[:, t]
        nll = -mixture_log_prob(prediction, z[:, t + 1]) / z.shape[-1]
        total = total + torch.where(valid > 0, nll, torch.zeros_like(nll)).sum()
        count = count + valid.sum()
        current = mixture_mean(prediction)
    return total / count.clamp(min=1.0)
