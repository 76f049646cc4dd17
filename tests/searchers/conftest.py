"""An in-memory engine for ask/tell searchers, a synthetic multi-fidelity objective, a space.

The tests run with ``--import-mode=importlib``, where test modules cannot import a
sibling helper module; the helpers live here and reach tests through fixtures.
"""

from __future__ import annotations

import heapq
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from warmtune.searchers import Observation, Searcher, Suggestion, make_searcher, searcher_class
from warmtune.space import SearchSpace

MAX_BUDGET = 27

Objective = Callable[[dict[str, Any], int], "float | None"]


def conditional_space() -> SearchSpace:
    """Seven mixed parameters: float log, ints (one log), categoricals, conditional children."""
    return SearchSpace(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "layers": {"type": "int", "low": 1, "high": 8},
            "width": {"type": "int", "low": 8, "high": 512, "log": True},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "momentum": {
                "type": "float",
                "low": 0.0,
                "high": 0.99,
                "when": {"optimizer": ["sgd", "rmsprop"]},
            },
            "nesterov": {
                "type": "categorical",
                "choices": [True, False],
                "when": {"optimizer": ["sgd"]},
            },
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        }
    )


def quadratic(config: dict[str, Any], budget: int) -> float:
    """A bowl around lr=1e-2, 3 layers, width 64, adam, dropout 0.1; plus 1/budget."""
    value = (math.log10(config["lr"]) + 2) ** 2 / 4
    value += ((config["layers"] - 3) / 7) ** 2 + (math.log2(config["width"]) - 6) ** 2 / 9
    value += {"sgd": 0.3, "adam": 0.0, "rmsprop": 0.15}[config["optimizer"]]
    if "momentum" in config:
        value += (config["momentum"] - 0.9) ** 2
    if config.get("nesterov") is False:
        value += 0.05
    value += (config["dropout"] - 0.1) ** 2
    return value + 1.0 / budget


def failing(config: dict[str, Any], budget: int) -> float | None:
    """:func:`quadratic`, but diverging (NaN) from iteration 2 with large dropout, and
    crashing (None) at once for deep and wide networks."""
    if config["layers"] >= 7 and config["width"] > 128:
        return None
    if config["dropout"] > 0.35 and budget >= 2:
        return float("nan")
    return quadratic(config, budget)


@dataclass
class _Run:
    suggestion: Suggestion
    start: int
    target: int
    stop_at: int  # last iteration reported (< target when the engine stops it early)


