"""The ``wm`` command: one thin subcommand per stage; the work lives in ``worldmodels.stages``."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from worldmodels.config import PipelineConfig, dump_yaml, load_pipeline
from worldmodels.core import stopping
from worldmodels.core.logs import configure as configure_logging
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import logged_command, record_sections, stage_lock
from worldmodels.core.stage_times import timed_stage
from worldmodels.errors import UserError

# The filesystem's refusals a user acts on (disk full, quota, read-only, no permission, a file where a
# folder should be or the other way round): one line naming the path. Any other OSError (a file our own
# code expected and did not find, say), like any other exception, is a bug and keeps its traceback.
FILESYSTEM_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                                 errno.ENOTDIR, errno.EISDIR, errno.EEXIST})


def is_user_error(error: BaseException) -> bool:
    """What ``wm`` shows as one line: the project's :class:`UserError` and the filesystem's refusals."""
    return isinstance(error, UserError) or (isinstance(error, OSError) and error.errno in FILESYSTEM_REFUSALS)


def user_message(error: BaseException) -> str:
    """One line for a user error; an OS error names its path and the system's reason."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) if isinstance(error, OSError) else str(error)


def _user_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, OSError) as error:
            if not is_user_error(error):
                raise
            raise click.ClickException(user_message(error)) from error
    return wrapper


def pipeline_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--pipeline``, ``--set`` and ``--data-dir``, turned into (config, paths) arguments."""

    @click.option("--pipeline", "-p", default="cartpole_balance", show_default=True,
                  help="A pipeline name in pipelines/ or pipelines/experiments/, or a path to a YAML file.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one setting, e.g. --set collect.episodes=10 (repeatable).")
    @click.option("--data-dir", default="data", show_default=True, type=click.Path(file_okay=False),
                  help="Outputs go to DATA_DIR/<pipeline>/.")
    @click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
                  help="Where the models run; same as --set runtime.device=... [default: runtime.device]")
    @functools.wraps(function)
    def wrapper(pipeline: str, overrides: tuple[str, ...], data_dir: str, device: str | None, **kwargs: Any) -> Any:
        if device is not None:
            overrides = (*overrides, f"runtime.device={device}")
        config = load_pipeline(pipeline, overrides)
        paths = PipelinePaths.for_pipeline(data_dir, config.name)
        return function(config=config, paths=paths, **kwargs)

    return wrapper


def resolved_settings(config: PipelineConfig) -> dict[str, Any]:
    """The pipeline's settings plus what ``runtime:`` resolved to on this machine (printed once)."""
    from worldmodels.core.runtime import resolve

    runtime = resolve(config.runtime)
    logging.getLogger("worldmodels.core.runtime").info(runtime.describe())
    return {**config.to_dict(), "resolved_runtime": runtime.record()}


@contextlib.contextmanager
def stage_run(config: PipelineConfig, paths: PipelinePaths, command: str) -> Iterator[None]:
    """Run a stage's command as the one writer of its outputs, on the record (``worldmodels.core.run_record``):
    take its lock (a second instance is refused, naming the first), say what the runtime resolved to, log the
    command to ``runs.jsonl``, then write its sections of ``config.yaml``, unless the stage refused its
    settings: a refused command leaves the record of the run as it was. A stage stopped by a signal or a crash
    after it accepted its settings has run with them: recorded."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with stage_lock(paths, command):
        settings = resolved_settings(config)
        with logged_command(paths, command, settings):
            try:
                yield
            except BaseException as error:
                if not is_user_error(error):
                    record_sections(paths, command, settings)
                raise
            record_sections(paths, command, settings)


class _Commands(click.Group):
    """The ``wm`` group: tells the stop-signal watchdog when a command has unwound out of its top."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except BaseException:
            # Whatever the stop became on its way up (Ray's waits turn it into their own SystemExit(1); an
            # error raised while unwinding replaces it), the command ends as stopped, now.
            if stopping.requested() is not None:
                stopping.unwound()
                stopping.exit_now()
            raise
        finally:
            stopping.unwound()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="worldmodels")
