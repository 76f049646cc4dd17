"""Hyperband and ASHA: successive halving over randomly sampled configurations."""

from __future__ import annotations

from typing import Any

from warmtune.searchers.successive_halving import SuccessiveHalvingSearcher
from warmtune.space import SearchSpace


class Hyperband(SuccessiveHalvingSearcher):
    """Hyperband (Li et al. 2017): random configurations, synchronous successive halving.

    Brackets run in Hyperband's order, most aggressive first; a rung promotes its
    top ``1/eta`` once all its members have reported at its budget.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        max_budget: the job's full budget in training iterations (required).
        min_budget: the smallest budget a trial runs to.
        eta: the halving rate.
        max_concurrent_brackets: how many brackets may be open at once; ``None``
            (HpBandSter's behaviour) starts the next bracket rather than let a
            worker idle, ``1`` is textbook sequential Hyperband (``ask`` returns
            ``None`` while the bracket waits for stragglers).
    """

    name = "hyperband"

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        max_budget: float | None = None,
        min_budget: float = 1,
        eta: float = 3,
        max_concurrent_brackets: int | None = None,
    ) -> None:
        super().__init__(
            space=space,
            seed=seed,
            max_budget=max_budget,
            min_budget=min_budget,
            eta=eta,
            mode="sync",
            max_concurrent_brackets=max_concurrent_brackets,
        )

    def _new_config(self, budget: float) -> dict[str, Any]:
        return self.space.sample(self.rng)


class ASHA(SuccessiveHalvingSearcher):
    """ASHA (Li et al. 2020): random configurations, asynchronous successive halving.

    Whenever asked, promote the best not-yet-promoted trial of the highest rung
    that has one in its top ``1/eta``; otherwise start a new trial at the lowest rung.

    Args:
        space: the search space.
        seed: seed of the searcher's own generator.
        max_budget: the job's full budget in training iterations (required).
        min_budget: the lowest rung's budget (rounded up the ladder to a power of eta).
        eta: the halving rate.
    """

    name = "asha"

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None = None,
        max_budget: float | None = None,
        min_budget: float = 1,
        eta: float = 3,
    ) -> None:
        super().__init__(
            space=space,
            seed=seed,
            max_budget=max_budget,
            min_budget=min_budget,
            eta=eta,
            mode="async",
        )

    def _new_config(self, budget: float) -> dict[str, Any]:
        return self.space.sample(self.rng)
