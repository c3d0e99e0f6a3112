"""The report's sections: each reads what the stages wrote and returns HTML, or raises ``Missing``
naming the file and the command that makes it."""

from __future__ import annotations

import html
import json
import platform
import sys
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from worldmodels.config import ConfigError, PipelineConfig, load_pipeline
from worldmodels.core.checkpoint import file_sha256
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import cpu_description
from worldmodels.core.stage_times import read_stage_times
from worldmodels.data.store import RolloutReader
from worldmodels.envs import has_true_state
from worldmodels.evaluation.episodes import Score
from worldmodels.reference import dreamer_v1_curve
from worldmodels.reporting.anchors import (
    PAPER_TASK,
    beside_the_paper,
    paper_temperature_table,
    published_anchors,
    sweep_rows,
)
from worldmodels.reporting.page import (
    Missing,
    Report,
    counted,
    fixed,
    format_seconds,
    load,
    missing_box,
    spread,
    table,
)
from worldmodels.vmc.env_budget import describe as describe_env_steps
from worldmodels.vmc.simulator import describe_zero_action_noise

PACKAGES = ("worldmodels", "torch", "numpy", "gymnasium", "dm-control", "mujoco", "cma", "h5py", "click",
            "matplotlib")
HORIZONS = (1, 5, 15, 45)

STAGES = ("collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "iterate", "evaluate", "oracle",
          "dreamer", "report", "temperature-sweep", "readout", "state-model")
EXTRA_STAGES = ("temperature-sweep", "readout", "state-model")  # timed, but not part of `make all`

def _score_text(score: Score) -> str:
    return f"{spread(score.mean, score.std)} ({counted(score.episodes, 'episode')})"


def _parameters(state: dict[str, Any], *keys: str) -> int:
    """Number of parameters in the state dicts (or tensors) under ``keys`` of a checkpoint."""
    total = 0
    for key in keys:
        value = state[key]
        total += value.numel() if torch.is_tensor(value) else sum(t.numel() for t in value.values())
    return total


def _paper_pipeline(config: PipelineConfig) -> PipelineConfig | None:
    """The pipeline this one declares as its task's paper recipe (``report.paper_recipe``), if any."""
    return _declared_pipeline(config.report.paper_recipe)


def _declared_pipeline(name: str | None) -> PipelineConfig | None:
    """A pipeline a report section names, or None when it names none or the pipeline is not there."""
    if name is None:
        return None
    try:
        return load_pipeline(name)
    except ConfigError:
        return None


# What another pipeline's agent is called in the results when that pipeline has no report.title, and the
# make target that writes its score.
COMPARED_AGENTS = {"worldmodel": ("V+M+C", "evaluate"), "dreamer": ("Dreamer", "all")}


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- sections: each returns HTML, or raises Missing -------------------------------------------

