"""``warmtune report``: sections, figures, self-containment, partial results, the warm
start's weight log, and the page rendered in headless Chromium."""

from __future__ import annotations

import copy
import os
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from tests.chromium import Chromium, requires_chromium  # noqa: E402
from warmtune.cli import main  # noqa: E402
from warmtune.jobdir import JobDir  # noqa: E402
from warmtune.report import SECTIONS, build_report, load_report  # noqa: E402
from warmtune.spec import job_from_dict  # noqa: E402
from warmtune.store import ResultStore  # noqa: E402
from warmtune.trainables.quadratic import objective  # noqa: E402

SPACE = {
    "x": {"type": "float", "low": 0, "high": 1},
    "y": {"type": "float", "low": 0.01, "high": 1, "log": True},
    "opt": {"type": "categorical", "choices": ["a", "b"]},
    "z": {"type": "int", "low": 0, "high": 2, "when": {"opt": ["b"]}},
}
JOB = {
    "name": "bowl",
    "task": {"name": "bowl"},
    "trainable": {"name": "quadratic"},
    "space": SPACE,
    "objective": {"metric": "loss", "mode": "min"},
    "budget": {"trials": 10, "max_iterations": 4},
    "seed": 3,
}


def make_job(tmp_path: Path, **changes: Any) -> tuple[Any, JobDir]:
    data = copy.deepcopy(JOB)
    data["storage"] = str(tmp_path / "results")
    data["knowledge_base"] = {"path": str(tmp_path / "kb")}
    data.update(changes)
    spec = job_from_dict(data)
    jobdir = JobDir.of(spec)
    jobdir.write_spec(spec)
    return spec, jobdir


def trial_rows(
    spec: Any, trial_id: str, config: dict[str, Any], iterations: int, t0: float
) -> list[dict[str, Any]]:
    """What the recorder writes for one quadratic trial (one row per iteration)."""
    return [
        {
            "job": spec.name,
            "trial_id": trial_id,
            "training_iteration": it,
            "timestamp": t0 + it,
            "time_total_s": float(it),
            "status": "RUNNING",
            "loss": objective(config, it),
            "config": config,
        }
        for it in range(1, iterations + 1)
    ]


def write_trials(spec: Any, jobdir: JobDir, n: int, *, seed: int = 0, prefix: str = "t") -> None:
    """``n`` trials with configurations sampled from the space; some stop early."""
    rng = np.random.default_rng(seed)
    store = ResultStore(jobdir.results)
    for i in range(n):
        config = spec.search_space.sample(rng)
        iterations = spec.budget.max_iterations if i % 3 == 0 else 1 + i % 2
        store.append(trial_rows(spec, f"{prefix}{i:02d}", config, iterations, 1.7e9 + 3 * i))


