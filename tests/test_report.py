import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_SMOKE, smoke_config
from worldmodels.config import load_pipeline
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.stage_times import read_stage_times, timed_stage
from worldmodels.reporting import sections
from worldmodels.reporting.page import counted, fixed, spread, table
from worldmodels.stages import controller, report
from worldmodels.vmc.videos import write_gif

SWEEP = "controller.temperatures=[0.5, 1.0]"  # beyond the shared smoke run (conftest.SHARED_SMOKE)
VOID = {"meta", "img", "br", "hr", "link", "input"}


class StrictParser(HTMLParser):
    """Checks that every opened element is closed in order; collects images, links, ids and missing boxes."""

    def __init__(self) -> None:
        super().__init__()
        self.stack, self.images, self.links, self.ids, self.missing = [], [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"])
        if tag == "a":
            self.links.append(attributes["href"])
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if attributes.get("class") == "missing":
            self.missing += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def _parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return parser


def _linked_videos(parsed: StrictParser, page: Path) -> list[Path]:
    """The GIFs the page links, once each in page order, as files beside ``page`` (each link relative)."""
    links = list(dict.fromkeys(link for link in parsed.links if link.endswith(".gif")))
    assert all(not Path(link).is_absolute() and ":" not in link for link in links), links
    return [page.parent / link for link in links]


def _section_ids():
    """Every section the issue asks for, in page order (written out, so a dropped one fails)."""
    return ["results", "wall-clock-per-stage", "budgets", "the-data", "v", "m", "c", "dreamer", "side-by-side",
            "diagnostics-behind-the-scores", "config-and-versions"]


@pytest.fixture(scope="module")
def full_run(smoke_run, tmp_path_factory):
    """Every stage of the smoke pipeline, the temperature sweep included: a copy of the session's shared run
    (the report's tests write report.html into it), C's temperature sweep added (``SWEEP``: C at tau 0.5
    beside the shared run's C, which the sweep reuses, and the table)."""
    config = smoke_config(*SHARED_SMOKE, SWEEP)
    paths = smoke_run.copy("dreamer", tmp_path_factory.mktemp("report"))
    with timed_stage(paths, "train-controller"):
        controller.run(config, paths, progress=False)
    return config, paths


def test_the_report_of_a_full_run_has_every_section_and_every_image_decodes(full_run):
    config, paths = full_run
    written = report.run(config, paths)
    page = written.read_text()
    parsed = _parse(page)
    assert parsed.ids == _section_ids()
    assert parsed.missing == 0, re.findall(r'class="missing">(.*?)</div>', page)
    assert len(parsed.images) >= 9
    # the dream videos (M replaying a real episode, C in the dream, the readout real beside dreamed): linked
    # as the files beside the page, each shown by its first frame
    assert _linked_videos(parsed, written) == [paths.video("dream_vs_real"), paths.video("controller_in_dream"),
                                               paths.video("readout_real_vs_dream")]
    for source in parsed.images:
        assert source.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))  # nothing to fetch
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.verify()
    for agent in ("random", "zero", "oracle", "state_model", "worldmodel", "dreamer"):
        score = json.loads(paths.score(agent).read_text())
        assert spread(score["mean"], score["std"]) in page, agent
    measured = json.loads(paths.score("state_model").read_text())
    r2 = measured["z_linear_r2"]  # V's z read linearly, per entry of cartpole's state
    assert list(r2) == ["position[0]", "position[1]", "position[2]", "velocity[0]", "velocity[1]"]
    assert all(value <= 1.0 for value in r2.values())
    assert f"the true-state oracle scores {fixed(measured['oracle_dream'], 0)} in it" in page
    assert f"position[0] {fixed(r2['position[0]'], 2)}" in page
    table = json.loads(paths.score("temperature_table").read_text())
    assert spread(table["rows"][0]["real_mean"], table["rows"][0]["real_std"], decimals=0) in page
    assert "2086 +- 140" in page  # the paper's table beside ours
    imitation = next(row for row in json.loads(paths.score("readout").read_text())["rows"] if row["inputs"] == "zh")
    # (an untrained smoke readout's dream return can round to -0.0: it shows as 0.0)
    assert (f"<td>{imitation['inputs']}</td><td>{imitation['readout']}</td>"
            f"<td>{spread(imitation['real_mean'], imitation['real_std'])}</td>"
            f"<td>{spread(imitation['dream_mean'], imitation['dream_std'])}</td>") in page
    assert "-0.0 " not in page and ">-0<" not in page
    assert 'alt="the [z, h] readout, real beside the dream"' in page
    held = json.loads(paths.simulator_metrics.read_text())["held_action"]
    assert (f"<td>action held at +1 (whole episodes): real / dream return (steps)</td><td>"
            f"{fixed(held['real_return_mean'][2])} / {fixed(held['dream_return_mean'][2])}") in page
    assert 'alt="held-action rewards per step"' in page
    curve = " / ".join(f"{r:.0f}" for r in held["zero_action_noise"]["real_return_mean"])
    assert f"real zero action with action noise 0.003 / 0.01 / 0.03 / 0.1: {curve}; M&#x27;s dream" in page
    for stage in ("collect", "train-vae", "train-mdnrnn", "dreamer"):
        assert f"<td>{stage}</td>" in page  # wall clock per stage


