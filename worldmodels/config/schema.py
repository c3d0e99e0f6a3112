"""The pipeline's settings: one frozen dataclass per section of a pipeline file, with each field's
default, meaning and bounds declared once, beside it.

A field's bounds live in its metadata (:func:`setting`); :func:`check_bounds` enforces them when the
dataclass is built, so an impossible value raises :class:`ConfigError` naming the dotted key
(``collect.workers``). Checks that relate two fields stay in the dataclass's ``check``.
Reading YAML, ``extends:`` and ``--set`` overrides live in :mod:`worldmodels.config.loading`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from worldmodels.errors import UserError

MODEL_FRAME_SIZE = 64
"""The frame size V's and Dreamer's convolution stacks are built for (``models/vae.py``, ``models/rssm.py``)."""


class ConfigError(UserError, ValueError):
    """A pipeline file or override is wrong; the message names the key or the file."""


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: ``ge``/``gt`` below, ``le``/``lt`` above (None: open)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    note: str = ""
    """Said after the bounds in the error, e.g. `` (0: one per core)``."""

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self, whole_numbers: bool) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``, ``in 1..5`` (whole numbers, both ends closed)."""
        if self.le is None and self.lt is None:
            return f">= {self.ge}" if self.ge is not None else f"> {self.gt}"
        if self.ge is None and self.gt is None:
            return f"<= {self.le}" if self.le is not None else f"< {self.lt}"
        if whole_numbers and self.ge is not None and self.le is not None:
            return f"in {self.ge}..{self.le}"
        opening = f"[{self.ge}" if self.ge is not None else f"({self.gt}"
        closing = f"{self.le}]" if self.le is not None else f"{self.lt})"
        return f"in {opening}, {closing}"


def setting(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, note: str = "") -> Any:
    """A dataclass field with its bounds beside its default: ``epochs: int = setting(8, ge=1)``.

    A tuple setting's bounds hold for each of its items; a None value (an optional setting) is not
    checked."""
    return field(default=default, metadata={"bounds": Bounds(ge, gt, le, lt, note)})


def check_bounds(section: Any) -> None:
    """Raise :class:`ConfigError` naming the dotted key of the first field outside its bounds."""
    hints = typing.get_type_hints(type(section))
    for item in dataclasses.fields(section):
        bounds = item.metadata.get("bounds")
        value = getattr(section, item.name)
        if bounds is None or value is None:
            continue
        key = f"{section.SECTION}.{item.name}"
        optional = type(None) in typing.get_args(hints[item.name])
        values = enumerate(value) if isinstance(value, tuple) else [(None, value)]
        for index, number in values:
            if not bounds.holds(number):
                where = key if index is None else f"{key}[{index}]"
                whole = isinstance(number, int)
                raise ConfigError(f"{where}: must be {bounds.describe(whole)}{bounds.note}"
                                  f"{' or null' if optional else ''}, got {number}")


