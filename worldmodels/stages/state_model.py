"""Stage `state-model`: M on the env's TRUE state instead of V's z, and C evolved in its dream.

Separates V's share of V+M+C's gap from M's. Everything but the picture is V+M+C's own: the
pipeline's episodes (``rollouts.h5``; their states recovered by replaying each episode's stored
actions from its env seed, checked against the stored rewards), its train / held-out split, M's
settings (``mdnrnn.*``: the same MDN-RNN, epochs and windows, on the standardised state where V+M
has z), C's form on ``[state, h]`` and CMA-ES settings (``controller.*``), the dream's temperature
and length, and the evaluation episodes. If C trained in this dream does no better than V+M+C, V
is not what limits it; if it does, V's picture is.

Writes ``scores/state_model.json`` (C's real score on the evaluation episodes, with its dream
score, M's zero-action dream against the real zero-action return and its replay correlation on
the held-out episodes) and ``metrics/state_model.jsonl`` (M's held-out losses, C's generations).
Needs a true state (dm_control). M, most of the stage's time, resumes: ``checkpoints/state_model_m_last.pt``
every ``mdnrnn.eval_every`` epochs, and M after its last epoch in ``checkpoints/state_model_m.pt``,
which a run with other ``controller.*`` settings reuses instead of training M again. C's search
(about a minute per CMA-ES search) starts over when stopped. With ``controller.restarts`` above 1,
that many independent searches run and the dream alone picks C (the best dream score); each
search's real score is measured beside it, to show whether the dream ranks them as reality does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.config import PipelineConfig
from worldmodels.core.es import CMAES
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.core.training import TrainingRun
from worldmodels.data.latents import LatentReader
from worldmodels.data.sequences import build_sequences
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.envs import has_true_state, make_env
from worldmodels.errors import UserValueError
from worldmodels.evaluation.episodes import Score, evaluation_seeds, searches_beside_reality
from worldmodels.models.controller import LinearController, memory_step_scales, population_actions
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.vmc.dream import DreamEnv, population_returns
from worldmodels.vmc.m_training import heldout_losses, settings_that_matter, train_epoch
from worldmodels.vmc.simulator import replay_returns

logger = logging.getLogger(__name__)

AGENT = "state_model"
M_KIND = "state_model_m"
EXACT_LOGVAR = -30.0
"""The states' log-variance as M's targets: a state is known exactly (a std of ~3e-7)."""


def recover_states(env, rollouts: RolloutReader, episode: int) -> np.ndarray:
    """The true states ``(T + 1, S)`` of stored episode ``episode``: its actions replayed from its
    env seed. Raises ValueError naming the episode if the replay's rewards differ from the stored
    ones (the env did not replay it: other env settings, or a non-deterministic env)."""
    row = rollouts.episodes[episode]
    steps = rollouts.step_data(episode)
    env.reset(int(row["seed"]))
    states, rewards = [env.state()], []
    for action in steps["actions"]:
        state, reward, _, _ = env.step_state(action)
        states.append(state)
        rewards.append(reward)
    if not np.allclose(rewards, steps["rewards"], rtol=1e-4, atol=1e-4):
        worst = int(np.argmax(np.abs(np.asarray(rewards) - steps["rewards"])))
        raise UserValueError(f"{rollouts.path}: episode {episode} (env seed {int(row['seed'])}) does not replay: "
                         f"step {worst} earns {rewards[worst]:.4f} here against {steps['rewards'][worst]:.4f} stored")
    return np.asarray(states, dtype=np.float32)


@dataclass
class StateLatents:
    """Recovered states standardised by the training episodes' mean and std, served as exact
    latents (``episode(i)`` -> (mu ``(T + 1, S)``, logvar ``(T + 1, S)``)) so that M's own sequence
    builder and training loop take them as they take V's."""

    states: dict[int, np.ndarray]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def standardised(cls, states: dict[int, np.ndarray], train_episodes: np.ndarray) -> StateLatents:
        stacked = np.concatenate([states[int(e)] for e in train_episodes])
        return cls(states, stacked.mean(axis=0), stacked.std(axis=0) + 1e-6)

    @property
    def z_size(self) -> int:
        return len(self.mean)

    def standardise(self, state: np.ndarray) -> np.ndarray:
        return ((state - self.mean) / self.std).astype(np.float32)

    def episode(self, episode: int) -> tuple[np.ndarray, np.ndarray]:
        mu = self.standardise(self.states[episode])
        return mu, np.full_like(mu, EXACT_LOGVAR)