def section_results(report: Report) -> str:
    paths, make = report.paths, report.make
    rows, missing = [], []

    reference = paths.score("worldmodel")
    reference_seeds = Score.read(reference).seeds if reference.is_file() else None

    def add(label: str, path: Path, command: str, parameters: int | None, note: str = "") -> None:
        if not path.is_file():
            missing.append(missing_box(path, command))
            return
        score = Score.read(path)
        if reference_seeds is not None and score.seeds != reference_seeds:
            note = f"{note}; NOT the same evaluation episodes as V+M+C" if note else "NOT the same evaluation episodes"
        used = score.about.get("env_steps_used")  # V+M+C: its data and every real step its training took
        if used:
            note = f"{note}; {describe_env_steps(used)}" if note else describe_env_steps(used)
        rows.append([label, used["total"] if used else (score.env_steps_of_data or None), _score_text(score),
                     parameters, note])

    parameters = _model_parameters(report.paths)
    world_model_parameters = sum(parameters.get(k, 0) for k in ("V", "M", "C")) or None
    add("random policy", paths.score("random"), make("evaluate"), None, "the collect policy")
    if report.config.collect.policy != "random" or paths.score("uniform_random").is_file():
        add("uniform random policy", paths.score("uniform_random"), make("evaluate"), None,
            "a uniform action at every step")
    add("zero action", paths.score("zero"), make("evaluate"), None, "a = 0 at every step")
    agents = report.config.report.agents
    if has_true_state(report.config.env):
        add("true-state linear oracle", paths.score("oracle"), make("oracle"), parameters.get("oracle"),
            "C's form on the true state, CMA-ES in the real env")
        if "worldmodel" in agents:
            add("M and C on the true state instead of V's z", paths.score("state_model"), make("state-model"), None,
                _state_model_note(paths.score("state_model")))
    paper = _paper_pipeline(report.config) if "worldmodel" in agents else None
    if "worldmodel" in agents:
        _add_world_model_rows(report, add, world_model_parameters, paper)
    if "dreamer" in agents:
        add("Dreamer (RSSM + actor-critic)", paths.score("dreamer"), make("dreamer"), parameters.get("Dreamer"),
            _dreamer_note(paths))
    not_run = []
    for name, agent in report.config.report.comparisons():
        related = _declared_pipeline(name)
        if related is None:
            continue
        default_label, target = COMPARED_AGENTS[agent]
        label = related.report.title or f"{default_label}, pipeline {related.name}"
        related_paths = PipelinePaths(paths.root.parent / related.name)
        command = f"make {target} PIPELINE={related.name}"
        if related_paths.score(agent).is_file():
            note = _dreamer_note(related_paths) if agent == "dreamer" else ""
            add(label, related_paths.score(agent), command, None, f"pipeline {related.name}; {note}".rstrip("; "))
        else:
            not_run.append(f"{html.escape(label)} (<code>{html.escape(command)}</code>)")
    body = table(["agent", "env steps used", "real score, mean +- std", "parameters", "note"], rows)
    body += "".join(missing)
    if not_run:
        body += f'<p class="note">Not run yet, rows once they are: {"; ".join(not_run)}.</p>'
    counted_steps = ("Env steps used: every step an agent took in the real env to learn (V+M+C: its data, C's "
                     "real checks and the iterative rounds' episodes and scores; the evaluation episodes are not "
                     "counted, nor Dreamer's periodic evaluations, which its training does not read). "
                     if "worldmodel" in agents else "Env steps used: the real steps each agent learned from. ")
    body += (f'<p class="note">Every agent plays the same evaluation episodes (seeds disjoint from every '
             f"seed used in training). {counted_steps}Parameters per model: "
             f"{html.escape(', '.join(f'{k} {v:,}' for k, v in parameters.items())) or 'none trained yet'}.</p>")
    body += "<h3>Published anchors</h3>" + table(["task and setting", "agent", "env steps", "score", "source"],
                                                  published_anchors())
    if paper is not None:
        body += _paper_differences(report.config, paper)
    return body


def _iterations(score_path: Path) -> int | None:
    """The rounds of the iterative procedure the scored V+M+C went through (None: not recorded)."""
    if not score_path.is_file():
        return None
    return json.loads(score_path.read_text()).get("iterations")


def _trained_where(paths: PipelinePaths) -> str:
    """How C was trained, from its checkpoint: in the dream or from real episodes."""
    if not paths.controller.is_file():
        return "C trained only in the dream"
    state = load(paths.controller)
    where = state.get("inputs", {}).get("settings", {}).get("fitness_in", "dream")
    return "C trained only in the dream" if where == "dream" else "C's fitness from real episodes"


def _scored_controller(paths: PipelinePaths) -> dict[str, Any] | None:
    """``controller.pt`` when it is the very controller ``scores/worldmodel.json`` scored, else None."""
    score_path = paths.score("worldmodel")
    if not (paths.controller.is_file() and score_path.is_file()):
        return None
    if json.loads(score_path.read_text()).get("controller_sha256") != file_sha256(paths.controller):
        return None  # C changed after the evaluation (or an older score): its numbers do not belong together
    return load(paths.controller)


def _dream_note(report: Report) -> str:
    state = _scored_controller(report.paths)
    if state is None:
        return ""
    metrics = state.get("metrics", {})
    dream, picked = metrics.get("eval/dream_mean"), metrics.get("eval/pick_mean")
    if dream is None:
        return ""
    note = f"its dream score (tau {state['temperature']:g}): {fixed(dream, 0)}"
    pick_temperature = report.config.controller.pick_temperature
    if picked is not None and pick_temperature is not None:
        note += f"; picked at tau {pick_temperature:g}: {fixed(picked, 0)}"
    return note


