"""Reading a pipeline: its YAML file (and the file it ``extends:``), ``section.key=value`` overrides,
and every value checked against its field's type before the dataclasses of
:mod:`worldmodels.config.schema` check their bounds.

A pipeline file (``pipelines/<name>.yaml``, or ``pipelines/experiments/<name>.yaml``) has one mapping
per section::

    description: "..."
    env: {id: "dmc:cartpole-balance", action_repeat: 8}
    collect: {episodes: 100, workers: 2}

Every key is checked before any work starts: an unknown key, a value of the wrong type or an
impossible value raises :class:`ConfigError` naming the dotted key (``collect.workers``), in one line.
A file that sets nothing (empty, only comments, or ``null``) is refused too: it would run every default.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from worldmodels.config.schema import SECTIONS, ConfigError, PipelineConfig

PIPELINES_DIR = Path(__file__).resolve().parents[2] / "pipelines"


class SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: ``1e-4`` and ``1E+6`` are floats.

    PyYAML follows YAML 1.1, whose float needs a dot (``1.0e-4``), so the papers' own notation for a
    learning rate was read as the string ``'1e-4'``."""


class SettingsDumper(yaml.SafeDumper):
    """PyYAML's safe dumper quoting the strings that :class:`SettingsLoader` reads as numbers.

    The YAML 1.1 dumper writes the string ``'1e5'`` plain, as ``1e5``, which :class:`SettingsLoader`
    reads back as the number 100000.0: a title or a path named so would not survive a round trip."""


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
SettingsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))
SettingsDumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """``text`` as YAML with :class:`SettingsLoader` (numbers in any YAML 1.1 or 1.2 notation).

    YAML nested deeper than Python's stack (``[[[[...``) raises :class:`yaml.YAMLError` like any other
    text that is not YAML, rather than a ``RecursionError`` from PyYAML's recursive composer."""
    try:
        return yaml.load(text, Loader=SettingsLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to read") from None


def dump_yaml(data: Any) -> str:
    """``data`` (e.g. a :meth:`PipelineConfig.to_dict`) as YAML that :func:`read_yaml` reads back equal:
    keys in their order, strings that look like numbers quoted."""
    return yaml.dump(data, Dumper=SettingsDumper, sort_keys=False, allow_unicode=True)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What PyYAML found wrong, in one line with its place (its own message draws the line over several)."""
    if isinstance(error, yaml.MarkedYAMLError):
        text = ": ".join(part for part in (error.context, error.problem) if part)
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
    else:
        text = str(error)
    return " ".join(text.split())


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8


def _shown(value: Any, limit: int = 160) -> str:
    """``repr(value)`` cut short: a value in an error message is one line of bounded length, even a list
    that YAML anchors made of a billion references (``reprlib`` stops early at each level)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _key_text(key: Any) -> str:
    """A key as a message names it: as written, or quoted when it holds a line break or another
    character a terminal would not print, so that the message stays one line."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [arg for arg in args if arg is not type(None)]
        errors = []
        for arg in non_none:
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1
                          else f"{key}: expected {_type_name(annotation)}, got {_shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}; got {_shown(value)}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_shown(value)}")
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {_shown(value)}")
        return tuple(_coerce(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args, strict=True)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
        return value
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e5 env steps: a float in YAML's notation, a whole number of steps
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:  # a whole number with hundreds of digits
            number = math.inf
        if not math.isfinite(number):  # no setting is meant to be infinite (null says "none"), nor NaN
            raise ConfigError(f"{key}: expected a finite number, got {_shown(value)}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
        return value
    raise TypeError(f"{key}: unsupported annotation {annotation!r}")


# Settings that moved: a pipeline file or override still naming them is told where they went.
MOVED_KEYS = {
    "vae.threads": "runtime.threads", "mdnrnn.threads": "runtime.threads",
    "controller.threads": "runtime.threads", "dreamer.threads": "runtime.threads",
    "dreamer.bf16": "runtime.precision (auto, fp32 or bf16)",
    "controller.evaluate_episodes": "evaluate.episodes",
    "dreamer.online_steps": "dreamer.env_steps (the replay's env steps at the end, the prefill included)",
    "dreamer.updates_per_episode": "dreamer.updates_per_train (due every dreamer.train_every env steps)",
}


def _build_section(cls: type, values: Any, section: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of settings, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if f"{section}.{key}" in MOVED_KEYS:
            raise ConfigError(f"{section}.{key}: moved to {MOVED_KEYS[f'{section}.{key}']}")
        if key not in known:
            raise ConfigError(f"{_key_text(f'{section}.{key}')}: unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{_key_text(dotted_key)}: an override must be 'section.key=value', "
                          f"e.g. collect.episodes=10")
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(f"{_key_text(dotted_key)}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
    node = tree.get(section)
    if node is None:
        node = {}
    elif not isinstance(node, dict):  # the file's section is a list or a number: nothing to set a key in
        raise ConfigError(f"{section}: expected a mapping of settings, got {_shown(node)}")
    # A new mapping rather than the file's: YAML anchors (`evaluate: *collect`) may share one between sections.
    tree[section] = {**node, key: value}


def parse_override(text: str) -> tuple[str, Any]:
    """``"collect.episodes=10"`` -> ``("collect.episodes", 10)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{text!r}: an override must look like 'section.key=value'")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"{_key_text(key.strip())}: cannot read value {_shown(raw)}: "
                          f"{_yaml_problem(error)}") from None
    return key.strip(), value