class Page(HTMLParser):
    """Sections, figures, and every attribute that could make a browser fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.svgs = 0
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "section":
            self.sections.append(str(a.get("id")))
        if tag == "svg":
            self.svgs += 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "poster", "data", "action"):
                self.links.append(str(value))
            if value and "url(" in value and "url(#" not in value:
                self.links.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def assert_self_contained(text: str) -> Page:
    page = parse(text)
    # Every reference is inside the page: SVG glyphs and clip paths ("#id"), colour
    # bars (inline PNG data).
    inside = ("#", "data:image/png;base64,")
    assert all(link.startswith(inside) for link in page.links), [
        link for link in page.links if not link.startswith(inside)
    ][:5]
    assert not {"script", "link", "img", "iframe", "object", "embed"} & page.tags
    assert "@import" not in text and "<!DOCTYPE svg" not in text
    return page


def test_every_section_with_figures_and_nothing_to_fetch(tmp_path):
    spec, jobdir = make_job(tmp_path)
    write_trials(spec, jobdir, 10)
    text = build_report(jobdir)
    page = assert_self_contained(text)
    assert len(page.links) > 100  # the figures' glyphs and clip paths, all inside the page
    assert page.sections == [key for key, _ in SECTIONS]
    # best-so-far, learning curves, parallel coordinates, importance; random search
    # has no warm start, and says so.
    assert page.svgs == 4
    words = " ".join(page.text)
    assert "does not start warm" in words
    report = load_report(jobdir)
    best = report.rows.loc[report.rows["loss"].idxmin()]
    assert report.export is not None and report.export["trial_id"] == best["trial_id"]
    assert f"trial_id: {best['trial_id']}" in words  # the export document is on the page
    assert words.count("%") >= 1 and "PED-ANOVA" in words
    # Importance covers every parameter, the conditional one included.
    assert {"x", "y", "opt", "z"} <= set(words.split())


def test_plots_give_each_figure_its_own_ids():
    import re

    import pandas as pd

    from warmtune.report.plots import regret_figure, to_svg

    pivot = pd.DataFrame([[1.0, 0.5], [0.9, 0.2]], index=["bohb", "bohb-warm"], columns=[1, 2])
    a, b = to_svg(regret_figure(pivot), name="a"), to_svg(regret_figure(pivot), name="b")
    clips = [set(re.findall(r'<clipPath id="([^"]+)"', s)) for s in (a, b)]
    assert clips[0] and not clips[0] & clips[1]
    assert to_svg(regret_figure(pivot), name="a") == a  # reproducible


def test_no_results_yet_is_a_message_not_a_crash(tmp_path):
    spec, jobdir = make_job(tmp_path)
    out = tmp_path / "empty.html"
    result = CliRunner().invoke(main, ["report", jobdir.root, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "no results yet" in result.output
    page = assert_self_contained(out.read_text())
    assert page.sections == [key for key, _ in SECTIONS] and page.svgs == 0
    assert "No results yet" in " ".join(page.text)


def test_a_running_job_is_reported_as_far_as_the_store_goes(tmp_path):
    spec, jobdir = make_job(tmp_path, searcher={"name": "bohb"})
    store = ResultStore(jobdir.results)
    config = {"x": 0.3, "y": 0.1, "opt": "a"}
    store.append(trial_rows(spec, "t00", config, 1, 1.7e9))  # one row so far
    one = parse(build_report(jobdir))
    words = " ".join(one.text)
    assert one.svgs == 3  # best so far, one curve, one line of coordinates
    assert "Not enough trials yet" in words and "this job has 1." in words
    # bohb could start warm; its state is not saved yet while the job starts.
    assert "has not been saved yet" in words
    store.append(trial_rows(spec, "t00", config, 3, 1.7e9)[1:])
    write_trials(spec, jobdir, 6, seed=1, prefix="u")
    more = load_report(jobdir)
    assert len(more.rows) > 1 and more.rows["trial_id"].nunique() == 7
    assert parse(build_report(jobdir)).svgs == 4


def past_job(tmp_path: Path, name: str, seed: int) -> None:
    """A finished past job on a task of the same family, in the knowledge base."""
    from warmtune.knowledge import KnowledgeBase

    spec, jobdir = make_job(
        tmp_path,
        name=name,
        task={"name": name, "meta_features": {"family": "bowl"}},
        budget={"trials": 30, "max_iterations": 1},
    )
    write_trials(spec, jobdir, 30, seed=seed)
    KnowledgeBase(spec.knowledge_base.path).add_job(jobdir)


def drive_searcher(spec: Any, jobdir: JobDir, n: int) -> dict[str, Any]:
    """Run the job's searcher through the Ray adapter, as Tune would, on the quadratic
    objective; write the rows to the store and the adapter's state where Tune does."""
    from warmtune.searchers import make_searcher
    from warmtune.searchers.ray_adapter import TuneSearcher
    from warmtune.warm import warm_start_for

    warm, history, source = warm_start_for(spec)
    searcher = make_searcher(
        spec.searcher.name,
        space=spec.search_space,
        seed=spec.seed,
        options=spec.searcher.options,
        max_budget=spec.budget.max_iterations,
        warm_start=warm,
        history=history,
    )
    adapter = TuneSearcher(searcher, metric="loss", mode="min", rebuild=source)
    store = ResultStore(jobdir.results)
    full = spec.budget.max_iterations
    reached: dict[str, tuple[dict[str, Any], int]] = {}  # paused trials
    new = 0
    while new < n:
        trial_id = f"t{new:02d}"
        config = adapter.suggest(trial_id)
        if config is not None:
            new, first = new + 1, 1
        else:  # a promotion: resume the paused trial, as BudgetScheduler does
            assert adapter.promotions, "no new trial and nothing to resume"
            trial_id = next(iter(adapter.promotions))
            adapter.resumed(trial_id)
            config, done = reached.pop(trial_id)
            first = done + 1
        target = int(min(adapter.targets.get(trial_id, full), full))
        rows = trial_rows(spec, trial_id, config, target, time.time())[first - 1 :]
        store.append(rows)
        for row in rows:
            adapter.on_trial_result(trial_id, {**row, "config": config})
        if target < full:
            reached[trial_id] = (config, target)
        else:
            adapter.on_trial_complete(trial_id, rows[-1])
    adapter.save(os.path.join(jobdir.root, "warmtune-searcher-2026-01-01_00-00-00.json"))
    return adapter.get_state()


