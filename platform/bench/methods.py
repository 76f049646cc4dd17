"""The methods ``warmtune bench`` compares, built fresh for every run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from warmtune.searchers import make_searcher
from warmtune.searchers.base import Searcher
from warmtune.searchers.zeroshot import ZeroShot

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = ["ALL_METHODS", "WARM_METHODS", "make_method"]

#: Methods ``warmtune bench`` knows, in report order. ``bohb-warm-design`` uses only the
#: warm start's initial design, ``bohb-warm-prior`` only its prior, ``bohb-warm-uniform``
#: both with every past task weighted equally (ablations of ``bohb-warm``).
ALL_METHODS = (
    "random",
    "hyperband",
    "asha",
    "bohb",
    "bohb-warm",
    "bohb-warm-design",
    "bohb-warm-prior",
    "bohb-warm-uniform",
    "zeroshot",
    "optuna",
    "hyperopt",
)
WARM_METHODS = ("bohb-warm", "bohb-warm-design", "bohb-warm-prior", "bohb-warm-uniform", "zeroshot")
#: Methods built on successive halving: their rungs start at the benchmark's min_budget.
MULTI_FIDELITY_METHODS = ("hyperband", "asha", "bohb")


def make_method(method: str, *, bench: Benchmark, seed: int, past_tasks: Sequence[Any]) -> Searcher:
    """A fresh searcher for ``method`` (one of :data:`ALL_METHODS`)."""
    space, max_budget = bench.space, bench.max_budget
    if method == "zeroshot":
        return ZeroShot(space=space, seed=seed, past_tasks=past_tasks)
    if method.startswith("bohb-warm") and method in ALL_METHODS:
        from warmtune.searchers.warmstart import WarmStart

        warm = WarmStart(
            space=space,
            past_tasks=list(past_tasks),
            meta_features={},
            seed=seed,
            uniform_weights=method == "bohb-warm-uniform",
        )
        return make_searcher(
            "bohb",
            space=space,
            seed=seed,
            max_budget=max_budget,
            warm_start=warm,
            options={
                "warm_design": method != "bohb-warm-prior",
                "warm_prior": method != "bohb-warm-design",
                "min_budget": bench.min_budget,
            },
        )
    if method in ALL_METHODS:
        rungs = {"min_budget": bench.min_budget} if method in MULTI_FIDELITY_METHODS else None
        return make_searcher(method, space=space, seed=seed, max_budget=max_budget, options=rungs)
    raise ValueError(f"unknown method {method!r}; choose from {list(ALL_METHODS)}")