def _browser():
    """Chromium, or a skip where it is missing; ``make test`` installs it and sets WM_REQUIRE_BROWSER=1, so
    that there its absence fails instead."""
    from worldmodels.reporting.browser import find_browser

    browser = find_browser()
    if browser is None:
        if os.environ.get("WM_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium on this machine, and make test needs one (Debian: apt-get install chromium)")
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; make test installs it)")
    return browser


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser_without_an_error_or_a_broken_image(full_run, tmp_path):
    from worldmodels.reporting.browser import check_in_browser

    config, paths = full_run
    page = report.run(config, paths)
    screenshot = paths.figure("report_screenshot")
    assert check_in_browser(page, screenshot, _browser()) == []
    shot = Image.open(screenshot)
    assert shot.width == 1280 and shot.height > 3000  # the whole page, not the first screen
    darkest, lightest = shot.convert("L").getextrema()
    assert lightest - darkest > 100  # drawn, not blank
    # The same page with a broken image and a script error: both are found.
    damaged = tmp_path / "damaged.html"
    damaged.write_text(page.read_text().replace(
        "</body>", '<img alt="broken one" src="data:image/png;base64,AAAA"><script>console.error("boom")</script>'
                   "</body>"))
    problems = check_in_browser(damaged, tmp_path / "damaged.png", _browser())
    assert "image does not decode: broken one" in problems
    assert any(problem.startswith("console error: boom") for problem in problems)


def test_the_report_links_its_videos_and_stays_small_however_large_they_are(full_run, tmp_path):
    config, source = full_run
    paths = PipelinePaths(Path(shutil.copytree(source.root, tmp_path / "smoke")))
    noise = np.random.default_rng(0).integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)  # compresses badly
    # An open-loop strip as large as the default pipeline's (3.3 MB as PNG: rendered frames, whose grain PNG
    # compresses badly): inlined as a JPEG copy.
    grain = np.random.default_rng(1).normal(0, 6, (1200, 1000, 3))
    strip = np.clip(np.linspace(0, 255, 1000)[None, :, None] + grain, 0, 255).astype(np.uint8)
    Image.fromarray(strip).save(paths.figure("openloop_vm"))
    assert paths.figure("openloop_vm").stat().st_size > 2_000_000
    write_gif([("real", noise, np.zeros(100)), ("dream", noise[::-1].copy(), np.zeros(100))],
              paths.video("dream_vs_real"))
    for name in ("controller_in_dream", "readout_real_vs_dream"):
        shutil.copyfile(paths.video("dream_vs_real"), paths.video(name))
    videos = sum(paths.video(name).stat().st_size
                 for name in ("dream_vs_real", "controller_in_dream", "readout_real_vs_dream"))
    assert videos > 6_000_000  # inlined as base64, they alone would take the page past 8 MB
    written = report.run(config, paths)
    print(f"report.html: {written.stat().st_size:,} bytes beside {videos:,} bytes of videos")
    assert written.stat().st_size < 2_000_000
    parsed = _parse(written.read_text())
    linked = _linked_videos(parsed, written)
    assert len(linked) == 3 and all(video.is_file() and video.parent == paths.figures_dir for video in linked)
    assert "figures/dream_vs_real.gif" in written.read_text()  # the page says where the video is
    page = written.read_text()
    strip = re.search(r'<a href="figures/openloop_vm.png"><img src="data:image/jpeg;base64,([^"]+)"', page)
    assert strip is not None  # linked to the full figure
    assert Image.open(io.BytesIO(base64.b64decode(strip.group(1)))).size == (1000, 1200)


