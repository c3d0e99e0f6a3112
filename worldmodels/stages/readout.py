"""Stage `readout`: can what C reads carry the task? The true-state oracle imitated from C's inputs.

A C trained in the dream can only be as good as the best policy of its inputs. This stage asks
that directly, with no dream in the way: the oracle (``scores/oracle.json``, a linear tanh policy on
the true state that balances) is imitated by a policy reading ``[z, h]`` (V's z of the frame, M's h
after the frames and actions before), by DAgger (Ross et al. 2011):

1. ``oracle_episodes`` episodes played by the oracle, with Gaussian action noise cycling through
   ``noise_levels`` so that the data also holds the states its mistakes lead to; every step's
   inputs are stored with the oracle's action for the true state there;
2. two readouts fitted to those actions: C's own form ``tanh(W x + b)`` (``linear``: ``W x + b`` the
   least-squares fit of the oracle's ``W s + b``) and one hidden tanh layer (``mlp``, fitted to the
   actions: where even it fails, the inputs do not carry what the oracle acts on);
3. ``dagger_rounds`` times: ``dagger_episodes`` episodes played by the mlp readout itself, labelled
   by the oracle, added to the data, both readouts fitted again;
4. both readouts played on ``eval_episodes`` real episodes (the evaluation seeds), and the ones that
   read ``[z, h]`` also in M's dream as C is judged there (``controller.temperature``, its reward and
   length, ``controller.eval_dream_rollouts`` dreams from the training episodes' first frames): a
   readout that balances in reality shows whether the dream pays a good C what reality does.

``readout.inputs`` names what each imitation reads; beside C's ``zh``, ``state`` (the procedure's
own ceiling), ``z+velocity`` and ``position+h`` swap one half of C's inputs for the truth, which
tells whether V's picture of the positions or M's memory of the motion is what falls short.

Writes ``scores/readout.json`` (one row per inputs and readout: real mean +- std, fit error, the
dream's mean +- std for ``zh``), kept after each input set so that a stopped run goes on with the
next, ``metrics/readout.jsonl`` (each DAgger round's return) and ``figures/readout_real_vs_dream.gif``
(the ``[z, h]`` mlp readout in a real episode beside its dream from the same first frame). Needs a
true state (dm_control) and the oracle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from worldmodels.artifacts import load_mdnrnn, load_vae
from worldmodels.config import PipelineConfig, ReadoutConfig
from worldmodels.core.checkpoint import atomic_write, file_sha256
from worldmodels.core.metrics import MetricsLog, json_text
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.data.latents import LatentReader
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.envs import has_true_state, make_env
from worldmodels.errors import UserValueError
from worldmodels.evaluation.baselines import StateLinearPolicy
from worldmodels.evaluation.episodes import evaluation_seeds
from worldmodels.models.vae import frames_to_input
from worldmodels.vmc.dream import DreamEnv
from worldmodels.vmc.dream_starts import first_latents
from worldmodels.vmc.simulator import policy_dream_returns
from worldmodels.vmc.videos import policy_dream, write_gif

logger = logging.getLogger(__name__)

READOUT_STREAM = 0x7EAD  # the imitation's own episodes (the oracle's and DAgger's)
DREAM_SEED_OFFSET = 13  # the readouts' dreams: drawn from controller.seed + this, one draw for every readout


def input_features(name: str, z: np.ndarray, h: np.ndarray, state: np.ndarray,
                   parts: dict[str, np.ndarray]) -> np.ndarray:
    """What an imitation named ``name`` reads at one step: from V's ``z`` ``(Z,)``, M's ``h`` ``(H,)`` and the
    true ``state`` ``(S,)`` split by ``parts`` (position / velocity indices)."""
    pieces = {"state": [state], "zh": [z, h], "z+velocity": [z, state[parts["velocity"]]],
              "position+h": [state[parts["position"]], h]}[name]
    return np.concatenate(pieces).astype(np.float32)


class Readout(nn.Module):
    """``tanh(W x + b)`` (``hidden_size`` 0) or ``tanh(W2 tanh(W1 x + b1) + b2)``, on standardised inputs.

    ``x`` ``(N, I)`` -> actions ``(N, A)`` in [-1, 1]."""

    def __init__(self, inputs: int, actions: int, hidden_size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(inputs))
        self.register_buffer("scale", torch.ones(inputs))
        layers = [nn.Linear(inputs, actions)] if hidden_size == 0 else [
            nn.Linear(inputs, hidden_size), nn.Tanh(), nn.Linear(hidden_size, actions)]
        self.net = nn.Sequential(*layers, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)


def fit_linear_readout(inputs: np.ndarray, preactivations: np.ndarray) -> tuple[Readout, float]:
    """C's form ``tanh(W x + b)`` with ``W x + b`` the least-squares fit of the oracle's pre-activations
    ``(N, A)`` from ``inputs`` ``(N, I)`` (exact where they are linear in the inputs, as on the true state;
    fitting the saturated actions instead would leave the gradient no slope to follow). Returns it and
    its mean squared error on the actions."""
    x, target = torch.from_numpy(inputs), torch.from_numpy(preactivations.astype(np.float32))
    model = _standardised(Readout(x.shape[1], target.shape[1], 0), x)
    design = torch.cat([(x - model.mean) / model.scale, torch.ones(len(x), 1)], dim=1).double()
    ridge = 1e-6 * len(x) * torch.eye(design.shape[1], dtype=torch.float64)  # keeps constant inputs solvable
    solution = torch.linalg.solve(design.T @ design + ridge, design.T @ target.double()).float()
    linear = model.net[0]
    with torch.no_grad():
        linear.weight.copy_(solution[:-1].T)
        linear.bias.copy_(solution[-1])
        return model.eval(), float((model(x) - torch.tanh(target)).pow(2).mean())


def _standardised(model: Readout, x: torch.Tensor) -> Readout:
    model.mean.copy_(x.mean(0))
    model.scale.copy_(x.std(0).clamp(min=1e-6))
    return model


def fit_readout(inputs: np.ndarray, actions: np.ndarray, hidden_size: int, settings: ReadoutConfig,
                seed: int) -> tuple[Readout, float]:
    """A readout with a hidden layer of ``hidden_size`` fitted to ``actions`` ``(N, A)`` from ``inputs``
    ``(N, I)`` (squared error, Adam, batches of 256); returns it and its mean squared error on the data."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = torch.from_numpy(inputs), torch.from_numpy(actions.astype(np.float32))
    model = _standardised(Readout(x.shape[1], y.shape[1], hidden_size), x)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    for _ in range(settings.fit_epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 256):
            batch = order[start:start + 256]
            loss = (model(x[batch]) - y[batch]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return model.eval(), float((model(x) - y).pow(2).mean())


class Imitation:
    """One env with V and M, playing episodes that record what an imitation reads and what the oracle does."""

    def __init__(self, config: PipelineConfig, paths: PipelinePaths, oracle_parameters: list[float]) -> None:
        self.config = config
        self.device = resolve(config.runtime).device
        self.vae, _ = load_vae(paths.vae, self.device)
        self.model, _ = load_mdnrnn(paths.mdnrnn, self.device)
        self.env = make_env(config.env)
        self.env.reset(0)
        self.parts = self.env.state_parts()
        self.oracle = StateLinearPolicy(oracle_parameters, len(self.env.state()), self.env.action_size)

    def close(self) -> None:
        self.env.close()

    @torch.no_grad()
    def play(self, name: str, seed: int, noise: float, policy: Callable[[np.ndarray], np.ndarray] | None = None,
             frames: list[np.ndarray] | None = None, rewards: list[float] | None = None
             ) -> tuple[np.ndarray, np.ndarray, float]:
        """One episode acted by ``policy`` on the inputs (None: the oracle on the true state), plus
        Gaussian ``noise`` on the action. Returns the inputs ``(T, I)``, the oracle's actions there
        ``(T, A)`` before its tanh, and the return; ``frames`` and ``rewards``, where given, receive
        the episode's frames ``(H, W, 3)`` (the reset frame first) and its rewards."""
        rng = np.random.default_rng(seed)
        frame = self.env.reset(seed)
        if frames is not None:
            frames.append(frame)
        state, lstm = self.env.state(), None
        h = torch.zeros(1, self.model.hidden_size, device=self.device)
        inputs, targets, total, done = [], [], 0.0, False
        while not done:
            z, _ = self.vae.encode(frames_to_input(torch.from_numpy(frame[None]).to(self.device)))
            x = input_features(name, z[0].cpu().numpy(), h[0].cpu().numpy(), state, self.parts)
            target = self.oracle.preactivation(state)
            action = np.tanh(target) if policy is None else policy(x)
            action = np.clip(action + noise * rng.normal(size=action.shape), -1.0, 1.0).astype(np.float32)
            inputs.append(x)
            targets.append(target)
            _, outputs, lstm = self.model(z[:, None], torch.from_numpy(action)[None, None].to(self.device), lstm)
            h = outputs[:, 0]
            result = self.env.step(action)
            frame, state, total = result.frame, self.env.state(), total + result.reward
            if frames is not None:
                frames.append(frame)
            if rewards is not None:
                rewards.append(result.reward)
            done = result.terminated or result.truncated
        return np.stack(inputs), np.stack(targets), total


def acting(readout: Readout) -> Callable[[np.ndarray], np.ndarray]:
    def policy(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return readout(torch.from_numpy(x)[None])[0].numpy().astype(np.float64)
    return policy


def imitate(imitation: Imitation, name: str, settings: ReadoutConfig, log: MetricsLog,
            progress: bool, dream: Callable[[Readout], np.ndarray] | None = None,
            video: Path | None = None) -> list[dict[str, Any]]:
    """The DAgger run of one input set; returns its rows (linear and mlp readouts, scored in the real env,
    and by ``dream``, readout -> its dream returns, where given). ``video``: where to draw the mlp
    readout's first evaluation episode beside its dream from the same first frame (``[z, h]`` only)."""
    episodes = settings.oracle_episodes + settings.dagger_rounds * settings.dagger_episodes
    seeds = iter(evaluation_seeds(settings.seed, episodes, READOUT_STREAM))
    inputs, targets = [], []
    with tqdm(total=episodes + 2 * settings.eval_episodes, desc=f"readout {name}", unit="ep",
              disable=not progress, dynamic_ncols=True) as bar:
        returns = []
        for index in range(settings.oracle_episodes):
            x, y, total = imitation.play(name, next(seeds), settings.noise_levels[index % len(settings.noise_levels)])
            inputs.append(x)
            targets.append(y)
            returns.append(total)
            bar.update(1)
        log.append({"step": len(log.read()) + 1, "inputs": name, "round": 0, "acting": "oracle",
                    "return_mean": float(np.mean(returns))})
        fitted = {}
        for round_index in range(1, settings.dagger_rounds + 1):
            fitted = _fit_both(inputs, targets, settings)
            returns = []
            for _ in range(settings.dagger_episodes):
                x, y, total = imitation.play(name, next(seeds), 0.0, acting(fitted["mlp"][0]))
                inputs.append(x)
                targets.append(y)
                returns.append(total)
                bar.update(1)
            log.append({"step": len(log.read()) + 1, "inputs": name, "round": round_index, "acting": "mlp",
                        "return_mean": float(np.mean(returns))})
        fitted = _fit_both(inputs, targets, settings)
        rows = []
        evaluation = evaluation_seeds(imitation.config.evaluate.seed, settings.eval_episodes)
        shown_frames, shown_rewards = [], []  # the mlp readout's first evaluation episode, for the video
        for kind, (readout, error) in fitted.items():
            real = []
            for seed in evaluation:
                shown = video is not None and kind == "mlp" and seed == evaluation[0]
                real.append(imitation.play(name, seed, 0.0, acting(readout), shown_frames if shown else None,
                                           shown_rewards if shown else None)[2])
                bar.update(1)
            rows.append({"inputs": name, "readout": kind, "real_mean": float(np.mean(real)),
                         "real_std": float(np.std(real)), "real_returns": real, "fit_mse": error,
                         "steps_of_data": int(sum(len(x) for x in inputs))})
            if dream is not None:
                dreamed = dream(readout)
                rows[-1] |= {"dream_mean": float(dreamed.mean()), "dream_std": float(dreamed.std())}
        if video is not None:
            draw_real_beside_dream(imitation, fitted["mlp"][0], shown_frames, shown_rewards, video)
    return rows


def draw_real_beside_dream(imitation: Imitation, readout: Readout, frames: list[np.ndarray], rewards: list[float],
                           path: Path) -> None:
    """A GIF: ``readout`` (reading ``[z, h]``) in a real episode (its ``frames`` ``(H, W, 3)``, the reset
    frame first, and ``rewards``), beside M's dream (at ``controller.temperature``, C's dream reward)
    from that episode's first frame, decoded by V."""
    settings = imitation.config.controller
    device = imitation.device
    mu, logvar = imitation.vae.encode(frames_to_input(torch.from_numpy(frames[0][None]).to(device)))
    readout = readout.to(device)
    dreamed, dream_returns = policy_dream(imitation.model, imitation.vae, lambda z, h: readout(torch.cat([z, h], -1)),
                                          mu[0], logvar[0], settings.temperature, len(rewards),
                                          settings.seed + DREAM_SEED_OFFSET, settings.dream_reward)
    write_gif([("readout, real", np.stack(frames), np.concatenate([[0.0], np.cumsum(rewards)])),
               ("readout, M's dream", dreamed, dream_returns)], path)


DREAM_SETTINGS = ("temperature", "eval_dream_rollouts", "dream_steps", "dream_reward", "disagreement_penalty", "seed")


def dream_of_c(config: PipelineConfig, paths: PipelinePaths, model) -> Callable[[Readout], np.ndarray]:
    """Readout -> its returns ``(R,)`` in M's dream as C is judged there: from the training episodes' first
    frames (``controller.dream_starts: any`` too), at ``controller.temperature``, with C's reward, disagreement
    penalty and dream length, ``R = controller.eval_dream_rollouts`` dreams from one seed for every readout
    (``DREAM_SETTINGS`` name the settings it reads)."""
    settings = config.controller
    rollouts = RolloutReader(paths.rollouts)
    latents = LatentReader(paths.latents, paths.vae, rollouts)
    train_episodes, _ = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    start_mu, start_logvar = first_latents(latents, train_episodes)
    steps = settings.dream_steps or int(rollouts.lengths.min())

    def returns(readout: Readout) -> np.ndarray:
        dream = DreamEnv(model, start_mu, start_logvar, temperature=settings.temperature, max_steps=steps,
                         generator=torch.Generator().manual_seed(settings.seed + DREAM_SEED_OFFSET),
                         reward=settings.dream_reward, penalty=settings.disagreement_penalty)
        readout = readout.to(dream.device)
        return policy_dream_returns(dream, lambda z, h: readout(torch.cat([z, h], dim=-1)),
                                    settings.eval_dream_rollouts).double().numpy()

    return returns


def _fit_both(inputs: list[np.ndarray], preactivations: list[np.ndarray], settings: ReadoutConfig
              ) -> dict[str, tuple[Readout, float]]:
    x, y = np.concatenate(inputs), np.concatenate(preactivations)
    return {"linear": fit_linear_readout(x, y),
            "mlp": fit_readout(x, np.tanh(y), settings.hidden_size, settings, settings.seed)}


def _rows_of_the_same_run(path: Path, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows ``path`` already holds when it was made with ``identity`` (none otherwise)."""
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return []
    same = saved.get("identity") == json.loads(json.dumps(identity))  # as JSON has it: tuples are lists
    return saved.get("rows", []) if same else []


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path | None:
    """Imitate the oracle from each of ``readout.inputs``; returns ``scores/readout.json`` (None, having
    said why, for an env without a true state)."""
    settings = config.readout
    resolve(config.runtime).apply()
    if not has_true_state(config.env):
        logger.warning(f"readout: {config.env.id} exposes no true state (only dm_control tasks do); "
                       "there is no oracle to imitate")
        return None
    oracle_file = paths.score("oracle")
    if not oracle_file.is_file():
        raise FileNotFoundError(f"{oracle_file}: no oracle to imitate; run `wm oracle` first")
    oracle = json.loads(oracle_file.read_text())
    if "parameters" not in oracle:
        raise UserValueError(f"{oracle_file}: holds no 'parameters'; run `wm oracle` again")
    paths.ensure()
    identity = {"settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "inputs"},
                "evaluate_seed": config.evaluate.seed, "oracle_sha256": file_sha256(oracle_file),
                "vae_sha256": file_sha256(paths.vae), "mdnrnn_sha256": file_sha256(paths.mdnrnn),
                "dream": {key: getattr(config.controller, key) for key in DREAM_SETTINGS}}
    output = paths.score("readout")
    done = _rows_of_the_same_run(output, identity)
    log = MetricsLog(paths.metrics("readout"), step_key="step")
    if not done:
        log.keep_up_to(0)
    result = {"identity": identity, "oracle_real_mean": oracle.get("mean"), "episodes": settings.eval_episodes,
              "rows": [row for row in done if row["inputs"] in settings.inputs]}
    todo = [name for name in settings.inputs if name not in {row["inputs"] for row in done}]
    imitation = Imitation(config, paths, oracle["parameters"]) if todo else None
    try:
        for name in todo:  # each input set's rows are kept as soon as they exist: a stopped run goes on from there
            started = time.perf_counter()
            dream = dream_of_c(config, paths, imitation.model) if name == "zh" else None  # the dream has no truth
            rows = imitate(imitation, name, settings, log, progress, dream,
                           paths.video("readout_real_vs_dream") if name == "zh" else None)
            result["rows"] += [row | {"seconds": time.perf_counter() - started} for row in rows]
            atomic_write(output, lambda temporary: temporary.write_text(json_text(result)))
    finally:
        if imitation is not None:
            imitation.close()
    result["rows"].sort(key=lambda row: settings.inputs.index(row["inputs"]))
    atomic_write(output, lambda temporary: temporary.write_text(json_text(result)))
    for row in result["rows"]:
        dreamed = f"; in M's dream {row['dream_mean']:.1f} +- {row['dream_std']:.1f}" if "dream_mean" in row else ""
        logger.info(f"readout {row['inputs']:>10} {row['readout']:>6}: {row['real_mean']:.1f} +- "
                    f"{row['real_std']:.1f} (fit mse {row['fit_mse']:.4f}){dreamed}")
    return paths.score("readout")