@click.option("--quiet", "-q", is_flag=True, help="Say only what goes wrong (warnings and errors).")
@click.option("--verbose", "-v", is_flag=True, help="Say everything, debugging details included.")
def main(quiet: bool, verbose: bool) -> None:
    """World Models (V-M-C) and Dreamer, stage by stage, on the same data."""
    stop_on_signals()
    configure_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def stop_on_signals() -> None:
    """Make SIGTERM (``kill``, a batch scheduler's stop) and SIGINT (Ctrl-C) stop the command within seconds,
    with exit code 143 or 130 and what was committed kept (``worldmodels.core.stopping``)."""
    if threading.current_thread() is threading.main_thread():  # signals are handled in the main thread only
        stopping.install()


def stage_command(name: str, module: str, artifact: str, help_text: str) -> None:
    """Register ``wm <name>``: run ``worldmodels.stages.<module>.run`` with the pipeline options."""

    @main.command(name, help=help_text)
    @_user_errors
    @pipeline_options
    @click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
    def command(config: PipelineConfig, paths: PipelinePaths, no_progress: bool) -> None:
        stage = importlib.import_module(f"worldmodels.stages.{module}")
        with stage_run(config, paths, name), timed_stage(paths, name):
            path = stage.run(config, paths, progress=not no_progress)
        if path is not None:  # None: the stage does not apply to this pipeline, and said why
            click.echo(f"{artifact}: {path}")


stage_command("collect", "collect", "rollouts",
              "Collect exploration episodes from the real env into rollouts.h5 (resumable).")
stage_command("train-vae", "vae", "vae",
              "Train V (the ConvVAE) on rollouts.h5; re-running continues after the last finished epoch.")
stage_command("encode", "encode", "latents",
              "Encode every frame of rollouts.h5 with vae.pt into latents.h5 (mu and logvar).")
stage_command("train-mdnrnn", "mdnrnn", "mdnrnn",
              "Train M (the MDN-RNN) on latents.h5, then measure it as a simulator (resumable).")


@main.command("train-controller")
@_user_errors
@pipeline_options
@click.option("--temperatures", metavar="T1,T2,...", default=None,
              help="Also evolve C at each of these dream temperatures and write the paper's table "
                   "(scores/temperature_table.md); same as --set controller.temperatures=[T1,T2].")
@click.option("--in", "fitness_in", type=click.Choice(["dream", "real"]), default=None,
              help="Where fitness comes from: M's dream, or real episodes in worker processes "
                   "(the paper's CarRacing mode); default: controller.fitness_in.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train_controller(config: PipelineConfig, paths: PipelinePaths, temperatures: str | None, fitness_in: str | None,
                     no_progress: bool) -> None:
    """Evolve C with CMA-ES inside M's dream, checking the CMA mean in the real env (resumable)."""
    from worldmodels.stages import controller

    changes: dict[str, Any] = {}
    if temperatures is not None:
        try:
            changes["temperatures"] = tuple(float(t) for t in temperatures.split(",") if t.strip())
        except ValueError:
            raise click.BadParameter(f"expected numbers separated by commas, got {temperatures!r}",
                                     param_hint="--temperatures") from None
    if fitness_in is not None:
        changes["fitness_in"] = fitness_in
    if changes:
        config = dataclasses.replace(config, controller=dataclasses.replace(config.controller, **changes))
    with stage_run(config, paths, "train-controller"):
        with timed_stage(paths, "train-controller"):
            evolution, path = controller.evolve_main(config, paths, progress=not no_progress)
        if config.controller.temperatures:
            # Work beyond the pipeline's C, timed apart so that it does not count as C's time.
            with timed_stage(paths, "temperature-sweep"):
                controller.sweep(config, paths, evolution, path, progress=not no_progress)
    click.echo(f"controller: {path}")

