"""The methods ``warmtune bench`` compares, built fresh for every run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from warmtune.searchers import make_searcher
from warmtune.searchers.base import Searcher
from warmtune.searchers.zeroshot import ZeroShot

if TYPE_CHECKING:
    from warmtune.bench.benchmarks import Benchmark

__all__ = [
    "ABLATIONS",
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "METHOD_GROUPS",
    "WARM_METHODS",
    "WEIGHT_METHODS",
    "expand_methods",
    "make_method",
]

#: Methods ``warmtune bench`` knows, in report order. The ``bohb-warm-*`` are ablations of
#: ``bohb-warm``, each without exactly one mechanism (see :data:`ABLATIONS`);
#: ``bohb-warm-oracle`` is an upper bound, never a method.
ALL_METHODS = (
    "random",
    "hyperband",
    "asha",
    "bohb",
    "bohb-warm",
    "bohb-warm-nodesign",
    "bohb-warm-noprior",
    "bohb-warm-nomodel",
    "bohb-warm-uniform",
    "bohb-warm-oracle",
    "zeroshot",
    "optuna",
    "hyperopt",
    "pbt",
)
#: What each ablation of bohb-warm removes (or, for the oracle, replaces).
ABLATIONS = {
    "bohb-warm-nodesign": "no portfolio design: the past only through the weighted ensemble",
    "bohb-warm-noprior": "no learned prior: every past task's similarity starts uninformed",
    "bohb-warm-nomodel": "no transfer in the model: after the design, cold BOHB's proposals",
    "bohb-warm-uniform": "no similarity at all: equal weights, the past a fixed 10 observations",
    "bohb-warm-oracle": "upper bound: weights from the target's true similarity (never a method)",
}
#: What ``--methods`` runs when not told: every method but the ablations, which answer
#: a different question (which mechanism of bohb-warm does what) and have their own
#: keyword, ``--methods ablations``.
#: Methods that copy one trial's weights into another: only on benchmarks with weights,
#: where the keywords include them.
WEIGHT_METHODS = ("pbt",)
DEFAULT_METHODS = tuple(m for m in ALL_METHODS if m not in ABLATIONS)
#: ``--methods`` keywords.
METHOD_GROUPS = {
    "default": DEFAULT_METHODS,
    "all": ALL_METHODS,
    "ablations": ("bohb", "bohb-warm", *ABLATIONS),
}
#: PBT's population in ``warmtune bench``: 16 members of a full training each, about
#: 17 of the default 20 FFE with the iterations re-run after exploits.
PBT_POPULATION = 16
WARM_METHODS = (
    "bohb-warm",
    *ABLATIONS,
    "zeroshot",
)
#: Methods built on successive halving: their rungs start at the benchmark's min_budget.
MULTI_FIDELITY_METHODS = ("hyperband", "asha", "bohb")


def make_method(
    method: str,
    *,
    bench: Benchmark,
    seed: int,
    past_tasks: Sequence[Any],
    meta_features: Mapping[str, Any] | None = None,
    oracle: Mapping[str, float] | None = None,
) -> Searcher:
    """A fresh searcher for ``method`` (one of :data:`ALL_METHODS`).

    Args:
        meta_features: the target's meta-features (warm methods).
        oracle: ``bohb-warm-oracle`` only: past task -> true concordance with the target.
    """
    space, max_budget = bench.space, bench.max_budget
    if method == "zeroshot":
        return ZeroShot(space=space, seed=seed, past_tasks=past_tasks)
    if method.startswith("bohb-warm") and method in ALL_METHODS:
        from warmtune.searchers.warmstart import WarmStart

        weighting = {
            "bohb-warm-noprior": "flat",
            "bohb-warm-uniform": "uniform",
            "bohb-warm-oracle": "oracle",
        }.get(method, "learned")
        if weighting == "oracle" and oracle is None:
            raise ValueError("bohb-warm-oracle needs the target's true concordances (oracle=)")
        models, similarity = _shared(
            space, past_tasks, meta_features or {}, "flat" if weighting == "flat" else "learned"
        )
        warm = WarmStart(
            space=space,
            past_tasks=list(past_tasks),
            meta_features=meta_features,
            seed=seed,
            weighting=weighting,
            oracle=oracle if weighting == "oracle" else None,
            models=models,
            similarity=similarity if weighting != "uniform" else None,
        )
        return make_searcher(
            "bohb",
            space=space,
            seed=seed,
            max_budget=max_budget,
            warm_start=warm,
            options={
                "warm_design": method != "bohb-warm-nodesign",
                "warm_model": method != "bohb-warm-nomodel",
                "min_budget": bench.min_budget,
            },
        )
    if method in WEIGHT_METHODS:
        if not bench.weights:
            raise ValueError(
                f"{method} copies trials' weights, and {bench.name}'s trials have none; "
                "run it on a benchmark with weights (nqm)"
            )
        return make_searcher(
            method, space=space, seed=seed, options={"population_size": PBT_POPULATION}
        )
    if method in ALL_METHODS:
        rungs = {"min_budget": bench.min_budget} if method in MULTI_FIDELITY_METHODS else None
        return make_searcher(method, space=space, seed=seed, max_budget=max_budget, options=rungs)
    raise ValueError(f"unknown method {method!r}; choose from {list(ALL_METHODS)}")


# The past tasks' models and the similarity over them depend on the target's past alone,
# not on the seed or the ablation: every run of a target shares them (read only). The
# protocol hands the same list of past tasks to every run of a target.
_SHARED: dict[tuple[int, str, str], tuple[Any, Any, Any]] = {}


def _shared(
    space: Any, past_tasks: Sequence[Any], meta_features: Mapping[str, Any], prior: str
) -> tuple[Any, Any]:
    from warmtune.searchers.pastmodels import PastModels
    from warmtune.searchers.similarity import TaskSimilarity
    from warmtune.searchers.warmstart import nearest_tasks

    key = (id(past_tasks), space.signature(), prior)
    if key not in _SHARED:
        if len(_SHARED) >= 4:
            _SHARED.clear()
        models = next(
            (m for (i, sig, _), (_, m, _) in _SHARED.items() if i == key[0] and sig == key[1]),
            None,
        ) or PastModels(
            # The tasks a WarmStart of its own would weigh (at most its max_tasks).
            space=space,
            past_tasks=nearest_tasks(past_tasks, space, meta_features, 128),
        )
        # The list is held too, so its id cannot be reused while the entry lives.
        _SHARED[key] = (past_tasks, models, TaskSimilarity(models=models, seed=0, prior=prior))
    _, models, similarity = _SHARED[key]
    return models, similarity


def expand_methods(text: str, *, weights: bool = False) -> list[str]:
    """``--methods``: comma-separated methods or keywords of :data:`METHOD_GROUPS`, in
    report order, each once. A keyword includes the :data:`WEIGHT_METHODS` only on a
    benchmark whose trials have ``weights``.

    Raises:
        ValueError: an unknown method, naming the choices.
    """
    wanted: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        names = METHOD_GROUPS.get(part, (part,))
        if part in METHOD_GROUPS and not weights:
            names = tuple(n for n in names if n not in WEIGHT_METHODS)
        unknown = [n for n in names if n not in ALL_METHODS]
        if unknown:
            raise ValueError(
                f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)} or "
                f"the keywords {list(METHOD_GROUPS)}"
            )
        wanted += [n for n in names if n not in wanted]
    return [m for m in ALL_METHODS if m in wanted]