def _add_world_model_rows(report: Report, add: Callable[..., None], world_model_parameters: int | None,
                          paper: PipelineConfig | None) -> None:
    """The results' V+M+C rows: this pipeline's agent (and its round 0), and the paper recipe's (``paper``)."""
    paths, make = report.paths, report.make
    iterations = _iterations(paths.score("worldmodel"))
    trained = _trained_where(paths)
    if iterations:
        add("V+M+C, one shot (round 0)", paths.score("worldmodel_round0"), make("evaluate"), world_model_parameters,
            trained)
    label = {None: "V+M+C", 0: f"V+M+C, {trained}"}.get(iterations, f"V+M+C, after {iterations} rounds")
    add(label, paths.score("worldmodel"), make("evaluate"), world_model_parameters,
        _dream_note(report) if iterations == 0 else "")
    if paper is not None:
        paper_paths = PipelinePaths(paths.root.parent / paper.name)
        paper_parameters = _model_parameters(paper_paths)
        add("V+M+C, the paper's recipe", paper_paths.score("worldmodel"),
            f"make evaluate PIPELINE={paper.name}", sum(paper_parameters.get(k, 0) for k in ("V", "M", "C")) or None,
            f"pipeline {paper.name}")


def _dreamer_note(paths: PipelinePaths) -> str:
    if not paths.score("dreamer").is_file():
        return ""
    score = Score.read(paths.score("dreamer"))
    trained = "online" if score.about.get("online") else "offline"
    budget = (f"{trained}: {counted(score.about.get('updates'), 'update')} "
              f"on {counted(score.env_steps_of_data, 'env step')}")
    if score.about.get("training_seconds") is not None:
        budget += f", {format_seconds(score.about['training_seconds'] + score.wall_clock_s)} with its evaluations"
    if not score.about.get("online") and score.about.get("updates", 0) < 1000:
        budget += " (untrained: Dreamer v1 makes ~9,600 updates by 100k env steps)"
    return budget


def _dreamer_budget(settings) -> str:
    """This run's Dreamer schedule in words."""
    batch = f"{settings.batch_size} x {settings.sequence_length}"
    if not settings.env_steps:
        return f"{counted(settings.updates, 'offline update')} of {batch}"
    return (f"online to {counted(settings.env_steps, 'env step')}: {counted(settings.updates, 'pretraining update')} "
            f"on the prefill (the collect stage's episodes), then {counted(settings.updates_per_train, 'update')} of "
            f"{batch} per {counted(settings.train_every, 'env step')} played")


def _model_parameters(paths: PipelinePaths) -> dict[str, int]:
    found = {}
    for label, path, keys in (("V", paths.vae, ("model",)), ("M", paths.mdnrnn, ("model",)),
                              ("C", paths.controller, ("parameters",)),
                              ("Dreamer", paths.dreamer, ("world_model", "actor", "value"))):
        if path.is_file():
            state = load(path)
            if all(key in state for key in keys):
                found[label] = _parameters(state, *keys)
    if paths.score("oracle").is_file():
        found["oracle"] = len(Score.read(paths.score("oracle")).about.get("parameters", []))
    return found


def _paper_differences(config: PipelineConfig, paper: PipelineConfig) -> str:
    ours, theirs = _flatten(config.to_dict()), _flatten(paper.to_dict())
    rows = [[key, str(theirs.get(key)), str(ours.get(key))] for key in sorted(set(ours) | set(theirs))
            if ours.get(key) != theirs.get(key) and key not in ("name", "description")
            and not key.startswith("report.")]
    return (f"<h3>Where {html.escape(config.name)} differs from the paper's recipe ({html.escape(paper.name)})</h3>"
            + table(["setting", "paper's recipe", "this pipeline"], rows))


def section_times(report: Report) -> str:
    times = read_stage_times(report.paths)
    if not times:
        raise Missing(report.paths.stage_times, report.make("all"))

    def row(stage: str) -> list[Any]:
        return [stage, format_seconds(times[stage]["seconds"]), times[stage].get("finished")]

    timed = [stage for stage in STAGES if "seconds" in times.get(stage, {})]
    rows = [row(stage) for stage in timed if stage not in EXTRA_STAGES]
    total = sum(times[stage]["seconds"] for stage in timed if stage not in EXTRA_STAGES)
    rows.append(["total of make all's stages", format_seconds(total), None])
    rows += [[f"{stage} (not part of make all)", *row(stage)[1:]] for stage in timed if stage in EXTRA_STAGES]
    return (table(["stage", "wall clock", "finished (UTC)"], rows)
            + f'<p class="note">This report was built on {html.escape(_machine())}. A stage re-run that found '
              "its output complete is not counted; a resumed stage counts all its runs.</p>")


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {platform.system()}, {cpu_description()}, {gpu}"


def _resolved_runtime(paths: PipelinePaths) -> dict[str, Any] | None:
    """The device, precision and threads the stages ran with (``config.yaml``'s ``resolved_runtime``)."""
    if not paths.config.is_file():
        return None
    return (yaml.safe_load(paths.config.read_text()) or {}).get("resolved_runtime")