class Section:
    """What every section's dataclass shares: its fields' bounds checked when it is built, then the
    checks that relate two fields (:meth:`check`)."""

    SECTION: typing.ClassVar[str]

    def __post_init__(self) -> None:
        check_bounds(self)
        self.check()

    def check(self) -> None:
        """Checks that relate fields to each other (a field's own bounds are declared with it)."""


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class RuntimeConfig(Section):
    """Where and how the models run (resolved by ``worldmodels.core.runtime.resolve``)."""

    device: str = "auto"
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Dreamer's world model and imagination under bfloat16 autocast (``bf16``) or not. ``auto``:
    bf16 on a CPU with native bf16 (AVX512_BF16 or AMX), fp32 elsewhere (a CPU without native bf16
    emulates it 20-110x slower than fp32; on a GPU it was measured slower at these sizes)."""
    threads: int = setting(0, ge=0, note=' (0: one per core)')
    """torch CPU threads of every stage (0: one per core). Worker processes use one each."""
    compile: bool = False
    """``torch.compile`` V and Dreamer's convolution stacks (a minute or more to start; for long runs,
    mostly on GPUs: benchmarks/dreamer.py --compile measures it)."""
    backend: Literal["local", "ray"] = "local"
    """Where the work that scales with env steps runs (collect, evaluate, real-env fitness, the oracle,
    the iterative rounds' episodes): ``local`` worker processes of this machine, or ``ray`` actors of a
    Ray cluster (``pip install 'worldmodels[ray]'``). The results do not depend on it."""
    ray_address: str | None = None
    """The Ray cluster to join (``auto``: the one this machine belongs to; ``host:port``); null: the
    ``RAY_ADDRESS`` environment variable when set, else a Ray started for the command on this machine."""

    SECTION: typing.ClassVar[str] = "runtime"

    def check(self) -> None:
        device = self.device
        index = device[5:]  # ASCII digits: isdigit() alone takes '²' and other scripts' digits, no device index
        ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and index.isascii() and index.isdigit())
        _require(ok, "runtime.device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")


@dataclass(frozen=True)
class EnvConfig(Section):
    """Which environment the pipeline runs, and how its frames are made."""

    id: str = "dmc:cartpole-balance"
    """``dmc:<domain>-<task>`` (DeepMind Control Suite from pixels), ``gym:<EnvId>`` (any gymnasium
    env that renders ``rgb_array``, e.g. ``gym:CarRacing-v3``) or ``vizdoom:<scenario>`` (a scenario
    of the vizdoom wheel with a left/right button pair, e.g. ``vizdoom:take_cover``)."""
    action_repeat: int = setting(1, ge=1)
    """Each agent action is applied this many env steps; only the last frame is rendered and
    the rewards are summed."""
    frame_size: int = 64
    """Frames are square ``frame_size x frame_size x 3`` uint8. V's and Dreamer's convolutions take 64
    (the papers' size), so a pipeline's frames are 64 x 64; the setting names the size in the files."""
    camera: int = setting(0, ge=0)
    """dm_control camera id."""
    shadows: bool = False
    """dm_control: render shadows (about 4x slower at 64x64 with near-identical pixels)."""
    reflections: bool = False
    """dm_control: render the floor's reflections."""
    antialias: bool = True
    """dm_control: 4x multisampling. Off is ~2x faster to render but thin lines (cartpole's
    rail) alias away."""
    crop: tuple[int, int] | None = None
    """Rows ``[top, bottom)`` kept before resizing (the paper's CarRacing crop is ``[0, 84]``,
    which drops the dashboard)."""
    max_episode_steps: int | None = setting(None, ge=1)
    """Cut episodes after this many agent steps (``None``: the env's own time limit)."""
    difficulty: int | None = setting(None, ge=1, le=5)
    """ViZDoom's skill level 1..5 (``None``: the scenario's own; take_cover's is 4, whose random
    episodes last ~300 frames as in the paper's data, where skill 5 gives ~90)."""

    SECTION: typing.ClassVar[str] = "env"

    def check(self) -> None:
        kind, _, name = self.id.partition(":")
        _require(kind in ("dmc", "gym", "vizdoom") and bool(name), "env.id",
                 f"expected 'dmc:<domain>-<task>', 'gym:<EnvId>' or 'vizdoom:<scenario>', got {self.id!r}")
        _require(self.frame_size == MODEL_FRAME_SIZE, "env.frame_size",
                 f"V's and Dreamer's convolutions take {MODEL_FRAME_SIZE} x {MODEL_FRAME_SIZE} frames; "
                 f"got {self.frame_size}")
        if self.crop is not None:
            top, bottom = self.crop
            _require(0 <= top < bottom, "env.crop", f"needs 0 <= top < bottom, got {list(self.crop)}")
        if self.difficulty is not None:
            _require(kind == "vizdoom", "env.difficulty", f"is a ViZDoom setting; {self.id} has none (set null)")


@dataclass(frozen=True)
class CollectConfig(Section):
    """How the exploration rollouts are gathered into ``rollouts.h5``."""

    episodes: int = setting(100, ge=1)
    """Total number of episodes the file must hold; re-running with a larger number appends."""
    workers: int = setting(2, ge=0)
    """Worker processes, each running one env; 0 runs in this process (debugging)."""
    threads_per_worker: int = setting(1, ge=1)
    """CPU threads each worker may use for rendering and torch (one per core scales best)."""
    seed: int = setting(0, ge=0)
    """Episode ``i`` is seeded from ``(seed, i)`` whatever the number of workers."""
    policy: Literal["random", "held_random", "brownian"] = "held_random"
    """``random``: uniform in [-1, 1] each step; ``held_random``: a uniform action held for
    ``hold_min..hold_max`` steps (the paper's Doom policy); ``brownian``: a random walk."""
    hold_min: int = setting(1, ge=1)
    hold_max: int = 10
    brownian_std: float = setting(0.1414, gt=0)
    """Step size of the brownian walk, ``a' = clip(a + std * N(0, 1))``; sqrt(1/50) as in ctallec."""
    action_scale_min: float = setting(1.0, ge=0, le=1)
    """Each episode's actions are scaled by a factor uniform in ``[action_scale_min, 1]``
    (1: full-strength random actions, the paper's data)."""
    episode_steps: int = setting(0, ge=0)
    """0: each exploration episode runs to the env's own end (the paper). k > 0: it is cut after k
    agent steps (marked truncated), so that the same env steps hold more starts: random play on
    cartpole-balance knocks the pole over within ~10 of an episode's 125 steps, and the rest of the
    episode is spent far from where a balancing C acts."""
    compression: Literal["none", "lzf", "gzip"] = "none"
    """HDF5 filter for frames. ``none`` reads random windows ~10x faster; compressed files are
    6-15x smaller."""
    source: str | None = None
    """Instead of playing: copy every episode of this rollouts file (a path, or one relative to the
    data dir, e.g. ``cartpole_balance_dreamer/dreamer_rollouts.h5``: V, M and C trained on another
    agent's data); re-running after it grew copies the new ones. The policy settings are unused."""

    SECTION: typing.ClassVar[str] = "collect"

    def check(self) -> None:
        _require(self.hold_max >= self.hold_min, "collect.hold_max",
                 f"must be >= collect.hold_min ({self.hold_min}), got {self.hold_max}")


@dataclass(frozen=True)
class DataConfig(Section):
    """How every stage splits the rollouts."""

    heldout_fraction: float = setting(0.1, ge=0, lt=1)
    """Fraction of episodes held out from training by every model (chosen by a hash of the
    episode's seed, so the split is the same for V, M and Dreamer and stable as files grow)."""

    SECTION: typing.ClassVar[str] = "data"


@dataclass(frozen=True)
class VAEConfig(Section):
    """V: the ConvVAE, its loss and its training."""

    z_size: int = setting(32, ge=1)
    epochs: int = setting(10, ge=1)
    batch_size: int = setting(100, ge=1)
    learning_rate: float = setting(1e-4, gt=0)
    kl_tolerance: float = setting(0.5, ge=0)
    """The KL term is ``max(KL, kl_tolerance * z_size)``: no pressure below that many nats."""
    foreground_weight: float = setting(0.0, ge=0, note=" (0 is the paper's loss)")
    """Extra weight on the squared error of foreground pixels (those that differ from the
    median training frame by more than ``foreground_threshold``): a foreground pixel counts
    ``1 + foreground_weight`` times. 0 is the paper's loss."""
    foreground_threshold: float = setting(0.1, gt=0, lt=1)
    median_frames: int = setting(1000, ge=1)
    """Training frames (evenly spaced) whose per-pixel median is the background frame."""
    eval_frames: int = setting(2000, ge=1)
    """At most this many held-out frames (evenly spaced) are scored after each epoch."""
    encode_batch_size: int = setting(1000, ge=1)
    channels_last: bool = True
    """Run convolutions in channels-last memory format (faster on CPUs)."""
    seed: int = 0

    SECTION: typing.ClassVar[str] = "vae"


@dataclass(frozen=True)
class MDNRNNConfig(Section):
    """M: the MDN-RNN on V's latents, and how its dream is measured."""

    hidden_size: int = setting(256, ge=1)
    mixtures: int = setting(5, ge=1)
    mixture: Literal["per_dimension", "shared"] = "per_dimension"
    """``per_dimension``: a mixture for every latent dimension (the paper's code); ``shared``:
    one mixture of diagonal Gaussians over the whole z (a component is a joint mode)."""
    epochs: int = setting(200, ge=1)
    batch_size: int = setting(16, ge=1)
    sequence_length: int = setting(125, ge=1)
    """Episodes are cut into windows of this many steps; the last window of an episode is padded
    and its padding masked out of every loss."""
    learning_rate: float = setting(1e-3, gt=0)
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    """``constant``: Adam at ``learning_rate`` to the last epoch (the paper). ``cosine``: from
    ``learning_rate`` down to 0 along a half cosine over the ``epochs`` (set at every batch), so M
    ends at a point rather than jittering around it: at a constant rate the weights' jitter is a
    small one-step bias that the dream adds up over a whole episode (on cartpole-balance the cart
    drifts away and the fallen pole loses its way back to the top). The schedule spans ``epochs``,
    so with it the number of epochs is part of what a run is: asked for more, M starts over."""
    grad_clip: float = setting(1.0, gt=0)
    """Gradients are clipped to [-grad_clip, grad_clip] elementwise, as in the paper's code."""
    done_pos_weight: float = setting(10.0, gt=0)
    ensemble: int = setting(1, ge=1)
    """How many Ms are trained side by side on the same batches from different initial weights
    (1: one M, the paper). With more, the dream draws each step from one of them at random and can
    subtract their disagreement from its reward (``controller.disagreement_penalty``); C reads the
    first member's ``h``. Training and dreaming cost this many times more."""
    openloop_loss_steps: int = setting(0, ge=0)
    """0: the paper's one-step loss. k > 0 adds, for every batch, the z NLL of k steps predicted
    open loop (M fed its own mixture means with the real actions) from a random point of the
    window, so that M learns to stay on track when fed its own predictions."""
    openloop_loss_weight: float = setting(1.0, ge=0)
    latents: Literal["sampled", "mean"] = "sampled"
    """What z M reads and predicts. ``sampled``: z drawn afresh from V's (mu, sigma) for every batch,
    and each dream starts from such a draw (the paper). ``mean``: V's mu, in training and at the
    dream's start: the z the agent reads in the real env, so M's inputs there are what it was trained
    on, and V's posterior noise (on the unused dimensions, as wide as the prior) is not dreamed."""
    residual: bool = False
    """False: M's mixture predicts the next z (the paper). True: its means are offsets from the z it
    has just read, so M learns how z changes (standing still is what an untrained head predicts) and
    its capacity goes to the dynamics rather than to copying z forward."""
    played_repeat: int = setting(1, ge=1)
    """How many times each training episode a V + M + C played (the iterative rounds' episodes) is
    in an epoch's windows; 1: once, like every other episode (the paper). A few dozen played
    episodes are otherwise a small share of data that is mostly exploration."""
    temperature: float = setting(1.0, ge=0)
    """Dream temperature for the dream metrics (replay gap) and for C's training; 0 is the
    deterministic dream (each step the mean of the most likely component)."""
    eval_every: int = setting(20, ge=1)
    """Held-out losses every this many epochs (and at the last)."""
    patience: int = setting(0, ge=0)
    """Early stopping: 0 trains every one of ``epochs``; n > 0 stops once the held-out loss has not
    improved for n epochs (it is measured every ``eval_every``), and ``mdnrnn.pt`` keeps the best
    epoch as always. A stopped run stays stopped when resumed. With the cosine schedule the rate is
    still that of the planned ``epochs`` where it stops."""
    context_frames: int = setting(5, ge=1)
    openloop_steps: int = setting(45, ge=1)
    dream_samples: int = setting(8, ge=1)
    """Dream rollouts per held-out episode when measuring the replay gap."""
    zero_action_noise_stds: tuple[float, ...] = setting((), gt=0)
    """A probe that means something on one kind of task, so a pipeline opts in: the real zero action is
    also played with Gaussian action noise of each of these stds, to place M's dream of doing nothing
    on the env's own sensitivity curve (empty: not played). The cartpole pipelines ask for
    ``[0.003, 0.01, 0.03, 0.1]``: there noise of std 0.01, half a percent of the action's range,
    already costs 12% of the zero action's return; on TakeCover or CarRacing these stds mean nothing."""
    seed: int = 0

    SECTION: typing.ClassVar[str] = "mdnrnn"

    def check(self) -> None:
        _require(self.openloop_loss_steps < self.sequence_length, "mdnrnn.openloop_loss_steps",
                 f"must be in [0, mdnrnn.sequence_length), got {self.openloop_loss_steps}")


@dataclass(frozen=True)
class ControllerConfig(Section):
    """C: the linear controller evolved with CMA-ES inside M's dream, and how it is scored."""

    inputs: Literal["zh", "z", "zch", "zz"] = "zh"
    """``zh``: C reads [z, h] (the paper's CarRacing C); ``zch``: [z, c, h], M's LSTM cell too (the
    paper's Doom C); ``z``: V only (the paper's ablation); ``zz``: [z, the previous step's z] (motion
    from two frames, no memory units in C's input). In ``wm state-model`` the true state takes z's
    place."""
    bias: bool = True
    """C's ``tanh(W x + b)`` has the bias ``b`` (the paper's Doom C has none: ``tanh(W x)``)."""
    layer_size: int = setting(0, ge=0)
    """0: the paper's linear C. Above 0: C has one tanh hidden layer of this many units before its
    output, for inputs that carry the task only non-linearly (``wm readout`` measures which)."""
    dream_reward: Literal["model", "survival"] = "model"
    """The dream's reward: M's reward head (``model``), or 1 for every step survived until M's done
    head ends the dream (``survival``: the paper's Doom dream, where the reward is frames survived)."""
    generations: int = setting(100, ge=1)
    stop_at: float | None = None
    """Stop evolving once the population's mean dream return reaches this (null: run every
    generation). For a survival dream, the cap (``dream_steps``) less a little: when nearly every
    candidate survives every dream to the end, the dream cannot rank them any more and further
    generations only wander (and each costs the longest dreams there are)."""
    stop_at_score: float | None = None
    """Stop evolving at the first check (every ``eval_every`` generations) where the CMA mean's score
    reaches this: the score that picks C (``eval/pick_mean`` with ``pick_temperature``, else
    ``eval/dream_mean``; ``eval/real_mean`` with ``fitness_in: real``). With it, ``generations`` is a
    cap and each search runs as long as it needs: on cartpole the generation at which a search from
    C = 0 leaves doing nothing varies from 80 to 440 with the seed (null: run every generation)."""
    pick_temperature: float | None = setting(None, ge=0)
    """The dream temperature at which each check scores the CMA mean over ``eval_dream_rollouts``
    dreams to pick C (the best check is ``controller.pt``, and among ``restarts`` the best search) and
    to stop (``stop_at_score``); logged as
    ``eval/pick_mean`` beside ``eval/dream_mean`` at the search's temperature. null: the search's own
    temperature. A little of M's noise tells a C that balances on M's most likely path only from one
    that balances around it too (cartpole seed 4: 614 against 960 at 0.05; both ~995 at 0)."""
    popsize: int = setting(64, ge=2)
    restarts: int = setting(1, ge=1)
    """Independent CMA-ES searches (seeds ``seed``, ``seed + 1``, ...); the one whose C scores best in
    ``eval_dream_rollouts`` dreams is C (``wm train-controller`` and ``wm state-model``; ``wm iterate``
    takes only 1)."""
    rollouts: int = setting(16, ge=1)
    """Dream rollouts per candidate; fitness is their mean return."""
    sigma0: float = setting(0.1, gt=0)
    memory_step_scale: float = setting(1.0, gt=0)
    """CMA-ES's first step on the weights of M's ``h`` (and ``c``) is ``sigma0`` times this; on z's
    weights and the bias it is ``sigma0``. 1: the paper's isotropic start."""
    temperature: float = setting(1.0, ge=0)
    disagreement_penalty: float = setting(0.0, ge=0)
    """Reward taken off each dream step per unit of M's ensemble disagreement (the standard deviation
    over members of the predicted next z, averaged over z's dimensions); needs ``mdnrnn.ensemble > 1``.
    0: the paper's dream."""
    dream_steps: int = setting(0, ge=0)
    """Length of a dream rollout in agent steps (0: the shortest episode of the rollouts)."""
    dream_starts: Literal["first", "any"] = "first"
    """``first``: dreams start at the training episodes' first frames (the paper); ``any``: at any
    of their frames, with M's state after reading the real frames and actions before it (short
    dreams from everywhere the data went, as Dreamer imagines from every posterior state)."""
    eval_every: int = setting(10, ge=1)
    eval_dream_rollouts: int = setting(256, ge=1)
    eval_real_episodes: int = setting(4, ge=0)
    workers: int = setting(2, ge=0)
    """Worker processes for C's real-env episodes (its periodic checks, and fitness with
    ``fitness_in: real``); 0 plays them in this process."""
    fitness_in: Literal["dream", "real"] = "dream"
    """``dream``: fitness is the mean return of ``rollouts`` dreams of M (the paper's Doom mode);
    ``real``: of ``rollouts`` real episodes played with V and M (the paper's CarRacing mode)."""
    temperatures: tuple[float, ...] = setting((), ge=0)
    """The temperature sweep: C is evolved at each of these dream temperatures and scored in the
    dream and in the real env (empty: no sweep)."""
    seed: int = 0

    SECTION: typing.ClassVar[str] = "controller"


@dataclass(frozen=True)
class IterateConfig(Section):
    """The paper's iterative procedure: collect episodes with the current V+M+C plus exploration
    noise, append them to the data, re-train M (and V if asked) and C, and repeat."""

    iterations: int = setting(0, ge=0)
    """Rounds after the first controller (0: C is trained once, on the exploration data only)."""
    start_from: Literal["controller", "zero"] = "controller"
    """What the first round plays and evolves from: round 0's C (``controller``, the paper), or
    C = 0, the zero action (``zero``): on a task where doing nothing is a good policy (cartpole
    balance), the first new data then stays near the goal, and CMA-ES starts from it."""
    evolve_from: Literal["previous", "zero"] = "previous"
    """Where each round's CMA-ES starts: the C the round played (``previous``), or C = 0 (``zero``):
    a fresh search in each round's M, which finds what that M still pays for and reality does not
    (TakeCover: once the round's data shows that holding right walks into the wall, holding left),
    so that the next round's data corrects it, where a search continued from the previous C stays
    near the policy the data already covers."""
    episodes: int = setting(50, ge=1)
    """On-policy episodes collected in each round."""
    noise_std: float = setting(0.3, ge=0)
    """Gaussian noise added to C's actions while collecting (clipped to the action bounds)."""
    retrain_vae: bool = False
    """Re-train V on the grown data each round (off: V from the exploration data is kept)."""
    mdnrnn_epochs: int = setting(50, ge=0)
    """Epochs of M each round, continuing from the previous round's M (0: train from scratch for
    ``mdnrnn.epochs``)."""
    controller_generations: int | tuple[int, ...] = 30
    """Generations of C in each round, or a list with one count per round (the last repeats for
    rounds past its end): short searches while the rounds correct what the dream overpays, a
    longer one in the last round's M."""
    eval_episodes: int = setting(16, ge=1)
    """Real episodes scoring each round's C (seeds of the training-checks stream)."""

    SECTION: typing.ClassVar[str] = "iterate"

    def check(self) -> None:
        counts = self.controller_generations
        counts = counts if isinstance(counts, tuple) else (counts,)
        _require(len(counts) >= 1 and min(counts) >= 1, "iterate.controller_generations",
                 f"must be >= 1 (or a list of counts >= 1), got {self.controller_generations}")

    def generations_of(self, round_index: int) -> int:
        """C's generations in round ``round_index`` (1 is the first round)."""
        counts = self.controller_generations
        if not isinstance(counts, tuple):
            return counts
        return counts[min(round_index, len(counts)) - 1]


@dataclass(frozen=True)
class EvaluateConfig(Section):
    """How every agent is scored in the real env (V+M+C, the baselines, the oracle, Dreamer)."""

    seed: int = setting(0, ge=0)
    """Evaluation episodes are seeded from ``(seed, evaluation stream, i)``: disjoint from every
    training seed, and the same for every agent."""
    episodes: int = setting(100, ge=1)
    workers: int = setting(2, ge=0)
    """Worker processes playing the episodes (0: in this process); the scores do not depend on it."""

    SECTION: typing.ClassVar[str] = "evaluate"


@dataclass(frozen=True)
class OracleConfig(Section):
    """The ceiling of the controller class: the same linear tanh form on the TRUE state, tuned by
    CMA-ES in the real env (no pixels, no model)."""

    generations: int = setting(30, ge=1)
    popsize: int = setting(24, ge=2)
    episodes: int = setting(1, ge=1)
    """Real episodes per candidate per generation (every candidate of a generation plays the same seeds)."""
    sigma0: float = setting(0.5, gt=0)
    seed: int = 0

    SECTION: typing.ClassVar[str] = "oracle"


READOUT_INPUTS = ("state", "zh", "z+velocity", "position+h")


@dataclass(frozen=True)
class ReadoutConfig(Section):
    """Can what C reads carry the task? The true-state oracle imitated (DAgger) from C's inputs, and
    from mixes of them with parts of the true state, then played in the real env."""

    inputs: tuple[str, ...] = READOUT_INPUTS
    """What each imitation reads: ``state`` (the true state: the procedure's own ceiling), ``zh`` (C's
    inputs, z and M's h), ``z+velocity`` (z and the true velocities: is z's picture of the positions
    enough?), ``position+h`` (the true positions and M's h: is h's memory of the motion enough?)."""
    oracle_episodes: int = setting(20, ge=1)
    """Episodes played by the oracle (with action noise of ``noise_levels`` in turn) to start the data."""
    noise_levels: tuple[float, ...] = (0.0, 0.3, 0.6)
    dagger_rounds: int = setting(4, ge=0)
    dagger_episodes: int = setting(8, ge=0)
    """Episodes played by the imitation itself each round, labelled with the oracle's actions (DAgger)."""
    hidden_size: int = setting(64, ge=1)
    """The non-linear readout: one tanh layer of this many units (the linear one is C's own form)."""
    fit_epochs: int = setting(300, ge=1)
    learning_rate: float = setting(1e-3, gt=0)
    eval_episodes: int = setting(10, ge=1)
    seed: int = 0

    SECTION: typing.ClassVar[str] = "readout"

    def check(self) -> None:
        _require(len(self.inputs) >= 1, "readout.inputs", "must name at least one input")
        for index, name in enumerate(self.inputs):
            _require(name in READOUT_INPUTS, f"readout.inputs[{index}]",
                     f"must be one of {', '.join(READOUT_INPUTS)}; got {name!r}")
        _require(len(self.noise_levels) >= 1 and all(n >= 0 for n in self.noise_levels), "readout.noise_levels",
                 f"must be one or more values >= 0, got {list(self.noise_levels)}")


@dataclass(frozen=True)
class DreamerConfig(Section):
    """Dreamer v1 (Hafner et al. 2019) on the same rollouts: the RSSM world model and an
    actor-critic learned in its imagination. Defaults are the paper's."""

    depth: int = setting(32, ge=1)
    """Channels of the first conv layer (the encoder goes depth, 2, 4, 8 x depth)."""
    deter_size: int = setting(200, ge=1)
    stoch_size: int = setting(30, ge=1)
    hidden_size: int = setting(200, ge=1)
    reward_layers: int = setting(2, ge=0)
    value_layers: int = setting(3, ge=0)
    actor_layers: int = setting(4, ge=0)
    head_hidden: int = setting(400, ge=1)
    batch_size: int = setting(50, ge=1)
    sequence_length: int = setting(50, ge=1)
    horizon: int = setting(15, ge=1)
    discount: float = setting(0.99, ge=0, le=1)
    lambda_: float = setting(0.95, ge=0, le=1)
    free_nats: float = setting(3.0, ge=0)
    """The KL loss's floor in nats, below which it carries no gradient (Dreamer v1: 3; DreamerV2: 1)."""
    free_nats_on_prior: bool = True
    """Whether the floor applies to the prior's share of the KL too (Dreamer v1, DreamerV2). False: the
    posterior may carry ``free_nats`` unpunished while the prior learns to predict it at every KL."""
    kl_balance: float = setting(0.5, ge=0, le=1)
    """The share of the KL's gradient that trains the prior towards the posterior; the rest pulls the
    posterior towards the prior (DreamerV2's KL balancing: 0.8). 0.5 (with ``free_nats_on_prior``): Dreamer
    v1's plain KL exactly, its gradient whole to both sides."""
    world_model_warmup: int = setting(0, ge=0)
    """Updates that train the world model alone before the actor and value learn with it (Dreamer v1: 0).
    A blind world model's reward head ties reward to past actions (this task's cart and pole are ~1%
    of the pixels), and an actor trained on it at once settles on a saturated push."""
    value_warmup: int = setting(0, ge=0)
    """Updates after ``world_model_warmup`` in which the value learns but the actor does not (Dreamer v1:
    0): the value is fitted to the imagined returns of the first, widely spread actor, so that it rates
    both directions before the actor follows its gradient."""
    actor_entropy: float = setting(0.0, ge=0)
    """Weight of the imagined actions' entropy in the actor's objective (Dreamer v1: 0). It keeps the
    tanh-Normal from collapsing onto a saturated push early, while the world model is still blind."""
    model_learning_rate: float = setting(6e-4, gt=0)
    actor_learning_rate: float = setting(8e-5, gt=0)
    value_learning_rate: float = setting(8e-5, gt=0)
    grad_clip: float = setting(100.0, gt=0)
    updates: int = setting(100, ge=1)
    """Offline (``env_steps: 0``): all the updates, on the rollouts. Online: the pretraining updates
    made once the prefill (the collect stage's episodes) is in the replay (Dreamer v1: 100)."""
    env_steps: int = setting(0, ge=0)
    """Online: Dreamer's own loop runs until its replay (``dreamer_rollouts.h5``: the prefill plus the
    episodes it plays, actor sample plus exploration noise) holds this many env steps (Dreamer v1 on
    DMC: 1e6; the article: 1e5). 0: offline only, on the collect stage's episodes."""
    prefill_episodes: int = setting(0, ge=0)
    """Online: how many of the collect stage's episodes (the first) start the replay as its prefill;
    0: all of them (Dreamer v1: 5,000 env steps of random play)."""
    train_every: int = setting(1000, ge=1)
    """Online: ``updates_per_train`` updates are due for every ``train_every`` env steps played after
    the prefill (Dreamer v1: 100 per 1,000), made between episodes."""
    updates_per_train: int = setting(100, ge=1)
    episode_steps: int = setting(0, ge=0)
    """Online: cut the episodes Dreamer plays after this many agent steps (0: the env's own length).
    Evaluation always plays whole episodes. Cartpole's pole is down within ~10 steps of a poor policy,
    so whole episodes fill the replay, and imagination's start states, with a fallen pole."""
    episode_start_share: float = setting(0.0, ge=0, le=1)
    """Share of each batch's windows that begin at an episode's first step; the rest are drawn
    uniformly over every window (Dreamer v1: 0, all uniform). Evaluation starts every episode from the
    env's initial states; on cartpole-balance a poor policy has the pole down within ~10 of 125 steps,
    so uniform windows train the world model, and start imagination, almost only where the pole has
    already fallen, far from the states the agent is judged on."""
    exploration_noise: float = setting(0.3, ge=0)
    """Online: std of the Gaussian noise added to the actor's sample when playing (clipped to [-1, 1])."""
    eval_every: int = setting(50, ge=1)
    """Offline: updates between evaluations."""
    eval_every_env_steps: int = setting(10000, ge=1)
    """Online: env steps between evaluations, the first one on the prefill (Dreamer v1: 1e4, from 5k)."""
    eval_episodes: int = setting(10, ge=1)
    """Real episodes at every periodic evaluation (the first seeds of `wm evaluate`'s)."""
    seed: int = 0

    SECTION: typing.ClassVar[str] = "dreamer"


@dataclass(frozen=True)
class ReportConfig(Section):
    """What the report puts beside this pipeline's own runs: rows read from other pipelines' data dirs
    (beside this one's, under the same ``--data-dir``), declared here rather than found by name."""

    title: str | None = None
    """How another pipeline's report names this pipeline's row (null: its name)."""
    paper_recipe: str | None = None
    """The pipeline that is this task's paper recipe: its V+M+C score is a row of the results, and the
    settings where this pipeline differs from it are listed (null: none)."""
    compare_with: tuple[str, ...] = ()
    """Rows from other pipelines, each ``<pipeline>:<agent>`` with agent ``worldmodel`` (V+M+C) or
    ``dreamer``, e.g. ``cartpole_balance_dreamer:dreamer``. One not run yet is named with its command."""

    agents: tuple[str, ...] = ("worldmodel", "dreamer")
    """The agents this pipeline trains: ``worldmodel`` (V+M+C) and/or ``dreamer``. `make all` runs the
    stages they need (and the true-state oracle) and the report shows their sections."""

    SECTION: typing.ClassVar[str] = "report"
    AGENTS: typing.ClassVar[tuple[str, ...]] = ("worldmodel", "dreamer")

    def check(self) -> None:
        _require(bool(self.agents) and set(self.agents) <= set(self.AGENTS), "report.agents",
                 f"expected one or both of {', '.join(self.AGENTS)}, got {list(self.agents)}")
        for index, entry in enumerate(self.compare_with):
            pipeline, _, agent = entry.partition(":")
            _require(bool(pipeline) and agent in self.AGENTS, f"report.compare_with[{index}]",
                     f"expected '<pipeline>:<agent>' with agent {' or '.join(self.AGENTS)}, got {entry!r}")

    def comparisons(self) -> list[tuple[str, str]]:
        """``compare_with`` as (pipeline, agent) pairs."""
        return [tuple(entry.split(":", 1)) for entry in self.compare_with]


SECTIONS: dict[str, type] = {cls.SECTION: cls for cls in (RuntimeConfig, EnvConfig, CollectConfig, DataConfig,
                                                          VAEConfig, MDNRNNConfig, ControllerConfig, EvaluateConfig,
                                                          OracleConfig, IterateConfig, ReadoutConfig,
                                                          DreamerConfig, ReportConfig)}


@dataclass(frozen=True)
class PipelineConfig:
    """A whole experiment: its name (the YAML file's stem) and one config per stage."""

    name: str
    description: str = ""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    mdnrnn: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    iterate: IterateConfig = field(default_factory=IterateConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    dreamer: DreamerConfig = field(default_factory=DreamerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if self.mdnrnn.ensemble > 1:
            _require(self.controller.dream_starts == "first", "controller.dream_starts",
                     f"an ensemble M (mdnrnn.ensemble={self.mdnrnn.ensemble}) dreams from first frames only, "
                     f"got {self.controller.dream_starts!r}")
        else:
            _require(self.controller.disagreement_penalty == 0, "controller.disagreement_penalty",
                     f"needs an ensemble M to measure disagreement (mdnrnn.ensemble > 1), got "
                     f"{self.controller.disagreement_penalty} with mdnrnn.ensemble=1")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as written to ``config.yaml``."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