@pytest.fixture(scope="module")
def warm_job(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("warm")
    past_job(tmp_path, "bowl-a", 1)
    past_job(tmp_path, "bowl-b", 2)
    spec, jobdir = make_job(
        tmp_path,
        task={"name": "bowl-new", "meta_features": {"family": "bowl"}},
        searcher={"name": "bohb", "options": {"initial_design": 3}},
    )
    state = drive_searcher(spec, jobdir, 14)
    return spec, jobdir, state


def test_the_adapter_logs_warm_start_weights_and_the_report_draws_them(warm_job):
    spec, jobdir, state = warm_job
    log = state["warm_start_log"]
    assert len(log) >= 2, "weights re-computed as own results arrive"
    assert [e["n_own"] for e in log] == sorted(e["n_own"] for e in log)
    assert log[0]["n_own"] == 0 and log[-1]["n_own"] > 0
    for e in log:
        assert set(e["past"]) == {"bowl-a", "bowl-b"}
        # The past's tasks, the own model and chance share the weight.
        assert sum(e["past"].values()) == pytest.approx(e["past_share"])
        assert e["past_share"] + e["own"] + e["random"] == pytest.approx(1.0)
    report = load_report(jobdir)
    assert report.warm.status == "warm" and report.warm.log == log
    assert 1 <= len(report.warm.design) <= 3
    page = assert_self_contained(build_report(jobdir))
    assert page.svgs == 5  # the four of every report, and the weights
    words = " ".join(page.text)
    assert "started warm from 2 past task(s)" in words
    assert "bowl-a" in words and "bowl-b" in words
    assert "Warm design" in words and "not started" not in words
    # Why: the learned prior and the measured concordance of the heaviest tasks.
    assert "prior concordance" in words and set(log[-1]["why"]) <= {"bowl-a", "bowl-b"}


def test_a_cold_or_switched_off_warm_start_says_so(tmp_path):
    spec, jobdir = make_job(tmp_path, searcher={"name": "bohb"})
    drive_searcher(spec, jobdir, 3)  # the knowledge base is empty
    assert load_report(jobdir).warm.status == "cold"
    assert "This job started cold" in build_report(jobdir)
    spec, jobdir = make_job(
        tmp_path, name="off", searcher={"name": "bohb", "options": {"warm_start": False}}
    )
    assert "switches it off" in build_report(jobdir)


# ---------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------
needs_chromium = requires_chromium("render the report in a real browser")

_PAGE_CHECKS = """JSON.stringify({
  height: document.documentElement.scrollHeight,
  sections: [...document.querySelectorAll('section')].map(s => s.id),
  svgs: [...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return {x: r.x + window.scrollX, y: r.y + window.scrollY, w: r.width, h: r.height,
            shapes: s.querySelectorAll('path, use, rect, line, polyline').length};
  }),
})"""


@pytest.fixture
def chromium(tmp_path):
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


def drawn(image: np.ndarray, box: dict[str, float]) -> float:
    """Pixel spread inside ``box`` of the screenshot: 0 for a blank region."""
    x, y = int(box["x"]), int(box["y"])
    region = image[y : y + int(box["h"]), x : x + int(box["w"]), :3]
    return float(region.std()) if region.size else 0.0


@needs_chromium
def test_the_report_draws_in_headless_chromium(warm_job, chromium, tmp_path):
    from matplotlib.image import imread

    _, jobdir, _ = warm_job
    page = tmp_path / "report.html"
    page.write_text(build_report(jobdir))
    png = tmp_path / "report.png"
    checks = chromium.render(page.as_uri(), png, _PAGE_CHECKS)
    print(f"\nreport screenshot: {png}")
    assert chromium.problems() == []
    assert checks["sections"] == [key for key, _ in SECTIONS]
    assert len(checks["svgs"]) == 5
    image = imread(png)
    assert image.shape[0] == checks["height"] and image.shape[1] == 1200
    for box in checks["svgs"]:
        assert box["w"] > 300 and box["h"] > 150 and box["shapes"] > 20
        assert drawn(image, box) > 20 / 255, f"a figure rendered blank: {box}"


@needs_chromium
def test_the_browser_check_sees_errors_and_blank_figures(chromium, tmp_path):
    """The checks above can fail: a console error, a missing file and an empty figure."""
    from matplotlib.image import imread

    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><section id='x'><svg width='400' height='200'></svg>"
        "</section><img src='missing.png'><script>console.error('boom')</script></body></html>"
    )
    png = tmp_path / "bad.png"
    checks = chromium.render(bad.as_uri(), png, _PAGE_CHECKS)
    problems = chromium.problems()
    assert any("boom" in p for p in problems)
    assert any("missing.png" in p or "ERR_FILE_NOT_FOUND" in p for p in problems), problems
    (box,) = checks["svgs"]
    assert box["shapes"] == 0 and drawn(imread(png), box) == 0.0


