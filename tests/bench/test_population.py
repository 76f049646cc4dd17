"""PBT in the benchmark simulator: the population engine on a backend with weights."""

from __future__ import annotations

import json

import pytest

from warmtune.bench.backends import NQMBackend, SyntheticBackend
from warmtune.bench.simulator import simulate
from warmtune.searchers import make_searcher
from warmtune.space import SearchSpace
from warmtune.trainables.nqm import NoisyQuadratic

SPACE = SearchSpace(
    {
        "lr": {"type": "float", "low": 1e-3, "high": 4.0, "log": True},
        "batch_size": {"type": "int", "low": 4, "high": 1024, "log": True},
    }
)
MODEL = NoisyQuadratic(dims=100)


def pbt(seed=0, population=6, **options):
    return make_searcher(
        "pbt",
        space=SPACE,
        seed=seed,
        options={"population_size": population, "perturbation_interval": 2, **options},
    )


def test_with_one_worker_the_members_take_turns_between_perturbation_points():
    result = simulate(pbt(), NQMBackend(MODEL, 8), workers=1, max_time=1e9)
    rows = result.evaluations
    # Every member runs its first two iterations before any member runs a third.
    first = rows.iloc[: 6 * 2]
    assert list(first["budget"]) == [1, 2] * 6
    assert first["trial_id"].nunique() == 6
    assert result.stop_reason == "exhausted"
    # Each member ends at the full budget (the re-run iterations after an exploit aside).
    assert set(rows.groupby("trial_id")["budget"].max()) == {8}


class HistoryBackend:
    """Weights that are the whole training history (each iteration's configuration), and
    a value that names it (a key of ``histories``), scattered in [0, 1) so that members
    rank in no particular order; every copy of weights is visible in the values."""

    fidelity_kind = "iterations"
    max_budget = 8

    def __init__(self) -> None:
        self.histories: dict[float, tuple[str, ...]] = {}

    def evaluate(self, config, budget):
        raise AssertionError("PBT trains step by step")

    def initial(self, config):
        return ()

    def step(self, weights, config, iteration):
        history = (*weights, json.dumps(config, sort_keys=True))
        assert len(history) == iteration
        value = (len(self.histories) + 1) * 0.6180339887 % 1.0
        self.histories[value] = history
        return history, value, 1.0


def test_an_exploit_continues_from_the_source_checkpoint_with_the_explored_config():
    searcher, backend = pbt(quantile_fraction=0.5), HistoryBackend()
    rows = simulate(searcher, backend, workers=2, max_time=1e9).evaluations
    history = {i: backend.histories[v] for i, v in rows["value"].items()}
    assert searcher.exploits
    for member, _, source, source_at, config in searcher.exploits:
        key = json.dumps(config, sort_keys=True)
        after = rows[(rows["trial_id"] == member) & (rows["config_json"] == key)].iloc[0]
        # The source's checkpoint: its last report at source_at before the exploit.
        kept = rows[
            (rows["trial_id"] == source)
            & (rows["budget"] == source_at)
            & (rows["end_time"] <= after["start_time"])
        ].iloc[-1]
        assert after["budget"] == source_at + 1
        assert history[after.name] == (*history[kept.name], key)


def test_same_seed_same_rows_and_the_limits_cut_the_work():
    a = simulate(pbt(seed=3), NQMBackend(MODEL, 8), workers=3, budget_ffe=4)
    b = simulate(pbt(seed=3), NQMBackend(MODEL, 8), workers=3, budget_ffe=4)
    assert a.evaluations.equals(b.evaluations)
    assert a.stop_reason == "budget_ffe" and len(a.evaluations) == 4 * 8
    assert a.ffe_spent == 4
    c = simulate(pbt(seed=3), NQMBackend(MODEL, 8), workers=3, max_evaluations=10)
    assert c.stop_reason == "max_evaluations" and len(c.evaluations) == 10


def test_a_backend_without_weights_is_refused_with_the_fix():
    space = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    searcher = make_searcher("pbt", space=space, seed=0, options={"population_size": 4})
    with pytest.raises(ValueError, match=r"needs weights.*TrainingBackend.*warmtune bench nqm"):
        simulate(searcher, SyntheticBackend(space=space, max_budget=4), workers=1, budget_ffe=2)
