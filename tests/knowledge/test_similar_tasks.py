"""`warmtune kb similar`: the most similar past tasks, with weights and reasons."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from warmtune.cli import main
from warmtune.knowledge import KnowledgeBase
from warmtune.space import SearchSpace

SPACE = SearchSpace(
    {"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}}
)


def add_task(kb, name, center, sign=1.0, seed=0, n=60):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        config = {"x": float(rng.uniform()), "y": float(rng.uniform())}
        value = sign * ((config["x"] - center[0]) ** 2 + (config["y"] - center[1]) ** 2)
        rows.append(
            {
                "task": name,
                "meta_features": {"c": center[0]},
                "space": SPACE,
                "config": config,
                "budget": 1,
                "max_budget": 1,
                "value": value,
                "metric": "loss",
                "mode": "min",
                "job": name,
                "trial_id": f"{name}-{i}",
            }
        )
    kb.add_observations(rows)


def test_similar_ranks_the_alike_task_first_and_explains(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb")
    add_task(kb, "target", (0.3, 0.3), seed=1)
    add_task(kb, "alike", (0.32, 0.3), seed=2)
    add_task(kb, "opposite", (0.3, 0.3), sign=-1.0, seed=3)
    add_task(kb, "far", (0.9, 0.9), seed=4)
    out = CliRunner().invoke(
        main, ["kb", "similar", "target", "--kb", str(tmp_path / "kb"), "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    ranked = [r["task"] for r in doc["similar"]]
    assert ranked[0] == "alike"
    weights = {r["task"]: r["weight"] for r in doc["similar"]}
    # 60 results of the target: the task that orders them the wrong way round has lost
    # its weight entirely, and the alike one holds nearly all of the past's.
    assert weights["opposite"] < 1e-6
    assert weights["alike"] > 0.9 * doc["past_share"]
    assert doc["past_share"] + doc["own"] + doc["random"] == pytest.approx(1.0)
    alike = next(r for r in doc["similar"] if r["task"] == "alike")
    opposite = next(r for r in doc["similar"] if r["task"] == "opposite")
    assert alike["measured"] > 0.8 and opposite["measured"] < 0.2
    assert {"prior_mean", "prior_sd", "pairs", "meta_distance"} <= set(alike)
    assert doc["history"]["observations"] == 60
    table = CliRunner().invoke(main, ["kb", "similar", "target", "--kb", str(tmp_path / "kb")])
    assert table.exit_code == 0 and "alike" in table.output and "measured" in table.output


def test_similar_on_the_only_task_shows_its_history(tmp_path):
    # The sinusoid example's second run: the task is alone in the knowledge base, and its
    # own history is what a new search of it continues from.
    kb_dir = str(tmp_path / "kb")
    add_task(KnowledgeBase(kb_dir), "only", (0.5, 0.5))
    alone = CliRunner().invoke(main, ["kb", "similar", "only", "--kb", kb_dir])
    assert alone.exit_code == 0, alone.output
    assert "60 observations from 1 job(s)" in alone.output
    assert "continues from this history alone" in alone.output
    doc = json.loads(
        CliRunner()
        .invoke(main, ["kb", "similar", "only", "--kb", kb_dir, "--format", "json"])
        .output
    )
    assert doc["history"]["observations"] == 60 and doc["similar"] == []


def test_similar_errors_name_the_fix(tmp_path):
    kb_dir = str(tmp_path / "kb")
    empty = CliRunner().invoke(main, ["kb", "similar", "x", "--kb", kb_dir])
    assert empty.exit_code == 2 and "empty" in empty.output
    add_task(KnowledgeBase(kb_dir), "only", (0.5, 0.5))
    missing = CliRunner().invoke(main, ["kb", "similar", "nope", "--kb", kb_dir])
    assert missing.exit_code == 2 and "known tasks: only" in missing.output