def _controller_budget(config: PipelineConfig, paths: PipelinePaths) -> str:
    """C's generations (with ``stop_at_score``: how many the search ran, of its cap) and population."""
    settings = config.controller
    generations = counted(settings.generations, "generation")
    log = paths.metrics("controller")
    if settings.stop_at_score is not None:
        records = MetricsLog(log, step_key="generation").read() if log.is_file() else []
        ran = [record["generation"] for record in records]
        generations = (f"{counted(ran[-1], 'generation')} of at most {settings.generations:,}" if ran
                       else f"at most {generations}") + f" (until C scores {settings.stop_at_score:g} at a check)"
    kind = "dreams" if settings.fitness_in == "dream" else "episodes"
    return f"{generations} of {settings.popsize} x {settings.rollouts} {kind}"


def section_budgets(report: Report) -> str:
    """Each model's training budget in this run beside the paper's, so a score is read with its budget."""
    config = report.config
    frames = None
    if report.paths.rollouts.is_file():
        with RolloutReader(report.paths.rollouts) as reader:
            frames = reader.num_frames
    frames_text = f" on {counted(frames, 'frame')}" if frames else ""
    rows = [
        ["data", f"{counted(config.collect.episodes, 'episode')} of {config.collect.policy}",
         "10,000 random episodes (CarRacing and TakeCover, Ha & Schmidhuber 2018)"],
        ["V", f"{counted(config.vae.epochs, 'epoch')}{frames_text}, batch {config.vae.batch_size}, "
              f"lr {config.vae.learning_rate:g}",
         "10 epochs over 10M frames, batch 100, lr 1e-4 (hardmaru's code; the paper's text says 1)"],
        ["M", f"{counted(config.mdnrnn.epochs, 'epoch')}, batch {config.mdnrnn.batch_size} x "
              f"{config.mdnrnn.sequence_length}",
         "CarRacing: 4,000 steps of 100 x 999; TakeCover: 400 epochs of sequences of 500"],
        ["C", _controller_budget(config, report.paths),
         "64 x 16 rollouts; TakeCover ~200 generations in the dream, CarRacing ~1,800 in the real env"],
        ["oracle", f"{counted(config.oracle.generations, 'generation')} of {config.oracle.popsize} x "
                   f"{config.oracle.episodes} real episodes", "(ours: the linear form's ceiling on the true state)"],
        ["Dreamer", _dreamer_budget(config.dreamer),
         "100 updates of 50 x 50 per 1,000 env steps, online: ~9,600 by 100k env steps (Hafner et al. 2019)"],
        ["evaluation", f"{counted(config.evaluate.episodes, 'real episode')} per agent", "100 episodes"],
    ]
    # Only the models this pipeline trains (report.agents); data, oracle and evaluation rows always.
    agent_of = {"V": "worldmodel", "M": "worldmodel", "C": "worldmodel", "Dreamer": "dreamer"}
    rows = [row for row in rows if agent_of.get(row[0]) in (None, *config.report.agents)]
    runtime = _resolved_runtime(report.paths)
    where = (f"{runtime['device']} ({runtime.get('device_name', '')}), {runtime['precision']}, "
             f"{counted(runtime['threads'], 'CPU thread')}" if runtime else "not recorded (no config.yaml)")
    return (table(["model", "this run", "the paper"], rows)
            + f'<p class="note">Ran on {html.escape(where)}. The defaults are sized for <code>make all</code> on a '
              '2-core CPU (each stage\'s time is in <a href="#wall-clock-per-stage">the wall-clock table above</a>, '
              "and by machine in docs/performance.md); scores at these budgets are not the papers' results at "
              "theirs.</p>")


def section_data(report: Report) -> str:
    path = report.paths.rollouts
    if not path.is_file():
        raise Missing(path, report.make("collect"))
    with RolloutReader(path) as reader:
        if reader.num_episodes == 0:
            raise Missing(path, report.make("collect"))
        returns, lengths = reader.returns, reader.lengths
        sources = Counter(reader.episodes["source"].astype(str))
        rows = [["episodes", reader.num_episodes], ["agent steps", reader.num_steps],
                ["env steps (x action repeat)", reader.num_steps * reader.action_repeat],
                ["action repeat", reader.action_repeat],
                ["frames", f"{reader.num_frames} x {'x'.join(map(str, reader.frame_shape))}"],
                ["policy", ", ".join(f"{s} ({counted(n, 'episode')})" for s, n in sorted(sources.items()))],
                ["episode length (agent steps)", f"{lengths.min()} - {lengths.max()}"],
                ["return, mean +- std", spread(returns.mean(), returns.std())],
                ["return, min / max", f"{fixed(returns.min())} / {fixed(returns.max())}"],
                ["held-out fraction", report.config.data.heldout_fraction]]
    return table(["", ""], rows)