@pytest.mark.slow
def test_a_real_run_on_ray_gets_its_report(ray_session, tmp_path):
    """End to end: a past job, then a warm BOHB job on Ray, then `warmtune report`."""
    from warmtune.runner import run_job

    kb = {"path": str(tmp_path / "kb")}
    space = {k: v for k, v in SPACE.items() if k in ("x", "y")}
    for k in range(2):
        past = copy.deepcopy(JOB)
        past.update(
            name=f"past{k}",
            task={"name": f"bowl-{k}"},
            space=space,
            budget={"trials": 12, "max_iterations": 1},
            storage=str(tmp_path / "results"),
            knowledge_base=kb,
            seed=k,
        )
        run_job(job_from_dict(past), progress=False)
    new = copy.deepcopy(JOB)
    new.update(
        name="new",
        task={"name": "bowl-new"},
        space=space,
        searcher={"name": "bohb"},
        budget={"trials": 6, "max_iterations": 3},
        storage=str(tmp_path / "results"),
        knowledge_base={**kb, "add": False},
        max_concurrency=1,
    )
    run_job(job_from_dict(new), progress=False)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["report", "new", "--storage", str(tmp_path / "results"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "warm start: warm" in result.output
    page = assert_self_contained(out.read_text())
    assert page.sections == [key for key, _ in SECTIONS] and page.svgs == 5


def test_the_report_says_how_each_trial_ended(tmp_path):
    spec, jobdir = make_job(tmp_path, budget={"trials": 4, "max_iterations": 3})
    store, ends = ResultStore(jobdir.results), ResultStore(jobdir.trial_ends)
    config = {"x": 0.3, "y": 0.1, "opt": "a"}
    for trial, reached in (("full", 3), ("early", 1), ("broke", 2), ("open", 2)):
        store.append(trial_rows(spec, trial, config, reached, 1.7e9))

    def end(trial: str, status: str, iteration: int | None) -> None:
        ends.append([{"job": spec.name, "trial_id": trial, "status": status,
                      "training_iteration": iteration}])  # fmt: skip

    end("full", "TERMINATED", 3)
    end("early", "TERMINATED", 1)
    end("broke", "ERROR", 2)
    end("silent", "ERROR", None)  # failed before its first report: no result rows
    end("open", "ERROR", 1)  # failed, was retried, and is running again ...
    end("open", "TERMINATED", 2)  # ... then ended: the latest end counts
    end("cut", "TERMINATED", 3)  # its last rows never reached the store: the end says 3
    store.append(trial_rows(spec, "cut", config, 2, 1.7e9))
    report = load_report(jobdir)
    assert report.trial_states().to_dict() == {
        "broke": "failed", "cut": "finished", "early": "stopped early", "full": "finished",
        "open": "stopped early", "silent": "failed",
    }  # fmt: skip
    words = " ".join(parse(build_report(jobdir)).text)
    assert "2 finished, 2 stopped early, 2 failed" in words
    assert "trials 6 (1 reached the full budget" in words  # "silent" counts; "cut" has 2 rows
    # A trial with results and no end (the job was stopped) is not ended.
    store.append(trial_rows(spec, "stopped", config, 1, 1.7e9))
    assert load_report(jobdir).trial_states()["stopped"] == "not ended"
    assert "1 not ended" in " ".join(parse(build_report(jobdir)).text)


def test_the_latest_session_s_searcher_state_wins_whatever_the_file_times(tmp_path):
    """Tune rewrites every session's searcher file when it syncs the experiment at the
    end, so an older session's file can be the newest on disk (seen in the soak)."""
    import json
    import os

    from warmtune.report import searcher_state

    spec, jobdir = make_job(tmp_path)
    root = Path(jobdir.root)
    for session, n in (("2026-12-06_12-45-24", 10), ("2026-12-06_12-44-38", 3)):
        path = root / f"warmtune-searcher-{session}.json"
        path.write_text(json.dumps({"searcher": {"asked": n}}))
    old = root / "warmtune-searcher-2026-12-06_12-44-38.json"
    os.utime(old, ns=(2 * 10**18, 2 * 10**18))  # the older session, touched last
    assert searcher_state(jobdir) == {"searcher": {"asked": 10}}