PIPELINE_FOLDERS = ("", "experiments")
"""Where a pipeline is found by name, under ``pipelines/``: the products a user runs, then the experiment
records (settings whose numbers docs/ quotes, kept runnable)."""


def pipeline_files(directory: Path = PIPELINES_DIR) -> dict[str, Path]:
    """Every pipeline found by name: ``{name: path}`` (a product shadows an experiment of its name)."""
    found: dict[str, Path] = {}
    for folder in reversed(PIPELINE_FOLDERS):
        found |= {path.stem: path for path in sorted((directory / folder).glob("*.yaml"))}
    return found


def resolve_pipeline_path(pipeline: str, relative_to: Path | None = None) -> Path:
    """A pipeline given as a path to a YAML file, or as a name in ``pipelines/`` or ``pipelines/experiments/``.

    A relative path is read from ``relative_to`` (the folder of the file that ``extends:`` it) when
    given, else from the working directory."""
    candidate = Path(pipeline)
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if candidate.suffix in (".yaml", ".yml") or _is_file(candidate):
        if not _is_file(candidate):
            raise ConfigError(f"pipeline file {candidate} does not exist")
        return candidate
    for directory in (Path.cwd() / "pipelines", PIPELINES_DIR):
        for folder in PIPELINE_FOLDERS:
            path = directory / folder / f"{pipeline}.yaml"
            if _is_file(path):
                return path
    known = ", ".join(sorted(pipeline_files()))
    raise ConfigError(f"unknown pipeline {pipeline!r} (known: {known}; or give a path to a .yaml file)")


def _is_file(path: Path) -> bool:
    """``path.is_file()``; a path the system refuses to look up (a name too long) is refused as a setting."""
    try:
        return path.is_file()
    except OSError as error:
        raise ConfigError(f"pipeline {_key_text(str(path))}: {error.strerror or error}") from None


def _read_tree(path: Path) -> dict[str, Any]:
    """A pipeline file's top-level mapping, as written (before ``extends:``)."""
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    if tree is None or tree == {}:
        # An empty file (one not written yet, or with every setting commented out) would run every
        # default, a 100-episode collect that nobody asked for.
        raise ConfigError(f"{path}: the file sets nothing (it is empty or only comments); "
                          f"a pipeline names its settings or the pipeline it extends")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {_shown(tree)}")
    return tree


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, section by section (a key set in ``changes`` wins).

    A section left empty in ``changes`` (``collect:`` with every key commented out) changes nothing,
    rather than putting the base's section back to the defaults."""
    merged = dict(base)
    for section, values in changes.items():
        if values is None and isinstance(merged.get(section), dict):
            continue
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def read_pipeline_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A pipeline file's settings as a nested dict, with the pipeline it ``extends:`` laid underneath.

    ``extends: <name or path>`` makes a file hold only its differences from another pipeline (a
    relative path is read from this file's folder; chains are followed; a cycle is an error naming
    the files)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"extends: {' -> '.join(str(p) for p in (*seen, path))} is a cycle")
    tree = _read_tree(path)
    if "extends" not in tree:
        return tree
    parent = tree.pop("extends")
    if not isinstance(parent, str) or not parent.strip():  # `extends:` left empty is refused, not ignored
        raise ConfigError(f"extends: expected a pipeline name or a path in {path}, got {_shown(parent)}")
    try:
        parent_path = resolve_pipeline_path(parent, relative_to=path.parent)
    except ConfigError as error:
        raise ConfigError(f"extends: {error} (in {path})") from None
    base = read_pipeline_tree(parent_path, (*seen, path))
    base.pop("description", None)  # a description and a report title speak of their own file only
    if isinstance(base.get("report"), dict):
        base["report"] = {key: value for key, value in base["report"].items() if key != "title"}
    return _merge(base, tree)


def load_pipeline(pipeline: str, overrides: typing.Iterable[str] = ()) -> PipelineConfig:
    """Read a pipeline by name or path (and those it extends), apply ``section.key=value`` overrides,
    validate it all."""
    path = resolve_pipeline_path(pipeline)
    tree = read_pipeline_tree(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return pipeline_from_dict(path.stem, tree, source=str(path))


def pipeline_from_dict(name: str, tree: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Build and validate a :class:`PipelineConfig` from a nested dict."""
    unknown = [key for key in tree if key not in SECTIONS and key != "description"]
    if unknown:
        key = min(unknown, key=str)  # YAML keys may be numbers or null as well as text
        raise ConfigError(f"{_key_text(key)}: unknown section in {source} "
                          f"(known: description, {', '.join(SECTIONS)})")
    description = tree.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"description: expected a string in {source}")
    sections = {name_: _build_section(cls, tree.get(name_), name_) for name_, cls in SECTIONS.items()}
    return PipelineConfig(name=name, description=description, **sections)
