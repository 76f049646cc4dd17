"""Task similarity on a synthetic family f_s(x) = ||x - c(s)||^2 whose optimum moves with s."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from warmtune.searchers.similarity import PastTask, TaskSimilarity, past_tasks_from_frame
from warmtune.space import SearchSpace

SPACE = SearchSpace({f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(3)})


def center(s: float) -> np.ndarray:
    return np.array([0.1 + 0.8 * s, 0.9 - 0.8 * s, 0.5])


def objective(x: np.ndarray, s: float) -> np.ndarray:
    return ((x - center(s)) ** 2).sum(axis=-1)


def sample(n: int, seed: int, dim: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, dim))


def as_configs(x: np.ndarray, names=("x0", "x1", "x2")) -> list[dict]:
    return [{k: float(v) for k, v in zip(names, row, strict=True)} for row in x]


def family_task(name: str, s: float, *, seed: int, n: int = 120, sign: float = 1.0, meta=None):
    x = sample(n, seed)
    return PastTask(
        name=name,
        meta_features={"s": s} if meta is None else meta,
        space=SPACE,
        configs=as_configs(x),
        values=sign * objective(x, s),
    )


FAMILY_S = np.linspace(0.0, 1.0, 8)


def family(ss=FAMILY_S, seed=100):
    return [family_task(f"s{k}", float(s), seed=seed + k) for k, s in enumerate(ss)]


def own(s: float, n: int, seed: int = 7):
    x = sample(n, seed)
    return as_configs(x), objective(x, s)


@pytest.fixture(scope="module")
def fam_model():
    return TaskSimilarity(past_tasks=family(), seed=0)


def test_loto_learns_meta_feature_kernel_and_prefers_nearest_task(fam_model):
    cal = fam_model.calibration()
    assert cal["meta_bandwidth"] is not None, "informative meta-features get a finite bandwidth"
    assert cal["prior_line"][1] > 0
    json.dumps(cal)  # explanations and calibration are JSON-able
    for s_target in (0.05, 0.3, 0.62, 0.95):
        w = fam_model.weights(space=SPACE, meta_features={"s": s_target})
        ss = np.linspace(0.0, 1.0, 8)
        nearest = f"s{int(np.argmin(abs(ss - s_target)))}"
        assert w.ranked()[0][0] == nearest
        # Far, anti-correlated tasks get no say.
        far = f"s{int(np.argmax(abs(ss - s_target)))}"
        assert w.past[far] == 0.0
        assert w.target == 1.0 - w.weight_of_past(0)
        assert abs(sum(w.past.values()) - 1.0) < 1e-9


def test_weights_explain_themselves(fam_model):
    configs, values = own(0.3, 30)
    w = fam_model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    top, _ = w.ranked()[0]
    why = w.explanations[top]
    for key in (
        "meta_distance",
        "meta_kernel",
        "prior_similarity",
        "performance_similarity",
        "comparable_observations",
        "evidence_share",
        "similarity",
        "weight",
    ):
        assert key in why
    assert why["comparable_observations"] == 30
    assert why["shared_params"] == ["x0", "x1", "x2"]
    assert 0 < why["evidence_share"] < 1
    json.dumps(w.explanations)


def test_performance_evidence_overrides_misleading_meta_features():
    # "liar" claims the target's meta-features but has the opposite optimum.
    tasks = family() + [family_task("liar", 1.0, seed=55, meta={"s": 0.3})]
    model = TaskSimilarity(past_tasks=tasks, seed=0)
    before = model.weights(space=SPACE, meta_features={"s": 0.3})
    assert before.past["liar"] > 0.05
    configs, values = own(0.3, 20)
    after = model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    assert after.past["liar"] < 0.01
    assert after.ranked()[0][0] in ("s2", "s3")  # s = 0.29 / 0.43 bracket the target


def test_adversarial_past_ends_with_no_weight():
    # The target's own objective, inverted: perfectly informative, in the wrong direction.
    tasks = family() + [family_task("evil", 0.3, seed=77, sign=-1.0)]
    model = TaskSimilarity(past_tasks=tasks, seed=0)
    configs, values = own(0.3, 30)
    w = model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    assert w.past["evil"] < 1e-3
    assert w.explanations["evil"]["performance_similarity"] < -0.5


def test_all_adversarial_past_means_cold_start():
    tasks = [family_task(f"evil{k}", s, seed=k, sign=-1.0) for k, s in enumerate((0.2, 0.3, 0.4))]
    model = TaskSimilarity(past_tasks=tasks, seed=0)
    configs, values = own(0.3, 30)
    w = model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    assert all(v == 0.0 for v in w.past.values())
    assert w.weight_of_past(30) == 0.0 and w.target == 1.0


def test_differing_spaces_compare_on_compatible_params():
    # Past spaces: x2 renamed to z2, an added categorical, a narrower and a log range.
    other = SearchSpace(
        {
            "x0": {"type": "float", "low": 0.0, "high": 0.6},
            "x1": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
            "z2": {"type": "float", "low": 0.0, "high": 1.0},
            "act": {"type": "categorical", "choices": ["relu", "tanh"]},
        }
    )

    def task(name, s, seed):
        rng = np.random.default_rng(seed)
        x = np.column_stack(
            [
                rng.uniform(0, 0.6, 150),
                np.exp(rng.uniform(np.log(0.01), 0, 150)),
                rng.uniform(size=150),
            ]
        )
        act = rng.choice(["relu", "tanh"], 150)
        configs = [
            {"x0": float(a), "x1": float(b), "z2": float(c), "act": str(d)}
            for (a, b, c), d in zip(x, act, strict=True)
        ]
        return PastTask(
            name=name,
            meta_features={"s": s},
            space=other,
            configs=configs,
            values=objective(x, s),
        )

    tasks = [task("same", 0.3, 1), task("mid", 0.6, 2), task("opposite", 1.0, 3)]
    # ...and one in the target's own space with a removed parameter (x2 absent).
    two = SearchSpace({"x0": SPACE["x0"], "x1": SPACE["x1"]})
    x = sample(150, 4)[:, :2]
    tasks.append(
        PastTask(
            name="removed",
            meta_features={"s": 0.35},
            space=two,
            configs=as_configs(x, names=("x0", "x1")),
            values=((x - center(0.35)[:2]) ** 2).sum(axis=1),
        )
    )
    model = TaskSimilarity(past_tasks=tasks, seed=0)
    configs, values = own(0.3, 40)
    w = model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    assert w.explanations["same"]["shared_params"] == ["x0", "x1"]
    assert w.explanations["removed"]["shared_params"] == ["x0", "x1"]
    assert w.explanations["same"]["performance_similarity"] > 0.3
    assert w.explanations["removed"]["performance_similarity"] > 0.3
    assert w.explanations["opposite"]["performance_similarity"] < 0
    assert w.past["opposite"] == 0.0
    assert w.past["same"] + w.past["removed"] > 0.8


def test_deterministic_for_a_seed():
    configs, values = own(0.3, 25)
    a = TaskSimilarity(past_tasks=family(), seed=3)
    b = TaskSimilarity(past_tasks=family(), seed=3)
    wa = a.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    wb = b.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
    assert wa == wb
    assert a.calibration() == b.calibration()


def test_evidence_share_grows_with_own_observations(fam_model):
    shares = []
    for n in (2, 10, 40, 160):
        configs, values = own(0.3, n)
        w = fam_model.weights(space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values)
        shares.append(w.explanations["s0"]["evidence_share"])
    assert shares == sorted(shares) and shares[-1] > 0.5


def test_only_equal_budget_pairs_are_compared(fam_model):
    configs, values = own(0.3, 20)
    # Every observation at its own budget: nothing comparable, the prior stands.
    w = fam_model.weights(
        space=SPACE, meta_features={"s": 0.3}, configs=configs, values=values, budgets=range(20)
    )
    assert w.explanations["s0"]["performance_similarity"] is None
    assert w.explanations["s0"]["similarity"] == w.explanations["s0"]["prior_similarity"]


def test_past_task_normalises_max_mode_and_drops_failures():
    task = PastTask(
        name="acc",
        meta_features={},
        space=SPACE,
        configs=as_configs(sample(3, 0)),
        values=[0.9, float("nan"), 0.5],
        mode="max",
    )
    assert task.values.tolist() == [-0.9, -0.5]
    assert len(task.configs) == 2
    with pytest.raises(ValueError, match="mode"):
        PastTask(name="x", meta_features={}, space=SPACE, configs=[], values=[], mode="up")
    with pytest.raises(ValueError, match="one value per config"):
        PastTask(name="x", meta_features={}, space=SPACE, configs=[{}], values=[])


def test_past_tasks_from_frame_round_trip():
    rows = []
    for name, s in (("a", 0.1), ("b", 0.9)):
        x = sample(5, 1)
        for cfg, v in zip(as_configs(x), objective(x, s), strict=True):
            rows.append(
                {
                    "task": name,
                    "meta_features_json": json.dumps({"s": s}),
                    "space_json": json.dumps(SPACE.to_dict()),
                    "config_json": json.dumps(cfg),
                    "budget": 10.0,
                    "max_budget": 10.0,
                    "value": -v,
                    "mode": "max",
                }
            )
    tasks = past_tasks_from_frame(pd.DataFrame(rows))
    assert [t.name for t in tasks] == ["a", "b"]
    assert tasks[0].space == SPACE and tasks[0].max_budget == 10.0
    assert np.allclose(tasks[0].values, objective(sample(5, 1), 0.1))
    with pytest.raises(ValueError, match="lacks column"):
        past_tasks_from_frame(pd.DataFrame({"task": ["a"]}))


def test_bad_arguments_say_how_to_fix():
    with pytest.raises(ValueError, match="at least one"):
        TaskSimilarity(past_tasks=[])
    t = family_task("a", 0.1, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        TaskSimilarity(past_tasks=[t, t])


def test_timing_34_tasks_1500_obs_1000_own():
    space = SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "batch": {"type": "int", "low": 16, "high": 512, "log": True},
            "layers": {"type": "int", "low": 1, "high": 5},
            "units": {"type": "int", "low": 64, "high": 1024, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 1.0},
            "wd": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            "momentum": {"type": "float", "low": 0.1, "high": 0.99},
        }
    )
    rng = np.random.default_rng(0)

    def draw(n, shift):
        cfgs = [space.sample(rng) for _ in range(n)]
        z = np.array([[np.log(c["lr"]), c["dropout"], c["momentum"]] for c in cfgs])
        return cfgs, ((z - shift) ** 2).sum(axis=1)

    tasks = []
    for k in range(34):
        shift = np.array([-5.0, 0.3, 0.5]) + rng.normal(0, [1, 0.2, 0.2])
        cfgs, y = draw(1500, shift)
        tasks.append(
            PastTask(
                name=f"t{k}",
                meta_features={"n": float(k), "kind": "a" if k % 2 else "b"},
                space=space,
                configs=cfgs,
                values=y,
            )
        )
    t0 = time.perf_counter()
    model = TaskSimilarity(past_tasks=tasks, seed=0)
    build = time.perf_counter() - t0
    cfgs, y = draw(1000, np.array([-5.0, 0.3, 0.5]))
    model.weights(space=space, meta_features={"n": 3.0}, configs=cfgs, values=y)  # warm cache
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        model.weights(space=space, meta_features={"n": 3.0}, configs=cfgs, values=y)
        times.append(time.perf_counter() - t0)
    print(
        f"\nTaskSimilarity: build {build:.2f} s (34 tasks x 1500 obs); "
        f"weights with 1000 own obs: median {1e3 * np.median(times):.1f} ms, "
        f"min {1e3 * min(times):.1f} ms"
    )
