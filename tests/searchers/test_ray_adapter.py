"""The Ray Tune adapters on their own (no Ray instance): the searcher behind Tune's API,
and the budget scheduler's decisions against a stand-in for Tune's controller."""

from __future__ import annotations

import copy
import json
import pickle
from types import SimpleNamespace

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from warmtune.searchers import make_searcher
from warmtune.searchers.ray_adapter import BudgetScheduler, TuneSearcher
from warmtune.space import SearchSpace

SPACE = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def adapter(name="random", mode="max", **options):
    searcher = make_searcher(name, space=SPACE, seed=0, options=options or None, max_budget=9)
    return TuneSearcher(searcher, metric="acc", mode=mode)


def test_results_reach_the_searcher_minimised_with_the_trials_config():
    a = adapter("bohb", mode="max")
    config = a.suggest("t0")
    assert SPACE.validate(config) == config and a.targets["t0"] == 1.0  # the lowest rung
    told = []
    a.algorithm.tell = told.append
    a.on_trial_result("t0", {"acc": 0.8, "training_iteration": 1, "config": config})
    assert (told[0].value, told[0].budget, told[0].config) == (-0.8, 1.0, config)


def test_the_state_and_the_pickle_continue_the_search_identically():
    a = adapter("bohb", mode="min")
    for i in range(8):
        config = a.suggest(f"t{i}")
        if config is not None:  # None: a promotion of a paused trial, no new trial
            result = {"acc": config["x"], "training_iteration": 1, "config": config}
            a.on_trial_result(f"t{i}", result)
    twin = adapter("bohb", mode="min")
    twin.set_state(json.loads(json.dumps(a.get_state())))
    pickled = pickle.loads(pickle.dumps(a))
    clone = copy.deepcopy(a)
    expected = [clone.suggest(f"n{i}") for i in range(4)]
    assert [twin.suggest(f"n{i}") for i in range(4)] == expected
    assert [pickled.suggest(f"n{i}") for i in range(4)] == expected


def _controller(adapter, trials):
    return SimpleNamespace(search_alg=adapter, get_trials=lambda: trials, stop_trial=lambda t: None)


def test_the_budget_scheduler_pauses_at_the_budget_and_resumes_promotions():
    a = adapter("asha", mode="min", min_budget=1, eta=3)
    scheduler = BudgetScheduler(max_budget=9)
    trial = SimpleNamespace(trial_id="t0", status=Trial.RUNNING)
    controller = _controller(a, [trial])
    a.suggest("t0")
    assert a.targets["t0"] == 1.0
    assert scheduler.on_trial_result(controller, trial, {"training_iteration": 1}) == (
        TrialScheduler.PAUSE
    )
    # Promoted to the next rung: the paused trial is the one to run, up to budget 3.
    trial.status = Trial.PAUSED
    a.promote("t0", 3)
    assert scheduler.choose_trial_to_run(controller) is trial
    trial.status = Trial.RUNNING
    assert scheduler.on_trial_result(controller, trial, {"training_iteration": 2}) == (
        TrialScheduler.CONTINUE
    )
    assert a.targets["t0"] == 3.0
    # At most max_concurrent run at once; paused trials do not count.
    limited = BudgetScheduler(max_budget=9, max_concurrent=1)
    assert limited.choose_trial_to_run(_controller(a, [trial])) is None