def _vae_metrics(paths: PipelinePaths) -> dict[str, Any] | None:
    """The held-out measures of ``vae.pt`` (the best epoch, the one V+M+C uses), with its epoch."""
    if not paths.vae.is_file():
        return None
    state = load(paths.vae)
    return {"epoch": state.get("epoch"), **state.get("metrics", {})}


def section_v(report: Report) -> str:
    best = _vae_metrics(report.paths)
    if best is None:
        raise Missing(report.paths.vae, report.make("vae"))
    rows = [[key, best[key]] for key in ("epoch", "heldout/mse", "heldout/foreground_ratio", "heldout/loss/kl",
                                         "heldout/z_dims_in_use", "heldout/z_snr_in_use") if key in best]
    return (report.figure("vae_reconstruction", report.make("vae"), "V: real frames and reconstructions")
            + table(["held-out measure of vae.pt (its best epoch)", "value"], rows)
            + '<p class="note">Foreground ratio: the reconstruction error on the task\'s objects (pixels that '
              "differ from the median frame) over the error a background-only image would make there; "
              "1 means V ignores the objects, 0 means it draws them perfectly. z dimensions in use: those whose mu "
              "varies across frames more than V's posterior sigma on them; the rest are noise in a z drawn "
              "from the posterior (vae.kl_tolerance sets how many nats of KL go unpenalised).</p>")


def section_m(report: Report) -> str:
    simulator = report.json(report.paths.simulator_metrics, report.make("mdnrnn"))
    errors = simulator["openloop_latent_error"]
    rows = [[f"open-loop latent error at horizon {h}", errors[h - 1]] for h in (1, 5, 10, 20, 45) if h <= len(errors)]
    rows += [["replayed actions: real return", simulator["real_return_mean"]],
             ["replayed actions: dream return", simulator["dream_return_mean"]],
             ["replay gap, mean |dream - real|", simulator["mean_abs_gap"]],
             ["replay correlation (dream vs real)", simulator["correlation"]]]
    zero = simulator.get("zero_action")
    if zero:
        rows += [["zero action: real return", zero["real_return_mean"]],
                 ["zero action: dream return", zero["dream_return_mean"]]]
        if "teacher_forced_return_mean" in zero:
            rows.append(["zero action: M's reward head on the real frames", zero["teacher_forced_return_mean"]])
    sensitivity = simulator.get("action_sensitivity")
    if sensitivity:
        rows.append([f"action sensitivity: spread of futures under held actions over "
                     f"{counted(sensitivity['steps'], 'step')}, dream / real (1: as reality)", sensitivity["ratio"]])
    held = simulator.get("held_action")
    if held:
        for value, real, dream, real_length, dream_length in zip(
                held["actions"], held["real_return_mean"], held["dream_return_mean"], held["real_length_mean"],
                held["dream_length_mean"], strict=True):
            rows.append([f"action held at {value:+g} (whole episodes): real / dream return (steps)",
                         f"{fixed(real)} / {fixed(dream)} ({fixed(real_length, 0)} / {fixed(dream_length, 0)})"])
        rows.append(["held actions: largest dream - real return (what a C exploiting the dream finds first)",
                     held["largest_overestimate"]])
        if "zero_action_noise" in held:
            rows.append(["the zero action in the real env with small action noise, and M's dream of doing "
                         "nothing on that curve", describe_zero_action_noise(held)])
    dreams = "".join(report.figure(path.stem, report.wm("dream") + " --temperature T",
                                   f"dream at {path.stem}")
                     for path in sorted(report.paths.figures_dir.glob("dream_tau*.png")))
    return (report.figure("dream_rollouts", report.make("mdnrnn"), "M: dream rollouts") + dreams
            + "<h3>A held-out episode beside M's dream from its first frame, fed its actions</h3>"
            + report.video("dream_vs_real", report.make("mdnrnn"), "real episode beside M's dream")
            + report.figure("openloop_vm", report.make("mdnrnn"), "V+M open loop")
            + table(["M as a simulator (held-out episodes)", "value"], rows)
            + "<h3>Holding the action: the mean reward at every step, real against M's dream</h3>"
            + report.figure("held_action_rewards", report.wm("train-mdnrnn"), "held-action rewards per step"))