def test_a_number_that_rounds_to_zero_prints_without_a_sign():
    assert fixed(-0.0, 3) == "0.000" and fixed(-0.0004, 3) == "0.000" and fixed(-0.0006, 3) == "-0.001"
    assert fixed(-0.4, 0) == "0" and fixed(-0.0) == "0.0" and fixed(2.26, 1) == "2.3"
    assert spread(-0.04, 0.01) == "0.0 +- 0.0" and spread(-3.0, 1.6, decimals=0) == "-3 +- 2"
    cells = re.findall(r'<td class="number">([^<]*)</td>',
                       table(["value"], [[-0.0], [np.float32(-0.0)], [0.0], [-0.0004], [-0.5], [-1234.5]]))
    assert cells == ["0", "0", "0", "-4.00e-04", "-0.5", "-1,234"]
    from worldmodels.reporting.anchors import sweep_rows

    assert sweep_rows([{"temperature": 1.0, "real_mean": -0.3, "real_std": 0.2}]) == [["1", "-", "0 +- 0"]]


def test_a_count_of_one_takes_the_singular():
    assert counted(1, "epoch") == "1 epoch" and counted(2, "epoch") == "2 epochs" and counted(0, "epoch") == "0 epochs"
    assert counted(1, "CPU thread") == "1 CPU thread" and counted(1000, "env step") == "1,000 env steps"
    assert counted(1, "CMA-ES search", "CMA-ES searches") == "1 CMA-ES search"
    assert counted(3, "CMA-ES search", "CMA-ES searches") == "3 CMA-ES searches"


def test_the_budgets_say_one_epoch_and_one_thread_and_point_up_to_the_stage_times(tmp_path):
    from worldmodels.reporting.page import Report

    config = smoke_config("vae.epochs=1", "mdnrnn.epochs=2", "controller.generations=1", "evaluate.episodes=1")
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.config.write_text("resolved_runtime: {device: cpu, device_name: x86_64, precision: fp32, threads: 1}\n")
    budgets = sections.section_budgets(Report(config, paths))
    assert "<td>1 epoch, batch" in budgets and "<td>2 epochs, batch" in budgets
    assert "<td>1 generation of" in budgets and "<td>1 real episode per agent</td>" in budgets
    assert "fp32, 1 CPU thread." in budgets and "1 epochs" not in budgets and "1 CPU threads" not in budgets
    # The stage times come before the budgets on the page, and the budgets say so.
    page = report.build(config, paths)
    pointer = page.index('<a href="#wall-clock-per-stage">the wall-clock table above</a>')
    assert page.index('<section id="wall-clock-per-stage">') < page.index('<section id="budgets">') < pointer
    assert "time is below" not in page


def test_the_budgets_say_how_many_generations_a_search_with_stop_at_score_ran(tmp_path):
    from worldmodels.reporting.page import Report

    config = smoke_config("controller.generations=800", "controller.stop_at_score=990")
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    assert "<td>at most 800 generations (until C scores 990 at a check) of" in sections.section_budgets(
        Report(config, paths))
    log = MetricsLog(paths.metrics("controller"), step_key="generation")
    for generation in (1, 2, 3):
        log.append({"generation": generation, "mean": 1.0})
    assert "<td>3 generations of at most 800 (until C scores 990 at a check) of" in sections.section_budgets(
        Report(config, paths))


def test_a_missing_stage_shows_as_missing_with_its_command(tmp_path):
    config = load_pipeline("smoke")
    paths = PipelinePaths(tmp_path / "smoke")
    page = report.run(config, paths).read_text()
    parsed = _parse(page)
    assert parsed.ids == _section_ids()
    assert parsed.images == []
    sections = page.split("<section ")[1:]
    for section in sections[:-1]:  # every section but the budgets and the config needs a stage
        if 'id="budgets"' not in section:
            assert 'class="missing"' in section, section[:80]
    assert 'class="missing"' not in sections[-1]
    for command in ("make collect PIPELINE=smoke", "make vae PIPELINE=smoke", "make mdnrnn PIPELINE=smoke",
                    "make dreamer PIPELINE=smoke", "make oracle PIPELINE=smoke"):
        assert command in page


