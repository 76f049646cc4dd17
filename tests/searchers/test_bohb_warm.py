"""BOHB warm-started from past tasks: an aligned past helps at once, a misleading one loses
its say and the search goes on as cold BOHB would, the design stops when it stops
winning, and a task's own history is continued rather than replayed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmtune.searchers import History, Observation, make_searcher
from warmtune.searchers.bohb import BOHB
from warmtune.searchers.pasttask import PastTask
from warmtune.searchers.warmstart import WarmStart
from warmtune.space import SearchSpace

NAMES = ("x0", "x1", "x2")
SPACE = SearchSpace({n: {"type": "float", "low": 0.0, "high": 1.0} for n in NAMES})
MAX_BUDGET = 9
TARGET = np.array([0.3, 0.7, 0.5])


def objective(config, budget):
    x = np.array([config[n] for n in NAMES])
    return float(((x - TARGET) ** 2).sum() + 0.05 / budget)


def past(sign=1.0, n_tasks=5, shift=0.05):
    tasks = []
    for k in range(n_tasks):
        center = TARGET + shift * (k - n_tasks // 2)
        x = np.random.default_rng(100 + k).uniform(size=(100, 3))
        values = sign * ((x - center) ** 2).sum(axis=1)
        configs = [dict(zip(NAMES, map(float, row), strict=True)) for row in x]
        tasks.append(
            PastTask(name=f"s{k}", meta_features={}, space=SPACE, configs=configs, values=values)
        )
    return tasks


def run(searcher, n_trials, workers=1):
    """A sequential engine: every iteration reported; returns the full-budget values."""
    full, running, next_id = [], {}, 0
    for _ in range(n_trials):
        s = searcher.ask(f"t{next_id}")
        assert s is not None
        if s.trial_id == f"t{next_id}":
            next_id += 1
        start = running.get(s.trial_id, 0)
        target = int(round(s.budget or MAX_BUDGET))
        for it in range(start + 1, target + 1):
            searcher.tell(Observation.of(s.trial_id, s.config, it, objective(s.config, it)))
        running[s.trial_id] = target
        if target >= MAX_BUDGET:
            full.append(objective(s.config, MAX_BUDGET))
            searcher.on_trial_end(s.trial_id)
    return full


def warm_bohb(tasks, seed=0, **options):
    warm = WarmStart(space=SPACE, past_tasks=tasks, seed=seed)
    return make_searcher(
        "bohb", space=SPACE, seed=seed, max_budget=MAX_BUDGET, warm_start=warm, options=options
    )


def test_an_aligned_past_gives_a_good_first_result_and_stays_ahead():
    warm_first, cold_best, warm_best = [], [], []
    for seed in range(4):
        w = run(warm_bohb(past(), seed), 40)
        c = run(make_searcher("bohb", space=SPACE, seed=seed, max_budget=MAX_BUDGET), 40)
        warm_first.append(w[0])
        warm_best.append(min(w))
        cold_best.append(min(c, default=np.inf))
    # The first trial is a portfolio configuration at the full budget, near the optimum.
    assert max(warm_first) < 0.05 + 0.05 / MAX_BUDGET
    assert np.mean(warm_best) < np.mean(cold_best)


def test_a_mirrored_past_loses_its_say_and_the_design_stops():
    searcher = warm_bohb(past(sign=-1.0), seed=1)
    run(searcher, 60)
    weights = searcher.warm_start.weights
    # The past ordered the results the wrong way round: it has lost its weight to the
    # own model and chance, and the design is over (the portfolio is the worst region).
    assert weights.past_share < 0.01
    assert searcher._design_stopped
    assert len(searcher._design_keys) <= searcher._patience()


def test_the_design_keeps_going_while_it_wins_and_holds_eta_credits():
    searcher = warm_bohb(past(), seed=2)
    run(searcher, 30)
    losses, running = searcher._design_record()
    assert losses <= searcher._patience() and running == 0
    # An aligned past keeps winning for a while: more than eta portfolio configurations.
    assert len(searcher._design_keys) > searcher._patience()
    capped = warm_bohb(past(), seed=2, initial_design=2)
    run(capped, 30)
    assert len(capped._design_keys) == 2


def test_ablation_switches_remove_their_mechanism():
    no_design = warm_bohb(past(), seed=0, warm_design=False)
    run(no_design, 20)
    assert no_design._design_keys == []
    options = no_design.state()["options"]
    assert options["warm_design"] is False and options["warm_model"] is True
    no_model = warm_bohb(past(), seed=0, warm_model=False)
    assert no_model.state()["options"]["warm_model"] is False
    with pytest.raises(ValueError, match="design_cost"):
        warm_bohb(past(), design_cost="sometimes")


def test_warm_state_round_trips_and_continues_identically():
    tasks = past()
    original = warm_bohb(tasks, seed=4)
    run(original, 15)
    state = json.loads(json.dumps(original.state()))
    again = BOHB.from_state(
        state, SPACE, warm_start=WarmStart(space=SPACE, past_tasks=tasks, seed=4)
    )
    assert state["warm"]["weights"] == again.state()["warm"]["weights"]
    for k in range(10):
        a, b = original.ask(f"n{k}"), again.ask(f"n{k}")
        assert a == b
        if a is not None and a.resume_from is None:
            for s in (original, again):
                s.tell(
                    Observation.of(
                        a.trial_id, a.config, a.budget, objective(a.config, int(a.budget))
                    )
                )


def test_a_task_history_is_continued_not_replayed():
    # A discrete space, so a proposal could repeat a configuration exactly.
    space = SearchSpace({n: {"type": "int", "low": 0, "high": 3} for n in NAMES})
    rng = np.random.default_rng(0)
    earlier = [space.sample(rng) for _ in range(30)]

    def value(c):
        return float(sum((c[n] - 1) ** 2 for n in NAMES))

    observations = tuple(
        Observation.of(f"old{i}", c, MAX_BUDGET, value(c)) for i, c in enumerate(earlier)
    )
    known = frozenset(json.dumps(space.validate(c), sort_keys=True) for c in earlier)
    history = History(observations=observations, known=known)
    searcher = make_searcher("bohb", space=space, seed=0, max_budget=MAX_BUDGET, history=history)
    # The model exists before the first own result: the history is its evidence.
    assert searcher.model() is not None
    for k in range(30):
        s = searcher.ask(f"t{k}")
        if s.resume_from is None:
            assert json.dumps(s.config, sort_keys=True) not in known
        searcher.tell(Observation.of(s.trial_id, s.config, s.budget, value(s.config)))
    # A searcher that takes no history starts as it always does.
    plain = make_searcher("random", space=space, seed=0, history=history)
    assert plain.ask("t0") is not None
    with pytest.raises(ValueError, match="History"):
        BOHB(space=space, max_budget=MAX_BUDGET, history=[1, 2])
