import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from worldmodels.cli import main
from worldmodels.config import PIPELINES_DIR, ConfigError, load_pipeline, parse_override, pipeline_files


@pytest.mark.parametrize("name", sorted(pipeline_files()))
def test_every_shipped_pipeline_loads(name):
    config = load_pipeline(name)
    assert config.name == name
    assert config.env.frame_size == 64


def _extends(path: Path) -> str | None:
    import yaml
    return (yaml.safe_load(path.read_text()) or {}).get("extends")


PRODUCTS = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
RECORDS = sorted(p.stem for p in (PIPELINES_DIR / "experiments").glob("*.yaml"))


def test_products_and_experiment_records_are_apart_and_found_by_name():
    assert "cartpole_balance" in PRODUCTS and "smoke" in PRODUCTS
    assert "cartpole_balance_oneshot" in RECORDS and not set(PRODUCTS) & set(RECORDS)
    assert load_pipeline("cartpole_balance_oneshot").collect.episodes == 100  # a record runs by its name


@pytest.mark.parametrize("name", PRODUCTS)
def test_a_product_holds_its_settings_or_extends_one_self_contained_product(name):
    """A product a user runs never moves because an experiment record moved, and is read in at most
    two files: its own and one self-contained product under it."""
    parent = _extends(PIPELINES_DIR / f"{name}.yaml")
    if parent is not None:
        assert parent in PRODUCTS, f"{name} extends {parent}, which is not a product"
        assert _extends(PIPELINES_DIR / f"{parent}.yaml") is None, f"{name}: {parent} extends another pipeline"


@pytest.mark.parametrize("name", RECORDS)
def test_an_experiment_record_does_not_move_with_a_product(name):
    """A record's numbers were measured at its settings: it extends only other records, unless it reads
    the product's own data (collect.source), whose env it must then share."""
    parent = _extends(PIPELINES_DIR / "experiments" / f"{name}.yaml")
    if parent in PRODUCTS:
        assert (load_pipeline(name).collect.source or "").startswith(f"{parent}/"), f"{name} extends {parent}"


@pytest.mark.parametrize("name", RECORDS)
def test_an_experiment_record_names_the_commit_that_measured_it(name):
    import re
    assert re.search(r"commits? [0-9a-f]{7}", load_pipeline(name).description), name


def test_a_relative_extends_is_read_from_the_files_folder(tmp_path: Path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "base.yaml").write_text("extends: smoke\ncollect:\n  episodes: 7\n")
    (folder / "child.yaml").write_text("extends: base.yaml\nvae:\n  epochs: 3\n")
    monkeypatch.chdir(tmp_path)  # not the files' folder
    config = load_pipeline(str(folder / "child.yaml"))
    assert (config.collect.episodes, config.vae.epochs, config.env.action_repeat) == (7, 3, 8)


def test_each_relative_extends_is_read_from_its_own_files_folder_not_the_working_directory(tmp_path: Path,
                                                                                          monkeypatch):
    """A chain of relative ``extends:`` across folders, run from a working directory that holds files of
    the same relative names (decoys): each name is read from the folder of the file that writes it."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for folder in (project / "lib", elsewhere / "lib"):
        folder.mkdir(parents=True)
    (project / "child.yaml").write_text("extends: lib/base.yaml\nvae:\n  epochs: 3\n")
    (project / "lib" / "base.yaml").write_text("extends: common.yaml\ncollect:\n  episodes: 7\n")
    (project / "lib" / "common.yaml").write_text("extends: smoke\ncollect:\n  seed: 5\n")
    for decoy in ("lib/base.yaml", "common.yaml", "lib/common.yaml"):
        (elsewhere / decoy).write_text("extends: smoke\ncollect:\n  episodes: 99\n  seed: 99\n")
    monkeypatch.chdir(elsewhere)
    config = load_pipeline("../project/child.yaml")  # the pipeline itself: a path from the working directory
    assert (config.collect.episodes, config.collect.seed, config.vae.epochs, config.env.action_repeat) == (7, 5, 3, 8)


@pytest.mark.parametrize("text", ["", "\n  \n", "# collect:\n#   episodes: 3\n", "null\n", "~", "--- \n...\n", "{}"])
def test_a_pipeline_file_that_sets_nothing_is_refused_in_one_line_naming_it(tmp_path: Path, text):
    """It would run every default (a 100-episode collect): an empty file is a mistake, not a pipeline."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_pipeline(str(path))
    assert str(path) in str(error.value) and len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("text", ["0", "false", "[]", "''", "just words"])
