"""Generated pipelines and ``--set`` overrides: whatever they hold, loading them either refuses them
cleanly or gives settings that survive being written out and read back.

A clean refusal is a :class:`UserError` (the loader's :class:`ConfigError`) whose message is one line
and names what is at fault: the dotted key (``collect.episodes``), the section, ``extends`` or the file.
Any other exception (a ``TypeError`` from a value of a shape the loader did not expect, a
``RecursionError`` from YAML nested too deeply, ...) is a bug of the loader, shown by ``wm`` as a
traceback. An accepted pipeline's ``to_dict()``, written as YAML to a file of the pipeline's name and
loaded again, gives an equal config.

The examples are derandomized (drawn from a seed derived from each test) and no example database
is kept: every run, here and in CI, tries the same cases, so a failure is reproduced by running the
test again and a change elsewhere never makes this file fail by drawing new cases. Each case that once
broke the loader is kept as an explicit ``@example`` or a test of its own. To look for new cases,
run with ``derandomize=False`` and more ``max_examples`` locally.
``pytest tests/test_config_fuzz.py --hypothesis-show-statistics`` prints how many cases each test
ran and how many of them were accepted or refused.
"""

from __future__ import annotations

import dataclasses
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from worldmodels.config import SECTIONS, PipelineConfig, dump_yaml, load_pipeline, read_yaml
from worldmodels.errors import UserError

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Every fuzz test's settings: a fixed set of cases (see the module's docstring), no time limit per case
(YAML nested thousands deep takes a while to refuse), about 15 s for the three tests on one core."""

FIELDS = {section: {item.name: typing.get_type_hints(cls)[item.name] for item in dataclasses.fields(cls)}
          for section, cls in SECTIONS.items()}
"""Every section's settings and their type annotations, read from the schema itself."""

UNKNOWN_SECTIONS = ["colect", "name", "resolved_runtime", "Collect", "", "extends", "description"]
"""Not sections (``name`` and ``resolved_runtime`` are what ``wm config`` prints beside them);
``extends`` and ``description`` are top-level keys of a file but not sections an override may set."""

UNKNOWN_KEYS = ["nope", "", "threads", "episodez", "SECTION", "a b", "x.y", "\u00e9", "a\nb"]
"""Not settings of any section (``threads`` moved from several sections to ``runtime``)."""

PLAUSIBLE_TEXT = ["dmc:cartpole-balance", "gym:CarRacing-v3", "vizdoom:take_cover", "auto", "cpu", "cuda",
                  "cuda:1", "smoke", "cartpole_balance_dreamer:dreamer", "x:worldmodel", "state", "zh", "1e5",
                  "1E+6", "1.e5", "1_0e5", "null", "~", "yes", "", " ", "=", "0x1f", "12:30", "2001-12-14"]
"""Strings a string setting may hold, some of them valid, some that YAML reads as other types."""

YAML_SNIPPETS = [
    "", " ", "null", "~", "true", "no", "[]", "{}", "[1, [2]]", "{a: 1}", "- a\n- b", "a: b\nc: d", "'quoted'",
    "\"\\t\"", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "&a [*a]", "*undefined",
    "[" * 1000, "[1", "{a: [}", "1" + "0" * 400, "-1" + "0" * 400 + ".5", ".nan", ".inf", "-.inf", "nan",
    "inf", "1e400", "-0.0", "0o17", "0x1f", "1_000", "190:20:30", "2001-12-14", "=", "<<: 1", "\t1",
    "\"\\ud800\"", "'1e5'", "\"1E+6\"", "% directive", "--- 1\n--- 2", "? [a, b]\n: c", "!!set {a, b}", "[&a 1, *a]",
]
"""Values written as YAML text: every type YAML can make, and text it cannot read."""


def _typed(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a setting's own type, valid ones likely (so that many cases are accepted and written back)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(st.none() if arg is type(None) else _typed(arg) for arg in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_typed(args[0]), max_size=3)
    if origin is tuple:
        return st.tuples(*map(_typed, args)).map(list)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(min_value=0, max_value=200) | st.integers(min_value=1, max_value=5) | st.integers()
    if annotation is float:
        return st.sampled_from([0.0, 0.1, 0.5, 1.0, 1e-4, 3e5]) | st.floats(min_value=-1, max_value=1e3) | st.floats()
    if annotation is str:
        return st.sampled_from(PLAUSIBLE_TEXT) | st.text(max_size=12)
    raise AssertionError(f"no strategy for {annotation!r}")


SCALARS = (st.none() | st.booleans() | st.integers() | st.just(10**400) | st.just(-(10**400)) | st.floats()
           | st.text(max_size=12) | st.sampled_from(PLAUSIBLE_TEXT))
WILD = st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=4), children, max_size=3), max_leaves=6)
"""Values of any shape, whatever the setting."""


