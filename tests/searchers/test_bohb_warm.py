"""BOHB warm-started from past tasks: a similar past helps at once, an adversarial one
does not hold the search back, and the state still round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmtune.searchers.bohb import BOHB
from warmtune.searchers.similarity import PastTask, TaskSimilarity
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace

NAMES = ("x0", "x1", "x2")
SPACE = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in NAMES})
MAX_BUDGET = 9


def center(s: float) -> np.ndarray:
    return np.array([0.1 + 0.8 * s, 0.9 - 0.8 * s, 0.5])


def past(sign: float = 1.0, spread: float = 1.0) -> list[PastTask]:
    tasks = []
    for k, s in enumerate(0.3 + spread * (np.linspace(0, 1, 6) - 0.3)):
        x = np.random.default_rng(100 + k).uniform(size=(100, 3))
        values = sign * ((x - center(s)) ** 2).sum(axis=1)
        configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
        tasks.append(
            PastTask(
                name=f"s{k}",
                meta_features={"s": float(s)},
                space=SPACE,
                configs=configs,
                values=values,
            )
        )
    return tasks


TARGET = center(0.3)


def objective(config, budget):
    x = np.array([config[n] for n in NAMES])
    return float(((x - TARGET) ** 2).sum() + 0.05 / budget)


@pytest.fixture(scope="module")
def similar():
    tasks = past()
    return tasks, TaskSimilarity(past_tasks=tasks, seed=0)


@pytest.fixture(scope="module")
def adversarial():
    # The target's own objective turned upside down: the past's best is its worst.
    tasks = past(sign=-1.0, spread=0.1)
    return tasks, TaskSimilarity(past_tasks=tasks, seed=0)


def bohb(seed, tasks=None, sim=None):
    warm = None
    if tasks is not None:
        warm = WarmStart(
            space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=seed
        )
    return BOHB(space=SPACE, seed=seed, max_budget=MAX_BUDGET, warm_start=warm)


def test_first_suggestions_come_from_the_good_region(similar):
    searcher = bohb(0, *similar)
    first = [searcher.ask(f"t{i}").config for i in range(5)]
    values = [objective(c, MAX_BUDGET) for c in first]
    random = [objective(SPACE.sample(np.random.default_rng(i)), MAX_BUDGET) for i in range(500)]
    # The first is the zero-shot pick; the rest of the portfolio covers other tasks.
    assert values[0] < np.quantile(random, 0.05)
    assert np.mean(values) < np.quantile(random, 0.25)


def best_after(searcher, driver_cls, n):
    """The full-budget value of the best configuration evaluated in ``n`` suggestions."""
    driver = driver_cls(searcher, objective=objective, workers=2, max_budget=MAX_BUDGET)
    driver.run(n)
    assert not driver.violations
    return min(objective(o.config, MAX_BUDGET) for o in driver.results)


def test_similar_past_beats_cold_start_early(similar, driver_cls):
    warm = np.mean([best_after(bohb(s, *similar), driver_cls, 15) for s in range(4)])
    cold = np.mean([best_after(bohb(s), driver_cls, 15) for s in range(4)])
    assert warm < 0.5 * cold


def test_adversarial_past_gets_no_weight_and_the_search_still_converges(adversarial, driver_cls):
    searchers = [bohb(s, *adversarial) for s in range(4)]
    warm = np.mean([best_after(s, driver_cls, 80) for s in searchers])
    cold = np.mean([best_after(bohb(s), driver_cls, 80) for s in range(4)])
    # The similarity model learned that this past points the wrong way.
    assert all(s.warm_start.weight_of_past(50) < 0.05 for s in searchers)
    assert warm < cold + 0.02, (warm, cold)


def test_state_round_trip_with_a_warm_start(similar, driver_cls):
    tasks, sim = similar
    a = bohb(1, tasks, sim)
    driver_cls(a, objective=objective, workers=2, max_budget=MAX_BUDGET).run(12)
    state = json.loads(json.dumps(a.state()))
    warm = WarmStart(
        space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=1
    )
    b = BOHB.from_state(state, SPACE, warm_start=warm)
    assert [a.ask(f"n{i}") for i in range(6)] == [b.ask(f"n{i}") for i in range(6)]


def test_a_single_past_task_earns_its_weight_from_evidence(driver_cls):
    # One past task cannot calibrate the meta-feature kernel, so the past starts
    # with no weight; the target's own results then show it is the same problem.
    (same,) = [t for t in past(spread=0.0)][:1]
    warm = WarmStart(space=SPACE, past_tasks=[same], meta_features={"s": 0.3}, seed=0)
    searcher = BOHB(space=SPACE, seed=0, max_budget=MAX_BUDGET, warm_start=warm)
    assert searcher.warm_start.weights.past[same.name] == 0.0
    driver_cls(searcher, objective=objective, workers=2, max_budget=MAX_BUDGET).run(30)
    assert searcher.warm_start.weights.past[same.name] > 0.5
    assert searcher.state()["design"], "the design was drawn once the past had weight"


def test_the_design_runs_straight_to_the_full_budget(similar):
    searcher = bohb(0, *similar)
    asks = [searcher.ask(f"t{i}") for i in range(searcher.initial_design + 2)]
    design = asks[: searcher.initial_design]
    assert [a.budget for a in design] == [MAX_BUDGET] * len(design)
    assert [a.config for a in design] == searcher.state()["design"]
    # After the design, new configurations start at the lowest rung again.
    assert all(a.budget < MAX_BUDGET for a in asks[searcher.initial_design :])
    # Synchronous brackets keep Hyperband's shape: the design starts at a bracket's rung.
    sync = BOHB(
        space=SPACE, seed=0, max_budget=MAX_BUDGET, mode="sync",
        warm_start=WarmStart(space=SPACE, past_tasks=similar[0], similarity=similar[1],
                             meta_features={"s": 0.3}, seed=0),
    )  # fmt: skip
    assert sync.ask("s0").budget < MAX_BUDGET


def test_ablation_switches(similar):
    tasks, sim = similar

    def make(**options):
        warm = WarmStart(
            space=SPACE, past_tasks=tasks, similarity=sim, meta_features={"s": 0.3}, seed=0
        )
        return BOHB(space=SPACE, seed=0, max_budget=MAX_BUDGET, warm_start=warm, **options)

    prior_only = make(warm_design=False)
    assert prior_only.ask("t0").budget < MAX_BUDGET
    assert prior_only.state()["design"] in (None, [])
    design_only = make(warm_prior=False)
    assert design_only.ask("t0").budget == MAX_BUDGET
    assert design_only._prior() == (None, 0.0)  # noqa: SLF001 - the switch's whole effect
    state = json.loads(json.dumps(design_only.state()))
    assert state["options"]["warm_prior"] is False and state["options"]["warm_design"] is True