class StateWorldModelPolicy:
    """C in the real env, reading the standardised true state where V+M+C's C reads z (``inputs``:
    ``z`` the state alone, ``zh`` [state, h], ``zch`` [state, c, h], ``zz`` [state, the state before]);
    M reads the state and C's action each step, as it does V's z. ``parameters`` ``(D,)``: one flat C
    (``models/controller.py``)."""

    def __init__(self, model: MDNRNN, latents: StateLatents, parameters: np.ndarray, action_size: int,
                 inputs: str = "zh", layer_size: int = 0) -> None:
        self.model, self.latents, self.action_size, self.inputs = model, latents, action_size, inputs
        self.layer_size = layer_size
        self.flat = torch.as_tensor(parameters, dtype=torch.float32)[None]

    @torch.no_grad()
    def episode_return(self, env, seed: int) -> float:
        env.reset(seed)
        state, lstm, total = env.state(), None, 0.0
        h = c = torch.zeros(1, self.model.hidden_size)
        previous_z = None
        while True:
            z = torch.from_numpy(self.latents.standardise(state))[None]
            previous_z = z if previous_z is None else previous_z
            action = population_actions(self.flat, z, h, self.action_size, self.inputs, c, previous_z, self.layer_size)
            previous_z = z
            _, outputs, lstm = self.model(z[:, None], action[:, None], lstm)
            h, c = outputs[:, 0], lstm[1][0]
            state, reward, terminated, truncated = env.step_state(action[0].numpy())
            total += reward
            if terminated or truncated:
                return total


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path | None:
    """Train M on the true states, evolve C in its dream, score C; returns ``scores/state_model.json``
    (None, having said why, for an env without a true state)."""
    if not has_true_state(config.env):
        logger.warning(f"state-model: {config.env.id} exposes no true state (only dm_control tasks do)")
        return None
    started = time.perf_counter()
    # On the CPU whatever runtime.device says: M is small here, and C plays it one real step at a time.
    resolved = resolve(config.runtime)
    if resolved.device.type != "cpu":
        logger.info(f"state-model: runs on the CPU (a {resolved.device} is not worth it for a state of a few numbers)")
    runtime = dataclasses.replace(resolved, device=torch.device("cpu")).apply()
    rollouts = RolloutReader(paths.rollouts)
    train_episodes, heldout_episodes = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    env = make_env(config.env)
    states = {int(e): recover_states(env, rollouts, int(e))
              for e in tqdm(range(rollouts.num_episodes), desc="state-model: replay", unit="ep", disable=not progress)}
    latents = StateLatents.standardised(states, train_episodes)
    settings, m_settings = config.controller, config.mdnrnn
    paths.ensure()
    log = MetricsLog(paths.metrics(AGENT), step_key="step")
    model = train_state_m(config, paths, rollouts, latents, train_episodes, heldout_episodes, runtime, log, progress)

    starts = torch.from_numpy(np.stack([latents.episode(int(e))[0][0] for e in train_episodes]))
    dream_steps = settings.dream_steps or int(rollouts.lengths.min())  # as V+M+C's dreams

    def dream(seed: int) -> DreamEnv:
        return DreamEnv(model, starts, torch.full_like(starts, EXACT_LOGVAR), temperature=settings.temperature,
                        max_steps=dream_steps, generator=torch.Generator().manual_seed(seed),
                        reward=settings.dream_reward)

    action_size = rollouts.action_size
    form = {"z_size": latents.z_size, "hidden_size": m_settings.hidden_size, "action_size": action_size,
            "inputs": settings.inputs, "bias": settings.bias, "layer_size": settings.layer_size}
    dimension = LinearController(**form).num_parameters
    def dream_score(parameters: np.ndarray) -> float:
        flat = torch.as_tensor(parameters, dtype=torch.float32)[None]
        return float(population_returns(dream(settings.seed + 99), flat, settings.eval_dream_rollouts, action_size,
                                        settings.inputs, layer_size=settings.layer_size)[0])

    searches = []
    for restart in range(settings.restarts):
        seed = settings.seed + restart  # restart 0 is the single search of controller.seed
        strategy = CMAES(dimension, settings.sigma0, settings.popsize, seed,
                         step_scales=memory_step_scales(**form, memory_scale=settings.memory_step_scale))
        label = "state-model: C" + (f" {restart + 1}/{settings.restarts}" if settings.restarts > 1 else "")
        for generation in tqdm(range(1, settings.generations + 1), desc=label, unit="gen", disable=not progress):
            population = strategy.ask()
            fitness = population_returns(dream(seed * 1_000_003 + generation),
                                         torch.as_tensor(population, dtype=torch.float32), settings.rollouts,
                                         action_size, settings.inputs, layer_size=settings.layer_size).numpy()
            strategy.tell(population, fitness)
            log.append({"step": m_settings.epochs + restart * settings.generations + generation, "stage": "C",
                        "restart": restart, "generation": generation, "mean": float(fitness.mean()),
                        "best": float(fitness.max())})
        searches.append(strategy.mean)
    # The dream alone picks among the searches: the evaluation episodes only score the pick.
    search_dreams = [dream_score(mean) for mean in searches]
    chosen = int(np.argmax(search_dreams))
    controller = searches[chosen]

    def real_returns(parameters: np.ndarray) -> list[float]:
        policy = StateWorldModelPolicy(model, latents, parameters, action_size, settings.inputs, settings.layer_size)
        return [policy.episode_return(env, seed) for seed in seeds]

    seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
    zero = np.zeros(dimension)
    real, zero_real = real_returns(controller), real_returns(zero)
    restarts = {} if settings.restarts == 1 else searches_beside_reality(
        search_dreams, chosen, [float(np.mean(real_returns(mean))) if index != chosen else float(np.mean(real))
                                for index, mean in enumerate(searches)])
    oracle = _oracle_in_this_dream(paths, latents, form, dream_score)
    replay = _replay_correlation(model, latents, rollouts, heldout_episodes, settings.temperature, m_settings)
    readable = _z_readability(paths, rollouts, states, train_episodes, heldout_episodes, env)
    env.close()
    score = Score.of(AGENT, np.asarray(real), seeds, int(rollouts.lengths.sum()) * config.env.action_repeat,
                     time.perf_counter() - started, dream_steps=dream_steps, dream_mean=search_dreams[chosen],
                     zero_action_dream=dream_score(zero), zero_action_real=float(np.mean(zero_real)),
                     inputs=settings.inputs, parameters=[float(x) for x in controller], **replay, **oracle,
                     **readable, **restarts)
    output = paths.score(AGENT)
    score.write(output)
    about = score.about
    logger.info(f"state-model: C on {READS[settings.inputs]}, evolved in M's dream of the true state: "
                f"{score.summary()} (dream {about['dream_mean']:.1f}); M's zero-action dream "
                f"{about['zero_action_dream']:.1f} vs real {about['zero_action_real']:.1f}; "
                f"replay correlation {replay['replay_correlation']:.2f}")
    if readable:
        shown = ", ".join(f"{name} {value:.2f}" for name, value in readable["z_linear_r2"].items())
        logger.info(f"state-model: how much of the true state a linear map of V's z gives (held-out R^2): {shown}")
    if restarts:
        logger.info(f"state-model: {settings.restarts} CMA-ES searches, dream / real: "
                    + ", ".join(f"{d:.0f} / {r:.0f}" for d, r in zip(search_dreams, restarts["restart_real_means"],
                                                                     strict=True))
                    + f"; the dream picked search {chosen + 1}")
    if oracle:
        logger.info(f"state-model: the true-state oracle scores {oracle['oracle_dream']:.1f} in this dream "
                    f"(real {oracle['oracle_real']:.1f})")
    return output


