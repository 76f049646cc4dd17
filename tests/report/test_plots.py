"""The figures' building blocks, shared by the report and `warmtune bench`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmtune.report import plots
from warmtune.space import SearchSpace


def test_the_running_best_follows_the_mode_and_skips_failures():
    values = np.array([np.nan, 3.0, 5.0, np.inf, 1.0, 2.0])
    assert np.allclose(plots._running_best(values, "min"), [np.nan, 3, 3, 3, 1, 1], equal_nan=True)
    assert np.allclose(plots._running_best(values, "max"), [np.nan, 3, 5, 5, 5, 5], equal_nan=True)


def test_values_sit_on_their_parameter_axis():
    space = SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "n": {"type": "int", "low": 0, "high": 10},
            "opt": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "only": {"type": "categorical", "choices": ["x"]},
        }
    )
    assert plots._unit(space["lr"], 1e-3) == pytest.approx(0.5)
    assert plots._unit(space["n"], 7) == pytest.approx(0.7)
    assert plots._unit(space["opt"], "rmsprop") == 1.0
    assert plots._unit(space["only"], "x") == 0.5
    assert math.isnan(plots._unit(space["opt"], "lbfgs")) and math.isnan(
        plots._unit(space["n"], None)
    )
    assert plots._axis_labels(space["lr"]) == [(0.0, "0.0001"), (1.0, "0.01 (log)")]


def test_styles_are_distinct_and_a_highlight_marks_its_family():
    names = ["bohb", "bohb-warm", "bohb-warm-uniform", "random"]
    styles = plots.line_styles(names, highlight="bohb-warm")
    assert styles["bohb-warm"]["color"] == "black" and styles["bohb-warm"]["linewidth"] == 2.5
    assert styles["bohb-warm-uniform"]["linestyle"] == "--"
    assert styles["bohb"]["color"] != styles["random"]["color"]
    assert (
        len({str(s["color"]) for s in plots.line_styles([f"m{i}" for i in range(20)]).values()})
        == 20
    )


def test_svg_for_html_has_no_prolog_metadata_or_date_and_is_reproducible():
    def figure():
        fig = plots.new_figure(3, 2)
        plots.plot_lines(fig.add_subplot(), {"a": (np.arange(3), np.arange(3) ** 2)})
        return fig

    first, second = plots.to_svg(figure(), name="f1"), plots.to_svg(figure(), name="f1")
    assert first == second and first.startswith("<svg")
    assert "<metadata>" not in first and "<?xml" not in first and "DOCTYPE" not in first
    assert plots.to_svg(figure(), name="f2") != first  # ids differ between figures of a page