def _as_yaml_text(value: Any) -> str:
    """``value`` as the text of an override (``--set key=<text>``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("...\n").strip()


WILD_TEXTS = st.one_of(WILD.map(_as_yaml_text), st.integers().map(str), st.floats().map(repr),
                       st.floats().map(lambda number: f"{number:e}"), st.sampled_from(YAML_SNIPPETS),
                       st.text(max_size=12))
"""An override's value as text: YAML of any shape, numbers in Python's notations, snippets, any text."""

MALFORMED_OVERRIDES = st.sampled_from(["collect.episodes", "=3", "collect=3", "collect.seed.x=1", ".x=1", "a.=1",
                                       " = ", "collect..seed=1"]) | st.text(max_size=20)


DEFAULTS = {section: dataclasses.asdict(cls()) for section, cls in SECTIONS.items()}
"""Every setting's default: a valid value of it whatever the others are (almost: see the cross-checks)."""


def _key_in(draw: st.DrawFn, section: Any, calm: bool) -> Any:
    """One of ``section``'s settings; unless ``calm``, sometimes a key it does not have."""
    known = list(FIELDS.get(section, {}))
    if known and (calm or draw(st.integers(0, 5))):
        return draw(st.sampled_from(known))
    return draw(st.sampled_from(UNKNOWN_KEYS) | st.text(max_size=6))


def _value_of(draw: st.DrawFn, section: Any, key: Any, calm: bool) -> Any:
    """A value of the setting's own type (``calm``: or its default); unless ``calm``, sometimes a value of
    any shape."""
    annotation = FIELDS.get(section, {}).get(key)
    if annotation is None or not (calm or draw(st.integers(0, 3))):
        return draw(WILD)
    if calm and draw(st.booleans()):
        value = DEFAULTS[section][key]
        return list(value) if isinstance(value, tuple) else value
    return draw(_typed(annotation))


@st.composite
def overrides(draw: st.DrawFn) -> str:
    """One ``--set`` argument: mostly ``section.key=value`` with a known section and key and a value of the
    setting's type, written as YAML; sometimes an unknown section or key, a value of any shape or text, or
    a malformed argument."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(MALFORMED_OVERRIDES)
    section = draw(st.sampled_from(UNKNOWN_SECTIONS if kind == 1 else list(SECTIONS)))
    key = _key_in(draw, section, calm=False)
    annotation = FIELDS.get(section, {}).get(key)
    if annotation is not None and draw(st.integers(0, 3)):
        value = _as_yaml_text(draw(_typed(annotation)))
    else:
        value = draw(WILD_TEXTS)
    return f"{section}.{key}={value}"


@st.composite
def section_settings(draw: st.DrawFn, section: str, calm: bool) -> Any:
    """A section of a pipeline file: a mapping of some of its settings; unless ``calm``, with unknown keys,
    keys that are not even text, values of any shape, or a value of another shape than a mapping."""
    if not calm and draw(st.integers(0, 9)) == 0:
        return draw(WILD)
    keys = {_key_in(draw, section, calm) for _ in range(draw(st.integers(0, 3)))}
    if not calm and draw(st.integers(0, 9)) == 0:
        keys.add(draw(st.none() | st.integers() | st.booleans()))
    return {key: _value_of(draw, section, key, calm) for key in keys}


@st.composite
def pipeline_trees(draw: st.DrawFn, calm: bool) -> dict[Any, Any]:
    """A pipeline file's top level: known sections (unless ``calm``, sometimes unknown ones or keys that are
    not text) and perhaps a description."""
    names = draw(st.lists(st.sampled_from(list(SECTIONS)), min_size=1, max_size=4, unique=True))
    if not calm and draw(st.integers(0, 11)) == 0:
        names.append(draw(st.sampled_from(UNKNOWN_SECTIONS[:-2])))
    tree: dict[Any, Any] = {name: draw(section_settings(name, calm)) for name in names}
    if draw(st.booleans()):
        tree["description"] = draw(st.text(max_size=20) | st.sampled_from(PLAUSIBLE_TEXT)
                                   | (st.nothing() if calm else WILD))
    if not calm and draw(st.integers(0, 14)) == 0:
        tree[draw(st.none() | st.integers() | st.booleans())] = draw(WILD)
    return tree


TREES = st.booleans().flatmap(pipeline_trees)
"""Half the files calm (known keys, values of their type, defaults likely: many are accepted and written
back), half not."""


ABSENT = object()
"""``extends`` not written at all (a file may also write ``extends: null``)."""


def _one_line(message: str) -> bool:
    return len(message.splitlines()) == 1 and bool(message.strip())


def _shown(name: Any) -> list[str]:
    """The ways a refusal may write a key: as it is, or quoted (a key with a line break in it)."""
    return [str(name), repr(str(name))]


def _assert_refusal_names_one_of(error: UserError, names: list[str]) -> None:
    """The refusal is one line that starts with one of ``names`` (the key, section or file at fault), or,
    for checks that relate two settings, names one of the dotted keys in its words."""
    message = str(error)
    assert _one_line(message), f"not one line: {message!r}"
    starts = any(message.startswith(name) for name in names if name)
    mentions = any(name in message for name in names if "." in name)
    assert starts or mentions, f"{message!r} names none of {names}"


def assert_round_trips(config: PipelineConfig) -> None:
    """``config`` written as a pipeline file (its ``to_dict()`` as YAML, in a file of its name) loads back
    equal."""
    written = config.to_dict()
    name = written.pop("name")  # a pipeline is named after its file, not by a setting
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.yaml"
        path.write_text(dump_yaml(written), encoding="utf-8")
        again = load_pipeline(str(path))
    assert again == config
    assert again.to_dict() == config.to_dict()


def _refused_or_round_trips(load: typing.Callable[[], PipelineConfig], names: list[str]) -> None:
    """The property: ``load()`` refuses cleanly, naming one of ``names``, or gives a config that round-trips.
    Any exception but a :class:`UserError` propagates: a bug."""
    try:
        config = load()
    except UserError as error:
        event("refused")
        _assert_refusal_names_one_of(error, names)
        return
    event("accepted")
    assert_round_trips(config)


def _override_names(texts: list[str]) -> list[str]:
    """What a refusal of these overrides may name: each one's dotted key, section, or the whole text."""
    names = []
    for text in texts:
        key = text.partition("=")[0].strip()
        names += [*_shown(key), *_shown(key.partition(".")[0]), repr(text)]
    return names


