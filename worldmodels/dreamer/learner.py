"""Dreamer's learning: its three networks (RSSM world model, actor, value) with their optimizers, built
from settings, one update of all three on a batch of windows, and the online schedule that says how
many updates are due. The `dreamer` stage drives it; the benchmarks time it."""

from __future__ import annotations

import dataclasses

import torch

from worldmodels.config import DreamerConfig
from worldmodels.core.runtime import Runtime
from worldmodels.models.actor_critic import Actor, Value, behaviour_losses
from worldmodels.models.rssm import WorldModel, world_model_losses


@dataclasses.dataclass
class Dreamer:
    """The three networks and their optimizers."""

    world_model: WorldModel
    actor: Actor
    value: Value
    optimizers: dict[str, torch.optim.Optimizer]

    @classmethod
    def build(cls, action_size: int, settings: DreamerConfig, device: torch.device | str = "cpu") -> Dreamer:
        """Fresh networks (initialised on the CPU from ``settings.seed``, so alike on every device) on ``device``."""
        torch.manual_seed(settings.seed)
        world_model = WorldModel(action_size, settings.depth, settings.deter_size, settings.stoch_size,
                                 settings.hidden_size, settings.head_hidden, settings.reward_layers)
        features = world_model.rssm.feature_size
        actor = Actor(features, action_size, settings.head_hidden, settings.actor_layers)
        value = Value(features, settings.head_hidden, settings.value_layers)
        world_model, actor, value = world_model.to(device), actor.to(device), value.to(device)
        optimizers = {
            "world_model": torch.optim.Adam(world_model.parameters(), lr=settings.model_learning_rate),
            "actor": torch.optim.Adam(actor.parameters(), lr=settings.actor_learning_rate),
            "value": torch.optim.Adam(value.parameters(), lr=settings.value_learning_rate),
        }
        return cls(world_model, actor, value, optimizers)

    def compile(self, runtime) -> Dreamer:
        """The convolution stacks (the bulk of an update's time) compiled when ``runtime.compile``."""
        runtime.compile_modules(self.world_model.encoder, self.world_model.decoder)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"world_model": self.world_model, "actor": self.actor, "value": self.value}

    def train(self) -> None:
        for module in self.modules().values():
            module.train()


def update(dreamer: Dreamer, batch: dict[str, torch.Tensor], settings: DreamerConfig,
           runtime: Runtime, behaviour: bool = True, actor: bool = True) -> dict[str, float]:
    """One Dreamer update on a batch of windows: world model, then (with ``behaviour``) the value and
    (with ``actor`` too) the actor in imagination.

    ``batch`` on the networks' device. The forward passes run under ``runtime.autocast()`` (bf16 where the
    precision resolved to it); the image loss, optimizers and parameters stay fp32."""
    with runtime.autocast():
        losses, posterior = world_model_losses(dreamer.world_model, batch["frames"], batch["actions"],
                                               batch["rewards"], settings.free_nats,
                                               settings.kl_balance, settings.free_nats_on_prior)
    optimizers = dreamer.optimizers
    optimizers["world_model"].zero_grad(set_to_none=True)
    losses["total"].backward()
    torch.nn.utils.clip_grad_norm_(dreamer.world_model.parameters(), settings.grad_clip)
    optimizers["world_model"].step()
    named = {f"train/loss/{k}": v for k, v in losses.items()}
    if not behaviour:
        return _as_floats(named)
    with runtime.autocast():
        imagined = behaviour_losses(dreamer.world_model, dreamer.actor, dreamer.value, posterior.detach(),
                                    settings.horizon, settings.discount, settings.lambda_, settings.actor_entropy)
    for name in ("actor", "value") if actor else ("value",):
        optimizers[name].zero_grad(set_to_none=True)
        imagined[name].backward()
        torch.nn.utils.clip_grad_norm_(getattr(dreamer, name).parameters(), settings.grad_clip)
        optimizers[name].step()
    return _as_floats(named | {
        "train/loss/actor": imagined["actor"], "train/loss/value": imagined["value"],
        "train/imagined_reward": imagined["imagined_reward"], "train/imagined_return": imagined["imagined_return"],
        "train/actor_entropy": imagined["entropy"]})


def _as_floats(named: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors as Python floats, with one device sync for all of them."""
    values = torch.stack([value.detach().float() for value in named.values()]).tolist()
    return dict(zip(named, values, strict=True))


def updates_due(settings: DreamerConfig, env_steps: int, prefill_env_steps: int) -> int:
    """Updates the schedule asks for once the replay holds ``env_steps`` env steps.

    Offline (``settings.env_steps == 0``): ``settings.updates``. Online (Dreamer v1's schedule):
    ``updates`` pretraining updates on the prefill, then ``updates_per_train`` for every whole
    ``train_every`` env steps played since; e.g. 100 + 100 * (100,000 - 5,000) // 1,000 = 9,600.
    """
    if settings.env_steps == 0:
        return settings.updates
    played = max(env_steps - prefill_env_steps, 0)
    return settings.updates + settings.updates_per_train * (played // settings.train_every)