def section_c(report: Report) -> str:
    make = report.make
    body = (report.figure("cmaes_curve", make("controller"), "CMA-ES curve")
            + "<h3>C playing inside M's dream</h3>"
            + report.video("controller_in_dream", make("controller"), "C playing in M's dream")
            + report.figure("score_hist", make("evaluate"), "score histogram"))
    path = report.paths.score("temperature_table")
    command = report.wm("train-controller") + " --temperatures 0.1,0.5,1.0,1.15,1.3"
    sweep = json.loads(path.read_text()) if path.is_file() else None
    note = ("" if sweep is None else f'<p class="note">Real scores over '
            f"{counted(sweep['episodes'], 'evaluation episode')}, dream scores over "
            f"{counted(sweep['dream_rollouts'], 'dream')} at each C's own temperature.</p>")
    if report.config.env.id == PAPER_TASK:  # the paper's own task: one table, row for row
        rows = beside_the_paper(sweep["rows"] if sweep else [])
        body += ("<h3>Temperature table: this pipeline beside the paper (VizDoom TakeCover)</h3>"
                 + table(["tau", "dream", "real", "paper: dream", "paper: real"], rows)
                 + (note or missing_box(path, command)))
    else:
        if sweep is not None:
            temperature = table(["tau", "dream score", "real score"], sweep_rows(sweep["rows"])) + note
        else:
            temperature = missing_box(path, command)
        paper = table(["tau", "dream score", "real score"], [list(r) for r in paper_temperature_table()])
        body += (f'<div class="side"><div><h3>This pipeline</h3>{temperature}</div>'
                 f"<div><h3>The paper: VizDoom TakeCover</h3>{paper}</div></div>")
    body += _searches_table(report)
    rounds = MetricsLog(report.paths.metrics("iterate"), step_key="iteration").read()
    if rounds:
        keys = [k for k in ("iteration", "env_steps_of_data", "real_mean", "real_episodes", "dream_mean",
                            "m/zero_action_dream", "m/replay_correlation", "m/action_sensitivity",
                            "m/held_action_overestimate") if k in rounds[0]]
        body += "<h3>Iterative rounds</h3>" + table(keys, [[r.get(k) for k in keys] for r in rounds])
    return body + readout_table(report)


def _searches_table(report: Report) -> str:
    """C's CMA-ES searches (``controller.restarts``) side by side, when ``controller.pt`` is their pick."""
    path = report.paths.score("controller_searches")
    if not path.is_file() or not report.paths.controller.is_file():
        return ""
    searches = json.loads(path.read_text())
    if searches.get("controller_sha256") != file_sha256(report.paths.controller):
        return ""  # controller.pt came from another run since
    rows = [[index + 1, seed, fixed(dream), fixed(real), "picked" if index == searches["restart_chosen"] else ""]
            for index, (seed, dream, real) in enumerate(zip(searches["restart_seeds"], searches["restart_dream_means"],
                                                            searches["restart_real_means"], strict=True))]
    return (f"<h3>C's {counted(len(rows), 'CMA-ES search', 'CMA-ES searches')}: the dream picks, reality only "
            "watches</h3>"
            + table(["search", "controller.seed", f"dream ({counted(searches['dream_rollouts'], 'dream')})",
                     f"real ({counted(searches['episodes'], 'evaluation episode')})", ""], rows)
            + f'<p class="note">Dream vs real across the searches: correlation '
              f"{fixed(searches['restart_dream_real_correlation'], 2)}.</p>")


def _state_model_note(path: Path) -> str:
    """What `wm state-model` measured beside its score: its dream, and M's dream of doing nothing."""
    if not path.is_file():
        return ""
    about = Score.read(path).about
    note = (f"C evolved in M's dream of the true state (dream {fixed(about['dream_mean'], 0)}); M's zero-action "
            f"dream {fixed(about['zero_action_dream'], 0)} vs real {fixed(about['zero_action_real'], 0)}, replay "
            f"correlation {fixed(about['replay_correlation'], 2)}")
    if "oracle_dream" in about:  # does this dream pay a controller that balances what reality pays it?
        note += (f"; the true-state oracle scores {fixed(about['oracle_dream'], 0)} in it "
                 f"(real {fixed(about['oracle_real'], 0)})")
    if "restart_dream_means" in about:  # several searches: does the dream rank them as reality does?
        dreams, reals = about["restart_dream_means"], about["restart_real_means"]
        note += (f"; of {counted(len(dreams), 'CMA-ES search', 'CMA-ES searches')} the dream picked the one it "
                 f"scores {fixed(max(dreams), 0)} (their real scores {fixed(min(reals), 0)} to {fixed(max(reals), 0)}; "
                 f"dream vs real across the searches: correlation {fixed(about['restart_dream_real_correlation'], 2)})")
    if "z_linear_r2" in about:  # what C's linear form can read off V's z
        shown = ", ".join(f"{name} {fixed(value, 2)}" for name, value in about["z_linear_r2"].items())
        note += f"; held-out R^2 of the true state linear in V's z: {shown}"
    return note