def test_a_partial_run_reports_what_exists_and_names_the_rest(full_run, tmp_path):
    config, source = full_run
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    for path in (source.rollouts, source.vae, source.metrics("vae"), source.figure("vae_reconstruction")):
        target = paths.root / path.relative_to(source.root)
        target.write_bytes(path.read_bytes())
    page = report.run(config, paths).read_text()
    parsed = _parse(page)
    assert len(parsed.images) == 1  # V's reconstructions
    assert "make dreamer PIPELINE=smoke" in page and "make evaluate PIPELINE=smoke" in page


def test_a_bug_in_a_section_is_named_by_its_type_and_the_rest_of_the_page_stands(tmp_path):
    from worldmodels.errors import UserError
    from worldmodels.reporting.page import page

    def buggy(report):
        raise KeyError("epoch")

    def damaged(report):
        raise UserError("scores/zero.json: not valid JSON")

    html_page = page(smoke_config(), PipelinePaths(tmp_path / "smoke"),
                     (("Buggy", buggy), ("Damaged", damaged), ("Fine", lambda report: "<p>fine</p>")))
    assert "could not be built: KeyError: &#x27;epoch&#x27;" in html_page
    assert "could not be built: scores/zero.json: not valid JSON" in html_page and "<p>fine</p>" in html_page


def test_a_damaged_file_shows_as_an_error_in_its_section_not_a_crash(full_run, tmp_path):
    config, source = full_run
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    for path in (source.rollouts, source.score("worldmodel"), source.score("zero")):
        (paths.root / path.relative_to(source.root)).parent.mkdir(parents=True, exist_ok=True)
        (paths.root / path.relative_to(source.root)).write_bytes(path.read_bytes())
    paths.score("zero").write_text('{"agent": "zero", "mean": ')  # cut short
    page = report.run(config, paths).read_text()
    _parse(page)
    sections = page.split("<section ")[1:]
    results, data = sections[0], next(section for section in sections if section.startswith('id="the-data"'))
    assert f"could not be built: {paths.score('zero')}: not valid JSON" in results  # what is wrong, where
    assert "could not be built" not in data and "<td>episodes</td>" in data


def test_a_metrics_log_being_appended_to_reads_without_its_half_written_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"epoch": 1, "loss": 2.0})
    with open(log.path, "a") as handle:
        handle.write('{"epoch": 2, "lo')
    assert log.read() == [{"epoch": 1, "loss": 2.0}]


def test_resuming_a_log_with_nothing_to_drop_leaves_the_file_untouched(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"epoch": 1})
    before = log.path.stat().st_mtime_ns
    log.keep_up_to(1)
    assert log.path.stat().st_mtime_ns == before
    log.keep_up_to(0)
    assert log.read() == []


def test_stage_times_count_work_not_no_ops_and_add_up_interrupted_runs(tmp_path):
    paths = PipelinePaths(tmp_path / "run").ensure()
    with timed_stage(paths, "nothing"):
        (paths.root / "config.yaml").write_text("written by every command")
    assert read_stage_times(paths) == {}
    paths.stage_times.write_text(json.dumps({"train": {"pending_seconds": 1000.0}}))  # an earlier killed run
    with pytest.raises(KeyboardInterrupt), timed_stage(paths, "train"):
        (paths.root / "partial.pt").write_text("1")
        raise KeyboardInterrupt
    interrupted = read_stage_times(paths)["train"]
    assert "seconds" not in interrupted and 1000 < interrupted["pending_seconds"] < 1100
    with timed_stage(paths, "train"):
        (paths.root / "done.pt").write_text("2")
    finished = read_stage_times(paths)["train"]
    assert finished["pending_seconds"] == 0 and finished["seconds"] > interrupted["pending_seconds"]
    assert "finished" in finished


def _difference_rows(config, paper) -> list[tuple[str, str, str]]:
    differences = sections._paper_differences(config, paper)
    return re.findall(r"<tr><td>([\w.]+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", differences)


