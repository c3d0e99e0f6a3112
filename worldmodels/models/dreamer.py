"""Dreamer's three networks (RSSM world model, actor, value) and their optimizers, built from settings."""

from __future__ import annotations

import dataclasses

import torch

from worldmodels.config import DreamerConfig
from worldmodels.models.actor_critic import Actor, Value
from worldmodels.models.rssm import WorldModel


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