def readout_table(report: Report) -> str:
    """What C's inputs can carry: the oracle imitated from them (`wm readout`), or how to measure it."""
    path = report.paths.score("readout")
    if not has_true_state(report.config.env):
        return ""
    heading = "<h3>Can C's inputs carry the task? The true-state oracle imitated from them</h3>"
    if not path.is_file():
        return heading + missing_box(path, report.wm("readout"))
    result = json.loads(path.read_text())
    rows = [[row["inputs"], row["readout"], spread(row["real_mean"], row["real_std"]),
             spread(row["dream_mean"], row["dream_std"]) if "dream_mean" in row else "-", row["fit_mse"]]
            for row in result["rows"]]
    gif = report.video("readout_real_vs_dream", report.wm("readout"), "the [z, h] readout, real beside the dream") \
        if any("dream_mean" in row for row in result["rows"]) else ""
    return (heading + table(["reads", "readout", f"real score ({counted(result['episodes'], 'episode')})",
                             "in M's dream",
                             "fit error (mse)"], rows)
            + '<p class="note">DAgger on the oracle\'s actions; <code>linear</code> is C\'s own form, <code>mlp</code> '
              "one hidden tanh layer. <code>zh</code> is what C reads; <code>z+velocity</code> and "
              "<code>position+h</code> swap half of it for the truth, to show which half falls short. "
              "Only <code>zh</code> can be played in M's dream (it holds no true state): a readout that "
              "balances in reality but not there is a C the dream cannot tell from a bad one. "
              f"The oracle itself: {fixed(result['oracle_real_mean'])}.</p>" + gif)


def section_dreamer(report: Report) -> str:
    records = MetricsLog(report.paths.metrics("dreamer"), step_key="update").read()
    if not records:
        raise Missing(report.paths.metrics("dreamer"), report.make("dreamer"))
    blocks = [r for r in records if "seconds_per_update" in r]
    last = blocks[-1] if blocks else records[-1]
    rows = [[key, last[key]] for key in ("update", "env_steps", "train/loss/image_nll", "train/loss/reward_nll",
                                         "train/loss/kl", "seconds_per_update") if key in last]
    curve = dreamer_v1_curve(report.config.env.id) if report.config.dreamer.env_steps else None
    evals = []
    for record in (r for r in records if "eval/return_mean" in r):
        official = "" if curve is None else spread(*curve.at(record["env_steps"]), decimals=0)
        evals.append([f"{record['env_steps']:,}", record["update"],
                      spread(record["eval/return_mean"], record["eval/return_std"]), official])
    official_note = ("" if curve is None else '<p class="note">Official: Dreamer v1\'s mean +- std over its 5 seeds '
                     "at the published point nearest (every 100k env steps from 5k; 5k is its untrained actor).</p>")
    return (report.figure("dreamer_returns", report.make("dreamer"), "Dreamer returns")
            + report.figure("openloop_dreamer", report.make("dreamer"), "RSSM open loop")
            + table(["env steps", "update", "eval return (actor mode)", "official Dreamer v1 there"], evals)
            + official_note + table(["last block of updates", "value"], rows))


