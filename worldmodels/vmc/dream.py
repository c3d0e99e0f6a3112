"""The batched dream: M as an environment, for many rollouts at once.

``reset(batch)`` starts every rollout from the latent of a real frame drawn from the stored
starts: first frames, as the paper's Doom dream did, or any frame with M's state on reaching
it. ``step(actions)`` advances the whole batch with one
LSTM step and one mixture draw. Rewards come from M's reward head, or are 1 for every step
survived (``reward="survival"``, the paper's Doom dream); ``done`` comes from M's done head
(``p > 0.5``) or the step limit; a finished rollout stays finished and earns nothing more.

With an ensemble M (``mdnrnn.ensemble > 1``) every member steps; each rollout's next ``z``, reward
and done come from a member drawn at random for that row and step (so C is scored under all of
them), C reads the first member's ``h``, and ``penalty`` x the members' disagreement is taken off
each step's reward: a conservative dream, which pays less where the data did not decide what
happens (an offline model-based penalty in the manner of MOPO, Yu et al. 2020).

Shapes: batch ``N``; ``z`` ``(N, Z)``; actions ``(N, A)``; rewards and dones ``(N,)``;
``h`` and ``c`` (M's LSTM hidden and cell) ``(N, H)``. Every tensor lives on M's device; the
randomness is drawn by a CPU generator and moved there, so the same seed gives the same dream on
the CPU and on a GPU (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from worldmodels.models.controller import population_actions
from worldmodels.models.mdnrnn import (
    MDNRNN,
    MDNRNNEnsemble,
    disagreement,
    member_rows,
    mixture_noise,
    sample_mixture,
    select_step,
)


@dataclass
class DreamStep:
    """What one dream step returns for the whole batch."""

    z: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    disagreement: torch.Tensor
    """``(N,)``: the ensemble's disagreement on this step (zeros for a single M)."""