@FUZZ
@given(st.lists(overrides(), min_size=1, max_size=3))
# Cases that broke the loader, each kept as an example that runs first:
@example(["collect.episodes=" + "[" * 1000])  # RecursionError in PyYAML: nested deeper than Python's stack
@example(["vae.learning_rate=1" + "0" * 400])  # OverflowError: an integer no float can hold
@example(["report.title='1e5'"])  # written back as 1e5 by a YAML 1.1 dumper: a number, refused
@example(["runtime.device=!!python/object/apply:os.system ['true']"])  # PyYAML's error over four lines
@example(["evaluate.seed=,"])  # the same
@example(["collect.a\nb=1"])  # a line break in a key, in the message naming it
@example(["dreamer.\x8a=1"])  # a control character: the same
def test_overrides_are_refused_cleanly_or_round_trip(texts: list[str]):
    _refused_or_round_trips(lambda: load_pipeline("smoke", texts), _override_names(texts))


def _tree_names(tree: Any) -> list[str]:
    """What a refusal of this file's contents may name: its top-level keys and every ``section.key``."""
    if not isinstance(tree, dict):
        return []
    names = []
    for section, values in tree.items():
        names += _shown(section)
        if isinstance(values, dict):
            names += [name for key in values for name in _shown(f"{section}.{key}")]
    return names


def _write(path: Path, tree: dict[Any, Any], extends: Any, dump: typing.Callable[[Any], str]) -> None:
    if extends is not ABSENT:
        tree = {"extends": extends, **tree}
    path.write_text(dump(tree), encoding="utf-8")


EXTENDS = st.sampled_from([ABSENT, "smoke", "base.yaml"]) | st.sampled_from(
    [None, 3, "", "no_such_pipeline", "missing.yaml", "x" * 300])
"""What a generated file extends: nothing, a pipeline by name or a generated base (half the cases), or
something that cannot be extended."""


def _file_case(child: dict[Any, Any], parent: Any = ABSENT, base: dict[Any, Any] | None = None,
               grandparent: Any = ABSENT, overridden: list[str] | None = None, dump: Any = dump_yaml) -> dict[str, Any]:
    """The arguments of one explicit case of the generated-files test; by default a base that sets a seed."""
    return dict(child=child, parent=parent, base={"vae": {"seed": 1}} if base is None else base,
                grandparent=grandparent, overridden=overridden or [], dump=dump)