def test_the_paper_differences_are_exactly_the_settings_that_differ():
    paper = smoke_config()
    ours = smoke_config("vae.epochs=7", "controller.temperature=0", "report.paper_recipe=cartpole_balance_paper")
    assert _difference_rows(ours, paper) == [("controller.temperature", "1.0", "0.0"), ("vae.epochs", "1", "7")]
    assert _difference_rows(paper, paper) == []


def test_the_papers_recipe_pipeline_differs_from_the_one_shot_record_only_in_v():
    paper = load_pipeline("cartpole_balance_paper")
    rows = _difference_rows(load_pipeline("cartpole_balance_oneshot"), paper)
    assert rows and all(setting.startswith("vae.") for setting, _, _ in rows)


def test_the_default_report_sets_its_recipe_beside_the_papers_with_every_setting_that_differs():
    default = load_pipeline("cartpole_balance")
    paper = sections._paper_pipeline(default)
    assert paper is not None and paper.name == default.report.paper_recipe
    flat = {name: sections._flatten(config.to_dict()) for name, config in (("ours", default), ("paper", paper))}
    expected = sorted((key, str(flat["paper"][key]), str(value)) for key, value in flat["ours"].items()
                      if value != flat["paper"][key] and key.split(".")[0] not in ("name", "description", "report"))
    assert _difference_rows(default, paper) == expected and expected
    assert sections._paper_pipeline(smoke_config()) is None, "a pipeline that declares no paper recipe shows none"


def test_every_agent_a_pipeline_may_compare_with_has_a_row_label_and_a_command():
    from worldmodels.config import ReportConfig
    assert set(sections.COMPARED_AGENTS) == set(ReportConfig.AGENTS)


def test_the_default_report_lists_the_online_dreamer_and_vmc_on_its_replay_once_scored(tmp_path):
    from worldmodels.evaluation.episodes import Score
    from worldmodels.reporting.page import Report

    default = load_pipeline("cartpole_balance")
    paths = PipelinePaths(tmp_path / "cartpole_balance")
    page = sections.section_results(Report(default, paths))
    assert "Not run yet" in page and "make all PIPELINE=cartpole_balance_dreamer" in page
    seeds = list(range(3))
    Score.of("dreamer", [480.0, 470.0, 466.0], seeds, 100000, updates=9600).write(
        PipelinePaths(tmp_path / "cartpole_balance_dreamer").score("dreamer"))
    Score.of("worldmodel", [700.0, 710.0, 720.0], seeds, 100000).write(
        PipelinePaths(tmp_path / "cartpole_balance_vmc_on_dreamer").score("worldmodel"))
    page = sections.section_results(Report(default, paths))
    assert "Dreamer online, Dreamer v1&#x27;s schedule" in page or "Dreamer online, Dreamer v1's schedule" in page
    assert "472.0" in page and "9,600 updates on 100,000 env steps" in page
    assert "V+M+C trained on Dreamer" in page and "710.0" in page and "Not run yet" not in page


def test_the_state_model_note_shows_the_searches_beside_reality(tmp_path):
    import numpy as np

    from worldmodels.evaluation.episodes import Score, searches_beside_reality

    searches = searches_beside_reality([970.0, 435.0, 756.0], 0, [999.6, 477.2, 783.9])
    path = tmp_path / "state_model.json"
    Score.of("state_model", np.array([999.0, 1000.0]), [1, 2], 10, dream_mean=970.0, zero_action_dream=513.0,
             zero_action_real=752.7, replay_correlation=0.69, **searches).write(path)
    note = sections._state_model_note(path)
    assert "of 3 CMA-ES searches the dream picked the one it scores 970 (their real scores 477 to 1000" in note
    assert f"correlation {searches['restart_dream_real_correlation']:.2f}" in note