def test_a_pipeline_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_pipeline(str(path))


def test_an_empty_base_is_refused_naming_the_base(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("# to do\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ncollect: {episodes: 3}\n")
    with pytest.raises(ConfigError, match="base.yaml: the file sets nothing"):
        load_pipeline(str(tmp_path / "child.yaml"))


def test_a_file_that_only_extends_is_the_pipeline_it_extends(tmp_path: Path):
    path = tmp_path / "same.yaml"
    path.write_text("extends: smoke\n")
    smoke, config = load_pipeline("smoke"), load_pipeline(str(path))
    assert config.name == "same" and config.description == ""  # a description speaks of its own file only
    assert dataclasses.replace(config, name="smoke", description=smoke.description) == smoke


@pytest.mark.parametrize("value", ["", "null", "3", "''"])
def test_an_extends_that_names_no_pipeline_is_refused(tmp_path: Path, value):
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: {value}\ncollect: {{episodes: 3}}\n")
    with pytest.raises(ConfigError, match="^extends: expected a pipeline name"):
        load_pipeline(str(path))


def test_an_extends_that_cannot_be_found_is_refused_as_extends(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    for parent, reason in [("no_such_pipeline", "unknown pipeline"), ("missing.yaml", "does not exist"),
                           ("x" * 300, "too long")]:
        path.write_text(f"extends: {parent}\n")
        with pytest.raises(ConfigError, match=f"^extends: .*{reason}.*{path.name}"):
            load_pipeline(str(path))


def test_a_section_left_empty_in_a_file_that_extends_changes_nothing(tmp_path: Path):
    """``collect:`` with every key commented out keeps the base's section rather than its defaults."""
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\ncollect:\n#  episodes: 9\nvae: {epochs: 2}\n")
    config = load_pipeline(str(path))
    assert config.collect == load_pipeline("smoke").collect and config.vae.epochs == 2


def test_an_override_changes_one_section_even_where_yaml_anchors_share_its_settings(tmp_path: Path):
    path = tmp_path / "shared.yaml"
    path.write_text("collect: &both {seed: 1, episodes: 2}\nevaluate: *both\n")
    config = load_pipeline(str(path), ["collect.seed=5"])
    assert (config.collect.seed, config.evaluate.seed) == (5, 1)


@pytest.mark.parametrize("override", ["collect.episodes=3", "collect.seed=1"])
def test_an_override_of_a_section_that_is_not_a_mapping_names_the_section(tmp_path: Path, override):
    path = tmp_path / "mine.yaml"
    for section in ("collect: 3", "collect: [1]", "collect: words"):
        path.write_text(f"{section}\n")
        with pytest.raises(ConfigError, match="^collect: expected a mapping of settings"):
            load_pipeline(str(path), [override])


def test_a_file_that_is_not_utf8_or_nested_too_deeply_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "odd.yaml"
    path.write_bytes("collect: {\u00e9pisodes: 3}".encode("latin-1"))
    with pytest.raises(ConfigError, match="odd.yaml: not UTF-8"):
        load_pipeline(str(path))
    path.write_text("collect:\n  episodes: " + "[" * 1000)
    with pytest.raises(ConfigError, match="odd.yaml: not valid YAML: nested too deeply"):
        load_pipeline(str(path))


def test_refusals_are_one_line_naming_the_key_however_odd_the_key_or_value():
    for override, start in [("collect.episodes=[1", "collect.episodes: cannot read value '[1': "),
                            ("collect.episodes=!!python/object/apply:os.system ['true']", "collect.episodes: "),
                            ("collect.a\nb=1", "'collect.a\\nb': unknown key"),
                            ("colect.\x8a=1", "'colect.\\x8a': unknown section")]:
        with pytest.raises(ConfigError) as error:
            load_pipeline("smoke", [override])
        message = str(error.value)
        assert message.startswith(start) and len(message.splitlines()) == 1, message
    with pytest.raises(ConfigError) as error:  # a value that YAML anchors make of 10^6 references
        load_pipeline("smoke", ["collect.episodes=[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, "
                                "*a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], [*c, *c, *c, *c, *c, "
                                "*c, *c, *c, *c, *c]]"])
    assert len(str(error.value)) < 400


def test_mixed_top_level_keys_are_refused_naming_one(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("1: a\nnull: b\ncollect: {episodes: 3}\n")
    with pytest.raises(ConfigError, match="^1: unknown section"):
        load_pipeline(str(path))


def test_dump_yaml_writes_what_read_yaml_reads_back():
    """The YAML 1.1 dumper writes the string '1e5' plain, which the settings' YAML 1.2 numbers read as a
    number; :func:`dump_yaml` quotes it."""
    from worldmodels.config import dump_yaml, read_yaml

    settings = {"report": {"title": "1e5", "paper_recipe": "1.e5", "compare_with": ["1_0E+6", "x:dreamer"]}}
    assert read_yaml(dump_yaml(settings)) == settings
    assert read_yaml(yaml.safe_dump(settings))["report"]["title"] == 100000.0


def test_report_comparisons_name_a_pipeline_and_an_agent():
    config = load_pipeline("smoke", ["report.compare_with=[cartpole_balance_dreamer:dreamer]"])
    assert config.report.comparisons() == [("cartpole_balance_dreamer", "dreamer")]
    with pytest.raises(ConfigError, match=r"report.compare_with\[0\]: expected '<pipeline>:<agent>'"):
        load_pipeline("smoke", ["report.compare_with=[cartpole_balance_dreamer]"])


def test_the_default_pipeline_plays_cartpole_balance_from_64x64_frames_in_125_agent_steps():
    """What the default's env settings do: a whole episode of the env they build."""
    from worldmodels.envs import make_env

    env = make_env(load_pipeline("cartpole_balance").env)
    try:
        frame, steps, result = env.reset(0), 0, None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(np.zeros(env.action_size, np.float32))
            steps += 1
    finally:
        env.close()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert steps == 125, "1,000 env steps at action repeat 8"
    assert 0 < result.reward <= 8, "the rewards of the 8 repeated env steps, each in [0, 1]"


def test_an_override_changes_that_setting_and_nothing_else():
    default = load_pipeline("cartpole_balance")
    paper_loss = load_pipeline("cartpole_balance", ["vae.foreground_weight=0"])
    assert default.vae.foreground_weight != 0 and paper_loss.vae.foreground_weight == 0.0
    restored = dataclasses.replace(paper_loss.vae, foreground_weight=default.vae.foreground_weight)
    assert dataclasses.replace(paper_loss, vae=restored) == default


def test_overrides_are_typed_and_applied():
    config = load_pipeline("smoke", ["collect.episodes=9", "env.crop=[0, 40]", "data.heldout_fraction=0.5"])
    assert config.collect.episodes == 9
    assert config.env.crop == (0, 40)
    assert config.data.heldout_fraction == 0.5


@pytest.mark.parametrize("override, key", [
    ("collect.episodez=3", "collect.episodez"),        # unknown key
    ("colect.episodes=3", "colect.episodes"),          # unknown section
    ("collect.episodes=three", "collect.episodes"),    # wrong type
    ("collect.episodes=2.5", "collect.episodes"),      # float for an int
    ("env.shadows=1", "env.shadows"),                  # int for a bool
    ("collect.workers=-1", "collect.workers"),         # impossible value
    ("collect.hold_max=0", "collect.hold_max"),        # inconsistent with hold_min
    ("collect.policy=greedy", "collect.policy"),       # not a choice
    ("env.crop=[50, 10]", "env.crop"),                 # empty crop
    ("env.id=atari:Pong", "env.id"),                   # unknown backend
    ("data.heldout_fraction=1.0", "data.heldout_fraction"),
    ("vae.foreground_weight=-1", "vae.foreground_weight"),
    ("vae.z_size=0", "vae.z_size"),
    ("vae.learning_rate=0", "vae.learning_rate"),
    ("env.frame_size=63", "env.frame_size"),           # a size V and Dreamer cannot take
    ("dreamer.env_steps=2.5e0", "dreamer.env_steps"),  # not a whole number of steps
    ("iterate.noise_std=-0.1", "iterate.noise_std"),
    ("controller.memory_step_scale=0", "controller.memory_step_scale"),
    ("iterate.controller_generations=[10, 0]", "iterate.controller_generations"),
    ("iterate.controller_generations=[]", "iterate.controller_generations"),
    ("controller.stop_at=.nan", "controller.stop_at"),  # NaN is not even equal to itself
    ("vae.learning_rate=.inf", "vae.learning_rate"),
    ("vae.learning_rate=1" + "0" * 400, "vae.learning_rate"),  # no float holds it
    ("runtime.device=cuda:\u00b2", "runtime.device"),        # a digit, not a device index
])
def test_bad_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_pipeline("smoke", [override])
    assert str(error.value).startswith(key)


def test_unknown_key_in_a_yaml_file_is_named(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("env:\n  id: dmc:cartpole-balance\n  acton_repeat: 2\n")
    with pytest.raises(ConfigError, match="env.acton_repeat: unknown key"):
        load_pipeline(str(path))
    path.write_text("envv:\n  id: dmc:cartpole-balance\n")
    with pytest.raises(ConfigError, match="envv"):
        load_pipeline(str(path))


def test_a_pipeline_given_as_a_path_is_named_after_its_file(tmp_path: Path):
    path = tmp_path / "my_run.yaml"
    path.write_text("collect:\n  episodes: 3\n")
    config = load_pipeline(str(path))
    assert config.name == "my_run" and config.collect.episodes == 3


def test_override_values_are_read_as_yaml():
    assert parse_override("env.crop=[0, 84]") == ("env.crop", [0, 84])
    assert parse_override("env.max_episode_steps=null") == ("env.max_episode_steps", None)
    with pytest.raises(ConfigError):
        parse_override("collect.episodes")


def test_cli_refuses_bad_config_before_any_work(tmp_path: Path):
    result = CliRunner().invoke(main, ["collect", "--pipeline", "smoke", "--data-dir", str(tmp_path),
                                       "--set", "collect.workers=-2"])
    assert result.exit_code == 1
    assert "collect.workers" in result.output
    assert not (tmp_path / "smoke").exists()


def test_cli_config_prints_the_resolved_settings(tmp_path: Path):
    result = CliRunner().invoke(main, ["config", "-p", "smoke", "--set", "collect.seed=7"])
    assert result.exit_code == 0, result.output
    assert "seed: 7" in result.output


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("1E+6", 1e6), ("-2.5e-3", -2.5e-3), ("1.0e-4", 1e-4),
                                         ("3", 3), (".5", 0.5)])
def test_numbers_in_any_yaml_notation_are_numbers(tmp_path: Path, text, value):
    assert parse_override(f"vae.learning_rate={text}") == ("vae.learning_rate", value)
    path = tmp_path / "paper.yaml"
    path.write_text(f"extends: smoke\nmdnrnn:\n  grad_clip: {text}\n")
    if value > 0:  # a learning rate must be positive
        assert load_pipeline("smoke", [f"vae.learning_rate={text}"]).vae.learning_rate == value
        assert load_pipeline(str(path)).mdnrnn.grad_clip == value


def test_a_whole_number_in_float_notation_counts_as_an_integer():
    config = load_pipeline("cartpole_balance_dreamer", ["dreamer.env_steps=1e5"])
    assert config.dreamer.env_steps == 100_000 and isinstance(config.dreamer.env_steps, int)


def test_the_configs_frame_size_is_the_models():
    from worldmodels.config import MODEL_FRAME_SIZE
    from worldmodels.models.vae import FRAME_SIZE

    assert MODEL_FRAME_SIZE == FRAME_SIZE == 64


def test_the_default_pipeline_plans_v_m_c_within_the_articles_100k_env_steps_of_cut_episodes():
    """Data plus every real check C's search plays (each a whole episode of 1,000 env steps) fit the
    article's budget, as `vmc/env_budget.py` will count them."""
    config = load_pipeline("cartpole_balance")
    data = config.collect.episodes * config.collect.episode_steps * config.env.action_repeat
    controller = config.controller
    checks = -(-controller.generations // controller.eval_every) * controller.eval_real_episodes * 1000
    assert 90_000 <= data and data + checks <= 100_000
    assert config.iterate.iterations == 0 and controller.fitness_in == "dream"  # no other real steps
    assert config.collect.episode_steps < 1000 // config.env.action_repeat  # cut before the env's end
    assert config.controller.dream_steps == 1000 // config.env.action_repeat  # C is dreamed the whole episode


def test_the_laptop_dreamer_pipeline_is_the_default_pipelines_dreamer_from_a_random_prefill():
    from worldmodels.stages.dreamer import prefill_size

    default, laptop = load_pipeline("cartpole_balance"), load_pipeline("cartpole_balance_dreamer_laptop")
    assert laptop.env == default.env and laptop.data == default.data
    assert laptop.dreamer == dataclasses.replace(default.dreamer, prefill_episodes=0)  # 0: all of its 5
    assert default.dreamer.env_steps == 100_000 and laptop.report.agents == ("dreamer",)
    assert (laptop.collect.policy, laptop.collect.episode_steps, laptop.collect.episodes) == ("random", 0, 5)

    class Collected:  # the collect stage's episodes as prefill_size reads them
        def __init__(self, episodes: int, steps: int, action_repeat: int) -> None:
            self.num_episodes, self.lengths, self.action_repeat = episodes, np.full(episodes, steps), action_repeat

    repeat = default.env.action_repeat
    default_prefill = prefill_size(Collected(default.collect.episodes, default.collect.episode_steps, repeat),
                                   default.dreamer)
    laptop_prefill = prefill_size(Collected(5, 1000 // repeat, repeat), laptop.dreamer)
    assert default_prefill == (13, 5_200) and laptop_prefill == (5, 5_000)  # both near Dreamer v1's 5,000


def _bounded_settings():
    """(section, key, bounds, type) of every setting whose bounds are declared in the schema."""
    import dataclasses
    import typing

    from worldmodels.config import SECTIONS
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if "bounds" in item.metadata:
                yield section, item.name, item.metadata["bounds"], hints[item.name]


def _just_outside_and_on(bounds, whole: bool):
    """A value just outside the bounds, and one on their closed edge (or just inside an open one)."""
    step = 1 if whole else 0.5
    if bounds.ge is not None:
        return bounds.ge - step, bounds.ge
    return bounds.gt, bounds.gt + (1 if whole else 1e-3)


@pytest.mark.parametrize("section, key, bounds, annotation", list(_bounded_settings()),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_declared_bound_refuses_the_value_just_outside_it(section, key, bounds, annotation):
    """The bounds declared beside each field are what the loader enforces: just outside is refused
    with an error naming the dotted key, on the edge is accepted."""
    whole = "int" in str(annotation) and "float" not in str(annotation)
    outside, edge = _just_outside_and_on(bounds, whole)
    tuple_setting = "tuple" in str(annotation)
    as_text = (lambda value: f"[{value}]") if tuple_setting else str
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}(\[0\])?: must be"):
        load_pipeline("smoke", [f"{section}.{key}={as_text(outside)}"])
    relations = {"collect.hold_min": ["collect.hold_max=10"],
                 "env.difficulty": ["env.id=vizdoom:take_cover"]}.get(f"{section}.{key}", [])
    loaded = load_pipeline("smoke", [*relations, f"{section}.{key}={as_text(edge)}"])
    value = getattr(getattr(loaded, section), key)
    assert (value[0] if tuple_setting else value) == edge


def test_at_least_sixty_settings_declare_their_bounds():
    assert len(list(_bounded_settings())) >= 60


@pytest.mark.parametrize("bounds, whole, text", [
    (dict(ge=1), True, ">= 1"), (dict(gt=0), False, "> 0"), (dict(ge=0, lt=1), False, "in [0, 1)"),
    (dict(gt=0, lt=1), False, "in (0, 1)"), (dict(ge=0, le=1), False, "in [0, 1]"), (dict(ge=1, le=5), True, "in 1..5"),
])
def test_bounds_say_themselves_in_the_errors_words(bounds, whole, text):
    from worldmodels.config.schema import Bounds
    assert Bounds(**bounds).describe(whole) == text


def test_report_agents_name_known_agents_only():
    assert load_pipeline("smoke").report.agents == ("worldmodel", "dreamer")
    assert load_pipeline("smoke", ["report.agents=[dreamer]"]).report.agents == ("dreamer",)
    for bad in ("report.agents=[]", "report.agents=[vmc]"):
        with pytest.raises(ConfigError, match="report.agents"):
            load_pipeline("smoke", [bad])


def test_wm_config_get_prints_one_setting_for_make_and_names_an_unknown_key():
    runner = CliRunner()
    result = runner.invoke(main, ["config", "--pipeline", "cartpole_balance_dreamer_laptop", "--get", "report.agents"])
    assert result.exit_code == 0 and result.output.strip() == "dreamer"
    result = runner.invoke(main, ["config", "--pipeline", "smoke", "--get", "dreamer.horizon"])
    assert result.exit_code == 0 and result.output.strip() == "3"
    result = runner.invoke(main, ["config", "--pipeline", "smoke", "--get", "dreamer.nope"])
    assert result.exit_code == 2 and "no setting 'dreamer.nope' in pipeline 'smoke'" in result.output


def test_wm_config_prints_settings_that_load_back(tmp_path: Path):
    """``wm config`` prints the resolved settings (overrides applied) as a pipeline file: every section, the
    name and the outputs' folder in a comment, and nothing else."""
    from worldmodels.config import SECTIONS, read_yaml

    source = tmp_path / "mine.yaml"
    source.write_text("extends: smoke\ndescription: mine\ncollect: {episodes: 7, policy: brownian}\n"
                      "env: {crop: [0, 60]}\nreport: {compare_with: ['smoke:dreamer'], title: Mine}\n")
    result = CliRunner().invoke(main, ["config", "-p", str(source), "--set", "vae.epochs=3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# pipeline mine; outputs: {Path('data') / 'mine'}\n# runtime here: ")
    assert set(read_yaml(result.stdout)) == {"description", *SECTIONS}
    copy = tmp_path / "copy" / "mine.yaml"
    copy.parent.mkdir()
    copy.write_text(result.stdout)
    assert load_pipeline(str(copy)) == load_pipeline(str(source), ["vae.epochs=3"])


def test_wm_config_output_is_itself_a_pipeline_file(tmp_path: Path):
    """``wm config -p X > X.yaml`` gives X again: where outputs go, the name and the runtime are comments, and
    strings that the settings' YAML reads as numbers (``'1e5'``) are quoted (:func:`worldmodels.config.dump_yaml`)."""
    source = tmp_path / "mine.yaml"
    source.write_text("extends: smoke\nreport: {title: '1e5'}\n")
    result = CliRunner().invoke(main, ["config", "-p", str(source)])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "copy" / "mine.yaml"
    copy.parent.mkdir()
    copy.write_text(result.stdout)
    assert load_pipeline(str(copy)) == load_pipeline(str(source))