def train_state_m(config: PipelineConfig, paths: PipelinePaths, rollouts: RolloutReader, latents: StateLatents,
                  train_episodes: np.ndarray, heldout_episodes: np.ndarray, runtime, log: MetricsLog,
                  progress: bool = True) -> MDNRNN:
    """M (``mdnrnn.*``) trained ``mdnrnn.epochs`` epochs on the standardised true states, resumed from
    ``checkpoints/state_model_m_last.pt`` when that is this run's (same M settings, same episodes).
    Held-out losses go to ``log`` as ``{"step": epoch, "stage": "M", ...}`` every ``eval_every`` epochs,
    with a resume state; M after its last epoch is also saved as ``paths.state_model_m``."""
    m_settings = config.mdnrnn
    train = build_sequences(latents, rollouts, train_episodes, m_settings.sequence_length)
    heldout = build_sequences(latents, rollouts, heldout_episodes, m_settings.sequence_length)
    shape = {"z_size": latents.z_size, "action_size": rollouts.action_size, "hidden_size": m_settings.hidden_size,
             "mixtures": m_settings.mixtures, "mixture": m_settings.mixture,
             **({"residual": True} if m_settings.residual else {})}  # older runs resume as they were
    torch.manual_seed(m_settings.seed)
    model = MDNRNN(**shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=m_settings.learning_rate)
    identity = {"settings": settings_that_matter(config), "model_args": shape,
                "inputs": {"rollouts_fingerprint": rollouts.fingerprint, "latents": "standardised true state"}}
    run = TrainingRun(M_KIND, identity, paths.last_checkpoint(M_KIND), paths.state_model_m, log, runtime,
                      "state-model M", step_name="epoch")
    state, start = run.resume(step_of=lambda saved: saved["epoch"]), 0
    if state is not None and state["epoch"] > m_settings.epochs:
        # Its epochs are a setting this stage measures: an M trained longer is not the M asked for.
        logger.info(f"{run.last}: M trained for {state['epoch']} epochs, {m_settings.epochs} asked for; "
                    "training it again")
        state = None
        torch.manual_seed(m_settings.seed)
        log.keep_up_to_when_appending(0)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    for epoch in tqdm(range(start + 1, m_settings.epochs + 1), desc="state-model: M", unit="epoch",
                      disable=not progress, initial=start, total=m_settings.epochs):
        train_epoch(model, optimizer, train, epoch, m_settings, runtime, run)
        if epoch % m_settings.eval_every and epoch != m_settings.epochs:
            continue
        metrics = heldout_losses(model, heldout, m_settings)
        run.check(epoch, metrics, [model])
        if epoch == m_settings.epochs:  # before the last checkpoint, which keeps a copy of it
            run.save_best({"model": model.state_dict(), "epoch": epoch})
        run.save_last({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                      record={"step": epoch, "stage": "M", **metrics})
    if start == m_settings.epochs:
        logger.info(f"state-model: M already trained for its {start} epochs ({run.last})")
    model.eval()
    return model


def linear_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Held-out R^2 of the least-squares affine map ``x -> y`` fitted on the training rows: ``x``
    ``(N, X)``, ``y`` ``(N, Y)`` -> ``(Y,)``; 1 where a linear map gives that column exactly, 0 where it
    does no better than the column's training mean, below 0 where worse."""
    design = np.c_[train_x, np.ones(len(train_x))]
    solution, *_ = np.linalg.lstsq(design, train_y, rcond=None)
    predicted = np.c_[test_x, np.ones(len(test_x))] @ solution
    return 1.0 - ((predicted - test_y) ** 2).mean(axis=0) / ((test_y - train_y.mean(axis=0)) ** 2).mean(axis=0)


def _z_readability(paths: PipelinePaths, rollouts: RolloutReader, states: dict[int, np.ndarray],
                   train_episodes: np.ndarray, heldout_episodes: np.ndarray, env) -> dict[str, Any]:
    """What C's linear form can read off V's z: the held-out R^2 of a linear map from z (V's mean)
    to each entry of the true state, fitted on the training episodes' frames (empty without
    ``latents.h5``). C is linear, so a state entry that no linear map of z gives is one C cannot act on."""
    if not paths.latents.exists():
        return {}
    reader = LatentReader(paths.latents, rollouts=rollouts)

    def rows(episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(reader.episode(int(e))[0], states[int(e)]) for e in episodes]
        return np.concatenate([z for z, _ in pairs]), np.concatenate([s for _, s in pairs])

    r2 = linear_r2(*rows(train_episodes), *rows(heldout_episodes))
    return {"z_linear_r2": dict(zip(state_names(env, len(r2)), (float(x) for x in r2), strict=True))}


def state_names(env, size: int) -> list[str]:
    """A name for each entry of the env's true state: its observation's name, indexed where it has
    several entries (cartpole: position[0], position[1], position[2], velocity[0], velocity[1])."""
    names = getattr(env, "state_names", None)
    return list(names()) if callable(names) else [f"state[{i}]" for i in range(size)]


READS = {"z": "the true state", "zh": "[true state, h]", "zch": "[true state, c, h]",
         "zz": "[true state, the previous true state]"}


def oracle_as_state_controller(oracle: np.ndarray, latents: StateLatents, form: dict) -> np.ndarray | None:
    """The oracle's ``tanh(W s + b)`` on the raw state, re-expressed as C's flat vector on the
    standardised state (weights on M's ``c`` and ``h`` 0): ``W' = W * std``, ``b' = b + W @ mean``, so
    both give the same action for every state. None when C has no bias (``b'`` has nowhere to go) or a
    hidden layer."""
    if not form["bias"] or form.get("layer_size"):
        return None
    actions, size = form["action_size"], latents.z_size
    weights = np.asarray(oracle[:actions * size], dtype=np.float64).reshape(actions, size)
    bias = np.asarray(oracle[actions * size:], dtype=np.float64)
    inputs = LinearController(**form).linear.in_features
    flat_weights = np.zeros((actions, inputs))
    flat_weights[:, :size] = weights * latents.std
    return np.concatenate([flat_weights.ravel(), bias + weights @ latents.mean])


def _oracle_in_this_dream(paths: PipelinePaths, latents: StateLatents, form: dict, dream_score) -> dict[str, float]:
    """The true-state oracle (``scores/oracle.json``, when the oracle stage has run) scored in this
    dream: does the dream pay a controller that balances what reality pays it? Empty without it."""
    path = paths.score("oracle")
    if not path.exists():
        return {}
    saved = Score.read(path)
    flat = oracle_as_state_controller(np.asarray(saved.about["parameters"]), latents, form)
    if flat is None:
        return {}
    return {"oracle_dream": dream_score(flat), "oracle_real": saved.mean}


def _replay_correlation(model: MDNRNN, latents: StateLatents, rollouts: RolloutReader, episodes: np.ndarray,
                        temperature: float, m_settings) -> dict[str, float]:
    """The held-out episodes' real actions replayed in M's dream from their first states: the
    correlation of dream and real returns, and their means."""
    lengths = torch.as_tensor(rollouts.lengths[episodes])
    actions = torch.zeros(len(episodes), int(lengths.max()), rollouts.action_size)
    for row, episode in enumerate(episodes):
        stored = torch.from_numpy(rollouts.step_data(int(episode))["actions"])
        actions[row, :len(stored)] = stored
    first = torch.from_numpy(np.stack([latents.episode(int(e))[0][0] for e in episodes]))
    dreamed = replay_returns(model, first, torch.full_like(first, EXACT_LOGVAR), actions, temperature,
                             m_settings.dream_samples, m_settings.seed, lengths).mean(dim=1).numpy()
    real = rollouts.returns[episodes]
    correlation = float(np.corrcoef(dreamed, real)[0, 1]) if len(episodes) > 1 else float("nan")
    return {"replay_correlation": correlation, "replay_dream_mean": float(dreamed.mean()),
            "replay_real_mean": float(real.mean())}