def section_side_by_side(report: Report) -> str:
    prediction = report.json(report.paths.dreamer_prediction, report.make("dreamer"))
    stale = ""
    recorded = prediction.get("mdnrnn_sha256")
    if recorded and report.paths.mdnrnn.is_file() and recorded != file_sha256(report.paths.mdnrnn):
        stale = ('<div class="missing">The V+M curves below were measured with an earlier mdnrnn.pt; '
                 f"re-run <code>{html.escape(report.wm('dreamer'))}</code> after deleting "
                 "<code>scores/dreamer.json</code> to measure them again.</div>")
    rows = []
    horizons = []
    for name, curve in prediction["curves"].items():
        for measure in ("pixel_mse", "foreground_ratio", "reward_abs_error"):
            values = curve.get(measure)
            if values is not None:
                rows.append([name, measure] + [values[h - 1] if h <= len(values) else None for h in HORIZONS])
        if "foreground_horizon" in curve:
            crossed = curve["foreground_horizon"]
            horizons.append(f"{html.escape(name)}: " + (
                f"step {crossed}" if crossed else f"beyond the {counted(len(curve['foreground_ratio']), 'step')} "
                                                  "measured"))
    threshold = prediction.get("foreground_threshold")
    horizon_note = ("" if not horizons else
                    f'<p class="note">Where each model loses the objects (foreground ratio past {threshold:g}: '
                    f"its error on them over half that of not drawing them): {'; '.join(horizons)}.</p>")
    strips = (f'<div class="side"><div><h3>V+M</h3>'
              f'{report.figure("openloop_vm", report.make("mdnrnn"), "V+M open loop")}</div>'
              f'<div><h3>Dreamer RSSM</h3>'
              f'{report.figure("openloop_dreamer", report.make("dreamer"), "RSSM open loop")}</div></div>')
    return (stale + strips + report.figure("prediction_error", report.make("dreamer"), "prediction error by horizon")
            + table(["model", "error"] + [f"horizon {h}" for h in HORIZONS], rows) + horizon_note
            + '<p class="note">Both models see the same context frames of the same held-out episodes, then '
              "predict from the real actions alone.</p>")


def section_diagnostics(report: Report) -> str:
    paths, rows = report.paths, []
    vae = _vae_metrics(paths)
    if vae and "heldout/foreground_ratio" in vae:
        rows.append(["V's foreground ratio (held-out)", vae["heldout/foreground_ratio"],
                     "near 1: V draws the background only"])
    prediction = paths.dreamer_prediction
    if prediction.is_file():
        ratio = json.loads(prediction.read_text()).get("rssm_foreground_ratio")
        if ratio is not None:
            rows.append(["RSSM's foreground ratio (held-out)", ratio, "the same measure on Dreamer's posterior"])
    if paths.simulator_metrics.is_file():
        simulator = json.loads(paths.simulator_metrics.read_text())
        rows.append(["M's replay gap, mean |dream - real| return", simulator["mean_abs_gap"],
                     "real episodes' actions replayed in the dream"])
        if simulator.get("zero_action"):
            zero = simulator["zero_action"]
            rows.append(["M's zero-action gap, dream - real", zero["mean_gap"], "does the dream know doing nothing?"])
    scored = _scored_controller(paths)
    if scored is not None:
        dream = scored.get("metrics", {}).get("eval/dream_mean")
        real = Score.read(paths.score("worldmodel")).mean
        if dream is not None and _iterations(paths.score("worldmodel")) == 0:
            rows.append(["C's dream - real gap", dream - real, f"dream {fixed(dream, 0)}, real {fixed(real, 0)}"])
    if not rows:
        raise Missing(paths.vae if not paths.vae.is_file() else paths.simulator_metrics,
                      report.make("vae" if not paths.vae.is_file() else "mdnrnn"))
    return table(["diagnostic", "value", "reading"], rows)


def section_config(report: Report) -> str:
    versions = []
    for package in PACKAGES:
        try:
            versions.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            versions.append([package, "not installed"])
    versions.append(["python", sys.version.split()[0]])
    versions.append(["machine", _machine()])
    runtime = _resolved_runtime(report.paths)
    if runtime:
        versions.append(["runtime", ", ".join(f"{k} {v}" for k, v in runtime.items())])
    resolved = yaml.safe_dump(report.config.to_dict(), sort_keys=False)
    return (table(["package", "version"], versions)
            + f"<h3>Resolved config</h3><pre>{html.escape(resolved)}</pre>")


SECTIONS: tuple[tuple[str, Callable[[Report], str]], ...] = (
    ("Results", section_results),
    ("Wall clock per stage", section_times),
    ("Budgets: this run against the papers", section_budgets),
    ("The data", section_data),
    ("V: the ConvVAE", section_v),
    ("M: the MDN-RNN as a simulator", section_m),
    ("C: evolved in the dream, scored in the real env", section_c),
    ("Dreamer", section_dreamer),
    ("Side by side: V+M and the RSSM on the same held-out episodes", section_side_by_side),
    ("Diagnostics behind the scores", section_diagnostics),
    ("Config and versions", section_config),
)

# Sections about one agent's models, left out of the page when the pipeline does not train that agent.
SECTION_AGENTS: dict[str, str] = {
    "V: the ConvVAE": "worldmodel",
    "M: the MDN-RNN as a simulator": "worldmodel",
    "C: evolved in the dream, scored in the real env": "worldmodel",
    "Dreamer": "dreamer",
    "Side by side: V+M and the RSSM on the same held-out episodes": "worldmodel",
}
