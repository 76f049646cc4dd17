"""Reading a job's results: top trials, the best one, and the export file round trip."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from warmtune.export import best_trial, read_export, top_trials, write_export


def results():
    """Three trials; a's last result is its worst, c never reported the metric."""
    rows = [
        ("a", 1, 0.1),
        ("a", 2, 0.6),
        ("b", 1, 0.5),
        ("b", 2, 0.3),
        ("c", 1, None),
    ]
    return pd.DataFrame(rows, columns=["trial_id", "training_iteration", "loss"])


def test_trials_rank_by_their_last_result_and_the_silent_ones_come_last():
    top = top_trials(results(), metric="loss", mode="min")
    assert list(top["trial_id"]) == ["b", "a", "c"]
    assert list(top["training_iteration"]) == [2, 2, 1]
    assert list(top_trials(results(), metric="loss", mode="max", k=2)["trial_id"]) == ["a", "b"]
    assert best_trial(results(), metric="loss", mode="min")["trial_id"] == "b"
    silent = results()[results()["trial_id"] == "c"]
    assert best_trial(silent, metric="loss", mode="min") is None
    with pytest.raises(ValueError, match="no trial reported 'accuracy'; reported columns"):
        top_trials(results(), metric="accuracy", mode="max")


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_an_export_reads_back_its_configuration(tmp_path, fmt):
    doc = {"warmtune_export": 1, "config": {"lr": 0.01, "opt": "adam", "layers": 3}}
    path = tmp_path / f"best.{fmt}"
    text = write_export(doc, str(path), fmt)
    assert path.read_text() == text
    if fmt == "json":
        assert json.loads(text) == doc
    assert read_export(path) == {"lr": 0.01, "opt": "adam", "layers": 3}


def test_bad_export_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no such file.*warmtune export"):
        read_export(tmp_path / "missing.yaml")
    not_export = tmp_path / "other.yaml"
    not_export.write_text("name: quickstart\n")
    with pytest.raises(ValueError, match="not a warmtune export.*warmtune export JOB"):
        read_export(not_export)
    with pytest.raises(ValueError, match="unknown export format 'toml'"):
        write_export({"config": {}}, None, "toml")