DUMPS = st.sampled_from([dump_yaml, lambda tree: yaml.safe_dump(tree, sort_keys=False)])
"""How a file is written: as the project writes YAML, or as a YAML 1.1 tool would (``'1e5'`` plain: a number
to the loader)."""


@FUZZ
@given(child=TREES, parent=EXTENDS, base=TREES,
       grandparent=st.sampled_from([ABSENT, "smoke", "child.yaml"]), overridden=st.lists(overrides(), max_size=1),
       dump=DUMPS)
# Cases that broke the loader, each kept as an example that runs first:
@example(**_file_case({"colect": None, None: None}))  # TypeError: sorting None beside text
@example(**_file_case({"mdnrnn": -1}, overridden=["mdnrnn.epochs=3"]))  # TypeError: setting a key in a number
@example(**_file_case({"collect": [1]}, overridden=["collect.seed=3"]))  # TypeError: ... in a list
@example(**_file_case({"env": {}}, parent="x" * 300))  # OSError: a name too long to look up
@example(**_file_case({"env": {}}, parent="no_such_pipeline"))  # refused without saying it was extends
@example(**_file_case({"env": {}}, parent="missing.yaml"))  # the same
@example(**_file_case({"readout": {"a\nb": 1}}))  # a line break in a key
@example(**_file_case({"report": {"title": "1e5"}}))  # a string that must be written back quoted
# Files that set nothing were accepted and ran every default:
@example(**_file_case({}))
@example(**_file_case({}, parent=None))
@example(**_file_case({"collect": {"episodes": 3}}, parent="base.yaml", base={}))
def test_pipeline_files_are_refused_cleanly_or_round_trip(child, parent, base, grandparent, overridden, dump):
    """A generated file, perhaps extending a pipeline by name, a missing one, or a generated base (which may
    extend the file back: a cycle), with perhaps a few overrides on top."""
    with tempfile.TemporaryDirectory() as folder:
        child_path, base_path = Path(folder) / "child.yaml", Path(folder) / "base.yaml"
        _write(child_path, child, parent, dump)
        _write(base_path, base, grandparent, dump)
        names = [*_tree_names(child), *_tree_names(base), *_override_names(overridden), "extends",
                 str(child_path), str(base_path)]
        _refused_or_round_trips(lambda: load_pipeline(str(child_path), overridden), names)


FILE_TEXTS = st.one_of(
    st.sampled_from(YAML_SNIPPETS),
    st.text(max_size=40),
    st.lists(st.sampled_from(["# a comment", "", "  ", "collect:", "  episodes: 3", "episodes: 3", "env: {id: x}",
                              "extends: smoke", "description: hi", "\t", "---", "...", "null", "- 1"]),
             max_size=5).map("\n".join))
"""Whole files as text: empty, comments only, fragments of a pipeline, YAML of any other shape."""


@settings(FUZZ, max_examples=600)  # the cheapest cases: no settings to build for most
@given(text=FILE_TEXTS, encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
@example(text="", encoding="utf-8")  # accepted, and ran every default
@example(text="# only a comment\n\n", encoding="utf-8")  # the same
@example(text="0", encoding="utf-8")  # accepted as no settings: YAML's false-like values were taken for empty
@example(text="", encoding="utf-16")  # UnicodeDecodeError: a byte-order mark is not UTF-8
@example(text="collect: {\u00e9pisodes: 3}", encoding="latin-1")  # the same
@example(text="[" * 1000, encoding="utf-8")  # RecursionError in PyYAML
@example(text="\ncollect:\nnull\n# a comment", encoding="utf-8")  # PyYAML's error over several lines
@example(text="a\x0cb", encoding="utf-8")  # the same
def test_any_file_text_is_refused_cleanly_or_round_trips(text, encoding):
    """A file of any text, in UTF-8 or not: refused naming the file (or a key in it), or a pipeline."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "raw.yaml"
        try:
            path.write_bytes(text.encode(encoding))
        except UnicodeEncodeError:
            path.write_bytes(text.encode("utf-8"))
        names = [str(path), "extends", *_tree_names(_readable(text))]
        _refused_or_round_trips(lambda: load_pipeline(str(path)), names)


def _readable(text: str) -> Any:
    """What ``text`` holds as YAML, if anything: its keys widen the names a refusal may use."""
    try:
        return read_yaml(text)
    except yaml.YAMLError:
        return None