class DreamEnv:
    """M's dream for a batch of rollouts.

    ``start_mu`` / ``start_logvar`` ``(S, Z)``: latents of real frames; each reset draws ``batch``
    of them (with replacement) and samples ``z`` from them. ``start_states`` (h, c), each
    ``(S, H)``: M's LSTM state on reaching each start (default zeros: the start of an episode; a single
    M only). ``penalty``: reward taken off per unit of an ensemble's disagreement.
    """

    def __init__(self, model: MDNRNN | MDNRNNEnsemble, start_mu: torch.Tensor, start_logvar: torch.Tensor,
                 temperature: float = 1.0, max_steps: int = 1000, generator: torch.Generator | None = None,
                 start_states: tuple[torch.Tensor, torch.Tensor] | None = None, reward: str = "model",
                 penalty: float = 0.0) -> None:
        self.members = len(model.members) if isinstance(model, MDNRNNEnsemble) else 1
        if self.members > 1 and start_states is not None:
            raise ValueError("an ensemble M dreams from first frames only (controller.dream_starts: first)")
        if penalty < 0:
            raise ValueError(f"the disagreement penalty must be >= 0, got {penalty}")
        self.penalty = penalty
        if len(start_mu) == 0:
            raise ValueError("the dream needs at least one start latent")
        if start_states is not None and not all(len(s) == len(start_mu) for s in start_states):
            raise ValueError("start_states must have one (h, c) row per start latent")
        if reward not in ("model", "survival"):
            raise ValueError(f"dream reward must be 'model' or 'survival', got {reward!r}")
        self.reward = reward
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.start_mu, self.start_logvar = start_mu.to(self.device), start_logvar.to(self.device)
        self.start_states = None if start_states is None else tuple(s.to(self.device) for s in start_states)
        self.temperature, self.max_steps = temperature, max_steps
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.z = self.h = self.c = self.state = self.done = None
        self.steps = 0
        self.rows_stepped = 0
        """Rollout steps dreamed since this dream was made (finished rollouts that left the batch cost none)."""

    @torch.no_grad()
    def reset(self, batch: int, starts: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Start ``batch`` rollouts; ``starts`` ``(batch,)`` picks the start latents (default: random)
        and ``noise`` ``(batch, Z)`` draws z from them (default: from the dream's generator).

        Returns ``z`` ``(batch, Z)``.
        """
        if starts is None:
            starts = torch.randint(len(self.start_mu), (batch,), generator=self.generator)
        starts = starts.to(self.device)
        mu, logvar = self.start_mu[starts], self.start_logvar[starts]
        if noise is None:
            noise = torch.randn(mu.shape, generator=self.generator)
        # An M trained on V's means (mdnrnn.latents: mean) starts from the mean, as it reads in the real env.
        exact = self.model.latents == "mean"
        self.z = mu if exact else mu + torch.exp(0.5 * logvar) * noise.to(self.device)
        hidden = self.model.hidden_size
        if self.start_states is None:
            zeros = torch.zeros(self.members, batch, hidden, device=self.device)
            self.state = (zeros, zeros.clone())
        else:
            h, c = self.start_states
            self.state = (h[starts][None].contiguous(), c[starts][None].contiguous())
        self.h, self.c = self.state[0][0], self.state[1][0]
        self.done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.steps = 0
        return self.z

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every rollout but ``rows`` (a bool mask ``(N,)``) from the batch: finished rollouts cost
        nothing more."""
        rows = rows.to(self.device)
        self.z, self.done = self.z[rows], self.done[rows]
        self.state = (self.state[0][:, rows], self.state[1][:, rows])
        self.h, self.c = self.state[0][0], self.state[1][0]

    @torch.no_grad()
    def step(self, actions: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> DreamStep:
        """Advance every rollout by one step with ``actions`` ``(N, A)`` in [-1, 1].

        ``noise`` (uniform, normal), each ``(N, Z)``, fixes the draw of the next ``z``
        (default: from the dream's generator).
        """
        assert self.z is not None, "call reset() before step()"
        assert actions.shape == (len(self.z), self.model.action_size), \
            f"actions must be ({len(self.z)}, {self.model.action_size}), got {tuple(actions.shape)}"
        actions = actions.to(self.device, self.z.dtype)
        if noise is None:
            noise = mixture_noise(self.z.shape, self.generator, self.device)
        else:
            noise = (noise[0].to(self.device), noise[1].to(self.device))
        if self.members > 1:
            stacked, outputs, self.state = self.model.step(self.z, actions, self.state)
            outputs = outputs[0]  # C reads the first member's h
            member = torch.randint(self.members, (len(actions),), generator=self.generator).to(self.device)
            prediction, spread = member_rows(stacked, member), disagreement(stacked)
        else:
            prediction, outputs, self.state = self.model(self.z[:, None], actions[:, None], self.state)
            prediction, outputs = select_step(prediction, 0), outputs[:, 0]
            spread = torch.zeros(len(actions), device=self.device)
        next_z = sample_mixture(prediction, self.temperature, noise)
        was_done = self.done
        earned = prediction.reward if self.reward == "model" else torch.ones_like(prediction.reward)
        earned = earned - self.penalty * spread
        reward = torch.where(was_done, torch.zeros_like(earned), earned)
        self.steps += 1
        self.rows_stepped += len(actions)
        finished = (torch.sigmoid(prediction.done_logit) > 0.5) | (self.steps >= self.max_steps)
        self.done = was_done | finished
        # A rollout that had already finished is out of the game: it keeps its last latent.
        self.z = torch.where(was_done[:, None], self.z, next_z)
        self.h, self.c = outputs, self.state[1][0]
        return DreamStep(z=self.z, reward=reward, done=self.done.clone(), h=self.h, c=self.c,
                         disagreement=torch.where(was_done, torch.zeros_like(spread), spread))


@torch.no_grad()
def population_returns(dream: DreamEnv, parameters: torch.Tensor, rollouts: int, action_size: int,
                       inputs: str = "zh", starts: torch.Tensor | None = None,
                       start_noise: torch.Tensor | None = None,
                       step_noise: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                       layer_size: int = 0) -> torch.Tensor:
    """Mean dream return of each candidate controller, all rollouts as one batch.

    ``parameters`` ``(P, D)``: one flat controller per candidate (see ``models/controller.py``;
    ``layer_size``: its hidden layer, 0 for none); each runs ``rollouts`` dreams, so the batch is
    ``P * rollouts`` (candidate-major). ``starts``, ``start_noise`` and ``step_noise(t)`` fix the randomness per
    row for reproducible comparisons (default: the dream's generator). Returns ``(P,)`` on the CPU.
    """
    rows = parameters.to(dream.device).repeat_interleave(rollouts, dim=0)
    z = dream.reset(len(rows), starts=starts, noise=start_noise)
    h, c = dream.h, dream.c
    previous_z = z  # what C reading `zz` sees as the step before, on the first step: the start itself
    total = torch.zeros(len(rows), device=dream.device)
    # The dream's rows are the still-running ones: `active` holds their indices among all rows, and
    # `running_rows` their controllers (gathered again only when the batch shrinks).
    active, running_rows = torch.arange(len(rows), device=dream.device), rows
    for t in range(dream.max_steps):
        actions = population_actions(running_rows, z, h, action_size, inputs, c, previous_z, layer_size)
        previous_z = z
        noise = None if step_noise is None else tuple(part.to(dream.device)[active] for part in step_noise(t))
        result = dream.step(actions, noise)
        total[active] += result.reward
        running = ~result.done
        if not bool(running.any()):
            break
        if not bool(running.all()):  # long dreams are mostly a few survivors: step only those
            dream.keep(running)
            active, running_rows, previous_z = active[running], running_rows[running], previous_z[running]
        z, h, c = dream.z, dream.h, dream.c
    return total.view(len(parameters), rollouts).mean(dim=1).cpu()