@dataclass
class Driver:
    """A k-worker asynchronous engine: asks whenever a worker is free, one iteration per
    time unit times a per-run speed, all observations of a run told when it ends.

    Records what a real engine would refuse: a suggestion for a trial that is still
    running, a new trial under a used id, a resume from a trial that failed.
    """

    searcher: Searcher
    objective: Objective = quadratic
    workers: int = 1
    max_budget: int = MAX_BUDGET
    seed: int = 0
    stop_probability: float = 0.0
    time: float = 0.0
    spent: int = 0
    next_id: int = 0
    running: dict[str, _Run] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    suggestions: list[Suggestion] = field(default_factory=list)
    results: list[Observation] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _queue: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def run(self, n: int, *, max_spent: int | None = None) -> list[Suggestion]:
        """Run until ``n`` more suggestions were handed out (or ``max_spent`` iterations)."""
        out: list[Suggestion] = []
        while len(out) < n and (max_spent is None or self.spent < max_spent):
            if len(self.running) < self.workers:
                fresh = f"t{self.next_id}"
                suggestion = self.searcher.ask(fresh)
                if suggestion is not None:
                    if suggestion.trial_id == fresh:
                        self.next_id += 1
                    self._launch(suggestion)
                    out.append(suggestion)
                    continue
                if not self.running:
                    raise RuntimeError("the searcher returned None with no trial running")
            self._finish_next()
        return out

    def best(self, budget: float) -> float:
        """The best value observed at ``budget`` (inf if none)."""
        values = [o.value for o in self.results if o.budget == budget and o.value is not None]
        return min(values, default=math.inf)

    def _launch(self, s: Suggestion) -> None:
        self.suggestions.append(s)
        if s.trial_id in self.running:
            self.violations.append(f"{s.trial_id} handed out while running")
        if s.resume_from is None and s.trial_id in self.progress:
            self.violations.append(f"{s.trial_id} reused as a new trial")
        if s.resume_from is not None and s.resume_from in self.failed:
            self.violations.append(f"resumed from failed trial {s.resume_from}")
        start = self.progress.get(s.resume_from, 0) if s.resume_from else 0
        target = self.max_budget if s.budget is None else int(math.ceil(s.budget))
        target = max(target, start + 1)
        stop_at = target
        if self.stop_probability and self.rng.random() < self.stop_probability:
            stop_at = int(self.rng.integers(start, target))  # stopped before its budget
        duration = (stop_at - start + 0.5) * (0.5 + self.rng.random())
        self.running[s.trial_id] = _Run(s, start, target, stop_at)
        self._seq += 1
        heapq.heappush(self._queue, (self.time + duration, self._seq, s.trial_id))

    def _finish_next(self) -> None:
        end, _, trial_id = heapq.heappop(self._queue)
        self.time = end
        run = self.running[trial_id]
        config = run.suggestion.config
        done = run.start
        for iteration in range(run.start + 1, run.stop_at + 1):
            observation = Observation.of(
                trial_id, config, iteration, self.objective(config, iteration)
            )
            self.searcher.tell(observation)
            self.results.append(observation)
            done = iteration
            if observation.failed:
                self.failed.add(trial_id)
                break
        self.spent += done - run.start
        self.progress[trial_id] = done
        del self.running[trial_id]
        self.searcher.on_trial_end(trial_id)


def searcher_options(name: str) -> dict[str, Any]:
    """Options for the registered searcher ``name`` in these tests: the budget it needs."""
    params = inspect.signature(searcher_class(name).__init__).parameters
    return {"max_budget": MAX_BUDGET} if "max_budget" in params else {}


def build(name: str, space: SearchSpace, seed: int, **options: Any) -> Searcher:
    extras = {k: options.pop(k) for k in ("warm_start", "history") if k in options}
    return make_searcher(
        name, space=space, seed=seed, options={**searcher_options(name), **options}, **extras
    )


def warm_extras(space: SearchSpace, kind: str) -> dict[str, Any]:
    """A warm start over past tasks shaped like :func:`quadratic` with shifted optima
    (``kind="past"``), or a history of the task itself (``kind="history"``)."""
    from warmtune.searchers import History
    from warmtune.searchers.pasttask import PastTask
    from warmtune.searchers.warmstart import WarmStart

    rng = np.random.default_rng(42)
    if kind == "history":
        configs = [space.sample(rng) for _ in range(40)]
        observations = tuple(
            Observation.of(f"old{i}", c, MAX_BUDGET, quadratic(c, MAX_BUDGET))
            for i, c in enumerate(configs)
        )
        return {"history": History(observations=observations)}
    tasks = []
    for k in range(4):
        configs = [space.sample(rng) for _ in range(60)]
        values = [quadratic(c, MAX_BUDGET) + 0.05 * k * c["dropout"] for c in configs]
        tasks.append(
            PastTask(
                name=f"past{k}", meta_features={"k": k}, space=space, configs=configs, values=values
            )
        )
    return {"warm_start": WarmStart(space=space, past_tasks=tasks, seed=0)}


@pytest.fixture
def mixed_space() -> SearchSpace:
    return conditional_space()


@pytest.fixture
def driver_cls() -> type[Driver]:
    return Driver


@pytest.fixture
def objectives() -> dict[str, Objective]:
    return {"quadratic": quadratic, "failing": failing}


@pytest.fixture
def build_searcher() -> Callable[..., Searcher]:
    return build


@pytest.fixture
def warm_extras_fn() -> Callable[..., dict[str, Any]]:
    return warm_extras