stage_command("iterate", "iterate", "agent",
              "The paper's iterative procedure: collect with V+M+C plus noise, re-train M (and V) and C, "
              "iterate.iterations rounds (resumable); writes agent.json naming the final agent.")
stage_command("evaluate", "evaluate", "scores",
              "Score V+M+C in the real env beside the random-policy and zero-action baselines.")
stage_command("dreamer", "dreamer", "scores",
              "Train Dreamer (RSSM + actor-critic in imagination) on the same rollouts, score it like "
              "`wm evaluate`, and draw its figures beside V+M's (resumable).")
stage_command("report", "report", "report",
              "Write report.html: every stage's figures, scores and diagnostics on one page, figures embedded and "
              "dream videos linked from figures/ (a stage that has not run shows as missing, with the command "
              "that makes it).")
stage_command("oracle", "oracle", "oracle",
              "Tune C's linear form on the TRUE state in the real env (the controller class's ceiling).")
stage_command("readout", "readout", "readout",
              "Can what C reads carry the task? Imitate the true-state oracle (DAgger) from C's inputs [z, h] "
              "and from mixes of them with the true state, and play the imitations in the real env "
              "(scores/readout.json).")
stage_command("state-model", "state_model", "score",
              "Is V what limits V+M+C? M trained on the TRUE state instead of V's z (the same episodes and "
              "settings), C evolved in its dream and scored on the evaluation episodes (scores/state_model.json).")


@main.command()
@_user_errors
@pipeline_options
@click.option("--temperature", type=click.FloatRange(min=0.0), default=1.0, help="Dream temperature.")
def dream(config: PipelineConfig, paths: PipelinePaths, temperature: float) -> None:
    """Decode dream rollouts of M beside the real episodes they start from, to look at."""
    from worldmodels.stages.mdnrnn import run_dream

    with stage_lock(paths, "dream"):
        click.echo(f"figure: {run_dream(config, paths, temperature)}")


@main.command()
@_user_errors
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True,
              help="Also read every chunk that holds a committed episode's data (their checksums verified where "
                   "the file has them) and check all of it reached the disk (exit 1 if not).")
def info(file: Path, check: bool) -> None:
    """Describe an HDF5 file written by worldmodels (rollouts or latents): episodes, steps, returns, shapes."""
    from worldmodels.data.info import check_file, describe_file

    click.echo(describe_file(file))
    if check:
        problems = check_file(file)
        if problems:
            raise click.ClickException("\n".join(problems))
        click.echo("check           every chunk read back; every committed episode's data is on disk and readable")


@main.command("config")
@_user_errors
@pipeline_options
@click.option("--get", "key", metavar="SECTION.KEY", default=None,
              help="Print only this setting's value (a list as words separated by spaces), e.g. report.agents.")
def show_config(config: PipelineConfig, paths: PipelinePaths, key: str | None) -> None:
    """Print the resolved settings of a pipeline (after --set overrides), and where outputs go.

    The output is itself a pipeline file: ``wm config -p X --set ... > mine.yaml`` gives ``-p mine.yaml`` the
    same settings (where outputs go, the name and what the runtime resolves to here are comments)."""
    if key is not None:
        click.echo(_setting_text(config, key))
        return
    from worldmodels.core.runtime import resolve

    settings = config.to_dict()
    name = settings.pop("name")
    click.echo(f"# pipeline {name}; outputs: {paths.root}")
    click.echo(f"# runtime here: {resolve(config.runtime).describe()}")
    click.echo(dump_yaml(settings).rstrip())


def _setting_text(config: PipelineConfig, key: str) -> str:
    """One setting's value as text for a shell or Make: a list as words separated by spaces."""
    section, _, name = key.partition(".")
    settings = config.to_dict()
    if section not in settings or not isinstance(settings[section], dict) or name not in settings[section]:
        raise click.BadParameter(f"no setting {key!r} in pipeline {config.name!r}", param_hint="--get")
    value = settings[section][name]
    return " ".join(str(item) for item in value) if isinstance(value, list) else str(value)


if __name__ == "__main__":
    main()
