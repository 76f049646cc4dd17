"""The pasts ``warmtune bench`` warm-starts from: distractors built from past tasks alone,
meta-features and runtimes, and the leakage test: nothing of the target reaches a
searcher."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from warmtune.bench import knowledge_base, load_benchmark
from warmtune.bench.pasts import distractor, parse_mix
from warmtune.searchers.encoding import SpaceCodec
from warmtune.searchers.pasttask import PastTask
from warmtune.space import SearchSpace

pytest.importorskip("onnxruntime")

SPACE = SearchSpace(
    {
        "a": {"type": "float", "low": 0.0, "high": 1.0},
        "b": {"type": "int", "low": 1, "high": 64, "log": True},
        "c": {"type": "categorical", "choices": ["x", "y", "z"]},
    }
)


def source(seed=0, multi_fidelity=True):
    rng = np.random.default_rng(seed)
    configs = [SPACE.sample(rng) for _ in range(40)]
    values = [(c["a"] - 0.2) ** 2 + (c["c"] != "x") for c in configs]
    budgets = [1.0] * 40
    if multi_fidelity:  # the same configurations again at a higher budget, values lower
        configs, values = configs + configs[:20], values + [v / 2 for v in values[:20]]
        budgets = budgets + [9.0] * 20
    return PastTask(
        name="src",
        meta_features={"size": 3},
        space=SPACE,
        configs=configs,
        values=values,
        budgets=budgets,
        runtimes=np.arange(len(values), dtype=float),
    )


def test_mirrored_reverses_each_budget_and_keeps_the_values():
    task = source()
    mirror = distractor(task, "mirrored", 0, seed=0)
    assert mirror.name == "src~mirrored0" and mirror.meta_features == task.meta_features
    assert mirror.configs == task.configs
    for level in (1.0, 9.0):
        at = task.budgets == level
        # The same values, in exactly the reverse order of the source's.
        np.testing.assert_allclose(np.sort(mirror.values[at]), np.sort(task.values[at]))
        order, reverse = np.argsort(task.values[at]), np.argsort(mirror.values[at])
        assert order[0] == reverse[-1] and order[-1] == reverse[0]


def test_permuted_keeps_each_parameter_marginal_and_breaks_the_relation():
    task = source()
    perm = distractor(task, "permuted", 0, seed=0)
    np.testing.assert_array_equal(perm.values, task.values)
    for name in ("a", "b", "c"):  # over the 40 distinct configurations
        assert sorted(map(str, (c[name] for c in perm.configs[:40]))) == sorted(
            map(str, (c[name] for c in task.configs[:40]))
        )
    assert perm.configs != task.configs
    # A configuration keeps one identity across budgets (the same trial, permuted once).
    assert perm.configs[:20] == perm.configs[40:]
    assert distractor(task, "permuted", 0, seed=0).configs == perm.configs  # seeded
    assert distractor(task, "permuted", 1, seed=0).configs != perm.configs


def test_shifted_moves_the_optimum_to_another_region():
    task = source(multi_fidelity=False)
    shifted = distractor(task, "shifted", 0, seed=0)
    codec = SpaceCodec(SPACE)
    before = codec.encode([task.configs[int(np.argmin(task.values))]])[0]
    after = codec.encode([shifted.configs[int(np.argmin(shifted.values))]])[0]
    # Every numeric coordinate moved by at least a quarter (cyclically), the choice too.
    moved = np.abs(after[:2] - before[:2])
    assert np.all(np.minimum(moved, 1 - moved) >= 0.2)
    assert after[2] != before[2]
    for config in shifted.configs:
        SPACE.validate(config)


def test_parse_mix_reads_the_option_and_names_the_fix():
    assert parse_mix("1:mirrored,3:permuted") == [(1, "mirrored"), (3, "permuted")]
    assert parse_mix(None) == []
    with pytest.raises(ValueError, match="K:KIND"):
        parse_mix("mirrored")
    with pytest.raises(ValueError, match="one of"):
        parse_mix("1:flipped")


def test_the_knowledge_base_holds_meta_features_runtimes_and_distractors(
    data_dir, need_data, tmp_path
):
    need_data("lcbench")
    lc = load_benchmark("lcbench", data_dir=data_dir)
    target = lc.tasks[0]
    past = knowledge_base(lc, target, cache_dir=tmp_path, past="random", mix=[(1, "mirrored")])
    real = [t for t in past if "~" not in t.name]
    assert len(real) == len(lc.tasks) - 1 and len(past) == 2 * len(real)
    assert target not in {t.name.split("~")[0] for t in past}  # the target never appears
    assert real[0].meta_features == {"scenario": "lcbench", "task_id": real[0].name}
    assert np.isfinite(real[0].runtimes).all() and (real[0].runtimes > 0).all()
    need_data("nb201")
    nb = load_benchmark("nb201:cifar10", data_dir=data_dir)
    (c100, _) = knowledge_base(nb, "cifar10", cache_dir=tmp_path, past="searches")
    assert c100.meta_features == {"classes": 100, "image_size": 32, "train_images": 50_000}
    assert len(set(c100.budgets)) == 1 and len(c100.values) >= 15


def _evaluations(data_dir, out, cache, methods):
    args = ["lcbench", "--tasks", "3945", "--methods", methods, "--budget", "3"]
    args += ["--workers", "1", "--seeds", "1", "--jobs", "1", "--quiet", "--out", str(out)]
    args += ["--data-dir", str(data_dir), "--cache-dir", str(cache), "--reference-configs", "500"]
    # A fresh process each time, as a user reruns it: the benchmark keeps a task's
    # inputs in memory between methods, which would hide a poisoned file.
    done = subprocess.run(
        [sys.executable, "-m", "warmtune.cli", "bench", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ev = pd.read_parquet(out / "evaluations.parquet")
    return ev[["method", "trial_id", "config_json", "budget", "value"]].reset_index(drop=True)


def _poison(path):
    frame = pd.read_parquet(path)
    frame["value"] = frame["value"].max() + frame["value"].min() - frame["value"]
    frame.to_parquet(path, index=False)


def test_nothing_of_the_target_reaches_a_searcher(data_dir, need_data, tmp_path):
    """Reverse the target's own cache files: every method sees exactly the same; reverse
    the past tasks' files: the warm ones see something else (so this test can fail)."""
    need_data("lcbench")
    methods = "bohb-warm,bohb-warm-nodesign,bohb-warm-uniform,zeroshot"
    cache = tmp_path / "cache"
    clean = _evaluations(data_dir, tmp_path / "clean", cache, methods)
    target = sorted(cache.glob("lcbench-3945-*.parquet"))
    assert target, "the target's reference and past files are cached"
    for path in target:
        if "value" in pd.read_parquet(path).columns:
            _poison(path)
    after = _evaluations(data_dir, tmp_path / "target-poisoned", cache, methods)
    pd.testing.assert_frame_equal(clean, after)
    for path in cache.glob("lcbench-*-past.parquet"):
        if not path.name.startswith("lcbench-3945-"):
            _poison(path)  # every past task turned round
    past = _evaluations(data_dir, tmp_path / "past-poisoned", cache, methods)
    for method in methods.split(","):
        mine = past[past["method"] == method]["config_json"].tolist()
        assert mine != clean[clean["method"] == method]["config_json"].tolist(), method
    assert json.loads(clean["config_json"].iloc[0])  # configurations, not placeholders