def test_c_s_searches_show_only_beside_the_controller_they_picked(tmp_path):
    from worldmodels.core.checkpoint import file_sha256
    from worldmodels.evaluation.episodes import searches_beside_reality
    from worldmodels.reporting.page import Report

    paths = PipelinePaths(tmp_path / "cartpole_balance").ensure()
    paths.controller.write_bytes(b"the picked C")
    searches = searches_beside_reality([968.0, 412.0], 0, [999.2, 420.5]) | {
        "restart_seeds": [10, 11], "episodes": 100, "dream_rollouts": 256,
        "controller_sha256": file_sha256(paths.controller)}
    paths.score("controller_searches").write_text(json.dumps(searches))
    report = Report(load_pipeline("cartpole_balance"), paths)
    shown = sections._searches_table(report)
    rows = re.findall(r"<tr>(.*?)</tr>", shown)
    assert "2 CMA-ES searches" in shown and len(rows) == 3  # the header and one row per search
    assert "999.2" in rows[1] and "picked" in rows[1] and "420.5" in rows[2] and "picked" not in rows[2]
    assert "correlation 1.00" in shown
    paths.controller.write_bytes(b"a C of a later single search")
    assert sections._searches_table(report) == ""


def test_the_dreamer_row_names_its_budget_and_a_dreamer_only_pipeline_shows_no_v_m_or_c(tmp_path):
    from worldmodels.evaluation.episodes import Score
    from worldmodels.reporting.page import Report

    laptop = load_pipeline("cartpole_balance_dreamer_laptop")
    assert laptop.report.agents == ("dreamer",)
    paths = PipelinePaths(tmp_path / laptop.name)
    Score.of("dreamer", [950.0, 960.0], [0, 1], 100000, 12.0, updates=2475, training_seconds=2748.0,
             online=True).write(paths.score("dreamer"))
    results = sections.section_results(Report(laptop, paths))
    assert "online: 2,475 updates on 100,000 env steps, 46 min 00 s with its evaluations" in results
    assert "V+M+C" not in results.split("Published anchors")[0]
    page = report.run(laptop, paths).read_text()
    assert 'id="dreamer"' in page and 'id="v"' not in page and 'id="m"' not in page
    budgets = sections.section_budgets(Report(laptop, paths))
    assert "<td>Dreamer</td>" in budgets and "<td>V</td>" not in budgets
    # A few offline updates say that they are no trained Dreamer.
    Score.of("dreamer", [136.0], [0], 174800, 5.0, updates=60, training_seconds=100.0,
             online=False).write(paths.score("dreamer"))
    assert "offline: 60 updates on 174,800 env steps, 1 min 45 s with its evaluations (untrained" in (
        sections.section_results(Report(laptop, paths)))


def test_the_published_anchors_carry_a_source_for_every_cartpole_number():
    from worldmodels.reporting.anchors import published_anchors

    rows = [row for row in published_anchors() if row[0].startswith("DMC cartpole-balance, pixels")]
    assert not any("DreamerV3" in row[1] for row in rows)  # no source gives DreamerV3 a 100k point
    assert {"DreamerV2 (5 seeds)", "DrQ (10 seeds)", "DrQ-v2 (10 seeds)", "MR.Q (10 seeds)"} <= {row[1] for row in rows}
    assert all(row[4] for row in rows)


def test_a_measurement_taken_again_replaces_its_line(tmp_path):
    from worldmodels.core.metrics import MetricsLog

    log = MetricsLog(tmp_path / "metrics" / "mdnrnn.jsonl")
    log.append({"epoch": 1, "loss": 3.0})
    log.append({"epoch": 2, "loss": 2.0})
    log.replace({"epoch": 2, "simulator": True, "error": 0.5}, "simulator")
    log.replace({"epoch": 2, "simulator": True, "error": 0.4}, "simulator")
    assert log.read() == [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0},
                          {"epoch": 2, "simulator": True, "error": 0.4}]


def test_a_wide_figure_is_inlined_as_a_jpeg_no_wider_than_the_limit():
    from worldmodels.reporting.page import INLINE_MAX_WIDTH, _inline_jpeg

    png = io.BytesIO()
    Image.new("RGBA", (2514, 1204), (10, 200, 30, 0)).save(png, format="PNG")  # transparent: shown on white
    source = re.search(r'src="data:image/jpeg;base64,([^"]+)"', _inline_jpeg(png.getvalue(), "strip")).group(1)
    image = Image.open(io.BytesIO(base64.b64decode(source)))
    assert image.size == (INLINE_MAX_WIDTH, round(1204 * INLINE_MAX_WIDTH / 2514))
    assert image.getpixel((5, 5)) == (255, 255, 255)
