"""Training M, the MDN-RNN, one epoch at a time: what the M stage and ``wm state-model`` share.

An epoch is one pass over padded windows of latent sequences (``data/sequences.py``), z drawn afresh
from (mu, logvar) for every batch (or mu itself: ``mdnrnn.latents: mean``), every ensemble member on
the same batch, Adam with elementwise gradient clipping; held-out losses take z = mu.
:func:`settings_that_matter` names the settings that make a saved M another run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from worldmodels.config import MDNRNNConfig, PipelineConfig
from worldmodels.core.runtime import Runtime
from worldmodels.core.training import TrainingRun
from worldmodels.data.sequences import LatentSequences
from worldmodels.models.mdnrnn import MDNRNN, mdn_loss, members_of, openloop_nll


@torch.no_grad()
def heldout_losses(model: MDNRNN, sequences: LatentSequences, settings: MDNRNNConfig) -> dict[str, float]:
    """Losses on held-out windows with z = mu (deterministic, comparable across epochs)."""
    model.eval()
    losses = _mean_over_members([mdn_loss(member(sequences.mu[:, :-1], sequences.actions)[0], sequences.mu[:, 1:],
                                          sequences.rewards, sequences.dones, sequences.mask, settings.done_pos_weight)
                                 for member in members_of(model)])
    model.train()
    return {f"heldout/loss/{name}": value.item() for name, value in losses.items()}


def _mean_over_members(losses: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each loss averaged over an ensemble's members (a single M's losses unchanged)."""
    return {name: torch.stack([member[name] for member in losses]).mean() for name in losses[0]}


def scheduled_learning_rate(settings: MDNRNNConfig, epoch: int, batch_number: int, batches: int) -> float:
    """The cosine schedule's rate for batch ``batch_number`` (1-based) of ``batches`` in ``epoch``
    (1-based): ``learning_rate * (1 + cos(pi * done)) / 2``, ``done`` the share of the run's batches
    before this one (so the first batch gets the full rate and the rate nears 0 at the last). A
    function of the position alone, so a resumed run continues the schedule exactly."""
    done = ((epoch - 1) * batches + batch_number - 1) / (settings.epochs * batches)
    return settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def train_epoch(model: MDNRNN, optimizer: torch.optim.Optimizer, sequences: LatentSequences, epoch: int,
                 settings: MDNRNNConfig, runtime: Runtime, run: TrainingRun) -> dict[str, float]:
    """One pass over the training windows (held on the CPU: each batch's z is drawn there, then moved).
    A non-finite loss stops the run at once (``run.check``)."""
    model.train()
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    order = torch.randperm(len(sequences), generator=generator)
    sums: dict[str, float] = {}
    steps = 0.0
    batches = math.ceil(len(order) / settings.batch_size)
    for batch_number, start in enumerate(range(0, len(order), settings.batch_size), 1):
        if settings.learning_rate_schedule == "cosine":
            rate = scheduled_learning_rate(settings, epoch, batch_number, batches)
            for group in optimizer.param_groups:
                group["lr"] = rate
        batch = sequences.select(order[start:start + settings.batch_size])
        z = runtime.to_device(batch.mu if settings.latents == "mean" else batch.sample_z())
        batch = batch.to(runtime.device)
        if settings.openloop_loss_steps:
            length = batch.actions.shape[1]
            start = int(torch.randint(length - settings.openloop_loss_steps + 1, (1,), generator=generator))
        per_member = []
        for member in members_of(model):  # every member on the same batch: they differ by their initial weights
            losses = mdn_loss(member(z[:, :-1], batch.actions)[0], z[:, 1:], batch.rewards, batch.dones, batch.mask,
                              settings.done_pos_weight)
            if settings.openloop_loss_steps:
                losses["openloop_z_nll"] = openloop_nll(member, z, batch.actions, batch.mask, start,
                                                        settings.openloop_loss_steps)
                losses["total"] = losses["total"] + settings.openloop_loss_weight * losses["openloop_z_nll"]
            per_member.append(losses)
        optimizer.zero_grad(set_to_none=True)
        # The sum: each member's gradient is its own loss's, as if trained alone.
        torch.stack([losses["total"] for losses in per_member]).sum().backward()
        losses = _mean_over_members(per_member)
        torch.nn.utils.clip_grad_value_(model.parameters(), settings.grad_clip)
        optimizer.step()
        weight = float(batch.mask.sum())
        steps += weight
        values = torch.stack([value.detach() for value in losses.values()]).tolist()  # one device sync
        named = dict(zip(losses, values, strict=True))
        run.check(epoch, {f"train/loss/{name}": value for name, value in named.items()}, batch=batch_number)
        for name, value in named.items():
            sums[name] = sums.get(name, 0.0) + value * weight
    return {f"train/loss/{name}": value / steps for name, value in sums.items()} | {"timesteps": steps}


def settings_that_matter(config: PipelineConfig) -> dict[str, Any]:
    """M's settings that make a saved run another run (its length and measurements do not)."""
    settings = dataclasses.asdict(config.mdnrnn)
    for key in ("epochs", "eval_every", "patience", "temperature", "context_frames", "openloop_steps",
                "dream_samples", "zero_action_noise_stds"):
        settings.pop(key)
    if settings["ensemble"] == 1:  # a single M is what it was before ensembles existed: its runs resume
        settings.pop("ensemble")
    if settings["latents"] == "sampled":  # likewise an M on sampled z, the only kind there was before
        settings.pop("latents")
    if settings["played_repeat"] == 1:  # likewise an M that weighs every episode alike
        settings.pop("played_repeat")
    if not settings["residual"]:  # likewise an M that predicts the next z itself
        settings.pop("residual")
    if settings["learning_rate_schedule"] == "constant":  # likewise an M trained at one rate
        settings.pop("learning_rate_schedule")
    else:  # the schedule spans the epochs: a longer run is another run
        settings["epochs"] = config.mdnrnn.epochs
    settings["heldout_fraction"] = config.data.heldout_fraction
    return settings
